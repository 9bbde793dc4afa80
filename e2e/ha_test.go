package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	hodeiv1 "github.com/hodei-jobs/hodei/gen/hodei/v1"
	"github.com/hodei-jobs/hodei/gen/hodei/v1/hodeiv1connect"
	"github.com/hodei-jobs/hodei/internal/natstest"
	"github.com/hodei-jobs/hodei/internal/pgtest"
)

// The fault-injection suite (issue 14): three `hodei server` replicas on one
// PostgreSQL of the test's own and a real 3-node NATS cluster (nats-server of go.mod's
// version, JetStream file storage, streams replicated over 3), the chaos test's job mix
// submitted across the replicas while one fault is injected, then the chaos test's
// invariants: no job lost or duplicated, each with the end its kind allows and one
// end transition, no process left, no outbox row stuck; besides, no job's process
// started more often than the job had attempts (every effect once) and no job had more
// workers than attempts. No worker is killed here, so no job that can succeed may end
// otherwise: the faults are the infrastructure's. The workers get every replica's
// address (--worker-servers) and move to another replica when theirs is gone.
//
// HODEI_CHAOS_HA_JOBS sets the jobs per scenario (default 120; the full size is
// 300-500); HODEI_CHAOS_SEED replays the random choices. Each scenario's report goes
// to the test log and to HODEI_CHAOS_REPORT (CI prints it).
func TestHA(t *testing.T) {
	for _, sc := range []struct {
		name  string
		fault func(h *haCluster, r *haReport, window time.Duration)
	}{
		{"replica-kill", faultReplicaKill},
		{"rolling-restart", faultRollingRestart},
		{"postgres-restart", faultPostgresRestart},
		{"nats-node-kill", faultNATSNodeKill},
		{"partition", faultPartition},
		{"ambiguous-commit", nil}, // the proxy's COMMIT drops, set up in startHA
	} {
		t.Run(sc.name, func(t *testing.T) { runHA(t, sc.name, sc.fault) })
	}
}

// haCluster is the platform of one scenario.
type haCluster struct {
	t          *testing.T
	pg         *pgtest.Server
	nats       *natstest.Cluster
	replicas   []*server
	ids        []string   // replica ids (from /readyz), by index
	proxies    []*pgProxy // replica i reaches PostgreSQL through proxies[i]
	rng        *rand.Rand
	mu         sync.Mutex    // guards the replicas' restarts against the readiness poller
	submitting chan struct{} // closed when every job is submitted
}

func startHA(t *testing.T, name string, seed uint64) *haCluster {
	bin, err := natstest.ModuleServer()
	if err != nil {
		t.Fatal(err)
	}
	h := &haCluster{t: t, pg: pgtest.StartServer(t), rng: rand.New(rand.NewPCG(seed, 21)), submitting: make(chan struct{})}
	h.nats = natstest.Start(t, bin, 3)
	for range 3 {
		h.proxies = append(h.proxies, startPGProxy(t, h.pg.URL()))
	}
	// Every replica's address, known before they start: the workers get all three
	// (--worker-servers) and move to another replica when theirs is gone.
	var listens, workerURLs []string
	for range 3 {
		a := freeLoopbackAddr(t)
		listens, workerURLs = append(listens, a), append(workerURLs, "http://"+a)
	}
	for i := range 3 {
		// The worker's own replica first.
		servers := append([]string{workerURLs[i]}, slices.Delete(slices.Clone(workerURLs), i, i+1)...)
		args := []string{"--nats-url", h.nats.URLs(), "--leader-ttl", "3s", "--max-workers", "4",
			"--heartbeat-interval", "1s", "--worker-lost-after", "3s", "--cleanup-interval", "1s",
			"--worker-servers", strings.Join(servers, ",")}
		s := &server{extraArgs: args, t: t, backend: backendPostgres, dbURL: h.proxies[i].url(),
			dataDir: t.TempDir(), listen: listens[i], log: &lockedBuffer{}}
		t.Cleanup(s.cleanup)
		s.startProcess()
		id, _ := s.readiness()
		h.replicas = append(h.replicas, s)
		h.ids = append(h.ids, id)
	}
	if name == "ambiguous-commit" {
		// From now on (not during the migrations at start: a replica whose
		// migration's answer is lost exits, and the operator starts it again).
		for _, p := range h.proxies {
			p.dropCommit.Store(0.02)
		}
	}
	return h
}

