package agent

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	hodeiv1 "github.com/hodei-jobs/hodei/gen/hodei/v1"
	"github.com/hodei-jobs/hodei/gen/hodei/v1/hodeiv1connect"
)

// fakeServer is an in-test WorkerAgentService that behaves like the real one for what
// the agent relies on: Register with a one-time password, a bearer-authenticated
// Connect stream, RunJob re-sent on every (re)connect until the job's result is
// acknowledged, Ack by message_id.
type fakeServer struct {
	hodeiv1connect.UnimplementedWorkerAgentServiceHandler

	otp  string // the valid one-time password
	used string // a password that was already used
	// token returned by Register; Connect accepts only "tok".
	token string
	job   *hodeiv1.RunJob
	// dropFirstResult: on the first JobResult, end the stream without acking.
	dropFirstResult bool
	cancelOnStart   bool

	mu            sync.Mutex
	registers     int
	connects      int
	protoMajor    []int
	resultIDs     []string
	results       []*hodeiv1.JobResult
	started       int
	lines         map[int64]*hodeiv1.LogLine
	jobAcked      bool
	heartbeats    int
	serverAckSeen int
	changed       chan struct{}
}

func (s *fakeServer) notify() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

func (s *fakeServer) Register(_ context.Context, req *connect.Request[hodeiv1.RegisterRequest]) (*connect.Response[hodeiv1.RegisterResponse], error) {
	s.mu.Lock()
	s.registers++
	s.mu.Unlock()
	switch req.Msg.GetOneTimePassword() {
	case s.otp:
	case s.used:
		return nil, connect.NewError(connect.CodePermissionDenied, errors.New("one-time password already used"))
	default:
		return nil, connect.NewError(connect.CodeUnauthenticated, errors.New("unknown or expired one-time password"))
	}
	return connect.NewResponse(&hodeiv1.RegisterResponse{
		WorkerId:          req.Msg.GetWorkerId(),
		SessionToken:      s.token,
		HeartbeatInterval: durationpb.New(100 * time.Millisecond),
	}), nil
}

func (s *fakeServer) Connect(ctx context.Context, stream *connect.BidiStream[hodeiv1.WorkerMessage, hodeiv1.ServerMessage]) error {
	if stream.RequestHeader().Get("Authorization") != "Bearer tok" {
		return connect.NewError(connect.CodeUnauthenticated, errors.New("invalid session token"))
	}
	s.mu.Lock()
	s.connects++
	n := s.connects
	resend := s.job != nil && !s.jobAcked
	s.mu.Unlock()
	if resend {
		if err := stream.Send(&hodeiv1.ServerMessage{MessageId: "run-" + strconv.Itoa(n), Payload: &hodeiv1.ServerMessage_RunJob{RunJob: s.job}}); err != nil {
			return err
		}
	}
	for {
		m, err := stream.Receive()
		if err != nil {
			return nil
		}
		var reply *hodeiv1.ServerMessage
		s.mu.Lock()
		switch p := m.GetPayload().(type) {
		case *hodeiv1.WorkerMessage_Heartbeat:
			s.heartbeats++
		case *hodeiv1.WorkerMessage_Ack:
			s.serverAckSeen++
		case *hodeiv1.WorkerMessage_Started:
			s.started++
			if s.cancelOnStart {
				reply = &hodeiv1.ServerMessage{MessageId: "cancel", Payload: &hodeiv1.ServerMessage_Cancel{Cancel: &hodeiv1.CancelJob{
					JobId: p.Started.GetJobId(), Reason: "test", GracePeriod: durationpb.New(time.Second)}}}
			}
		case *hodeiv1.WorkerMessage_Logs:
			for _, l := range p.Logs.GetLines() {
				s.lines[l.GetSeq()] = l // idempotent on seq, like the real store
			}
			reply = ack(m.GetMessageId())
		case *hodeiv1.WorkerMessage_Result:
			s.results = append(s.results, p.Result)
			s.resultIDs = append(s.resultIDs, m.GetMessageId())
			if s.dropFirstResult && len(s.results) == 1 {
				s.mu.Unlock()
				s.notify()
				return connect.NewError(connect.CodeUnavailable, errors.New("simulated server crash before ack"))
			}
			s.jobAcked = true
			reply = ack(m.GetMessageId())
		}
		s.mu.Unlock()
		s.notify()
		if reply != nil {
			if err := stream.Send(reply); err != nil {
				return nil
			}
		}
	}
}

