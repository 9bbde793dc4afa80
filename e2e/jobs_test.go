package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	hodeiv1 "github.com/hodei-jobs/hodei/gen/hodei/v1"
)

// The README's first job: `hodei job run -- echo hello` prints hello and exits 0; a
// submitted echo job ends SUCCEEDED with its output in the logs, visible in get, list
// and logs.
func TestEchoJob(t *testing.T) { forEachBackend(t, testEchoJob) }

func testEchoJob(t *testing.T, b backend) {
	s := startServer(t, b, 0)

	r := s.mustHodei("job", "run", "--", "echo", "hello")
	if r.stdout != "hello\n" || r.stderr != "" {
		t.Fatalf("job run -- echo hello: %v; want stdout \"hello\\n\" and no stderr", r)
	}

	id := s.submit("--name", "greeting", "--label", "team=e2e", "--env", "WHO=world",
		"--", "sh", "-c", `echo "hello $WHO"; echo to-stderr >&2`)
	jobs := s.waitJobs(map[string]string{"team": "e2e"}, 1, 60*time.Second)
	if len(jobs) != 1 || jobs[0].GetId() != id {
		t.Fatalf("jobs labelled team=e2e: %v, want just %s", jobs, id)
	}

	r = s.mustHodei("job", "get", id, "-o", "json")
	var job hodeiv1.Job
	if err := protojson.Unmarshal([]byte(r.stdout), &job); err != nil {
		t.Fatalf("job get -o json printed %q: %v", r.stdout, err)
	}
	if job.GetState() != "SUCCEEDED" || job.ExitCode == nil || job.GetExitCode() != 0 || job.GetSpec().GetName() != "greeting" {
		t.Fatalf("job = %v, want SUCCEEDED with exit code 0 and name greeting", &job)
	}
	// The JSON carries the state by its domain name.
	var raw map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &raw); err != nil || raw["state"] != "SUCCEEDED" {
		t.Fatalf("job get -o json: state field %v (%v), want \"SUCCEEDED\"", raw["state"], err)
	}

	r = s.mustHodei("job", "logs", id)
	if r.stdout != "hello world\n" || r.stderr != "to-stderr\n" {
		t.Fatalf("job logs: %v; want stdout \"hello world\\n\", stderr \"to-stderr\\n\"", r)
	}
	r = s.mustHodei("job", "logs", "--follow", id) // ended: returns at once
	if r.stdout != "hello world\n" {
		t.Fatalf("job logs --follow of an ended job: %v", r)
	}

	r = s.mustHodei("job", "list", "--label", "team=e2e", "--state", "succeeded")
	if !strings.Contains(r.stdout, id) || !strings.Contains(r.stdout, "SUCCEEDED") {
		t.Fatalf("job list: %v; want a row for %s", r, id)
	}
	r = s.mustHodei("job", "list", "--state", "FAILED", "-o", "json")
	var list hodeiv1.ListJobsResponse
	if err := protojson.Unmarshal([]byte(r.stdout), &list); err != nil || len(list.GetJobs()) != 0 {
		t.Fatalf("job list --state FAILED -o json: %v (%v), want no jobs", r, err)
	}
	r = s.mustHodei("job", "get", id)
	if !strings.Contains(r.stdout, "SUCCEEDED") || !strings.Contains(r.stdout, "greeting") {
		t.Fatalf("job get: %v", r)
	}

	script := filepath.Join(t.TempDir(), "job.sh")
	if err := os.WriteFile(script, []byte("set -e\necho \"from a script: $1${GREETING}\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r = s.mustHodei("job", "run", "--script", script, "--interpreter", "/bin/sh", "--env", "GREETING=hi")
	if r.stdout != "from a script: hi\n" {
		t.Fatalf("job run --script: %v", r)
	}

	r = s.hodei("job", "get", "00000000-0000-0000-0000-000000000000")
	if r.code == 0 || !strings.Contains(r.stderr, "not found") {
		t.Fatalf("job get of an unknown id: %v; want non-zero exit and \"not found\"", r)
	}
}

// A failing command: `job run` passes its exit code and output on; the job is FAILED
// with the exit code recorded.
func TestFailingJobExitCode(t *testing.T) { forEachBackend(t, testFailingJobExitCode) }

func testFailingJobExitCode(t *testing.T, b backend) {
	s := startServer(t, b, 0)

	r := s.hodei("job", "run", "--label", "case=exit3", "--", "sh", "-c", "echo out; echo err >&2; exit 3")
	if r.code != 3 || r.stdout != "out\n" || r.stderr != "err\n" {
		t.Fatalf("%v\nwant exit 3, stdout \"out\\n\", stderr \"err\\n\"", r)
	}
	jobs := s.listJobs(map[string]string{"case": "exit3"})
	if len(jobs) != 1 {
		t.Fatalf("%d jobs labelled case=exit3, want 1", len(jobs))
	}
	if j := jobs[0]; j.GetState() != "FAILED" || j.ExitCode == nil || j.GetExitCode() != 3 {
		t.Fatalf("job = %v, want FAILED with exit code 3", j)
	}

	// A program that does not exist: FAILED, with one line of reason on stderr.
	r = s.hodei("job", "run", "--", "/nonexistent/program")
	if r.code == 0 || !strings.Contains(r.stderr, "FAILED") || !strings.Contains(r.stderr, "/nonexistent/program") ||
		strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
		t.Fatalf("%v\nwant non-zero exit with a one-line FAILED reason on stderr", r)
	}
}