// checkStarts counts the job processes started (the starts file, one job id per start)
// and fails the test for each job whose processes started more often than it had
// attempts: a command run twice for one attempt (an ambiguous commit acted on twice, a
// RunJob delivered again and run again).
func (h *haCluster) checkStarts(r *haReport, all []*hodeiv1.Job, file string) {
	b, err := os.ReadFile(file)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		h.t.Errorf("read the job starts: %v", err)
		return
	}
	per := map[string]int{}
	for line := range strings.Lines(string(b)) {
		per[strings.TrimSpace(line)]++
		r.starts++
	}
	for _, j := range all {
		if n, attempts := per[j.GetId()], max(int(j.GetAttempt()), 1); n > attempts {
			r.startedTwice = append(r.startedTwice, fmt.Sprintf("%s: %d starts, %d attempts", j.GetId(), n, attempts))
			h.t.Errorf("job %s (%s): its process started %d times in %d attempts", j.GetId(), j.GetState(), n, attempts)
		}
	}
}

// freeLoopbackAddr returns a loopback address with a port that was free a moment ago.
func freeLoopbackAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// streamsByWorker reads the replicas' logs: for each worker, the replicas (by index)
// that opened a stream for it ("worker stream open").
func (h *haCluster) streamsByWorker() map[string]map[int]bool {
	out := map[string]map[int]bool{}
	for i, s := range h.replicas {
		for line := range strings.Lines(s.log.String()) {
			if !strings.Contains(line, `msg="worker stream open"`) {
				continue
			}
			_, rest, ok := strings.Cut(line, " worker=")
			if !ok {
				continue
			}
			id, _, _ := strings.Cut(strings.TrimSpace(rest), " ")
			if out[id] == nil {
				out[id] = map[int]bool{}
			}
			out[id][i] = true
		}
	}
	return out
}

// movedWorkers counts the workers whose streams were served by more than one replica.
func (h *haCluster) movedWorkers() int {
	n := 0
	for _, reps := range h.streamsByWorker() {
		if len(reps) > 1 {
			n++
		}
	}
	return n
}

// restart starts replica i again (same address, data directory, database proxy).
func (h *haCluster) restart(i int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.replicas[i].startProcess()
}

// urls are the replicas' API URLs.
func (h *haCluster) urls() []string {
	out := make([]string, len(h.replicas))
	for i, s := range h.replicas {
		out[i] = s.url
	}
	return out
}

// haReport is the chaos report plus what the faults measured.
type haReport struct {
	chaosReport
	scenario string
	mu       sync.Mutex
	events   []string        // the faults, as injected
	kills    []haKill        // replica kills
	unready  []time.Duration // /readyz not ready, per replica and outage

	extraWorkers []string // jobs with more workers than attempts
	moved        int      // workers whose stream was served by more than one replica
	starts       int      // job processes started
	startedTwice []string // jobs whose processes started more often than they had attempts
	drains       []haKill // SIGTERMs: at is when the replica had exited
	handedOver   int      // jobs on the workers of SIGTERMed replicas that ended after the replica exited
	backingOff   int      // outbox rows in RETRY scheduled past the end of the check
}

type haKill struct {
	at       time.Time
	replica  string
	affected []string // jobs on workers the replica owned, not ended at the kill
}

func (r *haReport) logf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, fmt.Sprintf(format, args...))
}

func jobsPerHAScenario(t *testing.T) int {
	n := 120
	if v := os.Getenv("HODEI_CHAOS_HA_JOBS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			t.Fatalf("HODEI_CHAOS_HA_JOBS=%q: want a positive integer", v)
		}
	}
	return n
}

