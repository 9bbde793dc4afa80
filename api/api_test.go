package api_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/hodei-jobs/hodei/api"
	"github.com/hodei-jobs/hodei/auth"
	"github.com/hodei-jobs/hodei/command"
	"github.com/hodei-jobs/hodei/domain"
	hodeiv1 "github.com/hodei-jobs/hodei/gen/hodei/v1"
	"github.com/hodei-jobs/hodei/gen/hodei/v1/hodeiv1connect"
	"github.com/hodei-jobs/hodei/internal/pgtest"
	"github.com/hodei-jobs/hodei/jobs"
	"github.com/hodei-jobs/hodei/messaging"
	"github.com/hodei-jobs/hodei/outbox"
	"github.com/hodei-jobs/hodei/provider"
	"github.com/hodei-jobs/hodei/saga"
	"github.com/hodei-jobs/hodei/server"
	"github.com/hodei-jobs/hodei/store"
	"github.com/hodei-jobs/hodei/store/postgres"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// env is the API over a real store, a real jobs.Service and embedded NATS, served by
// an h2c httptest server. Unless started with run, the saga engine, the outbox relay
// and the scheduler do not run, so submitted jobs stay PENDING until a test moves them.
// The provider is the test itself (handProvider): it hands the worker spec, with its
// one-time password, to the test, which then plays the worker agent.
type env struct {
	st       *postgres.Store
	nc       *nats.Conn
	svc      *jobs.Service
	engine   *saga.Engine
	url      string
	client   *http.Client
	jobs     hodeiv1connect.JobServiceClient
	workers  hodeiv1connect.WorkerAgentServiceClient
	ready    *readyToggle
	provider *handProvider
}

type readyToggle struct {
	mu  sync.Mutex
	err error
}

