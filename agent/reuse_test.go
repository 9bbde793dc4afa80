package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	hodeiv1 "github.com/hodei-jobs/hodei/gen/hodei/v1"
	"github.com/hodei-jobs/hodei/gen/hodei/v1/hodeiv1connect"
	"github.com/hodei-jobs/hodei/provider/providertest"
)

// seqServer is a WorkerAgentService that hands a worker its jobs one after another,
// like the control plane does with a reused worker: the next RunJob goes out once the
// previous job's result was acknowledged. next builds job i (from 0) from the output
// of the earlier ones; nil ends the sequence.
type seqServer struct {
	hodeiv1connect.UnimplementedWorkerAgentServiceHandler
	next func(i int, outputs [][]string) *hodeiv1.RunJob

	mu      sync.Mutex
	sent    int
	lines   map[string]map[int64]string // job → seq → line
	order   []string                    // job ids in sending order
	results []*hodeiv1.JobResult
	changed chan struct{}
}

func (s *seqServer) Register(_ context.Context, req *connect.Request[hodeiv1.RegisterRequest]) (*connect.Response[hodeiv1.RegisterResponse], error) {
	if req.Msg.GetOneTimePassword() != "good" {
		return nil, connect.NewError(connect.CodeUnauthenticated, errors.New("unknown one-time password"))
	}
	return connect.NewResponse(&hodeiv1.RegisterResponse{WorkerId: req.Msg.GetWorkerId(), SessionToken: "tok",
		HeartbeatInterval: durationpb.New(200 * time.Millisecond)}), nil
}

// outputsLocked returns every sent job's output lines in seq order.
func (s *seqServer) outputsLocked() [][]string {
	var out [][]string
	for _, id := range s.order {
		m := s.lines[id]
		ls := make([]string, 0, len(m))
		for i := int64(1); i <= int64(len(m)); i++ {
			ls = append(ls, m[i])
		}
		out = append(out, ls)
	}
	return out
}

// nextLocked returns the next RunJob to send, if any.
func (s *seqServer) nextLocked() *hodeiv1.ServerMessage {
	if s.sent != len(s.results) { // a job is out: wait for its result
		return nil
	}
	r := s.next(s.sent, s.outputsLocked())
	if r == nil {
		return nil
	}
	s.sent++
	s.order = append(s.order, r.GetJobId())
	s.lines[r.GetJobId()] = map[int64]string{}
	return &hodeiv1.ServerMessage{MessageId: "run-" + r.GetJobId(), Payload: &hodeiv1.ServerMessage_RunJob{RunJob: r}}
}

func (s *seqServer) Connect(ctx context.Context, stream *connect.BidiStream[hodeiv1.WorkerMessage, hodeiv1.ServerMessage]) error {
	if stream.RequestHeader().Get("Authorization") != "Bearer tok" {
		return connect.NewError(connect.CodeUnauthenticated, errors.New("invalid session token"))
	}
	s.mu.Lock()
	first := s.nextLocked()
	s.mu.Unlock()
	if first != nil {
		if err := stream.Send(first); err != nil {
			return nil
		}
	}
	for {
		m, err := stream.Receive()
		if err != nil {
			return nil
		}
		var replies []*hodeiv1.ServerMessage
		s.mu.Lock()
		switch p := m.GetPayload().(type) {
		case *hodeiv1.WorkerMessage_Logs:
			for _, l := range p.Logs.GetLines() {
				if ls := s.lines[p.Logs.GetJobId()]; ls != nil {
					ls[l.GetSeq()] = l.GetLine()
				}
			}
			replies = append(replies, ack(m.GetMessageId()))
		case *hodeiv1.WorkerMessage_Result:
			s.results = append(s.results, p.Result)
			replies = append(replies, ack(m.GetMessageId()))
			if n := s.nextLocked(); n != nil {
				replies = append(replies, n)
			}
		}
		s.mu.Unlock()
		select {
		case s.changed <- struct{}{}:
		default:
		}
		for _, r := range replies {
			if err := stream.Send(r); err != nil {
				return nil
			}
		}
	}
}

