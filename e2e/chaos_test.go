package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/moby/moby/client"
	"google.golang.org/protobuf/types/known/durationpb"

	hodeiv1 "github.com/hodei-jobs/hodei/gen/hodei/v1"
	"github.com/hodei-jobs/hodei/gen/hodei/v1/hodeiv1connect"
	"github.com/hodei-jobs/hodei/internal/dockertest"
)

// The chaos test (issue 5): about 200 jobs of mixed kinds while the control plane is
// SIGKILLed and restarted three times and random worker processes are SIGKILLed. At
// the end every job is terminal or MANUAL_INTERVENTION_REQUIRED, none is lost or
// duplicated, none has two terminal transitions, no worker or job process is left and
// no outbox row is stuck. It prints its counts, and how long each recovery took (a
// worker SIGKILLed while its job ran → that job RUNNING again on a replacement).
//
// HODEI_CHAOS_JOBS changes the number of jobs (default 200); HODEI_CHAOS_SEED replays a
// run's random choices (printed in the report); HODEI_CHAOS_REPORT names a
// file the report is appended to (CI prints it), besides the test log.
func TestChaos(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) { testChaos(t, b, chaosVariant{jobs: 200, serverKills: 3}) })
}

// TestChaosDocker is the chaos test with every worker a container on a real Docker
// Engine (hodei dev --provider docker), smaller for CI time: 40 jobs, two server
// SIGKILLs, random worker containers killed through the engine (docker kill). At the
// end no container is left either. HODEI_CHAOS_DOCKER_JOBS changes the number of jobs.
func TestChaosDocker(t *testing.T) {
	e := dockertest.Get(t)
	testChaos(t, backendDev, chaosVariant{name: "docker", jobs: 40, serverKills: 2, engine: e,
		args: []string{"--provider", "docker", "--docker-host", e.Host, "--docker-default-image", e.Image, "--docker-max-workers", "8"}})
}

// chaosVariant is what differs between the chaos runs.
type chaosVariant struct {
	name        string // "" (local workers) or "docker"
	jobs        int    // default number of jobs
	serverKills int
	args        []string           // more server flags
	engine      *dockertest.Engine // docker: the workers' engine, whose containers are killed
}

// Kinds of chaos jobs.
const (
	kindQuick   = "quick"   // echo, exit 0
	kindFail    = "fail"    // exit 3
	kindSleep   = "sleep"   // sleep 1-3 s, exit 0
	kindCancel  = "cancel"  // sleep 30, cancelled 0.2-2.5 s after it was submitted
	kindTimeout = "timeout" // sleep 30 with a 1 s timeout
)

// chaosKinds is the mix, by weight out of 20.
var chaosKinds = []struct {
	kind   string
	weight int
}{{kindQuick, 8}, {kindFail, 3}, {kindSleep, 5}, {kindCancel, 2}, {kindTimeout, 2}}

// chaosJob is one job of the run as the test submitted it.
type chaosJob struct {
	seq  int
	kind string
	id   string // once submitted

	cancelAt   time.Time // kindCancel: when the test cancelled it
	cancelCode string    // kindCancel: "" (accepted) or the refusal's code
	cancelLog  []string  // kindCancel: the calls that failed before the answer
	cancelTook time.Duration
}

// slowCancels describes every cancel whose answer took over 3 s (the server restarts in
// under one): a cancel that hangs lets its job run on (a cancelled job once ended
// SUCCEEDED after its cancel waited ~30 s), so the report lists them even when no
// outcome is wrong.
func slowCancels(jobs []*chaosJob) []string {
	var out []string
	for _, cj := range jobs {
		if cj.kind == kindCancel && cj.cancelTook > 3*time.Second {
			out = append(out, fmt.Sprintf("job %d (%s) answered %q after %s, %d failed calls: %s", cj.seq, cj.id,
				cj.cancelCode, cj.cancelTook.Round(time.Millisecond), len(cj.cancelLog), strings.Join(cj.cancelLog, "; ")))
		}
	}
	return out
}

// workerKill is one worker process the test SIGKILLed.
type workerKill struct {
	at        time.Time
	pid       int
	workerID  string
	jobID     string // the job on it then ("" none)
	jobState  string
	attempt   int
	recovered time.Duration // → the job's next RUNNING on another attempt (0: none)
	outcome   string        // what became of the job
}

