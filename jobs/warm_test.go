package jobs_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/command"
	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/jobs"
	"github.com/hodei-jobs/hodei/store"
)

// idleWorkers returns the ids of the pool's idle workers (READY, no job).
func (e *env) idleWorkers(pool string) []string {
	e.t.Helper()
	ws, err := e.st.Workers().List(context.Background(), domain.WorkerReady)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, w := range ws {
		if w.JobID == "" && w.Labels["hodei.pool"] == pool {
			out = append(out, w.ID)
		}
	}
	return out
}

// waitIdle waits until the pool has exactly n idle workers and returns them.
func (e *env) waitIdle(pool string, n int) []string {
	e.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ids := e.idleWorkers(pool)
		if len(ids) == n {
			return ids
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("pool %s has %d idle workers after 20s, want %d\n%s", pool, len(ids), n, e.logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (e *env) submit(s domain.JobSpec) *domain.Job {
	e.t.Helper()
	j, err := e.svc.Submit(e.ctx(), s)
	if err != nil {
		e.t.Fatal(err)
	}
	return j
}

func (e *env) worker(id string) *domain.Worker {
	e.t.Helper()
	w, err := e.st.Workers().Get(context.Background(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	return w
}

// TestWarmPoolRunsJobsWithoutProvisioning: the pool keeps 2 idle workers registered;
// a job is assigned to one of them with no provisioning (no provisioning saga, no
// Create for it), and the worker, which may run 3 jobs, goes back to the pool after
// each job until its third, after which it is destroyed and the pool refills.
func TestWarmPoolRunsJobsWithoutProvisioning(t *testing.T) {
	e := newEnv(t, envOpts{capacity: 4, pools: []jobs.PoolConfig{{Name: "p", Provider: "fake", MinIdle: 2, MaxIdle: 3, MaxJobsPerWorker: 3}}})
	warm := e.waitIdle("p", 2)
	j := e.submit(spec(nil))
	done := e.waitJob(j.ID, domain.JobSucceeded)
	if done.WorkerID != warm[0] && done.WorkerID != warm[1] {
		t.Fatalf("job ran on worker %s, want one of the warm workers %v", done.WorkerID, warm)
	}
	if _, err := e.engine.Get(context.Background(), jobs.ProvisioningSagaID(j.ID, 1)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("job on a warm worker has a provisioning saga (err %v)", err)
	}
	if _, creates := e.cloud.wasDestroyed(done.WorkerID); creates != 1 {
		t.Fatalf("warm worker created %d times, want once (before the job)", creates)
	}
	w := e.worker(done.WorkerID)
	e.waitSaga(jobs.ExecutionSagaID(j.ID), "COMPLETED")
	deadline := time.Now().Add(10 * time.Second)
	for w = e.worker(done.WorkerID); w.State != domain.WorkerReady; w = e.worker(done.WorkerID) {
		if time.Now().After(deadline) {
			t.Fatalf("worker %s is %s after its first job, want READY again (recycled)", w.ID, w.State)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if w.JobID != "" || w.Labels["hodei.namespace"] != domain.DefaultNamespace || w.Labels["hodei.pool.jobs"] != "1" {
		t.Fatalf("recycled worker %+v", w)
	}
	// Two more jobs on the same worker (the only ones it can take, one at a time).
	used := map[string]int{done.WorkerID: 1}
	for range 5 {
		j := e.submit(spec(nil))
		used[e.waitJob(j.ID, domain.JobSucceeded).WorkerID]++
		e.waitSaga(jobs.ExecutionSagaID(j.ID), "COMPLETED")
	}
	for id, n := range used {
		if n > 3 {
			t.Fatalf("worker %s ran %d jobs, limit 3", id, n)
		}
		if n == 3 {
			if destroyed, _ := e.cloud.waitDestroyed(id); !destroyed {
				t.Fatalf("worker %s ran its 3 jobs and was not destroyed", id)
			}
		}
	}
	if len(used) >= 6 {
		t.Fatalf("no worker was reused: %v", used)
	}
}

// TestWarmWorkerServesOneNamespace: a worker that ran a job of team-a is never given a
// job of team-b.
func TestWarmWorkerServesOneNamespace(t *testing.T) {
	e := newEnv(t, envOpts{capacity: 3, pools: []jobs.PoolConfig{{Name: "p", Provider: "fake", MinIdle: 1, MaxIdle: 3, MaxJobsPerWorker: 10}}})
	e.waitIdle("p", 1)
	nsSpec := func(ns string) domain.JobSpec { s := spec(nil); s.Namespace = ns; return s }
	a := e.submit(nsSpec("team-a"))
	wa := e.waitJob(a.ID, domain.JobSucceeded).WorkerID
	e.waitSaga(jobs.ExecutionSagaID(a.ID), "COMPLETED")
	for range 3 {
		b := e.submit(nsSpec("team-b"))
		wb := e.waitJob(b.ID, domain.JobSucceeded).WorkerID
		e.waitSaga(jobs.ExecutionSagaID(b.ID), "COMPLETED")
		if wb == wa {
			t.Fatalf("team-b's job ran on worker %s, which ran team-a's job", wb)
		}
		// A pool worker that took it is bound to team-b; the job may also have got a
		// worker of its own (no idle one matched while the pool refilled, as under
		// load), which runs one job and is bound to nothing.
		w := e.worker(wb)
		if ns := w.Labels["hodei.namespace"]; ns != "team-b" && (ns != "" || w.Labels["hodei.pool"] != "") {
			t.Fatalf("worker %s (pool %q) of team-b's job is bound to %q", wb, w.Labels["hodei.pool"], ns)
		}
	}
	a2 := e.submit(nsSpec("team-a"))
	if w := e.waitJob(a2.ID, domain.JobSucceeded).WorkerID; w != wa && e.worker(w).Labels["hodei.namespace"] != "team-a" {
		t.Fatalf("team-a's second job ran on %s", w)
	}
}

// TestPendingJobTakesSlotOfIdleWorker: capacity 2, both slots held by idle pool
// workers for jobs that ask for 1 CPU. A job without resources cannot use them: one
// idle worker is destroyed for it, and it runs on a worker of its own; the workers
// alive never exceed the capacity.
func TestPendingJobTakesSlotOfIdleWorker(t *testing.T) {
	e := newEnv(t, envOpts{capacity: 2, pools: []jobs.PoolConfig{{Name: "cpu1", Provider: "fake", CPU: "1", MinIdle: 2}}})
	warm := e.waitIdle("cpu1", 2)
	j := e.submit(spec(nil))
	done := e.waitJob(j.ID, domain.JobSucceeded)
	if done.WorkerID == warm[0] || done.WorkerID == warm[1] {
		t.Fatalf("job without resources ran on a cpu=1 pool worker")
	}
	if n := e.count(`SELECT count(*) FROM workers WHERE id = ANY($1) AND state = 'TERMINATED'`, warm); n != 1 {
		t.Fatalf("%d idle pool workers destroyed for the job, want 1", n)
	}
	// A job that matches runs on the remaining pool worker.
	s := spec(nil)
	s.Resources.CPUMillis = 1000
	m := e.submit(s)
	if w := e.waitJob(m.ID, domain.JobSucceeded).WorkerID; e.worker(w).Labels["hodei.pool"] != "cpu1" {
		t.Fatalf("cpu=1 job ran on %s, not a pool worker", w)
	}
}

// TestWarmWorkersSurviveRestartAndAssignmentIsDurable: the control plane stops after a
// job was assigned to a warm worker but before its RunJob got through; the next one
// finds the pool's workers (the sweep leaves them), delivers the job to the same
// worker, and it succeeds.
func TestWarmWorkersSurviveRestartAndAssignmentIsDurable(t *testing.T) {
	o := envOpts{capacity: 3, pools: []jobs.PoolConfig{{Name: "p", Provider: "fake", MinIdle: 2, MaxIdle: 3, MaxJobsPerWorker: 5}}}
	e := newEnv(t, o)
	warm := e.waitIdle("p", 2)
	drop := func(string, *domain.Job) bool { return true }
	e.cloud.dropRun.Store(&drop)
	j := e.submit(spec(nil))
	assigned := e.waitJob(j.ID, domain.JobAssigned)
	if assigned.WorkerID != warm[0] && assigned.WorkerID != warm[1] {
		t.Fatalf("job assigned to %s, not a warm worker", assigned.WorkerID)
	}
	e.stop()
	e.cloud.dropRun.Store(nil)
	e.start(o)
	done := e.waitJob(j.ID, domain.JobSucceeded)
	if done.WorkerID != assigned.WorkerID {
		t.Fatalf("job ended on %s, assigned to %s", done.WorkerID, assigned.WorkerID)
	}
	time.Sleep(300 * time.Millisecond) // a few sweeps (SweepInterval 100ms)
	for _, id := range warm {
		if destroyed, creates := e.cloud.wasDestroyed(id); destroyed || creates != 1 {
			t.Fatalf("warm worker %s after the restart: destroyed %v, created %d times", id, destroyed, creates)
		}
	}
}

// TestStaleIdleWorkerGetsNoJob: an idle pool worker not heard of for longer than
// Config.IdleStaleAfter (10 s by default) gets no job: a server that stopped took its
// local agents with it, their rows stay READY, and a job given to one failed 15 s later
// as lost. The job runs on another worker.
func TestStaleIdleWorkerGetsNoJob(t *testing.T) {
	e := newEnv(t, envOpts{capacity: 3, pools: []jobs.PoolConfig{{Name: "p", Provider: "fake", MinIdle: 1, MaxIdle: 1, MaxJobsPerWorker: 5}}})
	stale := e.waitIdle("p", 1)[0]
	e.clock.Advance(11 * time.Second) // no heartbeat from it meanwhile
	j := e.submit(spec(nil))
	if done := e.waitJob(j.ID, domain.JobSucceeded); done.WorkerID == stale {
		t.Fatalf("job ran on the idle worker %s not heard of for 11 s", stale)
	}
	// Heard of again, it takes jobs again.
	if err := e.svc.Heartbeat(e.ctx(), stale, e.clock.Now()); err != nil {
		t.Fatal(err)
	}
	ran := false
	for range 4 {
		j := e.submit(spec(nil))
		ran = ran || e.waitJob(j.ID, domain.JobSucceeded).WorkerID == stale
		e.waitSaga(jobs.ExecutionSagaID(j.ID), "COMPLETED")
	}
	if !ran {
		t.Fatalf("the idle worker %s never got a job after its heartbeat", stale)
	}
}

// TestIdleTTLRetiresWorkersAboveMinIdle: a pool restarted with min_idle 1 and an
// idle_ttl of 1s keeps one of its 3 idle workers once they have been idle longer.
func TestIdleTTLRetiresWorkersAboveMinIdle(t *testing.T) {
	o := envOpts{capacity: 4, pools: []jobs.PoolConfig{{Name: "p", Provider: "fake", MinIdle: 3}}}
	e := newEnv(t, o)
	e.waitIdle("p", 3)
	e.stop()
	o.pools = []jobs.PoolConfig{{Name: "p", Provider: "fake", MinIdle: 1, MaxIdle: 3, IdleTTL: time.Second}}
	e.start(o)
	time.Sleep(200 * time.Millisecond)
	if n := len(e.idleWorkers("p")); n != 3 {
		t.Fatalf("%d idle workers before their idle_ttl, want 3", n)
	}
	e.clock.Advance(2 * time.Second)
	e.waitIdle("p", 1)
}

// TestPoolConfigRefused: an invalid pool is refused by New, naming its field.
func TestPoolConfigRefused(t *testing.T) {
	e := newEnv(t, envOpts{noScheduler: true, noEngineLoop: true})
	newServiceErr := func(t *testing.T, pools []jobs.PoolConfig) error {
		_, err := jobs.New(e.st, command.NewBus(), e.engine, newProviders(t, e.cloud), e.cloud,
			jobs.Config{ServerURL: "http://127.0.0.1:1", Pools: pools})
		return err
	}
	for _, tc := range []struct {
		pool jobs.PoolConfig
		want string
	}{
		{jobs.PoolConfig{MinIdle: 1}, "pools[0].provider is empty"},
		{jobs.PoolConfig{Provider: "nope", MinIdle: 1}, "pools[0].provider"},
		{jobs.PoolConfig{Provider: "fake", MinIdle: 3, MaxIdle: 2}, "pools[0].max_idle"},
		{jobs.PoolConfig{Provider: "fake", MinIdle: -1}, "pools[0].min_idle"},
		{jobs.PoolConfig{Provider: "fake", MaxJobsPerWorker: -2}, "pools[0].max_jobs_per_worker"},
		{jobs.PoolConfig{Provider: "fake", Image: "busybox"}, "pools[0].image"},
		{jobs.PoolConfig{Provider: "fake", Memory: "lots"}, "pools[0].memory"},
		{jobs.PoolConfig{Provider: "fake", IdleTTL: time.Millisecond}, "pools[0].idle_ttl"},
	} {
		err := newServiceErr(t, []jobs.PoolConfig{tc.pool})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("pool %+v: err %v, want %q", tc.pool, err, tc.want)
		}
	}
	if err := newServiceErr(t, []jobs.PoolConfig{{Provider: "fake"}, {Provider: "fake"}}); err == nil || !strings.Contains(err.Error(), "pools[1].name") {
		t.Errorf("duplicate pool names: %v", err)
	}
}