func (s *seqServer) start(t *testing.T) string {
	t.Helper()
	s.lines = map[string]map[int64]string{}
	s.changed = make(chan struct{}, 1)
	path, h := hodeiv1connect.NewWorkerAgentServiceHandler(s)
	mux := http.NewServeMux()
	mux.Handle(path, h)
	srv := httptest.NewUnstartedServer(mux)
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv.Config.Protocols = &p
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.URL
}

// startWorkerProcess runs the real `hodei worker` binary against url with env.
func startWorkerProcess(t *testing.T, url string, env ...string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	bin := providertest.Agent(t)
	cmd := exec.Command(bin, "worker", "--log-level", "debug")
	var logs bytes.Buffer
	cmd.Stderr = &logs
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(),
		"HODEI_SERVER=" + url, "HODEI_WORKER_ID=w-reuse", "HODEI_ONE_TIME_PASSWORD=good",
		"HODEI_WORKER_IDLE_TIMEOUT=100ms", "TMPDIR=" + t.TempDir()}, env...)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start hodei worker: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd, &logs
}

func waitExit(t *testing.T, cmd *exec.Cmd, logs *bytes.Buffer, d time.Duration) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("hodei worker: %v\n%s", err, logs)
		}
	case <-time.After(d):
		_ = cmd.Process.Kill()
		t.Fatalf("hodei worker did not exit within %s\n%s", d, logs)
	}
}

// value returns the value of the first "key=value" line of lines.
func value(lines []string, key string) string {
	for _, l := range lines {
		if v, ok := strings.CutPrefix(l, key+"="); ok {
			return v
		}
	}
	return ""
}