func ack(id string) *hodeiv1.ServerMessage {
	return &hodeiv1.ServerMessage{MessageId: "ack-" + id, Payload: &hodeiv1.ServerMessage_Ack{Ack: &hodeiv1.Ack{MessageId: id}}}
}

// start serves s over HTTP/1.1 and h2c, like the real server's mux.
func (s *fakeServer) start(t *testing.T) string {
	t.Helper()
	s.lines = map[int64]*hodeiv1.LogLine{}
	s.changed = make(chan struct{}, 1)
	if s.token == "" {
		s.token = "tok"
	}
	path, h := hodeiv1connect.NewWorkerAgentServiceHandler(s)
	mux := http.NewServeMux()
	mux.Handle(path, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.protoMajor = append(s.protoMajor, r.ProtoMajor)
		s.mu.Unlock()
		h.ServeHTTP(w, r)
	}))
	srv := httptest.NewUnstartedServer(mux)
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv.Config.Protocols = &p
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.URL
}

func (s *fakeServer) sortedLines() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, len(s.lines))
	for seq, l := range s.lines {
		if seq < 1 || int(seq) > len(out) {
			return nil // a gap
		}
		out[seq-1] = l.GetLine()
	}
	return out
}

func testConfig(url, otp string) Config {
	return Config{
		ServerURL:       url,
		WorkerID:        "worker-1",
		OneTimePassword: otp,
		IdleTimeout:     300 * time.Millisecond,
		FirstJobTimeout: 10 * time.Second,
		RegisterTimeout: 5 * time.Second,
		ResultResend:    10 * time.Second, // rely on reconnect in the tests
		Logger:          slog.New(slog.NewTextHandler(io.Discard, nil)),
		exec:            execOptions{MaxBatchDelay: 20 * time.Millisecond},
	}
}

func runAgent(t *testing.T, ctx context.Context, cfg Config) chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg) }()
	return done
}

func waitRun(t *testing.T, done chan error, d time.Duration) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		t.Fatalf("agent did not exit within %s", d)
		return nil
	}
}

func TestAgentRunsJobAndResultIsAcked(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "runs")
	s := &fakeServer{otp: "good", job: &hodeiv1.RunJob{JobId: "job-1", Attempt: 1, Spec: &hodeiv1.JobSpec{
		Script: &hodeiv1.Script{Content: "echo run >> " + marker + "\necho hello\necho oops >&2\nexit 4\n"},
	}}}
	url := s.start(t)
	err := waitRun(t, runAgent(t, context.Background(), testConfig(url, "good")), 10*time.Second)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.results) != 1 || s.results[0].GetExitCode() != 4 || s.results[0].GetJobId() != "job-1" || s.results[0].GetCancelled() {
		t.Fatalf("results %v", s.results)
	}
	if s.started != 1 || !s.jobAcked || s.serverAckSeen == 0 {
		t.Fatalf("started=%d acked=%v agent acks=%d", s.started, s.jobAcked, s.serverAckSeen)
	}
	for _, pm := range s.protoMajor {
		if pm != 2 {
			t.Fatalf("requests used HTTP/%d, want HTTP/2 (h2c)", pm)
		}
	}
	s.mu.Unlock()
	got := s.sortedLines()
	s.mu.Lock()
	// stdout and stderr are read concurrently: seq orders lines within a stream only.
	slices.Sort(got)
	if strings.Join(got, "|") != "hello|oops" {
		t.Fatalf("log lines %q", got)
	}
}

