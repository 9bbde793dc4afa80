package api_test

import (
	"context"
	"crypto/sha256"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/hodei-jobs/hodei/api"
	"github.com/hodei-jobs/hodei/domain"
	hodeiv1 "github.com/hodei-jobs/hodei/gen/hodei/v1"
	"github.com/hodei-jobs/hodei/gen/hodei/v1/hodeiv1connect"
	"github.com/hodei-jobs/hodei/jobs"
	"github.com/hodei-jobs/hodei/provider"
)

func TestRegisterAndConnectAuth(t *testing.T) {
	e := newEnv(t, false)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()

	_, err := e.workers.Register(ctx, connect.NewRequest(&hodeiv1.RegisterRequest{WorkerId: "w-unknown", OneTimePassword: "nope"}))
	if code := codeOf(t, err); code != connect.CodeUnauthenticated {
		t.Fatalf("bad OTP: %v, want Unauthenticated", err)
	}
	_, err = e.workers.Register(ctx, connect.NewRequest(&hodeiv1.RegisterRequest{WorkerId: "w-unknown"}))
	if code := codeOf(t, err); code != connect.CodeUnauthenticated {
		t.Fatalf("no OTP: %v, want Unauthenticated", err)
	}
	_, err = e.workers.Register(ctx, connect.NewRequest(&hodeiv1.RegisterRequest{WorkerId: "a.b", OneTimePassword: "x"}))
	if code := codeOf(t, err); code != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "worker_id") {
		t.Fatalf("bad worker id: %v, want InvalidArgument naming worker_id", err)
	}

	for _, auth := range []string{"", "Bearer not-a-session", "Basic abc", "Bearer "} {
		stream := e.workers.Connect(ctx)
		if auth != "" {
			stream.RequestHeader().Set("Authorization", auth)
		}
		_ = stream.Send(&hodeiv1.WorkerMessage{MessageId: "m1", Payload: &hodeiv1.WorkerMessage_Heartbeat{Heartbeat: &hodeiv1.Heartbeat{}}})
		_, err := stream.Receive()
		if code := codeOf(t, err); code != connect.CodeUnauthenticated {
			t.Fatalf("Connect with %q: %v, want Unauthenticated", auth, err)
		}
		_ = stream.CloseRequest()
		_ = stream.CloseResponse()
	}
}

// workerStream is the test playing a worker agent on a Connect stream.
type workerStream struct {
	t *testing.T
	s *connect.BidiStreamForClient[hodeiv1.WorkerMessage, hodeiv1.ServerMessage]
}

func (e *env) connectWorker(t *testing.T, ctx context.Context, token string) *workerStream {
	t.Helper()
	s := e.workers.Connect(ctx)
	s.RequestHeader().Set("Authorization", "Bearer "+token)
	t.Cleanup(func() { _ = s.CloseRequest(); _ = s.CloseResponse() })
	return &workerStream{t: t, s: s}
}

func (w *workerStream) send(m *hodeiv1.WorkerMessage) {
	w.t.Helper()
	if err := w.s.Send(m); err != nil {
		w.t.Fatalf("send %v: %v", m, err)
	}
}

// next receives until pred matches, skipping other messages.
func (w *workerStream) next(what string, pred func(*hodeiv1.ServerMessage) bool) *hodeiv1.ServerMessage {
	w.t.Helper()
	for {
		m, err := w.s.Receive()
		if err != nil {
			w.t.Fatalf("waiting for %s: %v", what, err)
		}
		if pred(m) {
			return m
		}
	}
}

func (w *workerStream) ack(id string) {
	w.t.Helper()
	w.next("ack of "+id, func(m *hodeiv1.ServerMessage) bool { return m.GetAck().GetMessageId() == id })
}