// `job run` of a job that times out or is cancelled exits non-zero with a one-line
// reason on stderr.
func TestTimedOutAndCancelledJobRun(t *testing.T) { forEachBackend(t, testTimedOutAndCancelledJobRun) }

func testTimedOutAndCancelledJobRun(t *testing.T, b backend) {
	s := startServer(t, b, 0)

	r := s.hodei("job", "run", "--timeout", "1s", "--", "sleep", "30")
	if r.code != 124 || !strings.Contains(r.stderr, "TIMED_OUT") || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
		t.Fatalf("%v\nwant exit 124 and a one-line TIMED_OUT reason", r)
	}

	// `job run` in the background; cancel its job once it runs.
	done := make(chan cliResult, 1)
	go func() { done <- s.hodei("job", "run", "--label", "case=cancel", "--", "sleep", "30") }()
	waitRunning(t, s, map[string]string{"case": "cancel"}, 1, 60*time.Second)
	id := s.listJobs(map[string]string{"case": "cancel"})[0].GetId()
	c := s.mustHodei("job", "cancel", id, "--reason", "e2e says stop")
	if !strings.HasPrefix(c.stdout, id+" ") {
		t.Fatalf("job cancel: %v; want the id and the state", c)
	}
	select {
	case r = <-done:
	case <-time.After(60 * time.Second):
		t.Fatalf("job run did not end within 60s of job cancel")
	}
	if r.code != 130 || !strings.Contains(r.stderr, "CANCELLED") || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
		t.Fatalf("%v\nwant exit 130 and a one-line CANCELLED reason", r)
	}
	if j := s.getJob(id); j.GetState() != "CANCELLED" {
		t.Fatalf("cancelled job is %s, want CANCELLED", j.GetState())
	}
}

// 50 jobs run at once through `hodei job run`, each printing its own output.
func TestFiftyConcurrentJobs(t *testing.T) { forEachBackend(t, testFiftyConcurrentJobs) }

func testFiftyConcurrentJobs(t *testing.T, b backend) {
	s := startServer(t, b, 0)
	const n = 50
	start := time.Now()
	results := make([]cliResult, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			results[i] = s.hodei("job", "run", "--label", "batch=fifty", "--", "sh", "-c", fmt.Sprintf("echo job-%d", i))
		})
	}
	wg.Wait()
	for i, r := range results {
		if want := fmt.Sprintf("job-%d\n", i); r.code != 0 || r.stdout != want {
			t.Errorf("job %d: %v\nwant exit 0 and stdout %q", i, r, want)
		}
	}
	jobs := s.listJobs(map[string]string{"batch": "fifty"})
	if st := countStates(jobs); len(jobs) != n || st["SUCCEEDED"] != n {
		t.Fatalf("states of the %d jobs: %v, want %d SUCCEEDED", len(jobs), st, n)
	}
	t.Logf("%d concurrent `job run`s done in %s", n, time.Since(start).Round(time.Millisecond))
}

// 300 jobs submitted at once with a capacity of 8: never more than 8 worker processes,
// all succeed, and they start in priority order (then oldest first).
//
// Eight blocker jobs first fill the capacity and wait for a gate file, so that all 300
// jobs are PENDING when capacity frees: then the scheduler's order is fully determined
// by (priority desc, created_at asc), and the invariant checked is the one a scheduler
// that counts a claimed worker against the capacity until it ends guarantees: when a
// job B is claimed, every job ranked before B is already claimed, and those not yet
// started hold one of the other capacity-1 slots. So at most capacity-1 jobs ranked
// before B start after B.
func TestCapacityAndPriority(t *testing.T) { forEachBackend(t, testCapacityAndPriority) }