func runHA(t *testing.T, name string, fault func(h *haCluster, r *haReport, window time.Duration)) {
	n := jobsPerHAScenario(t)
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("HODEI_CHAOS_SEED"); v != "" {
		var err error
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("HODEI_CHAOS_SEED=%q: want an unsigned integer", v)
		}
	}
	t.Logf("ha %s: HODEI_CHAOS_SEED=%d", name, seed)
	h := startHA(t, name, seed)
	rng := rand.New(rand.NewPCG(seed, 7))
	// Submissions last at least 24 s, so that the faults hit jobs at every stage.
	submitSpacing := max(50*time.Millisecond, 24*time.Second/time.Duration(n))
	run := fmt.Sprintf("ha-%s-%d", name, time.Now().UnixNano())
	labels := map[string]string{"chaos": run}
	client := hodeiv1connect.NewJobServiceClient(&http.Client{Timeout: 15 * time.Second,
		Transport: &failover{urls: h.urls()}}, h.replicas[0].url)

	var weights []string
	for _, k := range chaosKinds {
		for range k.weight {
			weights = append(weights, k.kind)
		}
	}
	jobs := make([]*chaosJob, n)
	specs := make([]*hodeiv1.JobSpec, n)
	cancelDelay := make([]time.Duration, n)
	// Every job's process writes its job id to starts when it starts: the proof that
	// no attempt ran its command twice (every effect once).
	starts := filepath.Join(t.TempDir(), "starts")
	for i := range jobs {
		jobs[i] = &chaosJob{seq: i, kind: weights[rng.IntN(len(weights))]}
		specs[i] = chaosSpec(run, jobs[i], 1+rng.Float64()*2)
		specs[i].Command = append([]string{"sh", "-c", `echo "$HODEI_JOB_ID" >> "$HA_STARTS"; exec "$@"`, "sh"}, specs[i].Command...)
		specs[i].Env["HA_STARTS"] = starts
		cancelDelay[i] = time.Duration(200+rng.IntN(2300)) * time.Millisecond
	}

	r := &haReport{scenario: name}
	r.seed = seed
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	began := time.Now()
	var (
		mu      sync.Mutex
		wg      sync.WaitGroup
		submits sync.WaitGroup
	)
	submits.Add(1)
	go func() {
		defer submits.Done()
		defer close(h.submitting)
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
				wg.Go(func() {
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
				})
			}
			time.Sleep(submitSpacing)
		}
	}()
	// /readyz of every replica, every 50 ms, while the run lasts.
	pollDone := make(chan struct{})
	pollStop := make(chan struct{})
	go func() {
		defer close(pollDone)
		h.pollReadiness(r, pollStop)
	}()

	window := time.Duration(n) * (submitSpacing + 10*time.Millisecond)
	if fault != nil {
		fault(h, r, window)
	}
	submits.Wait()
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	r.submitted = time.Since(began)
	all := h.replicas[0].waitChaosJobs(labels, n, 5*time.Minute)
	r.ended = time.Since(began)
	close(pollStop)
	<-pollDone
	if name == "ambiguous-commit" {
		var dropped int64
		for _, p := range h.proxies {
			dropped += p.dropped.Load()
		}
		r.logf("%d COMMITs forwarded whose answer the proxy dropped", dropped)
		if dropped == 0 {
			t.Error("no COMMIT answer was dropped: the scenario tested nothing")
		}
	}

	h.check(r, jobs, all, run)
	h.checkStarts(r, all, starts)
	report := r.String()
	t.Log("\n" + report)
	if f := os.Getenv("HODEI_CHAOS_REPORT"); f != "" {
		if err := appendFile(f, report+"\n"); err != nil {
			t.Errorf("HODEI_CHAOS_REPORT: %v", err)
		}
	}
}