// TestWorkerPath drives the job path through the API with the test as the worker:
// submit → (scheduler, provisioning saga) provider.Create hands over the password →
// Register → Connect → RunJob → started, logs, result (each acked after it was
// recorded) → SUCCEEDED, seen by WatchJob, output readable by StreamLogs.
func TestWorkerPath(t *testing.T) {
	e := newEnv(t, true)
	ctx, cancel := context.WithTimeout(t.Context(), 45*time.Second)
	defer cancel()

	job := e.submit(t, echoSpec(nil))
	watch, err := e.jobs.WatchJob(ctx, connect.NewRequest(&hodeiv1.WatchJobRequest{Id: job.GetId()}))
	if err != nil {
		t.Fatal(err)
	}
	states := make(chan []string, 1)
	go func() {
		var seen []string
		for watch.Receive() {
			seen = append(seen, watch.Msg().GetJob().GetState())
		}
		states <- seen
	}()

	var spec provider.WorkerSpec
	select {
	case spec = <-e.provider.specs:
	case <-ctx.Done():
		t.Fatal("the provider was never asked for a worker")
	}
	if spec.JobID != job.GetId() || spec.OneTimePassword == "" {
		t.Fatalf("worker spec %+v", spec)
	}
	reg, err := e.workers.Register(ctx, connect.NewRequest(&hodeiv1.RegisterRequest{WorkerId: spec.WorkerID, OneTimePassword: spec.OneTimePassword}))
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	if reg.Msg.GetSessionToken() == "" || reg.Msg.GetHeartbeatInterval().AsDuration() <= 0 {
		t.Fatalf("RegisterResponse %v", reg.Msg)
	}
	_, err = e.workers.Register(ctx, connect.NewRequest(&hodeiv1.RegisterRequest{WorkerId: spec.WorkerID, OneTimePassword: spec.OneTimePassword}))
	if code := codeOf(t, err); code != connect.CodePermissionDenied {
		t.Fatalf("reused OTP: %v, want PermissionDenied", err)
	}

	// The worker's stream has no deadline, like a real agent's.
	streamCtx, endStream := context.WithCancel(context.Background())
	defer endStream()
	w := e.connectWorker(t, streamCtx, reg.Msg.GetSessionToken())
	w.send(&hodeiv1.WorkerMessage{MessageId: "hb1", Payload: &hodeiv1.WorkerMessage_Heartbeat{Heartbeat: &hodeiv1.Heartbeat{}}})
	run := w.next("RunJob", func(m *hodeiv1.ServerMessage) bool { return m.GetRunJob() != nil })
	if run.GetRunJob().GetJobId() != job.GetId() || run.GetRunJob().GetSpec().GetCommand()[0] != "echo" {
		t.Fatalf("RunJob %v", run)
	}

	w.send(&hodeiv1.WorkerMessage{MessageId: "s1", Payload: &hodeiv1.WorkerMessage_Started{Started: &hodeiv1.JobStarted{JobId: job.GetId()}}})
	w.ack("s1")
	w.send(&hodeiv1.WorkerMessage{MessageId: "l1", Payload: &hodeiv1.WorkerMessage_Logs{Logs: &hodeiv1.LogBatch{
		JobId: job.GetId(),
		Lines: []*hodeiv1.LogLine{
			{Seq: 1, Stream: hodeiv1.LogStream_LOG_STREAM_STDOUT, Line: "hi"},
			{Seq: 2, Stream: hodeiv1.LogStream_LOG_STREAM_STDERR, Line: "warn"},
		}}}})
	w.ack("l1")

	// A second stream of the same worker sends a malformed result: that stream ends
	// with InvalidArgument naming the field; the first one is unaffected.
	bad := e.connectWorker(t, ctx, reg.Msg.GetSessionToken())
	bad.send(&hodeiv1.WorkerMessage{MessageId: "bad", Payload: &hodeiv1.WorkerMessage_Result{Result: &hodeiv1.JobResult{}}})
	for {
		_, err := bad.s.Receive()
		if err == nil {
			continue // a re-sent RunJob
		}
		if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "result.job_id") {
			t.Fatalf("malformed result: %v, want InvalidArgument naming result.job_id", err)
		}
		break
	}

	result := &hodeiv1.WorkerMessage{MessageId: "r1", Payload: &hodeiv1.WorkerMessage_Result{Result: &hodeiv1.JobResult{JobId: job.GetId(), ExitCode: 0}}}
	w.send(result)
	w.ack("r1")
	w.send(result) // re-sent (say, the ack was lost): acked again, recorded once
	w.ack("r1")

	var seen []string
	select {
	case seen = <-states:
	case <-ctx.Done():
		t.Fatal("WatchJob did not end")
	}
	if err := watch.Err(); err != nil {
		t.Fatalf("WatchJob: %v", err)
	}
	// The first message is the job as it is when the watch opens: the scheduler may
	// already have moved it on from PENDING, but not past ASSIGNED (no worker yet).
	if len(seen) < 2 || !slices.Contains([]string{"PENDING", "PROVISIONING", "ASSIGNED"}, seen[0]) || seen[len(seen)-1] != "SUCCEEDED" {
		t.Fatalf("WatchJob states %v, want PENDING|PROVISIONING|ASSIGNED … SUCCEEDED", seen)
	}
	got, err := e.jobs.GetJob(ctx, connect.NewRequest(&hodeiv1.GetJobRequest{Id: job.GetId()}))
	if err != nil {
		t.Fatal(err)
	}
	if j := got.Msg.GetJob(); j.ExitCode == nil || j.GetExitCode() != 0 || j.GetStartedAt() == nil || j.GetFinishedAt() == nil {
		t.Fatalf("finished job %v", j)
	}

	logs, err := e.jobs.StreamLogs(ctx, connect.NewRequest(&hodeiv1.StreamLogsRequest{Id: job.GetId(), Follow: true}))
	if err != nil {
		t.Fatal(err)
	}
	var lines []*hodeiv1.LogLine
	for logs.Receive() {
		lines = append(lines, logs.Msg().GetLines()...)
	}
	if err := logs.Err(); err != nil {
		t.Fatal(err)
	}
	if len(lines) != 2 || lines[0].GetLine() != "hi" || lines[1].GetStream() != hodeiv1.LogStream_LOG_STREAM_STDERR {
		t.Fatalf("logs %v", lines)
	}

	// The saga releases and destroys the worker.
	deadline := time.Now().Add(20 * time.Second)
	for !e.provider.destroyed(spec.WorkerID) {
		if time.Now().After(deadline) {
			t.Fatal("worker never destroyed")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A worker's stream opening counts as a heartbeat, and a stream that ends (the client
// went away, not a server shutdown) tells jobs.Service, which recovers the job unless
// the worker is back within the grace.
func TestWorkerStreamCloseRecovers(t *testing.T) {
	e := newEnv(t, true)
	ctx, cancel := context.WithTimeout(t.Context(), 45*time.Second)
	defer cancel()
	loops, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- e.svc.RunCleanup(loops, jobs.CleanupConfig{Interval: time.Hour, HeartbeatInterval: time.Second,
			LostAfter: 10 * time.Second, DisconnectGrace: time.Second})
	}()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("RunCleanup: %v", err)
		}
	})

	spec := echoSpec(nil)
	spec.MaxAttempts = 2
	job := e.submit(t, spec)
	var ws provider.WorkerSpec
	select {
	case ws = <-e.provider.specs:
	case <-ctx.Done():
		t.Fatal("the provider was never asked for a worker")
	}
	reg, err := e.workers.Register(ctx, connect.NewRequest(&hodeiv1.RegisterRequest{WorkerId: ws.WorkerID, OneTimePassword: ws.OneTimePassword}))
	if err != nil {
		t.Fatal(err)
	}
	token := reg.Msg.GetSessionToken()

	// An ack (a no-op for the server) opens a stream without a heartbeat message.
	noop := &hodeiv1.WorkerMessage{Payload: &hodeiv1.WorkerMessage_Ack{Ack: &hodeiv1.Ack{MessageId: "none"}}}
	open := func() (*workerStream, context.CancelFunc) {
		sctx, end := context.WithCancel(context.Background())
		w := e.connectWorker(t, sctx, token)
		w.send(noop)
		w.next("RunJob", func(m *hodeiv1.ServerMessage) bool { return m.GetRunJob() != nil })
		return w, end
	}
	w, end := open() // no heartbeat message: the stream's opening is one
	wk, err := e.st.Workers().Get(ctx, ws.WorkerID)
	if err != nil {
		t.Fatal(err)
	}
	first := wk.LastHeartbeat
	if first.IsZero() {
		t.Fatal("no heartbeat recorded when the stream opened")
	}
	w.send(&hodeiv1.WorkerMessage{MessageId: "s1", Payload: &hodeiv1.WorkerMessage_Started{Started: &hodeiv1.JobStarted{JobId: job.GetId()}}})
	w.ack("s1")

	// The worker goes away and comes back at once (its job is RUNNING: the RunJob is not
	// re-sent, so the new stream just stays open): nothing happens.
	end()
	time.Sleep(100 * time.Millisecond) // the server sees the close before the reconnect
	sctx, end2 := context.WithCancel(context.Background())
	defer end2()
	e.connectWorker(t, sctx, token).send(noop)
	deadline := time.Now().Add(10 * time.Second)
	for {
		wk, err := e.st.Workers().Get(ctx, ws.WorkerID)
		if err != nil {
			t.Fatal(err)
		}
		if wk.LastHeartbeat.After(first) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no heartbeat recorded when the worker reconnected")
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(1500 * time.Millisecond) // past the grace
	got, err := e.st.Jobs().Get(ctx, job.GetId())
	if err != nil {
		t.Fatal(err)
	}
	if got.State != "RUNNING" || got.Attempt != 1 || got.WorkerID != ws.WorkerID {
		t.Fatalf("job after a reconnect within the grace: %s attempt %d on %s", got.State, got.Attempt, got.WorkerID)
	}

	// It goes away for good: the job moves to a replacement (attempt 2).
	end2()
	select {
	case repl := <-e.provider.specs:
		if repl.JobID != job.GetId() || repl.WorkerID == ws.WorkerID {
			t.Fatalf("replacement spec %+v", repl)
		}
	case <-ctx.Done():
		t.Fatal("no replacement worker after the stream closed")
	}
	got, err = e.st.Jobs().Get(ctx, job.GetId())
	if err != nil {
		t.Fatal(err)
	}
	if got.Attempt != 2 || !strings.Contains(got.LastError, "stream closed at") {
		t.Fatalf("job after the worker left: %s attempt %d, last error %q", got.State, got.Attempt, got.LastError)
	}
}