// TestReusedWorkerLeaksNothingToTheNextJob runs two jobs on one real `hodei worker`
// process with HODEI_WORKER_MAX_JOBS=2. The first leaves files in its working and
// temporary directories, a background process in its group, a daemon that left its
// group and session (setsid), and has its own variable and a secret. The second job, on
// the same agent process, must see none of them, and the daemon must be dead.
func TestReusedWorkerLeaksNothingToTheNextJob(t *testing.T) {
	shared := t.TempDir() // where the daemon writes its pid (outside the job's dirs)
	const secret = "s3cr3t-value-of-job-one"
	first := `echo first > "$PWD/left-in-cwd"; echo first > "$TMPDIR/left-in-tmp"
sleep 300 &
echo grouped=$!
setsid sh -c 'echo $$ > "` + shared + `/daemon.pid"; exec sleep 301' </dev/null >/dev/null 2>&1 &
for i in 1 2 3 4 5 6 7 8 9 10; do [ -s "` + shared + `/daemon.pid" ] && break; sleep 0.1; done
echo daemon=$(cat "` + shared + `/daemon.pid")
echo agent=$PPID
echo cwd=$PWD
echo tmp=$TMPDIR
echo only=$FIRST_ONLY
`
	s := &seqServer{next: func(i int, outs [][]string) *hodeiv1.RunJob {
		switch i {
		case 0:
			return &hodeiv1.RunJob{JobId: "job-1", Attempt: 1, Spec: &hodeiv1.JobSpec{
				Script: &hodeiv1.Script{Content: first},
				Env:    map[string]string{"FIRST_ONLY": "from-job-one"}},
				SecretEnv: []*hodeiv1.SecretEnv{{Env: "FIRST_SECRET", Value: secret}}}
		case 1:
			o := outs[0]
			second := fmt.Sprintf(`[ -e %q ] && echo found cwd file
[ -e %q ] && echo found tmp file
[ -e %q ] && echo found first job dir
kill -0 %s 2>/dev/null && echo found grouped process
kill -0 %s 2>/dev/null && echo found daemon
echo agent=$PPID
env
`, value(o, "cwd")+"/left-in-cwd", value(o, "tmp")+"/left-in-tmp", value(o, "cwd"), value(o, "grouped"), value(o, "daemon"))
			return &hodeiv1.RunJob{JobId: "job-2", Attempt: 1, Spec: &hodeiv1.JobSpec{Script: &hodeiv1.Script{Content: second}}}
		}
		return nil
	}}
	url := s.start(t)
	cmd, logs := startWorkerProcess(t, url, "HODEI_WORKER_MAX_JOBS=2")
	// It exits after its second job (IdleTimeout once no job is left).
	waitExit(t, cmd, logs, 30*time.Second)

	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.results) != 2 {
		t.Fatalf("results %v, want 2\n%s", s.results, logs)
	}
	for _, r := range s.results {
		if r.GetExitCode() != 0 && r.GetJobId() == "job-1" {
			t.Fatalf("job-1 result %v\n%s", r, logs)
		}
	}
	outs := s.outputsLocked()
	o1, o2 := outs[0], outs[1]
	if value(o1, "only") != "from-job-one" || value(o1, "cwd") == "" || value(o1, "daemon") == "" || value(o1, "grouped") == "" {
		t.Fatalf("job-1 output %q", o1)
	}
	if a1, a2 := value(o1, "agent"), value(o2, "agent"); a1 == "" || a1 != a2 || a1 != strconv.Itoa(cmd.Process.Pid) {
		t.Fatalf("jobs ran under agents %q and %q, want both under the worker process %d", a1, a2, cmd.Process.Pid)
	}
	for _, l := range o2 {
		if strings.HasPrefix(l, "found ") {
			t.Errorf("job-2 %s of job-1", strings.TrimPrefix(l, "found "))
		}
		if strings.HasPrefix(l, "FIRST_ONLY=") || strings.HasPrefix(l, "FIRST_SECRET=") || strings.Contains(l, secret) {
			t.Errorf("job-2 sees job-1's environment: %q", l)
		}
	}
	if !strings.Contains(strings.Join(o2, "\n"), "HODEI_JOB_ID=job-2") {
		t.Fatalf("job-2 output %q lacks its env", o2)
	}
	pid, _ := strconv.Atoi(value(o1, "daemon"))
	if pid <= 0 || alive(pid) {
		t.Fatalf("the daemon job-1 left (pid %d) is alive after the worker ended", pid)
	}
	if _, err := os.Stat(filepath.Dir(value(o1, "cwd"))); err != nil {
		t.Fatalf("the worker's temp dir went away: %v", err)
	}
}

// TestReusedWorkerRefusesJobsBeyondMaxJobs: a third RunJob to a worker with
// HODEI_WORKER_MAX_JOBS=2 gets a failed result, and nothing runs.
func TestReusedWorkerRefusesJobsBeyondMaxJobs(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "ran")
	s := &seqServer{next: func(i int, _ [][]string) *hodeiv1.RunJob {
		if i > 2 {
			return nil
		}
		return &hodeiv1.RunJob{JobId: "job-" + strconv.Itoa(i), Spec: &hodeiv1.JobSpec{
			Command: []string{"sh", "-c", "echo " + strconv.Itoa(i) + " >> " + marker}}}
	}}
	url := s.start(t)
	cmd, logs := startWorkerProcess(t, url, "HODEI_WORKER_MAX_JOBS=2")
	deadline := time.Now().Add(20 * time.Second)
	for {
		s.mu.Lock()
		n := len(s.results)
		s.mu.Unlock()
		if n == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d results, want 3\n%s", n, logs)
		}
		select {
		case <-s.changed:
		case <-time.After(100 * time.Millisecond):
		}
	}
	waitExit(t, cmd, logs, 20*time.Second)
	s.mu.Lock()
	defer s.mu.Unlock()
	if r := s.results[2]; r.GetExitCode() == 0 || !strings.Contains(r.GetError(), "already ran its 2 jobs") {
		t.Fatalf("third result %v", r)
	}
	b, _ := os.ReadFile(marker)
	if strings.TrimSpace(string(b)) != "0\n1" {
		t.Fatalf("jobs that ran: %q, want 0 and 1", b)
	}
}