// check applies the chaos test's invariants to the run's jobs, fills r, and fails the
// test for each violation. A job of a kind that can succeed must have succeeded.
func (h *haCluster) check(r *haReport, jobs []*chaosJob, all []*hodeiv1.Job, run string) {
	t := h.t
	s := h.replicas[0]
	r.jobs, r.listed = len(jobs), len(all)
	r.states, r.byKind = map[string]int{}, map[string]map[string]int{}
	bySeq := map[string][]*hodeiv1.Job{}
	for _, j := range all {
		seq := j.GetSpec().GetLabels()["chaos-seq"]
		bySeq[seq] = append(bySeq[seq], j)
	}
	for _, cj := range jobs {
		got := bySeq[strconv.Itoa(cj.seq)]
		switch {
		case len(got) == 0:
			r.lost++
			t.Errorf("job %d (%s, id %s) is lost", cj.seq, cj.kind, cj.id)
			continue
		case len(got) > 1:
			r.duplicated++
			t.Errorf("job %d (%s) exists %d times", cj.seq, cj.kind, len(got))
		}
		j := got[0]
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
			t.Errorf("job %d (%s, %s): %s", cj.seq, cj.kind, j.GetId(), msg)
		}
		if (cj.kind == kindQuick || cj.kind == kindSleep) && st != "SUCCEEDED" {
			r.failedByChaos = append(r.failedByChaos, fmt.Sprintf("%s %s attempt %d: %s %s", cj.kind, j.GetId(), j.GetAttempt(), st, j.GetLastError()))
			t.Errorf("job %d (%s, %s) ended %s (%s): no worker was killed, so the fault made it fail", cj.seq, cj.kind, j.GetId(), st, j.GetLastError())
		}
		if st == "MANUAL_INTERVENTION_REQUIRED" {
			r.manual = append(r.manual, fmt.Sprintf("%s %s: %s", cj.kind, j.GetId(), j.GetLastError()))
		}
	}
	r.slowCancels = slowCancels(jobs)
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
	// Every effect once: no job had more workers provisioned than it had attempts.
	if dbl := h.extraWorkers(run); len(dbl) > 0 {
		r.extraWorkers = dbl
		t.Errorf("jobs with more workers than attempts (a provisioning done twice): %v", dbl)
	}
	// Replica kills: the time from the kill to the next transition of each job whose
	// worker the killed replica owned.
	for _, k := range r.kills {
		for _, id := range k.affected {
			for _, tr := range trans[id] {
				if tr.At.After(k.at) {
					r.recoveries = append(r.recoveries, tr.At.Sub(k.at))
					break
				}
			}
		}
	}
	for _, s := range h.replicas {
		s.waitNoWorkers(90 * time.Second)
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
	maxID := s.count("SELECT coalesce(max(id), 0) FROM outbox")
	deadline = time.Now().Add(time.Minute)
	for {
		// Stuck: due (not scheduled for a later retry) and still not relayed. A row
		// in RETRY whose backoff runs past the minute is not stuck; it is counted
		// and reported (after a whole-NATS restart the relay's exponential backoff
		// can push event rows minutes out).
		open := s.count(fmt.Sprintf(`SELECT count(*) FROM outbox WHERE id <= %d AND status IN ('PENDING', 'RETRY')
			AND scheduled_at <= now()`, maxID))
		if open == 0 {
			break
		}
		if time.Now().After(deadline) {
			r.stuckOutbox = open
			t.Errorf("%d outbox rows (of ids ≤ %d) due and still PENDING or RETRY a minute after every job ended", open, maxID)
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	r.backingOff = s.count(fmt.Sprintf(`SELECT count(*) FROM outbox WHERE id <= %d AND status = 'RETRY' AND scheduled_at > now()`, maxID))
	r.outboxRows = maxID
	r.deadLetters = s.deadLetters(maxID)
	// A job on a SIGTERMed replica's worker that ended after the replica had exited was
	// reported through another replica: its worker must have moved.
	for _, d := range r.drains {
		for _, id := range d.affected {
			for _, tr := range trans[id] {
				if isTerminal(tr.To) && tr.At.After(d.at) {
					r.handedOver++
				}
			}
		}
	}
	r.moved = h.movedWorkers()
	if r.handedOver > 0 && r.moved == 0 {
		t.Errorf("%d jobs on the workers of SIGTERMed replicas ended after their replica had exited, and no worker moved to another replica", r.handedOver)
	}
}

func (r *haReport) String() string {
	r.backend = backend("ha " + r.scenario + ", 3 replicas, 3 NATS nodes")
	var b strings.Builder
	recoveries := r.recoveries
	r.recoveries = nil // printed below with p50/p99
	b.WriteString(r.chaosReport.String())
	fmt.Fprintf(&b, "  jobs with more workers provisioned than attempts: %d\n", len(r.extraWorkers))
	fmt.Fprintf(&b, "  outbox rows in RETRY backing off past the check: %d\n", r.backingOff)
	fmt.Fprintf(&b, "  workers whose stream moved to another replica: %d\n", r.moved)
	if len(r.drains) > 0 {
		fmt.Fprintf(&b, "  jobs on SIGTERMed replicas' workers that ended after their replica exited: %d\n", r.handedOver)
	}
	fmt.Fprintf(&b, "  job processes started: %d; jobs started more often than attempts: %d\n", r.starts, len(r.startedTwice))
	for _, e := range r.events {
		fmt.Fprintf(&b, "  fault: %s\n", e)
	}
	if len(recoveries) > 0 {
		d := slices.Clone(recoveries)
		slices.Sort(d)
		fmt.Fprintf(&b, "  replica kill → next progress of each job on its workers, %d jobs: p50 %s, p99 %s, max %s\n",
			len(d), d[len(d)/2].Round(time.Millisecond), d[(len(d)*99)/100].Round(time.Millisecond), d[len(d)-1].Round(time.Millisecond))
	}
	if len(r.unready) > 0 {
		var parts []string
		for _, d := range r.unready {
			parts = append(parts, d.Round(10*time.Millisecond).String())
		}
		fmt.Fprintf(&b, "  /readyz not ready (per replica and outage): %s\n", strings.Join(parts, ", "))
	}
	return b.String()
}

// pollReadiness records, per replica, how long each stretch of /readyz not answering
// 200 lasted (a replica that is down or restarting by the test's hand is not counted).
func (h *haCluster) pollReadiness(r *haReport, stop <-chan struct{}) {
	c := &http.Client{Timeout: 2 * time.Second}
	since := make([]time.Time, len(h.replicas))
	for {
		select {
		case <-stop:
			return
		case <-time.After(50 * time.Millisecond):
		}
		for i, s := range h.replicas {
			if !h.mu.TryLock() {
				since[i] = time.Time{} // a restart by the test: not an outage of readiness
				continue
			}
			url, alive := s.url, s.cmd != nil && !isDone(s.done)
			h.mu.Unlock()
			if !alive {
				since[i] = time.Time{}
				continue
			}
			ok := false
			if res, err := c.Get(url + "/readyz"); err == nil {
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
				ok = res.StatusCode == http.StatusOK
			}
			switch {
			case !ok && since[i].IsZero():
				since[i] = time.Now()
			case ok && !since[i].IsZero():
				r.mu.Lock()
				r.unready = append(r.unready, time.Since(since[i]))
				r.mu.Unlock()
				since[i] = time.Time{}
			}
		}
	}
}

func isDone(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// extraWorkers describes the jobs of the run with more worker rows than attempts.
func (h *haCluster) extraWorkers(run string) []string {
	db, err := h.replicas[0].openDB()
	if err != nil {
		h.t.Errorf("open the database: %v", err)
		return nil
	}
	defer db.Close()
	rows, err := db.QueryContext(h.t.Context(), `SELECT j.id, j.attempt, count(w.id) FROM jobs j
		JOIN workers w ON w.job_id = j.id WHERE j.labels->>'chaos' = $1
		GROUP BY j.id, j.attempt HAVING count(w.id) > greatest(j.attempt, 1)`, run)
	if err != nil {
		h.t.Errorf("workers per job: %v", err)
		return nil
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		var attempt, workers int
		if rows.Scan(&id, &attempt, &workers) == nil {
			out = append(out, fmt.Sprintf("%s: attempt %d, %d workers", id, attempt, workers))
		}
	}
	return out
}

// affectedJobs returns the jobs not ended whose worker replica id owns.
func (h *haCluster) affectedJobs(id string) []string {
	db, err := h.replicas[0].openDB()
	if err != nil {
		h.t.Errorf("open the database: %v", err)
		return nil
	}
	defer db.Close()
	rows, err := db.QueryContext(h.t.Context(), `SELECT j.id FROM jobs j JOIN workers w ON w.id = j.worker_id
		WHERE w.owner = $1 AND j.state NOT IN ('SUCCEEDED', 'FAILED', 'CANCELLED', 'TIMED_OUT', 'MANUAL_INTERVENTION_REQUIRED')`, id)
	if err != nil {
		h.t.Errorf("affected jobs: %v", err)
		return nil
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var j string
		if rows.Scan(&j) == nil {
			out = append(out, j)
		}
	}
	return out
}

// 1. One replica SIGKILLed every 3-5 s and restarted 0.5-1.5 s later, until every job
// is submitted.
func faultReplicaKill(h *haCluster, r *haReport, _ time.Duration) {
	for {
		select {
		case <-h.submitting:
			return
		case <-time.After(time.Duration(3000+h.rng.IntN(2000)) * time.Millisecond):
		}
		i := h.rng.IntN(len(h.replicas))
		affected := h.affectedJobs(h.ids[i])
		at := time.Now()
		h.mu.Lock()
		h.replicas[i].kill()
		h.mu.Unlock()
		r.mu.Lock()
		r.kills = append(r.kills, haKill{at: at, replica: h.ids[i], affected: affected})
		r.serverKills++
		r.mu.Unlock()
		time.Sleep(time.Duration(500+h.rng.IntN(1000)) * time.Millisecond)
		h.restart(i)
		r.logf("replica %d SIGKILLed (%d jobs on its workers), back after %s", i, len(affected), time.Since(at).Round(time.Millisecond))
	}
}

// 2. A rolling restart: each replica SIGTERMed (it must exit by itself) and started
// again, one after the other, while jobs run.
func faultRollingRestart(h *haCluster, r *haReport, window time.Duration) {
	gap := window / time.Duration(len(h.replicas)+1)
	for i, s := range h.replicas {
		time.Sleep(gap)
		affected := h.affectedJobs(h.ids[i])
		at := time.Now()
		h.mu.Lock()
		graceful := s.stop()
		h.mu.Unlock()
		r.mu.Lock()
		r.drains = append(r.drains, haKill{at: time.Now(), replica: h.ids[i], affected: affected})
		r.mu.Unlock()
		if !graceful {
			h.t.Errorf("replica %d did not exit within 20s of SIGTERM", i)
		}
		h.restart(i)
		r.logf("replica %d SIGTERMed (%d jobs on its workers) and restarted in %s", i, len(affected), time.Since(at).Round(time.Millisecond))
	}
}

// 3. PostgreSQL restarted mid-run, -m fast, then -m immediate.
func faultPostgresRestart(h *haCluster, r *haReport, window time.Duration) {
	for _, mode := range []string{"fast", "immediate"} {
		time.Sleep(window / 3)
		down := h.pg.Restart(mode)
		r.logf("PostgreSQL restarted -m %s: down %s", mode, down.Round(time.Millisecond))
	}
}

// 4. One NATS node killed; a replica restarted while it is down; the node back; then
// the whole NATS cluster stopped and started again.
func faultNATSNodeKill(h *haCluster, r *haReport, window time.Duration) {
	time.Sleep(window / 4)
	victim := h.nats.Nodes[h.rng.IntN(len(h.nats.Nodes))]
	victim.Kill()
	r.logf("NATS node %s SIGKILLed", victim.Name)
	time.Sleep(time.Second)
	i := h.rng.IntN(len(h.replicas))
	h.mu.Lock()
	h.replicas[i].kill()
	h.mu.Unlock()
	at := time.Now()
	h.restart(i)
	r.logf("replica %d SIGKILLed and restarted with %s down: ready in %s", i, victim.Name, time.Since(at).Round(time.Millisecond))
	time.Sleep(window / 4)
	if err := victim.Start(); err != nil {
		h.t.Error(err)
		return
	}
	r.logf("NATS node %s restarted", victim.Name)
	// The whole cluster stopped and started again (JetStream file storage: the streams
	// and consumers come back from disk). Before the relay's publishes had an ack
	// timeout (messaging.PublishAckTimeout), a publish sent while no stream leader was
	// elected yet waited forever for its acknowledgement and held its relay.
	time.Sleep(window / 4)
	at = time.Now()
	for _, nd := range h.nats.Nodes {
		nd.Stop()
	}
	for _, nd := range h.nats.Nodes {
		if err := nd.Start(); err != nil {
			h.t.Error(err)
			return
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := h.nats.WaitJetStream(ctx); err != nil {
		h.t.Error(err)
	}
	r.logf("whole NATS cluster restarted: JetStream back after %s", time.Since(at).Round(time.Millisecond))
}

// 5. A partition: one replica cut off from PostgreSQL (its proxy drops every
// connection and refuses new ones) for three leader TTLs, then healed.
func faultPartition(h *haCluster, r *haReport, window time.Duration) {
	time.Sleep(window / 3)
	i := h.rng.IntN(len(h.replicas))
	h.proxies[i].cut(true)
	r.logf("replica %d cut off from PostgreSQL", i)
	time.Sleep(10 * time.Second)
	h.proxies[i].cut(false)
	r.logf("replica %d reconnected to PostgreSQL after 10s", i)
}

// failover is an http.RoundTripper that sends each request to the replicas in turn,
// starting with the next one, moving on only when a replica refuses the connection
// (the request never reached it, so sending it elsewhere cannot do it twice).
type failover struct {
	urls []string
	next atomic.Uint32
}

func (f *failover) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		var err error
		if body, err = io.ReadAll(req.Body); err != nil {
			return nil, err
		}
		_ = req.Body.Close()
	}
	start := int(f.next.Add(1))
	var last error
	for k := range f.urls {
		base := f.urls[(start+k)%len(f.urls)]
		r := req.Clone(req.Context())
		host := strings.TrimPrefix(base, "http://")
		r.URL.Host, r.Host = host, host
		r.Body = io.NopCloser(bytes.NewReader(body))
		res, err := http.DefaultTransport.RoundTrip(r)
		if err == nil {
			return res, nil
		}
		last = err
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return nil, err
		}
	}
	return nil, last
}

// pgProxy is a TCP proxy on loopback between one replica and PostgreSQL, which the
// test controls: cut drops every connection and refuses new ones (a partition), and
// with dropCommit > 0 it forwards a COMMIT and then, with that probability, closes
// both sides before the answer comes back (an ambiguous commit: committed, but the
// answer was lost).
type pgProxy struct {
	ln         net.Listener
	target     string
	dbURL      string
	cutOff     atomic.Bool
	dropCommit atomic.Value // float64
	dropped    atomic.Int64
	mu         sync.Mutex
	conns      map[net.Conn]struct{}
	rng        *rand.Rand
}

func startPGProxy(t *testing.T, dbURL string) *pgProxy {
	i := strings.Index(dbURL, "@") + 1
	j := strings.Index(dbURL[i:], "/") + i
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &pgProxy{ln: ln, target: dbURL[i:j], conns: map[net.Conn]struct{}{},
		dbURL: dbURL[:i] + ln.Addr().String() + dbURL[j:], rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))}
	p.dropCommit.Store(0.0)
	t.Cleanup(func() { _ = ln.Close(); p.cut(true) })
	go p.serve()
	return p
}