// recordingLogic is jobs.Service with its WorkerDisconnected calls recorded.
type recordingLogic struct {
	*jobs.Service
	closed chan string
}

func (r *recordingLogic) WorkerDisconnected(workerID string, at time.Time) { r.closed <- workerID }

// A stream ended by the server's shutdown (NewHTTPServer's base context) is no
// disconnect; one the client ends is.
func TestWorkerStreamEndShutdownVsClientGone(t *testing.T) {
	e := newEnv(t, false)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := e.st.Workers().Create(ctx, &domain.Worker{ID: "w-close", Provider: "hand", State: domain.WorkerCreating}); err != nil {
		t.Fatal(err)
	}
	otp := "otp-w-close-0123456789"
	hash := sha256.Sum256([]byte(otp))
	if err := e.st.Credentials().SetOTP(ctx, "w-close", hash[:], time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	token := "session-w-close-0123456789"
	tokenHash := sha256.Sum256([]byte(token))
	if err := e.st.Credentials().RedeemOTP(ctx, "w-close", hash[:], tokenHash[:], time.Now()); err != nil {
		t.Fatal(err)
	}

	logic := &recordingLogic{Service: e.svc, closed: make(chan string, 4)}
	hub, err := api.NewHub(e.nc)
	if err != nil {
		t.Fatal(err)
	}
	workerAPI, err := api.NewWorkerAgentService(logic, hub, api.WorkerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(hodeiv1connect.NewWorkerAgentServiceHandler(workerAPI))
	base, shutdown := context.WithCancel(context.Background())
	defer shutdown()
	hs := httptest.NewUnstartedServer(mux)
	hs.Config = api.NewHTTPServer(mux, base)
	hs.Start()
	defer hs.Close()
	client := hodeiv1connect.NewWorkerAgentServiceClient(&http.Client{Transport: &http.Transport{Protocols: h2cOnly()}}, hs.URL)

	open := func(sctx context.Context) *connect.BidiStreamForClient[hodeiv1.WorkerMessage, hodeiv1.ServerMessage] {
		s := client.Connect(sctx)
		s.RequestHeader().Set("Authorization", "Bearer "+token)
		if err := s.Send(&hodeiv1.WorkerMessage{Payload: &hodeiv1.WorkerMessage_Ack{Ack: &hodeiv1.Ack{MessageId: "x"}}}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.CloseRequest(); _ = s.CloseResponse() })
		return s
	}
	waitOpen := func(since time.Time) { // the stream's opening heartbeat
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; {
			w, err := e.st.Workers().Get(ctx, "w-close")
			if err != nil {
				t.Fatal(err)
			}
			if w.LastHeartbeat.After(since) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatal("stream never opened")
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	// The client goes away.
	sctx, end := context.WithCancel(ctx)
	t0 := time.Now().Add(-time.Millisecond)
	open(sctx)
	waitOpen(t0)
	end()
	select {
	case id := <-logic.closed:
		if id != "w-close" {
			t.Fatalf("disconnect of %q, want w-close", id)
		}
	case <-ctx.Done():
		t.Fatal("a stream the client ended was not reported")
	}

	// The server shuts down: the stream ends with Unavailable and nothing is reported.
	t1 := time.Now()
	s := open(ctx)
	waitOpen(t1)
	shutdown()
	for {
		if _, err := s.Receive(); err != nil {
			if connect.CodeOf(err) != connect.CodeUnavailable {
				t.Fatalf("stream at shutdown: %v, want Unavailable", err)
			}
			break
		}
	}
	select {
	case id := <-logic.closed:
		t.Fatalf("stream ended by shutdown reported as a disconnect of %s", id)
	case <-time.After(300 * time.Millisecond):
	}
}

// TestDroppedRunJobIsResent: the first RunJob on its way to the worker's stream is lost
// (the Drop fault hook). Nothing acknowledges it, so the execution saga's dispatch
// activity delivers it again, and the job runs to SUCCEEDED on the same stream.
func TestDroppedRunJobIsResent(t *testing.T) {
	var dropped atomic.Int32
	e := newEnvWith(t, true, envHooks{
		jobs: func(c *jobs.Config) { c.DeliveryTimeout = 300 * time.Millisecond },
		workers: func(o *api.WorkerOptions) {
			o.Drop = func(_ string, m *hodeiv1.ServerMessage) bool {
				return m.GetRunJob() != nil && dropped.CompareAndSwap(0, 1)
			}
		},
	})
	ctx, cancel := context.WithTimeout(t.Context(), 45*time.Second)
	defer cancel()
	job := e.submit(t, echoSpec(nil))
	var spec provider.WorkerSpec
	select {
	case spec = <-e.provider.specs:
	case <-ctx.Done():
		t.Fatal("the provider was never asked for a worker")
	}
	streamCtx, endStream := context.WithCancel(context.Background())
	defer endStream()
	reg, err := e.workers.Register(ctx, connect.NewRequest(&hodeiv1.RegisterRequest{WorkerId: spec.WorkerID, OneTimePassword: spec.OneTimePassword}))
	if err != nil {
		t.Fatal(err)
	}
	w := e.connectWorker(t, streamCtx, reg.Msg.GetSessionToken())
	w.send(&hodeiv1.WorkerMessage{MessageId: "hb1", Payload: &hodeiv1.WorkerMessage_Heartbeat{Heartbeat: &hodeiv1.Heartbeat{}}})
	run := w.next("RunJob", func(m *hodeiv1.ServerMessage) bool { return m.GetRunJob() != nil })
	if dropped.Load() != 1 {
		t.Fatal("the fault hook dropped no RunJob")
	}
	if run.GetRunJob().GetJobId() != job.GetId() || run.GetMessageId() != api.RunMessageID(job.GetId(), 1) {
		t.Fatalf("RunJob %v, want job %s with message id %s", run, job.GetId(), api.RunMessageID(job.GetId(), 1))
	}
	w.send(&hodeiv1.WorkerMessage{MessageId: "a1", Payload: &hodeiv1.WorkerMessage_Ack{Ack: &hodeiv1.Ack{MessageId: run.GetMessageId()}}})
	w.send(&hodeiv1.WorkerMessage{MessageId: "s1", Payload: &hodeiv1.WorkerMessage_Started{Started: &hodeiv1.JobStarted{JobId: job.GetId()}}})
	w.ack("s1")
	w.send(&hodeiv1.WorkerMessage{MessageId: "r1", Payload: &hodeiv1.WorkerMessage_Result{Result: &hodeiv1.JobResult{JobId: job.GetId()}}})
	w.ack("r1")
	for {
		got, err := e.jobs.GetJob(ctx, connect.NewRequest(&hodeiv1.GetJobRequest{Id: job.GetId()}))
		if err != nil {
			t.Fatal(err)
		}
		if got.Msg.GetJob().GetState() == "SUCCEEDED" {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("job is %s, want SUCCEEDED", got.Msg.GetJob().GetState())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The dispatch activity recorded the acknowledged delivery.
	if n := e.countSQL(t, `SELECT count(*) FROM saga_events WHERE saga_id = $1 AND type = 'step.completed' AND step = 'dispatch'`,
		jobs.ExecutionSagaID(job.GetId())); n != 1 {
		t.Fatalf("dispatch step completed %d times, want 1", n)
	}
}

func (e *env) countSQL(t *testing.T, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := e.st.Pool().QueryRow(t.Context(), sql, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