func TestAgentResendsResultAfterReconnect(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "runs")
	s := &fakeServer{otp: "good", dropFirstResult: true, job: &hodeiv1.RunJob{JobId: "job-2", Spec: &hodeiv1.JobSpec{
		Command: []string{"sh", "-c", "echo run >> " + marker + "; echo done"},
	}}}
	url := s.start(t)
	err := waitRun(t, runAgent(t, context.Background(), testConfig(url, "good")), 10*time.Second)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.connects < 2 {
		t.Fatalf("connects = %d, want a reconnect", s.connects)
	}
	if len(s.results) != 2 || s.resultIDs[0] != s.resultIDs[1] || s.results[1].GetExitCode() != 0 {
		t.Fatalf("results %v ids %v: want the same result twice (re-sent after reconnect)", s.results, s.resultIDs)
	}
	if !s.jobAcked {
		t.Fatal("result never acked")
	}
	// The RunJob re-sent on reconnect was not run again.
	b, err := os.ReadFile(marker)
	if err != nil || string(b) != "run\n" {
		t.Fatalf("job ran %q times (err %v), want once", b, err)
	}
}

func TestAgentBadOTPExits(t *testing.T) {
	s := &fakeServer{otp: "good", used: "used"}
	url := s.start(t)
	for _, tc := range []struct {
		otp  string
		code connect.Code
	}{{"wrong", connect.CodeUnauthenticated}, {"used", connect.CodePermissionDenied}} {
		start := time.Now()
		err := waitRun(t, runAgent(t, context.Background(), testConfig(url, tc.otp)), 5*time.Second)
		var re *RegistrationError
		if !errors.As(err, &re) || re.Code != tc.code || !strings.Contains(err.Error(), "refused") {
			t.Fatalf("otp %q: err = %v, want RegistrationError %s", tc.otp, err, tc.code)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("refusal took %s: retried?", d)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.registers != 2 || s.connects != 0 {
		t.Fatalf("registers=%d connects=%d, want 2 and 0 (no retry)", s.registers, s.connects)
	}
}

func TestAgentBadSessionExits(t *testing.T) {
	s := &fakeServer{otp: "good", token: "stale"}
	url := s.start(t)
	err := waitRun(t, runAgent(t, context.Background(), testConfig(url, "good")), 5*time.Second)
	var re *RegistrationError
	if !errors.As(err, &re) || re.Code != connect.CodeUnauthenticated {
		t.Fatalf("err = %v, want RegistrationError Unauthenticated from the stream", err)
	}
}

func TestAgentCancelJob(t *testing.T) {
	s := &fakeServer{otp: "good", cancelOnStart: true, job: &hodeiv1.RunJob{JobId: "job-c", Spec: &hodeiv1.JobSpec{Command: []string{"sleep", "100"}}}}
	url := s.start(t)
	err := waitRun(t, runAgent(t, context.Background(), testConfig(url, "good")), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.results) != 1 || !s.results[0].GetCancelled() || s.results[0].GetExitCode() != 143 {
		t.Fatalf("results %v, want one cancelled with exit 143", s.results)
	}
}

// Terminating the agent (SIGTERM → ctx cancelled in `hodei worker`) stops the job's
// whole process group.
func TestAgentShutdownKillsJob(t *testing.T) {
	s := &fakeServer{otp: "good", job: &hodeiv1.RunJob{JobId: "job-k", Spec: &hodeiv1.JobSpec{
		Command: []string{"sh", "-c", "sleep 100 & echo $!; echo $$; wait"},
	}}}
	url := s.start(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := runAgent(t, ctx, testConfig(url, "good"))
	var lines []string
	deadline := time.After(5 * time.Second)
	for len(lines) < 2 {
		select {
		case <-s.changed:
			lines = s.sortedLines()
		case <-deadline:
			t.Fatalf("job output %q", lines)
		}
	}
	cancel()
	if err := waitRun(t, done, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, l := range lines {
		pid, err := strconv.Atoi(l)
		if err != nil {
			t.Fatal(err)
		}
		waitDead(t, pid)
	}
}

func TestAgentConfigValidate(t *testing.T) {
	err := Run(context.Background(), Config{ServerURL: "http://x", WorkerID: "w"})
	if err == nil || !strings.Contains(err.Error(), "OneTimePassword") {
		t.Fatalf("err = %v", err)
	}
}

func TestTruncate(t *testing.T) {
	if got := truncate("abc", 5); got != "abc" {
		t.Fatal(got)
	}
	if got := truncate("abcé", 4); got != "abc…" {
		t.Fatalf("%q", got)
	}
}

// The reconnect backoff never exceeds the heartbeat interval the server gave (so a
// worker whose server restarted is back before it can count as lost), nor goes below
// ReconnectMin.
func TestReconnectBackoffCappedByHeartbeat(t *testing.T) {
	cfg := Config{ReconnectMin: 100 * time.Millisecond, ReconnectMax: 5 * time.Second}
	for _, c := range []struct{ hb, want time.Duration }{
		{0, 5 * time.Second},                            // not registered yet
		{time.Second, time.Second},                      // the server's interval
		{10 * time.Second, 5 * time.Second},             // ReconnectMax is smaller
		{10 * time.Millisecond, 100 * time.Millisecond}, // never below ReconnectMin
	} {
		a := &agent{cfg: cfg, hbEvery: c.hb}
		if got := a.reconnectMax(); got != c.want {
			t.Errorf("heartbeat %s: reconnect backoff max %s, want %s", c.hb, got, c.want)
		}
	}
}

// A worker given several servers (one gone) registers with the one that answers, and
// a stream that breaks on one server is taken up by the next: the job runs once and
// its result reaches the second server.
func TestAgentMovesToNextServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gone := "http://" + ln.Addr().String() // a replica that is down: connection refused
	_ = ln.Close()

	marker := filepath.Join(t.TempDir(), "runs")
	job := &hodeiv1.RunJob{JobId: "job-move", Spec: &hodeiv1.JobSpec{
		Command: []string{"sh", "-c", "echo run >> " + marker + "; echo one; sleep 0.3; echo two"},
	}}
	a := &fakeServer{otp: "good", dropFirstResult: true, job: job} // breaks the stream at the result
	b := &fakeServer{otp: "good", job: job}
	cfg := testConfig(gone+", "+a.start(t)+","+b.start(t), "good")
	if err := waitRun(t, runAgent(t, context.Background(), cfg), 20*time.Second); err != nil {
		t.Fatalf("Run: %v", err)
	}
	a.mu.Lock()
	aRegs, aResults := a.registers, len(a.results)
	a.mu.Unlock()
	b.mu.Lock()
	defer b.mu.Unlock()
	if aRegs != 1 || aResults != 1 {
		t.Fatalf("server a: %d registrations, %d results; want 1 and 1 (the dropped one)", aRegs, aResults)
	}
	if b.connects < 1 || len(b.results) != 1 || !b.jobAcked || b.results[0].GetJobId() != "job-move" {
		t.Fatalf("server b: %d connects, results %v, acked %v: want the result re-sent to b", b.connects, b.results, b.jobAcked)
	}
	if got, err := os.ReadFile(marker); err != nil || string(got) != "run\n" {
		t.Fatalf("job ran %q (err %v), want once", got, err)
	}
}

func TestAgentServerListValidate(t *testing.T) {
	for _, tc := range []struct{ urls, want string }{
		{" , ", "ServerURL is empty"},
		{"http://a:1,ftp://b", `"ftp://b" is not an http`},
		{"http://a:1,https://b:2", "mix http and https"},
	} {
		err := Run(context.Background(), Config{ServerURL: tc.urls, WorkerID: "w", OneTimePassword: "p"})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ServerURL %q: err = %v, want %q", tc.urls, err, tc.want)
		}
	}
}