func (p *pgProxy) url() string { return p.dbURL }

// cut(true) closes every proxied connection and refuses new ones until cut(false).
func (p *pgProxy) cut(on bool) {
	p.cutOff.Store(on)
	if !on {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		_ = c.Close()
	}
}

func (p *pgProxy) track(c net.Conn, add bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if add {
		p.conns[c] = struct{}{}
	} else {
		delete(p.conns, c)
	}
}

func (p *pgProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if p.cutOff.Load() {
			_ = c.Close()
			continue
		}
		go p.handle(c)
	}
}

func (p *pgProxy) handle(client net.Conn) {
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		_ = client.Close()
		return
	}
	p.track(client, true)
	p.track(server, true)
	defer func() {
		_ = client.Close()
		_ = server.Close()
		p.track(client, false)
		p.track(server, false)
	}()
	go func() {
		_, _ = io.Copy(client, server)
		_ = client.Close()
	}()
	// Client → server: the startup message (no type byte), then typed messages.
	var hdr [4]byte
	if _, err := io.ReadFull(client, hdr[:]); err != nil {
		return
	}
	n := int(binary.BigEndian.Uint32(hdr[:]))
	if n < 4 || n > 1<<20 {
		return
	}
	startup := make([]byte, n)
	copy(startup, hdr[:])
	if _, err := io.ReadFull(client, startup[4:]); err != nil {
		return
	}
	if _, err := server.Write(startup); err != nil {
		return
	}
	var th [5]byte
	for {
		if _, err := io.ReadFull(client, th[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint32(th[1:]))
		if n < 4 || n > 1<<30 {
			return
		}
		msg := make([]byte, 1+n)
		copy(msg, th[:])
		if _, err := io.ReadFull(client, msg[5:]); err != nil {
			return
		}
		if th[0] == 'Q' && isCommit(msg[5:]) {
			rate, _ := p.dropCommit.Load().(float64)
			p.mu.Lock()
			drop := rate > 0 && p.rng.Float64() < rate
			p.mu.Unlock()
			if drop {
				// The client's side goes first, so that no answer reaches it; the
				// server gets the COMMIT and commits, and its answer is lost.
				_ = client.Close()
				_, _ = server.Write(msg)
				time.Sleep(100 * time.Millisecond)
				p.dropped.Add(1)
				return
			}
		}
		if _, err := server.Write(msg); err != nil {
			return
		}
	}
}