func testCapacityAndPriority(t *testing.T, b backend) {
	const (
		capacity = 8
		n        = 300
	)
	s := startServer(t, b, capacity)
	gate := filepath.Join(t.TempDir(), "open")
	blocker := fmt.Sprintf("while [ ! -e %s ]; do sleep 0.2; done", gate)
	for range capacity {
		s.submit("--priority", "1000", "--label", "role=blocker", "--", "sh", "-c", blocker)
	}
	waitRunning(t, s, map[string]string{"role": "blocker"}, capacity, 60*time.Second)

	sm := startSampler(s, capacity, 50*time.Millisecond)
	submitStart := time.Now()
	priorities := []int{0, 7, -5} // interleaved: FIFO would mix them
	ids := make([]string, n)
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			ids[i] = s.submit("--priority", fmt.Sprint(priorities[i%len(priorities)]), "--label", "batch=cap", "--", "true")
		})
	}
	wg.Wait()
	submitted := time.Since(submitStart)

	pending := s.listJobs(map[string]string{"batch": "cap"})
	if st := countStates(pending); st["PENDING"] != n {
		t.Errorf("with capacity held by blockers, the %d jobs are %v, want all PENDING", n, st)
	}

	open := time.Now()
	if err := os.WriteFile(gate, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	jobs := s.waitJobs(map[string]string{"batch": "cap"}, n, 5*time.Minute)
	elapsed := time.Since(open)
	seen := sm.finish()
	t.Logf("submitted %d jobs in %s; all ended %s after the gate opened (%.1f jobs/s); at most %d live workers at once (%d processes counting destroyed ones still exiting), %d worker processes seen",
		n, submitted.Round(time.Millisecond), elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds(),
		seen.maxLive, seen.max, seen.distinct)

	if st := countStates(jobs); st["SUCCEEDED"] != n {
		t.Errorf("states of the %d jobs: %v, want all SUCCEEDED", n, st)
	}
	if seen.maxLive > capacity {
		t.Errorf("saw %d live workers at once, capacity is %d; first time: %s", seen.maxLive, capacity, seen.over)
	}
	workerRows := s.count(`SELECT count(*) FROM workers`)
	t.Logf("%d workers recorded in the database for %d jobs", workerRows, n+capacity)
	if bl := s.waitJobs(map[string]string{"role": "blocker"}, capacity, 30*time.Second); countStates(bl)["SUCCEEDED"] != capacity {
		t.Errorf("blockers: %v, want all SUCCEEDED", countStates(bl))
	}
	checkPriorityOrder(t, jobs, capacity)
}

// checkPriorityOrder checks that at most capacity-1 jobs ranked before any job (higher
// priority, or equal priority and created earlier) started after it.
func checkPriorityOrder(t *testing.T, jobs []*hodeiv1.Job, capacity int) {
	t.Helper()
	ranked := slices.Clone(jobs)
	slices.SortStableFunc(ranked, func(a, b *hodeiv1.Job) int {
		if pa, pb := a.GetSpec().GetPriority(), b.GetSpec().GetPriority(); pa != pb {
			return int(pb) - int(pa)
		}
		return a.GetCreatedAt().AsTime().Compare(b.GetCreatedAt().AsTime())
	})
	worst, worstID := 0, ""
	for i, b := range ranked {
		if b.GetStartedAt() == nil {
			t.Errorf("job %s (%s) has no started_at", b.GetId(), b.GetState())
			return
		}
		late := 0
		for _, a := range ranked[:i] {
			sameRank := a.GetSpec().GetPriority() == b.GetSpec().GetPriority() &&
				a.GetCreatedAt().AsTime().Equal(b.GetCreatedAt().AsTime())
			if !sameRank && a.GetStartedAt().AsTime().After(b.GetStartedAt().AsTime()) {
				late++
			}
		}
		if late > worst {
			worst, worstID = late, b.GetId()
		}
	}
	t.Logf("priority order: at most %d earlier-ranked jobs started after a job (limit %d)", worst, capacity-1)
	if worst > capacity-1 {
		t.Errorf("job %s started before %d jobs ranked before it (higher priority or older); a priority scheduler with capacity %d allows at most %d",
			worstID, worst, capacity, capacity-1)
		byClass := map[int32][]time.Time{}
		for _, j := range jobs {
			p := j.GetSpec().GetPriority()
			byClass[p] = append(byClass[p], j.GetStartedAt().AsTime())
		}
		for p, ts := range byClass {
			slices.SortFunc(ts, time.Time.Compare)
			t.Logf("priority %d: first start %s, median %s, last %s", p,
				ts[0].Format("15:04:05.000"), ts[len(ts)/2].Format("15:04:05.000"), ts[len(ts)-1].Format("15:04:05.000"))
		}
	}
}