func testChaos(t *testing.T, b backend, variant chaosVariant) {
	n := variant.jobs
	jobsEnv := "HODEI_CHAOS_JOBS"
	if variant.engine != nil {
		jobsEnv = "HODEI_CHAOS_DOCKER_JOBS"
	}
	if v := os.Getenv(jobsEnv); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			t.Fatalf("%s=%q: want a positive integer", jobsEnv, v)
		}
	}
	serverKills := variant.serverKills
	const (
		capacity      = 8
		submitSpacing = 60 * time.Millisecond
	)
	// Heartbeats every second: a worker not heard of for 3 s is lost (cleanup runs
	// every second), so is one whose stream closed and is not back within 2 s (the
	// default grace), and one whose process the server saw exit at once. A worker
	// killed before it registered while the server that started it was down is found
	// by the cleanup run asking the provider (not after the 2 min registration timeout).
	s := startServerArgs(t, b, capacity, append([]string{"--heartbeat-interval", "1s", "--worker-lost-after", "3s",
		"--cleanup-interval", "1s"}, variant.args...)...)
	run := fmt.Sprintf("chaos-%d", time.Now().UnixNano())
	labels := map[string]string{"chaos": run}
	client := hodeiv1connect.NewJobServiceClient(&http.Client{Timeout: 15 * time.Second}, s.url)
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("HODEI_CHAOS_SEED"); v != "" {
		var err error
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("HODEI_CHAOS_SEED=%q: want an unsigned integer", v)
		}
	}
	// The seed decides the mix, the delays and which worker is killed (not the timing
	// of the processes themselves); HODEI_CHAOS_SEED replays a run's choices.
	rng := rand.New(rand.NewPCG(seed, 7))
	t.Logf("chaos: HODEI_CHAOS_SEED=%d", seed)
	killRng := rand.New(rand.NewPCG(seed, 8)) // the killer goroutine's own

	jobs := make([]*chaosJob, n)
	var weights []string
	for _, k := range chaosKinds {
		for range k.weight {
			weights = append(weights, k.kind)
		}
	}
	for i := range jobs {
		jobs[i] = &chaosJob{seq: i, kind: weights[rng.IntN(len(weights))]}
	}
	specs := make([]*hodeiv1.JobSpec, n)
	for i, j := range jobs {
		specs[i] = chaosSpec(run, j, 1+rng.Float64()*2)
	}
	cancelDelay := make([]time.Duration, n)
	for i := range cancelDelay {
		cancelDelay[i] = time.Duration(200+rng.IntN(2300)) * time.Millisecond
	}

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	began := time.Now()

	// Submitter: one job every submitSpacing; cancellers for the cancel kind.
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex // guards jobs[*].id/cancel*, kills
		kills   []*workerKill
		submits sync.WaitGroup
	)
	submits.Add(1)
	go func() {
		defer submits.Done()
		for i, j := range jobs {
			id, err := submitOnce(ctx, client, specs[i], run, j.seq)
			if err != nil {
				t.Errorf("job %d (%s) not submitted: %v", j.seq, j.kind, err)
				continue
			}
			mu.Lock()
			j.id = id
			mu.Unlock()
			if j.kind == kindCancel {
				wg.Add(1)
				go func() {
					defer wg.Done()
					time.Sleep(cancelDelay[i])
					asked := time.Now()
					code, log, err := cancelWithRetry(ctx, client, id)
					if err != nil {
						t.Errorf("cancel job %d: %v", j.seq, err)
					}
					mu.Lock()
					j.cancelAt, j.cancelCode, j.cancelLog = time.Now(), code, log
					j.cancelTook = j.cancelAt.Sub(asked)
					mu.Unlock()
				}()
			}
			time.Sleep(submitSpacing)
		}
	}()

	// Worker killer: every 0.7-1.7 s one random worker process of this server, until
	// the submissions are over and a few seconds more.
	killerDone := make(chan struct{})
	stopKiller := make(chan struct{})
	url := s.url // startProcess rewrites s.url (same value) on every restart
	go func() {
		defer close(killerDone)
		for {
			select {
			case <-stopKiller:
				return
			case <-time.After(time.Duration(700+killRng.IntN(1000)) * time.Millisecond):
			}
			var k *workerKill
			if variant.engine != nil {
				k = killWorkerContainer(variant.engine, killRng, s)
			} else {
				k = killWorkerProcess(url, killRng, s)
			}
			if k == nil {
				continue // none, or it exited meanwhile
			}
			mu.Lock()
			kills = append(kills, k)
			mu.Unlock()
		}
	}()

	// The control plane: SIGKILLed three times while jobs are submitted and run.
	submitTime := time.Duration(n) * (submitSpacing + 15*time.Millisecond)
	for i := range serverKills {
		time.Sleep(submitTime / time.Duration(serverKills+1))
		s.kill()
		t.Logf("chaos: SIGKILLed the server (%d of %d) at +%s", i+1, serverKills, time.Since(began).Round(time.Millisecond))
		time.Sleep(time.Duration(200+rng.IntN(800)) * time.Millisecond)
		s.startProcess()
	}
	submits.Wait()
	time.Sleep(3 * time.Second)
	close(stopKiller)
	<-killerDone
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	submitted := time.Since(began)

	// Every job ends.
	all := s.waitChaosJobs(labels, n, 4*time.Minute)
	ended := time.Since(began)

	r := chaosReport{backend: b, variant: variant.name, seed: seed, jobs: n, serverKills: serverKills, workerKills: len(kills),
		states: map[string]int{}, byKind: map[string]map[string]int{}}
	bySeq := map[string][]*hodeiv1.Job{}
	for _, j := range all {
		bySeq[j.GetSpec().GetLabels()["chaos-seq"]] = append(bySeq[j.GetSpec().GetLabels()["chaos-seq"]], j)
	}
	r.listed = len(all)
	for _, cj := range jobs {
		got := bySeq[strconv.Itoa(cj.seq)]
		switch {
		case len(got) == 0:
			r.lost++
			t.Errorf("job %d (%s, id %s) is lost: no job has its label", cj.seq, cj.kind, cj.id)
			continue
		case len(got) > 1:
			r.duplicated++
			t.Errorf("job %d (%s) exists %d times", cj.seq, cj.kind, len(got))
		}
		j := got[0]
		if j.GetId() != cj.id {
			t.Errorf("job %d: listed id %s, submitted id %s", cj.seq, j.GetId(), cj.id)
		}
		st := j.GetState()
		r.states[st]++
		if r.byKind[cj.kind] == nil {
			r.byKind[cj.kind] = map[string]int{}
		}
		r.byKind[cj.kind][st]++
		if j.GetAttempt() > 1 {
			r.retried++
		}
		if msg := checkChaosOutcome(cj, j); msg != "" {
			if cj.kind == kindCancel {
				msg += fmt.Sprintf(" (cancel answered %q at %s after %d failed calls: %s)",
					cj.cancelCode, cj.cancelAt.Format("15:04:05.000"), len(cj.cancelLog), strings.Join(cj.cancelLog, "; "))
			}
			t.Errorf("job %d (%s, %s): %s", cj.seq, cj.kind, j.GetId(), msg)
		}
		if st == "FAILED" && (cj.kind == kindQuick || cj.kind == kindSleep) {
			r.failedByChaos = append(r.failedByChaos, fmt.Sprintf("%s attempt %d: %s", cj.kind, j.GetAttempt(), j.GetLastError()))
		}
		if st == "MANUAL_INTERVENTION_REQUIRED" {
			r.manual = append(r.manual, fmt.Sprintf("%s %s: %s", cj.kind, j.GetId(), j.GetLastError()))
		}
	}

	r.slowCancels = slowCancels(jobs)
	// The transitions of every job, from the job events in the outbox.
	trans := s.jobTransitions()
	for _, j := range all {
		ends := 0
		for _, tr := range trans[j.GetId()] {
			if isTerminal(tr.To) {
				ends++
			}
		}
		if ends != 1 {
			r.doubleEnds++
			t.Errorf("job %s (%s) has %d transitions into an end state, want 1: %v", j.GetId(), j.GetState(), ends, trans[j.GetId()])
		}
	}
	// Recovery times: a worker killed while its job ran → the job's next RUNNING on a
	// later attempt.
	var recoveries []time.Duration
	for _, k := range kills {
		if k.jobID == "" || k.jobState != "RUNNING" {
			continue
		}
		r.killedRunning++
		for _, tr := range trans[k.jobID] {
			if tr.To == "RUNNING" && tr.Attempt > k.attempt && tr.At.After(k.at) {
				k.recovered = tr.At.Sub(k.at)
				recoveries = append(recoveries, k.recovered)
				break
			}
		}
		if k.recovered == 0 {
			for _, j := range all {
				if j.GetId() == k.jobID {
					k.outcome = j.GetState() + ": " + j.GetLastError()
				}
			}
			r.notRerun = append(r.notRerun, fmt.Sprintf("job %s → %s", k.jobID, k.outcome))
		}
	}
	r.recoveries = recoveries

	// No process left: workers, and the jobs' own processes (orphaned when their worker
	// was SIGKILLed; destroying the worker ends its process group). Containers' processes
	// are the host's too; and no container is left.
	s.waitNoWorkers(90 * time.Second)
	if variant.engine != nil {
		deadline := time.Now().Add(60 * time.Second)
		for {
			left := containers(t, variant.engine, "hodei.worker")
			if len(left) == 0 {
				break
			}
			if time.Now().After(deadline) {
				r.leftContainers = len(left)
				t.Errorf("%d worker containers left 60s after every job ended: %v", len(left), left)
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		left := processesWithEnv("CHAOS_RUN=" + run)
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			r.leftProcesses = len(left)
			t.Errorf("job processes still running 30s after every worker exited: %v", left)
			break
		}
		time.Sleep(200 * time.Millisecond)
	}

	// No outbox row stuck: every row written until every job ended is COMPLETED,
	// DEAD_LETTER with its reason, or CANCELLED, within a minute.
	maxID := s.count("SELECT coalesce(max(id), 0) FROM outbox")
	deadline = time.Now().Add(time.Minute)
	for {
		open := s.count(fmt.Sprintf("SELECT count(*) FROM outbox WHERE id <= %d AND status NOT IN ('COMPLETED', 'DEAD_LETTER', 'CANCELLED')", maxID))
		if open == 0 {
			break
		}
		if time.Now().After(deadline) {
			r.stuckOutbox = open
			t.Errorf("%d outbox rows (of ids ≤ %d) still PENDING or RETRY a minute after every job ended", open, maxID)
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	r.outboxRows = maxID
	r.deadLetters = s.deadLetters(maxID)
	for _, d := range r.deadLetters {
		if strings.HasSuffix(d, ": ") {
			t.Errorf("dead letter without a reason: %s", d)
		}
	}
	r.submitted, r.ended = submitted, ended

	report := r.String()
	t.Log("\n" + report)
	if f := os.Getenv("HODEI_CHAOS_REPORT"); f != "" {
		if err := appendFile(f, report+"\n"); err != nil {
			t.Errorf("HODEI_CHAOS_REPORT: %v", err)
		}
	}
}

// waitChaosJobs is waitJobs that, when a job does not end in time, prints what the
// platform knows of the first few such jobs (hodei job get, hodei saga show --job).
func (s *server) waitChaosJobs(labels map[string]string, n int, timeout time.Duration) []*hodeiv1.Job {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		jobs := s.listJobs(labels)
		var open []*hodeiv1.Job
		for _, j := range jobs {
			if !isTerminal(j.GetState()) {
				open = append(open, j)
			}
		}
		if len(jobs) >= n && len(open) == 0 {
			return jobs
		}
		if time.Now().After(deadline) {
			for i, j := range open {
				if i == 5 {
					break
				}
				r := s.hodei("saga", "show", "--job", j.GetId())
				sagas := r.stdout + r.stderr
				s.t.Logf("job not ended:\n%s\n%s", s.hodei("job", "get", j.GetId()).stdout, sagas)
			}
			s.t.Fatalf("after %s: %d jobs labelled %v, %d not ended, want %d ended; states %v",
				timeout, len(jobs), labels, len(open), n, countStates(jobs))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// chaosSpec is the job of kind j.kind; sleep is the kindSleep duration in seconds.
func chaosSpec(run string, j *chaosJob, sleep float64) *hodeiv1.JobSpec {
	spec := &hodeiv1.JobSpec{
		Name:        fmt.Sprintf("%s-%d", j.kind, j.seq),
		Labels:      map[string]string{"chaos": run, "chaos-seq": strconv.Itoa(j.seq), "chaos-kind": j.kind},
		Env:         map[string]string{"CHAOS_RUN": run},
		MaxAttempts: 3,
	}
	switch j.kind {
	case kindQuick:
		spec.Command = []string{"sh", "-c", "echo ok"}
	case kindFail:
		spec.Command = []string{"sh", "-c", "echo boom >&2; exit 3"}
	case kindSleep:
		spec.Command = []string{"sh", "-c", fmt.Sprintf("sleep %.1f; echo slept", sleep)}
	case kindCancel:
		spec.Command = []string{"sleep", "30"}
	case kindTimeout:
		spec.Command = []string{"sleep", "30"}
		spec.Timeout = durationpb.New(time.Second)
	}
	return spec
}

// checkChaosOutcome returns what is wrong with the end of job j ("" nothing). FAILED
// and MANUAL_INTERVENTION_REQUIRED may end any kind (its workers may all have been
// killed); the other end states belong to one kind each.
func checkChaosOutcome(cj *chaosJob, j *hodeiv1.Job) string {
	st := j.GetState()
	if !isTerminal(st) {
		return "not ended: " + st
	}
	switch st {
	case "SUCCEEDED":
		if cj.kind != kindQuick && cj.kind != kindSleep {
			return "SUCCEEDED, but it cannot succeed"
		}
		if j.ExitCode == nil || j.GetExitCode() != 0 {
			return fmt.Sprintf("SUCCEEDED with exit code %v", j.ExitCode)
		}
	case "FAILED":
		if j.GetLastError() == "" && j.ExitCode == nil {
			return "FAILED without an exit code or an error"
		}
		if j.ExitCode != nil && j.GetExitCode() == 3 && cj.kind != kindFail {
			return "FAILED with the fail kind's exit code 3"
		}
		if cj.kind == kindFail && j.ExitCode != nil && j.GetExitCode() != 3 {
			return fmt.Sprintf("FAILED with exit code %d, want 3", j.GetExitCode())
		}
	case "CANCELLED":
		if cj.kind != kindCancel {
			return "CANCELLED, but nobody cancelled it"
		}
	case "TIMED_OUT":
		if cj.kind != kindTimeout {
			return "TIMED_OUT, but it has no timeout"
		}
	}
	if cj.kind == kindCancel && cj.cancelCode == "" && st != "CANCELLED" && st != "FAILED" &&
		st != "MANUAL_INTERVENTION_REQUIRED" {
		return "cancel accepted but the job ended " + st
	}
	return ""
}

// submitOnce submits spec and returns the job's id. When a call fails (the server is
// down or died mid-call), it looks the job up by its chaos-seq label before trying
// again, so that a job whose response was lost is not submitted twice.
func submitOnce(ctx context.Context, c hodeiv1connect.JobServiceClient, spec *hodeiv1.JobSpec, run string, seq int) (string, error) {
	deadline := time.Now().Add(2 * time.Minute)
	var last error
	for attempt := 0; time.Now().Before(deadline); attempt++ {
		if attempt > 0 {
			time.Sleep(300 * time.Millisecond)
			res, err := c.ListJobs(ctx, connect.NewRequest(&hodeiv1.ListJobsRequest{
				Labels: map[string]string{"chaos": run, "chaos-seq": strconv.Itoa(seq)}}))
			if err != nil {
				last = err
				continue
			}
			if js := res.Msg.GetJobs(); len(js) > 0 {
				return js[0].GetId(), nil
			}
		}
		res, err := c.SubmitJob(ctx, connect.NewRequest(&hodeiv1.SubmitJobRequest{Spec: spec}))
		if err == nil {
			return res.Msg.GetJob().GetId(), nil
		}
		if code := connect.CodeOf(err); code == connect.CodeInvalidArgument || code == connect.CodeFailedPrecondition {
			return "", err
		}
		last = err
	}
	return "", fmt.Errorf("gave up after 2m: %w", last)
}

// cancelWithRetry cancels the job, retrying while the server is unreachable. It
// returns "" when the cancel was accepted, or the code of a refusal (a job that ended
// first is FailedPrecondition), and the calls that failed before that answer (when
// each began, how long it took, its error).
func cancelWithRetry(ctx context.Context, c hodeiv1connect.JobServiceClient, id string) (string, []string, error) {
	deadline := time.Now().Add(2 * time.Minute)
	var (
		last error
		log  []string
	)
	for time.Now().Before(deadline) {
		began := time.Now()
		_, err := c.CancelJob(ctx, connect.NewRequest(&hodeiv1.CancelJobRequest{Id: id}))
		if err == nil {
			return "", log, nil
		}
		switch connect.CodeOf(err) {
		case connect.CodeFailedPrecondition:
			return connect.CodeFailedPrecondition.String(), log, nil
		case connect.CodeInvalidArgument, connect.CodeNotFound, connect.CodePermissionDenied:
			return "", log, err
		}
		log = append(log, fmt.Sprintf("%s +%s: %v", began.Format("15:04:05.000"), time.Since(began).Round(time.Millisecond), err))
		last = err
		time.Sleep(300 * time.Millisecond)
	}
	return "", log, fmt.Errorf("gave up after 2m: %w", last)
}

// workerJob returns the job on the worker and its state and attempt, read from the
// database ("" when none or unknown).
func (s *server) workerJob(workerID string) (jobID, state string, attempt int) {
	if !isUUIDish(workerID) {
		return "", "", 0
	}
	db, err := s.openDB()
	if err != nil {
		return "", "", 0
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = db.QueryRowContext(ctx, `SELECT coalesce(j.id, ''), coalesce(j.state, ''), coalesce(j.attempt, 0)
		FROM workers w JOIN jobs j ON j.id = w.job_id AND j.worker_id = w.id WHERE w.id = '`+workerID+`'`).
		Scan(&jobID, &state, &attempt)
	return jobID, state, attempt
}

func isUUIDish(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'f' || r >= 'A' && r <= 'F') {
			return false
		}
	}
	return true
}

// transition is one job.state_changed event.
type transition struct {
	From, To string
	Attempt  int
	At       time.Time
	Reason   string
}

func (tr transition) String() string {
	return fmt.Sprintf("%s→%s#%d(%s)", tr.From, tr.To, tr.Attempt, tr.Reason)
}

// jobTransitions returns every job's job.state_changed events from the outbox, in
// order.
func (s *server) jobTransitions() map[string][]transition {
	s.t.Helper()
	db, err := s.openDB()
	if err != nil {
		s.t.Fatalf("open the database: %v", err)
	}
	defer db.Close()
	rows, err := db.QueryContext(s.t.Context(), `SELECT payload FROM outbox WHERE type = 'job.state_changed' ORDER BY id`)
	if err != nil {
		s.t.Fatalf("read job events: %v", err)
	}
	defer rows.Close()
	out := map[string][]transition{}
	for rows.Next() {
		var p []byte
		if err := rows.Scan(&p); err != nil {
			s.t.Fatalf("read job events: %v", err)
		}
		var ev struct {
			EntityID string     `json:"entity_id"`
			Data     transition `json:"data"`
		}
		if err := json.Unmarshal(p, &ev); err != nil {
			s.t.Fatalf("decode job event %s: %v", p, err)
		}
		out[ev.EntityID] = append(out[ev.EntityID], ev.Data)
	}
	if err := rows.Err(); err != nil {
		s.t.Fatalf("read job events: %v", err)
	}
	return out
}

// deadLetters describes the outbox rows with id ≤ maxID in DEAD_LETTER: "type: error".
func (s *server) deadLetters(maxID int) []string {
	s.t.Helper()
	db, err := s.openDB()
	if err != nil {
		s.t.Fatalf("open the database: %v", err)
	}
	defer db.Close()
	rows, err := db.QueryContext(s.t.Context(), fmt.Sprintf(
		`SELECT type, last_error FROM outbox WHERE status = 'DEAD_LETTER' AND id <= %d ORDER BY id`, maxID))
	if err != nil {
		s.t.Fatalf("read dead letters: %v", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var typ, msg string
		if err := rows.Scan(&typ, &msg); err != nil {
			s.t.Fatalf("read dead letters: %v", err)
		}
		out = append(out, typ+": "+msg)
	}
	return out
}

// processesWithEnv returns the pids of live processes whose environment holds kv.
func processesWithEnv(kv string) []int {
	var pids []int
	forEachProc(func(pid int, dir string) {
		env, err := os.ReadFile(dir + "/environ")
		if err == nil && slices.Contains(strings.Split(string(env), "\x00"), kv) && processAlive(pid) {
			pids = append(pids, pid)
		}
	})
	return pids
}

func appendFile(name, s string) error {
	f, err := os.OpenFile(name, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	_, err = f.WriteString(s)
	return errors.Join(err, f.Close())
}

// chaosReport is what the chaos test counts and prints.
type chaosReport struct {
	backend                      backend
	seed                         uint64
	jobs, listed                 int
	serverKills, workerKills     int
	states                       map[string]int
	byKind                       map[string]map[string]int
	lost, duplicated, doubleEnds int
	retried                      int
	killedRunning                int
	recoveries                   []time.Duration
	notRerun                     []string
	failedByChaos, manual        []string
	leftProcesses, stuckOutbox   int
	variant                      string // "" or docker
	leftContainers               int
	outboxRows                   int
	deadLetters                  []string
	slowCancels                  []string
	submitted, ended             time.Duration
}

func (r chaosReport) String() string {
	var b strings.Builder
	name := string(r.backend)
	if r.variant != "" {
		name += ", " + r.variant + " workers"
	}
	fmt.Fprintf(&b, "chaos report (%s, HODEI_CHAOS_SEED=%d): %d jobs submitted over %s, all ended after %s\n",
		name, r.seed, r.jobs, r.submitted.Round(time.Second), r.ended.Round(time.Second))
	fmt.Fprintf(&b, "  server SIGKILLs: %d; worker SIGKILLs: %d (%d while their job ran)\n",
		r.serverKills, r.workerKills, r.killedRunning)
	fmt.Fprintf(&b, "  end states: %s\n", formatCounts(r.states))
	kinds := make([]string, 0, len(r.byKind))
	for k := range r.byKind {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		fmt.Fprintf(&b, "    %-8s %s\n", k, formatCounts(r.byKind[k]))
	}
	fmt.Fprintf(&b, "  lost: %d; duplicated: %d; not ended: %d; jobs with more than one end transition: %d\n",
		r.lost, r.duplicated, r.jobs-sumCounts(r.states), r.doubleEnds)
	fmt.Fprintf(&b, "  jobs run more than once (attempt > 1): %d\n", r.retried)
	if len(r.recoveries) > 0 {
		d := slices.Clone(r.recoveries)
		slices.Sort(d)
		fmt.Fprintf(&b, "  recovery (worker SIGKILL → job RUNNING again), %d jobs: min %s, median %s, max %s\n",
			len(d), d[0].Round(time.Millisecond), d[len(d)/2].Round(time.Millisecond), d[len(d)-1].Round(time.Millisecond))
	}
	for _, s := range r.notRerun {
		fmt.Fprintf(&b, "    killed while running, not run again: %s\n", s)
	}
	for _, s := range r.failedByChaos {
		fmt.Fprintf(&b, "    failed by the chaos: %s\n", s)
	}
	for _, s := range r.manual {
		fmt.Fprintf(&b, "    manual intervention: %s\n", s)
	}
	for _, s := range r.slowCancels {
		fmt.Fprintf(&b, "    slow cancel: %s\n", s)
	}
	fmt.Fprintf(&b, "  processes left: %d; containers left: %d; outbox rows: %d, stuck: %d, dead letters: %d\n",
		r.leftProcesses, r.leftContainers, r.outboxRows, r.stuckOutbox, len(r.deadLetters))
	for _, d := range r.deadLetters {
		fmt.Fprintf(&b, "    dead letter %s\n", d)
	}
	return b.String()
}

func formatCounts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

func sumCounts(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// killWorkerProcess SIGKILLs a random worker process of the server at url.
func killWorkerProcess(url string, rng *rand.Rand, s *server) *workerKill {
	procs := workerProcs(url)
	if len(procs) == 0 {
		return nil
	}
	p := procs[rng.IntN(len(procs))]
	k := &workerKill{pid: p.pid, workerID: p.id}
	k.jobID, k.jobState, k.attempt = s.workerJob(p.id)
	k.at = time.Now()
	if err := syscall.Kill(p.pid, syscall.SIGKILL); err != nil {
		return nil
	}
	return k
}

// killWorkerContainer kills (SIGKILL, through the engine's API) a random running
// worker container.
func killWorkerContainer(e *dockertest.Engine, rng *rand.Rand, s *server) *workerKill {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := e.Client.ContainerList(ctx, client.ContainerListOptions{
		Filters: client.Filters{}.Add("label", "hodei.worker").Add("status", "running")})
	if err != nil || len(res.Items) == 0 {
		return nil
	}
	c := res.Items[rng.IntN(len(res.Items))]
	k := &workerKill{workerID: c.Labels["hodei.worker"]}
	k.jobID, k.jobState, k.attempt = s.workerJob(k.workerID)
	k.at = time.Now()
	if _, err := e.Client.ContainerKill(ctx, c.ID, client.ContainerKillOptions{Signal: "KILL"}); err != nil {
		return nil
	}
	return k
}