func isCommit(query []byte) bool {
	q := strings.ToUpper(strings.TrimSpace(strings.TrimRight(string(query), "\x00")))
	q = strings.TrimSuffix(q, ";")
	return q == "COMMIT" || q == "END"
}

// TestHAWorkerMoves: workers move between replicas (issue 14). A job runs on a worker
// whose replica is SIGKILLed and stays down; the worker, which has every replica's
// address (--worker-servers), reconnects to another one, and the job ends SUCCEEDED
// with its full output, reported through that replica. The killed replica comes back
// only after the job ended (its node-local worker is then released through it).
func TestHAWorkerMoves(t *testing.T) {
	h := startHA(t, "worker-moves", uint64(time.Now().UnixNano()))
	const lines = 40
	id := h.replicas[0].submit("--label", "ha=worker-moves", "--", "sh", "-c",
		fmt.Sprintf(`for i in $(seq 1 %d); do echo "line $i"; sleep 0.25; done`, lines))
	// Running, with some output already sent.
	var j *hodeiv1.Job
	deadline := time.Now().Add(2 * time.Minute)
	for {
		j = h.replicas[0].getJob(id)
		if j.GetState() == "RUNNING" && j.GetWorkerId() != "" &&
			strings.Contains(h.replicas[0].hodei("job", "logs", id).stdout, "line 3\n") {
			break
		}
		if isTerminal(j.GetState()) || time.Now().After(deadline) {
			t.Fatalf("job %s is %s, not running with output, 2 minutes after submission", id, j.GetState())
		}
		time.Sleep(100 * time.Millisecond)
	}
	workerID := j.GetWorkerId()
	owner := -1
	for i, rid := range h.ids {
		if slices.Contains(h.affectedJobs(rid), id) {
			owner = i
		}
	}
	if owner < 0 {
		t.Fatalf("no replica owns worker %s of job %s", workerID, id)
	}
	h.mu.Lock()
	h.replicas[owner].kill()
	h.mu.Unlock()
	killed := time.Now()
	other := h.replicas[(owner+1)%len(h.replicas)]
	ended := other.waitJobs(map[string]string{"ha": "worker-moves"}, 1, 3*time.Minute)
	if len(ended) != 1 || ended[0].GetState() != "SUCCEEDED" || ended[0].GetAttempt() != 1 {
		t.Fatalf("job after its replica's death: %v; want SUCCEEDED in attempt 1 (the same worker, moved)", ended)
	}
	t.Logf("replica %d SIGKILLed with job %s running on its worker %s; the job ended SUCCEEDED %s later",
		owner, id, workerID, time.Since(killed).Round(time.Millisecond))
	var want strings.Builder
	for i := 1; i <= lines; i++ {
		fmt.Fprintf(&want, "line %d\n", i)
	}
	if got := other.mustHodei("job", "logs", id).stdout; got != want.String() {
		t.Errorf("job logs after the move: %q, want lines 1 to %d once each", got, lines)
	}
	served := h.streamsByWorker()[workerID]
	var by []int
	for i := range served {
		if i != owner {
			by = append(by, i)
		}
	}
	if len(by) == 0 {
		t.Errorf("worker %s: streams opened on replicas %v, none but its dead owner %d", workerID, served, owner)
	}
	h.restart(owner)
	for _, s := range h.replicas {
		s.waitNoWorkers(90 * time.Second)
	}
}