// waitRunning waits until n jobs with the label are RUNNING.
func waitRunning(t *testing.T, s *server, labels map[string]string, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		jobs := s.listJobs(labels)
		if st := countStates(jobs); st["RUNNING"] >= n {
			return
		} else if time.Now().After(deadline) {
			t.Fatalf("after %s, jobs labelled %v are %v, want %d RUNNING", timeout, labels, st, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// The server is SIGKILLed while jobs run and others wait, then started again on the
// same address and database: every job still ends SUCCEEDED with its output, and no
// worker process is left.
func TestServerKilledWhileJobsRun(t *testing.T) { forEachBackend(t, testServerKilledWhileJobsRun) }

func testServerKilledWhileJobsRun(t *testing.T, b backend) {
	const n = 12
	s := startServer(t, b, 4)
	ids := make([]string, n)
	for i := range n {
		ids[i] = s.submit("--label", "batch=chaos", "--", "sh", "-c", fmt.Sprintf("sleep 1.5; echo chaos-%d", i))
	}
	waitRunning(t, s, map[string]string{"batch": "chaos"}, 2, 60*time.Second)
	before := countStates(s.listJobs(map[string]string{"batch": "chaos"}))
	workers := workerPIDs(s.url)
	s.kill()
	t.Logf("SIGKILLed the server with jobs %v and %d worker processes", before, len(workers))
	time.Sleep(time.Second) // workers notice the broken stream; some jobs finish meanwhile
	s.startProcess()

	jobs := s.waitJobs(map[string]string{"batch": "chaos"}, n, 3*time.Minute)
	if st := countStates(jobs); st["SUCCEEDED"] != n {
		for _, j := range jobs {
			if j.GetState() != "SUCCEEDED" {
				t.Logf("job %s: %s (%s)", j.GetId(), j.GetState(), j.GetLastError())
			}
		}
		t.Fatalf("after the restart the jobs are %v, want all %d SUCCEEDED", st, n)
	}
	for i, id := range ids {
		r := s.mustHodei("job", "logs", id)
		if want := fmt.Sprintf("chaos-%d\n", i); r.stdout != want {
			t.Errorf("job %d logs: %v, want stdout %q", i, r, want)
		}
	}
	s.waitNoWorkers(60 * time.Second)
	for _, pid := range workers {
		if syscall.Kill(pid, 0) == nil && isWorker(pid) {
			t.Errorf("worker process %d from before the kill is still alive", pid)
		}
	}
}

// isWorker reports whether pid is still a worker agent (pids can be reused).
func isWorker(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && isAgentArgv(strings.Split(strings.TrimRight(string(b), "\x00"), "\x00"))
}

// Invalid specs are refused, naming the field, through the CLI and through the API as
// any HTTP client would send them; nothing is created.
func TestInvalidSpecsRefused(t *testing.T) { forEachBackend(t, testInvalidSpecsRefused) }

func testInvalidSpecsRefused(t *testing.T, b backend) {
	s := startServer(t, b, 0)
	big := strings.Repeat("x", 70<<10) // over MaxEnvBytes (64 KiB)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"job", "submit", "--"}, "command"},
		{[]string{"job", "run", "--"}, "command"},
		{[]string{"job", "submit", "--", ""}, "command[0]"},
		{[]string{"job", "submit", "--timeout", "-1s", "--", "true"}, "--timeout"},
		{[]string{"job", "submit", "--env", "BIG=" + big, "--", "true"}, "env"},
		{[]string{"job", "run", "--env", "BIG=" + big, "--", "true"}, "env"},
		{[]string{"job", "submit", "--env", "1BAD=x", "--", "true"}, "env[1BAD]"},
		{[]string{"job", "submit", "--env", "NOEQUALS", "--", "true"}, "--env"},
		{[]string{"job", "submit", "--priority", "5000", "--", "true"}, "priority"},
	} {
		r := s.hodei(tc.args...)
		if r.code == 0 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%v\nwant a non-zero exit and an error naming %q", r, tc.want)
		}
		if r.stdout != "" {
			t.Errorf("%v\nwant nothing on stdout", r)
		}
	}

	// The same through the API (Connect JSON, as curl would post it): the server refuses
	// with invalid_argument naming the field.
	for _, tc := range []struct {
		spec string
		want string
	}{
		{`{}`, "command"},
		{`{"command":[]}`, "command"},
		{`{"command":["true"],"timeout":"-1s"}`, "timeout"},
		{`{"command":["true"],"env":{"BIG":"` + big + `"}}`, "env"},
	} {
		code, msg := postSubmit(t, s.url, `{"spec":`+tc.spec+`}`)
		if code != "invalid_argument" || !strings.Contains(msg, tc.want) {
			t.Errorf("SubmitJob %.60s: code %q message %q, want invalid_argument naming %q", tc.spec, code, msg, tc.want)
		}
	}

	r := s.mustHodei("job", "list", "-o", "json")
	var list hodeiv1.ListJobsResponse
	if err := protojson.Unmarshal([]byte(r.stdout), &list); err != nil || len(list.GetJobs()) != 0 {
		t.Fatalf("job list -o json after refused submissions: %v (%v), want no jobs", r, err)
	}
	for _, table := range []string{"jobs", "outbox"} {
		if rows := s.count("SELECT count(*) FROM " + table); rows != 0 {
			t.Errorf("%d rows in %s after refused submissions, want 0", rows, table)
		}
	}
}

// postSubmit posts a Connect JSON SubmitJob request and returns the error code and
// message of the answer ("" for success).
func postSubmit(t *testing.T, url, body string) (code, msg string) {
	t.Helper()
	res, err := http.Post(url+"/hodei.v1.JobService/SubmitJob", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("post SubmitJob: %v", err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode == http.StatusOK {
		return "", ""
	}
	var e struct{ Code, Message string }
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("SubmitJob answered %s with %q", res.Status, b)
	}
	return e.Code, e.Message
}

// The platform is stopped with SIGTERM and started again on the same address and
// database (dev: data directory): the jobs submitted before are listed again with their
// states and output, and new jobs run.
func TestRestartKeepsJobs(t *testing.T) { forEachBackend(t, testRestartKeepsJobs) }

func testRestartKeepsJobs(t *testing.T, b backend) {
	s := startServer(t, b, 0)
	ok := s.submit("--label", "case=restart", "--", "sh", "-c", "echo kept")
	bad := s.submit("--label", "case=restart", "--", "sh", "-c", "exit 4")
	s.waitJobs(map[string]string{"case": "restart"}, 2, 60*time.Second)
	if !s.stop() {
		t.Fatalf("hodei %s did not exit within 20s of SIGTERM", b)
	}
	s.startProcess()

	r := s.mustHodei("job", "list", "--label", "case=restart", "-o", "json")
	var list hodeiv1.ListJobsResponse
	if err := protojson.Unmarshal([]byte(r.stdout), &list); err != nil {
		t.Fatalf("job list -o json after the restart: %v (%v)", r, err)
	}
	states := map[string]string{}
	for _, j := range list.GetJobs() {
		states[j.GetId()] = j.GetState()
	}
	if len(states) != 2 || states[ok] != "SUCCEEDED" || states[bad] != "FAILED" {
		t.Fatalf("jobs after the restart: %v, want %s SUCCEEDED and %s FAILED", states, ok, bad)
	}
	if j := s.getJob(bad); j.ExitCode == nil || j.GetExitCode() != 4 {
		t.Errorf("failed job after the restart: %v, want exit code 4", j)
	}
	if r := s.mustHodei("job", "logs", ok); r.stdout != "kept\n" {
		t.Errorf("job logs after the restart: %v, want stdout \"kept\\n\"", r)
	}
	if r := s.mustHodei("job", "run", "--", "echo", "after"); r.stdout != "after\n" {
		t.Errorf("job run after the restart: %v", r)
	}
}

// A job's worker is the slim hodei-agent when one sits next to hodei (as `make build`
// leaves them): the job's parent process is that binary, with no "worker" argument.
func TestJobRunsUnderSlimAgent(t *testing.T) {
	s := startServer(t, backendPostgres, 0)
	r := s.hodei("job", "run", "--", "sh", "-c", `tr '\0' ' ' </proc/$PPID/cmdline`)
	if r.code != 0 {
		t.Fatalf("%v", r)
	}
	argv := strings.Fields(r.stdout)
	if len(argv) == 0 || filepath.Base(argv[0]) != "hodei-agent" || slices.Contains(argv, "worker") {
		t.Fatalf("the job's parent is %q, want the hodei-agent binary beside hodei", r.stdout)
	}
}
