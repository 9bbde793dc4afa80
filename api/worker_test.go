package api_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	hodeiv1 "github.com/hodei-jobs/hodei/gen/hodei/v1"
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