func (r *readyToggle) set(err error) { r.mu.Lock(); r.err = err; r.mu.Unlock() }
func (r *readyToggle) check(context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// handProvider "creates" a worker by handing its spec to the test.
type handProvider struct {
	specs chan provider.WorkerSpec
	mu    sync.Mutex
	gone  map[string]bool
}

func (p *handProvider) Name() string { return "hand" }
func (p *handProvider) Capabilities() provider.Capabilities {
	return provider.Capabilities{MaxWorkers: 4}
}
func (p *handProvider) Create(ctx context.Context, spec provider.WorkerSpec) error {
	select {
	case p.specs <- spec:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
func (p *handProvider) Destroy(_ context.Context, id string) error {
	p.mu.Lock()
	p.gone[id] = true
	p.mu.Unlock()
	return nil
}
func (p *handProvider) Status(_ context.Context, id string) (provider.Status, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.gone[id] {
		return provider.StatusExited, nil
	}
	return provider.StatusRunning, nil
}
func (p *handProvider) destroyed(id string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.gone[id]
}

func newEnv(t *testing.T, run bool) *env { t.Helper(); return newEnvWith(t, run, envHooks{}) }

// envHooks adjust the configuration newEnvWith builds.
type envHooks struct {
	jobs    func(*jobs.Config)
	workers func(*api.WorkerOptions)
	// auth, if set, returns the mux's authenticator, given the store.
	auth func(store.Store) *auth.Authenticator
}

func newEnvWith(t *testing.T, run bool, hooks envHooks) *env {
	t.Helper()
	ctx := t.Context()
	st := pgtest.NewStore(t)
	emb, err := messaging.StartEmbedded(ctx, messaging.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Shutdown)
	nc, js, err := messaging.Connect(ctx, emb.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)

	bus := command.NewBus()
	reg := saga.NewRegistry()
	if err := jobs.RegisterSagas(reg); err != nil {
		t.Fatal(err)
	}
	// Wired as server.Run wires it.
	chain := command.ChainConfig{Idempotency: command.StoreDeps(st)}
	inTx, edge := command.InTxChain(bus, chain), command.EdgeChain(bus, chain)
	engine, err := saga.New(st, reg, inTx, saga.Config{PollInterval: 100 * time.Millisecond,
		ActivityDispatcher: command.ActivityChain(bus, chain)})
	if err != nil {
		t.Fatal(err)
	}
	hp := &handProvider{specs: make(chan provider.WorkerSpec, 8), gone: map[string]bool{}}
	providers := provider.NewRegistry()
	if err := providers.Register(hp.Name(), hp); err != nil {
		t.Fatal(err)
	}
	hub, err := api.NewHub(nc)
	if err != nil {
		t.Fatal(err)
	}
	jcfg := jobs.Config{ServerURL: "http://127.0.0.1:1", Dispatcher: edge, TxDispatcher: inTx}
	if hooks.jobs != nil {
		hooks.jobs(&jcfg)
	}
	svc, err := jobs.New(st, bus, engine, providers, hub, jcfg)
	if err != nil {
		t.Fatal(err)
	}
	notifier := api.NewNotifier()
	loops, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { stop(); wg.Wait() })
	wg.Go(func() { _ = notifier.Listen(loops, nc, nil) })
	if run {
		if err := messaging.EnsureStreams(ctx, js); err != nil {
			t.Fatal(err)
		}
		relay, err := outbox.NewRelay(st.Outbox(), outbox.BusSink{Bus: bus, Dispatcher: edge},
			outbox.NewJetStreamPublisher(js), outbox.Config{PollInterval: 100 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() { _ = engine.Run(loops) })
		wg.Go(func() { _ = relay.Run(loops) })
		wg.Go(func() { _ = svc.RunScheduler(loops) })
	}

	// Without the loops, tests move jobs with the store (no events): poll often. With
	// them, every transition publishes a job event: poll so rarely that only the
	// notifications (Notifier.Listen) can make the streams see changes in time.
	poll := 50 * time.Millisecond
	if run {
		poll = time.Minute
	}
	jobAPI, err := api.NewJobService(st.Jobs(), svc, svc, api.JobOptions{Notifier: notifier, PollInterval: poll, Errors: server.ErrorCodes()})
	if err != nil {
		t.Fatal(err)
	}
	wopts := api.WorkerOptions{Notifier: notifier, Errors: server.ErrorCodes()}
	if hooks.workers != nil {
		hooks.workers(&wopts)
	}
	workerAPI, err := api.NewWorkerAgentService(svc, hub, wopts)
	if err != nil {
		t.Fatal(err)
	}
	rt := &readyToggle{}
	var authn *auth.Authenticator
	if hooks.auth != nil {
		authn = hooks.auth(st)
	}
	h, err := api.NewMux(api.MuxConfig{
		Jobs: jobAPI, Workers: workerAPI, Auth: authn,
		Ready: []api.Check{
			{Name: "database", Check: st.Ping},
			{Name: "toggle", Check: rt.check},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	base, cancelBase := context.WithCancel(context.Background())
	hs := httptest.NewUnstartedServer(h)
	hs.Config = api.NewHTTPServer(h, base)
	hs.Start()
	// Registered after the loops' cleanup, so it runs first: streams end, then the loops.
	t.Cleanup(func() { cancelBase(); hs.Close() })

	client := &http.Client{Transport: &http.Transport{Protocols: h2cOnly()}}
	return &env{
		st: st, nc: nc, svc: svc, engine: engine, url: hs.URL, client: client, ready: rt, provider: hp,
		jobs:    hodeiv1connect.NewJobServiceClient(client, hs.URL),
		workers: hodeiv1connect.NewWorkerAgentServiceClient(client, hs.URL),
	}
}

func h2cOnly() *http.Protocols {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &p
}

func codeOf(t *testing.T, err error) connect.Code {
	t.Helper()
	if err == nil {
		t.Fatal("want an error, got nil")
	}
	return connect.CodeOf(err)
}

func echoSpec(labels map[string]string) *hodeiv1.JobSpec {
	return &hodeiv1.JobSpec{Name: "t", Command: []string{"echo", "hi"}, Labels: labels}
}

func (e *env) submit(t *testing.T, spec *hodeiv1.JobSpec) *hodeiv1.Job {
	t.Helper()
	res, err := e.jobs.SubmitJob(t.Context(), connect.NewRequest(&hodeiv1.SubmitJobRequest{Spec: spec}))
	if err != nil {
		t.Fatalf("SubmitJob: %v", err)
	}
	return res.Msg.GetJob()
}

func (e *env) countJobs(t *testing.T) int {
	t.Helper()
	var n int
	if err := e.st.Pool().QueryRow(t.Context(), "SELECT count(*) FROM jobs").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestSubmitGetAndInvalidSpec(t *testing.T) {
	e := newEnv(t, false)
	ctx := t.Context()

	j := e.submit(t, echoSpec(map[string]string{"team": "a"}))
	if j.GetId() == "" || j.GetState() != "PENDING" {
		t.Fatalf("submitted job = %v", j)
	}
	got, err := e.jobs.GetJob(ctx, connect.NewRequest(&hodeiv1.GetJobRequest{Id: j.GetId()}))
	if err != nil {
		t.Fatal(err)
	}
	if g := got.Msg.GetJob(); g.GetId() != j.GetId() || g.GetState() != "PENDING" ||
		g.GetSpec().GetCommand()[0] != "echo" || g.GetSpec().GetLabels()["team"] != "a" || g.GetCreatedAt() == nil {
		t.Fatalf("GetJob = %v", g)
	}

	// Invalid: empty command, negative timeout, bad env key. Every field is named and
	// no row is written.
	before := e.countJobs(t)
	_, err = e.jobs.SubmitJob(ctx, connect.NewRequest(&hodeiv1.SubmitJobRequest{Spec: &hodeiv1.JobSpec{
		Env:     map[string]string{"1BAD": "x"},
		Timeout: durationpbNew(-time.Second),
	}}))
	if code := codeOf(t, err); code != connect.CodeInvalidArgument {
		t.Fatalf("code = %v (%v), want InvalidArgument", code, err)
	}
	for _, field := range []string{"command", "timeout", "env"} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("error %q does not name %q", err, field)
		}
	}
	if after := e.countJobs(t); after != before {
		t.Fatalf("jobs rows %d -> %d after an invalid submit", before, after)
	}
	_, err = e.jobs.SubmitJob(ctx, connect.NewRequest(&hodeiv1.SubmitJobRequest{}))
	if code := codeOf(t, err); code != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "spec") {
		t.Fatalf("nil spec: %v", err)
	}

	// Unknown and malformed ids.
	_, err = e.jobs.GetJob(ctx, connect.NewRequest(&hodeiv1.GetJobRequest{Id: "00000000-0000-0000-0000-000000000000"}))
	if code := codeOf(t, err); code != connect.CodeNotFound {
		t.Fatalf("unknown job: %v", err)
	}
	_, err = e.jobs.GetJob(ctx, connect.NewRequest(&hodeiv1.GetJobRequest{}))
	if code := codeOf(t, err); code != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "id") {
		t.Fatalf("empty id: %v", err)
	}
}

func TestOversizedRequestRefused(t *testing.T) {
	e := newEnv(t, false)
	before := e.countJobs(t)
	big := strings.Repeat("x", api.DefaultMaxMessageBytes+1)
	_, err := e.jobs.SubmitJob(t.Context(), connect.NewRequest(&hodeiv1.SubmitJobRequest{
		Spec: &hodeiv1.JobSpec{Command: []string{"echo", big}}}))
	if code := codeOf(t, err); code != connect.CodeResourceExhausted {
		t.Fatalf("oversized: code %v (%v), want ResourceExhausted", code, err)
	}
	if after := e.countJobs(t); after != before {
		t.Fatalf("jobs rows %d -> %d", before, after)
	}
}

func TestListJobsFilterAndPagination(t *testing.T) {
	e := newEnv(t, false)
	ctx := t.Context()
	var ids []string
	for i := range 5 {
		team := "a"
		if i%2 == 1 {
			team = "b"
		}
		ids = append(ids, e.submit(t, echoSpec(map[string]string{"team": team})).GetId())
	}
	// Cancel one so that a state filter has something to tell apart.
	if _, err := e.jobs.CancelJob(ctx, connect.NewRequest(&hodeiv1.CancelJobRequest{Id: ids[0], Reason: "test"})); err != nil {
		t.Fatalf("CancelJob: %v", err)
	}
	cancelled, err := e.st.Jobs().Get(ctx, ids[0])
	if err != nil {
		t.Fatal(err)
	}

	res, err := e.jobs.ListJobs(ctx, connect.NewRequest(&hodeiv1.ListJobsRequest{Labels: map[string]string{"team": "a"}}))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(res.Msg.GetJobs()); n != 3 {
		t.Fatalf("label team=a: %d jobs, want 3", n)
	}
	res, err = e.jobs.ListJobs(ctx, connect.NewRequest(&hodeiv1.ListJobsRequest{States: []string{"PENDING"}}))
	if err != nil {
		t.Fatal(err)
	}
	wantPending := 5
	if cancelled.State != domain.JobPending {
		wantPending = 4
	}
	if n := len(res.Msg.GetJobs()); n != wantPending {
		t.Fatalf("state PENDING: %d jobs, want %d (cancelled job is %s)", n, wantPending, cancelled.State)
	}

	// Pages of 2: 2, 2, 1, newest first, all distinct.
	seen := map[string]bool{}
	token := ""
	var sizes []int
	for {
		res, err := e.jobs.ListJobs(ctx, connect.NewRequest(&hodeiv1.ListJobsRequest{PageSize: 2, PageToken: token}))
		if err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, len(res.Msg.GetJobs()))
		for _, j := range res.Msg.GetJobs() {
			if seen[j.GetId()] {
				t.Fatalf("job %s listed twice", j.GetId())
			}
			seen[j.GetId()] = true
		}
		token = res.Msg.GetNextPageToken()
		if token == "" {
			break
		}
	}
	if len(seen) != 5 || len(sizes) != 3 || sizes[0] != 2 || sizes[2] != 1 {
		t.Fatalf("pages %v, %d distinct jobs", sizes, len(seen))
	}

	for _, bad := range []*hodeiv1.ListJobsRequest{
		{States: []string{"NOPE"}},
		{PageSize: api.MaxListPageSize + 1},
		{PageToken: "garbage!"},
	} {
		_, err := e.jobs.ListJobs(ctx, connect.NewRequest(bad))
		if code := codeOf(t, err); code != connect.CodeInvalidArgument {
			t.Errorf("ListJobs(%v): %v, want InvalidArgument", bad, err)
		}
	}
}

func TestCancelUnknownAndTerminal(t *testing.T) {
	e := newEnv(t, false)
	ctx := t.Context()
	_, err := e.jobs.CancelJob(ctx, connect.NewRequest(&hodeiv1.CancelJobRequest{Id: "00000000-0000-0000-0000-000000000000"}))
	if code := codeOf(t, err); code != connect.CodeNotFound {
		t.Fatalf("cancel unknown: %v", err)
	}
	j := e.submit(t, echoSpec(nil))
	forceState(t, e.st, j.GetId(), domain.JobProvisioning, domain.JobAssigned, domain.JobRunning, domain.JobSucceeded)
	_, err = e.jobs.CancelJob(ctx, connect.NewRequest(&hodeiv1.CancelJobRequest{Id: j.GetId()}))
	if code := codeOf(t, err); code != connect.CodeFailedPrecondition {
		t.Fatalf("cancel terminal: %v, want FailedPrecondition", err)
	}
}

// forceState walks a job through states with the store (the engine does not run here).
func forceState(t *testing.T, st store.Store, id string, states ...domain.JobState) {
	t.Helper()
	for _, s := range states {
		if _, err := st.Jobs().UpdateState(t.Context(), id, s, time.Now(), nil); err != nil {
			t.Fatalf("move job %s to %s: %v", id, s, err)
		}
	}
}

func TestWatchJobSeesStateChanges(t *testing.T) {
	e := newEnv(t, false)
	j := e.submit(t, echoSpec(nil))
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	stream, err := e.jobs.WatchJob(ctx, connect.NewRequest(&hodeiv1.WatchJobRequest{Id: j.GetId()}))
	if err != nil {
		t.Fatal(err)
	}
	if !stream.Receive() {
		t.Fatalf("no first message: %v", stream.Err())
	}
	if s := stream.Msg().GetJob().GetState(); s != "PENDING" {
		t.Fatalf("first state %s, want PENDING", s)
	}
	forceState(t, e.st, j.GetId(), domain.JobProvisioning)
	if !stream.Receive() {
		t.Fatalf("no second message: %v", stream.Err())
	}
	if s := stream.Msg().GetJob().GetState(); s != "PROVISIONING" {
		t.Fatalf("second state %s, want PROVISIONING", s)
	}
	forceState(t, e.st, j.GetId(), domain.JobAssigned, domain.JobRunning, domain.JobFailed)
	var last string
	for stream.Receive() {
		last = stream.Msg().GetJob().GetState()
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("stream ended with %v", err)
	}
	if last != "FAILED" {
		t.Fatalf("last state %q, want FAILED (the stream ends after a terminal state)", last)
	}

	_, err = e.jobs.WatchJob(ctx, connect.NewRequest(&hodeiv1.WatchJobRequest{Id: "00000000-0000-0000-0000-000000000000"}))
	if err == nil {
		s, _ := e.jobs.WatchJob(ctx, connect.NewRequest(&hodeiv1.WatchJobRequest{Id: "00000000-0000-0000-0000-000000000000"}))
		for s.Receive() {
		}
		err = s.Err()
	}
	if code := codeOf(t, err); code != connect.CodeNotFound {
		t.Fatalf("watch unknown: %v", err)
	}
}

func TestStreamLogsStoredThenFollow(t *testing.T) {
	e := newEnv(t, false)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	j := e.submit(t, echoSpec(nil))
	id := j.GetId()
	forceState(t, e.st, id, domain.JobProvisioning, domain.JobAssigned, domain.JobRunning)
	appendLines(t, e.st, id, 1, 3)

	// Without follow: the stored lines, then the end.
	s, err := e.jobs.StreamLogs(ctx, connect.NewRequest(&hodeiv1.StreamLogsRequest{Id: id}))
	if err != nil {
		t.Fatal(err)
	}
	if got := collectSeqs(s); len(got) != 3 || got[0] != 1 || got[2] != 3 {
		t.Fatalf("stored lines %v, want [1 2 3]", got)
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}

	// Follow from after_seq 1: lines 2, 3, then 4 and 5 written later, then the end once
	// the job is terminal.
	f, err := e.jobs.StreamLogs(ctx, connect.NewRequest(&hodeiv1.StreamLogsRequest{Id: id, Follow: true, AfterSeq: 1}))
	if err != nil {
		t.Fatal(err)
	}
	var seqs []int64
	recv := func(n int) {
		t.Helper()
		for len(seqs) < n {
			if !f.Receive() {
				t.Fatalf("follow ended early after %v: %v", seqs, f.Err())
			}
			for _, l := range f.Msg().GetLines() {
				seqs = append(seqs, l.GetSeq())
			}
		}
	}
	recv(2)
	appendLines(t, e.st, id, 4, 5)
	recv(4)
	appendLines(t, e.st, id, 6, 6)
	forceState(t, e.st, id, domain.JobSucceeded)
	for f.Receive() {
		for _, l := range f.Msg().GetLines() {
			seqs = append(seqs, l.GetSeq())
		}
	}
	if err := f.Err(); err != nil {
		t.Fatalf("follow ended with %v", err)
	}
	want := []int64{2, 3, 4, 5, 6}
	if len(seqs) != len(want) {
		t.Fatalf("followed %v, want %v", seqs, want)
	}
	for i := range want {
		if seqs[i] != want[i] {
			t.Fatalf("followed %v, want %v", seqs, want)
		}
	}

	s, err = e.jobs.StreamLogs(ctx, connect.NewRequest(&hodeiv1.StreamLogsRequest{Id: "00000000-0000-0000-0000-000000000000"}))
	if err == nil {
		for s.Receive() {
		}
		err = s.Err()
	}
	if code := codeOf(t, err); code != connect.CodeNotFound {
		t.Fatalf("logs of unknown job: %v", err)
	}
}

func appendLines(t *testing.T, st store.Store, jobID string, from, to int64) {
	t.Helper()
	var lines []*store.LogLine
	for s := from; s <= to; s++ {
		lines = append(lines, &store.LogLine{JobID: jobID, Seq: s, Stream: store.StreamStdout, Line: "line", Time: time.Now()})
	}
	if _, err := st.Logs().Append(t.Context(), lines...); err != nil {
		t.Fatal(err)
	}
}

func collectSeqs(s *connect.ServerStreamForClient[hodeiv1.StreamLogsResponse]) []int64 {
	var out []int64
	for s.Receive() {
		for _, l := range s.Msg().GetLines() {
			out = append(out, l.GetSeq())
		}
	}
	return out
}

func TestHealthAndReady(t *testing.T) {
	e := newEnv(t, false)
	get := func(path string) (int, string) {
		t.Helper()
		res, err := e.client.Get(e.url + path)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	if code, body := get("/healthz"); code != 200 || strings.TrimSpace(body) != "ok" {
		t.Fatalf("/healthz = %d %q", code, body)
	}
	if code, body := get("/readyz"); code != 200 {
		t.Fatalf("/readyz = %d %q", code, body)
	}
	e.ready.set(errors.New("broker gone"))
	if code, body := get("/readyz"); code != 503 || !strings.Contains(body, "toggle: broker gone") {
		t.Fatalf("/readyz with a failing probe = %d %q", code, body)
	}
}

func durationpbNew(d time.Duration) *durationpb.Duration { return durationpb.New(d) }

// TestProtocols: gRPC, gRPC-Web and Connect (JSON too) are served on one h2c port.
func TestProtocols(t *testing.T) {
	e := newEnv(t, false)
	j := e.submit(t, echoSpec(nil))
	var http1 http.Protocols
	http1.SetHTTP1(true)
	h1 := &http.Client{Transport: &http.Transport{Protocols: &http1}}
	for name, c := range map[string]hodeiv1connect.JobServiceClient{
		"grpc":          hodeiv1connect.NewJobServiceClient(e.client, e.url, connect.WithGRPC()),
		"grpc-web":      hodeiv1connect.NewJobServiceClient(e.client, e.url, connect.WithGRPCWeb()),
		"grpc-web/h1":   hodeiv1connect.NewJobServiceClient(h1, e.url, connect.WithGRPCWeb()),
		"connect-json":  hodeiv1connect.NewJobServiceClient(h1, e.url, connect.WithProtoJSON()),
		"connect-proto": hodeiv1connect.NewJobServiceClient(h1, e.url),
	} {
		res, err := c.GetJob(t.Context(), connect.NewRequest(&hodeiv1.GetJobRequest{Id: j.GetId()}))
		if err != nil || res.Msg.GetJob().GetState() != "PENDING" {
			t.Errorf("%s: GetJob = %v, %v", name, res, err)
		}
		_, err = c.GetJob(t.Context(), connect.NewRequest(&hodeiv1.GetJobRequest{Id: "00000000-0000-0000-0000-000000000000"}))
		if connect.CodeOf(err) != connect.CodeNotFound {
			t.Errorf("%s: unknown job: %v", name, err)
		}
	}
}
