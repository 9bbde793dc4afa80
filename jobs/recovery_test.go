package jobs_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/command"
	"github.com/hodei-jobs/hodei/command/commandtest"
	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/jobs"
	"github.com/hodei-jobs/hodei/saga"
	"github.com/hodei-jobs/hodei/store"
)

func TestRecoveryCommandsRegistered(t *testing.T) {
	e := newEnv(t, envOpts{noScheduler: true, noEngineLoop: true})
	bus := command.NewBus()
	reg := saga.NewRegistry()
	if err := jobs.RegisterSagas(reg); err != nil {
		t.Fatal(err)
	}
	eng, err := saga.New(e.st, reg, bus, saga.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jobs.New(e.st, bus, eng, newProviders(t, e.cloud), e.cloud, jobs.Config{ServerURL: "http://x"}); err != nil {
		t.Fatal(err)
	}
	commandtest.CheckRegistered(t, bus, jobs.RecoveryCommands()...)
}

// cleanupCfg makes every worker not heard of for a second lost.
var cleanupCfg = jobs.CleanupConfig{Interval: time.Hour, HeartbeatInterval: 200 * time.Millisecond,
	LostAfter: time.Second, CreatingTimeout: time.Minute}

// runningOn submits a job and plays its (manual) worker up to RUNNING; it returns the
// job and its worker.
func (e *env) runningOn(sp domain.JobSpec) (*domain.Job, string) {
	e.t.Helper()
	ctx := e.ctx()
	j, err := e.svc.Submit(ctx, sp)
	if err != nil {
		e.t.Fatal(err)
	}
	p := e.waitJob(j.ID, domain.JobProvisioning)
	wid := e.registerManual(p.WorkerID)
	e.waitJob(j.ID, domain.JobAssigned)
	if err := e.svc.JobStarted(ctx, wid, j.ID, time.Now()); err != nil {
		e.t.Fatal(err)
	}
	if err := e.svc.Heartbeat(ctx, wid, e.clock.Now()); err != nil {
		e.t.Fatal(err)
	}
	return e.waitJob(j.ID, domain.JobRunning), wid
}

// registerManual waits for the provider to be asked for wid and registers it.
func (e *env) registerManual(wid string) string {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for e.cloud.otp(wid) == "" {
		if time.Now().After(deadline) {
			e.t.Fatalf("worker %s was never created", wid)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := e.svc.RegisterWorker(e.ctx(), wid, e.cloud.otp(wid)); err != nil {
		e.t.Fatal(err)
	}
	return wid
}

func TestRecoveryReplacesLostWorker(t *testing.T) {
	e := newEnv(t, envOpts{manual: true})
	ctx := e.ctx()
	sp := spec(nil)
	sp.MaxAttempts = 2
	j, old := e.runningOn(sp)

	// The worker goes silent: two seconds later the cleanup run finds it lost.
	e.clock.Advance(2 * time.Second)
	detected := time.Now()
	r, err := e.svc.Cleanup(ctx, cleanupCfg)
	if err != nil {
		t.Fatal(err)
	}
	if r.RecoveriesStarted != 1 || len(r.LostJobs) != 1 || r.LostJobs[0] != j.ID {
		t.Fatalf("cleanup report %+v, want one lost job %s recovered", r, j.ID)
	}

	p := e.waitJob(j.ID, domain.JobProvisioning)
	if p.Attempt != 2 || p.WorkerID == old || !strings.Contains(p.LastError, "lost") {
		t.Fatalf("after loss: attempt %d worker %s (old %s) last error %q", p.Attempt, p.WorkerID, old, p.LastError)
	}
	repl := e.registerManual(p.WorkerID)
	a := e.waitJob(j.ID, domain.JobAssigned)
	if a.WorkerID != repl {
		t.Fatalf("job assigned to %s, want replacement %s", a.WorkerID, repl)
	}
	t.Logf("detection → job assigned to the registered replacement: %s", time.Since(detected))
	if destroyed, _ := e.cloud.waitDestroyed(old); !destroyed {
		t.Fatalf("lost worker %s not destroyed", old)
	}
	e.waitSaga(jobs.RecoverySagaID(j.ID, 1), saga.StateCompleted)
	if n := e.count(`SELECT count(*) FROM outbox WHERE type = 'job.reassigned'`); n != 1 {
		t.Fatalf("%d job.reassigned events, want 1", n)
	}
	// The lost worker cannot report for the job any more.
	if err := e.svc.JobFinished(ctx, old, jobs.JobResult{JobID: j.ID}); err == nil {
		t.Fatal("JobFinished from the lost worker succeeded")
	}
	if run, err := e.svc.PendingRun(ctx, repl); err != nil || run == nil || run.ID != j.ID || run.Attempt != 2 {
		t.Fatalf("PendingRun(replacement) = %v, %v", run, err)
	}
	if err := e.svc.JobStarted(ctx, repl, j.ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.JobFinished(ctx, repl, jobs.JobResult{JobID: j.ID}); err != nil {
		t.Fatal(err)
	}
	done := e.waitJob(j.ID, domain.JobSucceeded)
	if done.Attempt != 2 || done.WorkerID != repl {
		t.Fatalf("succeeded job: attempt %d worker %s", done.Attempt, done.WorkerID)
	}
	e.waitSaga(jobs.ExecutionSagaID(j.ID), saga.StateCompleted)
	if destroyed, _ := e.cloud.waitDestroyed(repl); !destroyed {
		t.Fatalf("replacement %s not destroyed after the job", repl)
	}

	// A second detection of the same loss starts nothing.
	if out, err := e.svc.RecoverJob(ctx, j.ID, old, "again"); err != nil || out.Started {
		t.Fatalf("second recovery: %+v, %v", out, err)
	}
}

func TestRecoveryAttemptsExhausted(t *testing.T) {
	e := newEnv(t, envOpts{manual: true})
	ctx := e.ctx()
	j, old := e.runningOn(spec(nil)) // MaxAttempts 1
	e.clock.Advance(2 * time.Second)
	out, err := e.svc.RecoverJob(ctx, j.ID, old, "no heartbeat")
	if err != nil || !out.Started {
		t.Fatalf("RecoverJob: %+v, %v", out, err)
	}
	f := e.waitJob(j.ID, domain.JobFailed)
	if !strings.Contains(f.LastError, "attempts exhausted (1 of 1)") || !strings.Contains(f.LastError, old) {
		t.Fatalf("last error %q", f.LastError)
	}
	e.waitSaga(jobs.RecoverySagaID(j.ID, 1), saga.StateCompleted)
	e.waitSaga(jobs.ExecutionSagaID(j.ID), saga.StateCompleted)
	if destroyed, _ := e.cloud.waitDestroyed(old); !destroyed {
		t.Fatalf("lost worker %s not destroyed", old)
	}
	if creates := e.count(`SELECT count(*) FROM workers WHERE job_id = $1`, j.ID); creates != 1 {
		t.Fatalf("%d workers for the job, want no replacement", creates)
	}
}

// Replacements that never register: each failure is followed by another replacement
// while attempts remain; then the job FAILS, the recovery saga compensates
// (replacements destroyed) and the execution saga ends.
func TestRecoveryCompensation(t *testing.T) {
	e := newEnv(t, envOpts{manual: true, regTimeout: 300 * time.Millisecond})
	ctx := e.ctx()
	sp := spec(nil)
	sp.MaxAttempts = 3
	j, old := e.runningOn(sp)
	if _, err := e.svc.RecoverJob(ctx, j.ID, old, "test"); err != nil {
		t.Fatal(err)
	}
	// Neither replacement registers (attempts 2 and 3): the job fails when none is left.
	f := e.waitJob(j.ID, domain.JobFailed)
	if f.Attempt != 3 || f.WorkerID == old || !strings.Contains(f.LastError, "attempts exhausted (3 of 3)") {
		t.Fatalf("failed job: attempt %d worker %s error %q", f.Attempt, f.WorkerID, f.LastError)
	}
	e.waitSaga(jobs.ExecutionSagaID(j.ID), saga.StateCompleted)
	for _, w := range []string{old, f.WorkerID} {
		if destroyed, _ := e.cloud.waitDestroyed(w); !destroyed {
			t.Fatalf("worker %s not destroyed", w)
		}
	}
}

func TestCleanupFindsAndActs(t *testing.T) {
	e := newEnv(t, envOpts{manual: true, noScheduler: true})
	ctx := e.ctx()
	// A stale idle worker, a stuck CREATING worker and a RUNNING job whose worker row is
	// TERMINATED, written directly.
	now := e.clock.Now()
	mustExec := func(sql string, args ...any) {
		t.Helper()
		if _, err := e.st.Pool().Exec(context.Background(), sql, args...); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.st.Workers().Create(ctx, &domain.Worker{ID: "w-stale", Provider: "fake", State: domain.WorkerCreating}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.Workers().UpdateState(ctx, "w-stale", domain.WorkerReady, e.clock.Now(), nil); err != nil {
		t.Fatal(err)
	}
	if err := e.st.Workers().Create(ctx, &domain.Worker{ID: "w-stuck", Provider: "fake", State: domain.WorkerCreating}); err != nil {
		t.Fatal(err)
	}
	mustExec(`UPDATE workers SET created_at = $1, updated_at = $1 WHERE id = 'w-stuck'`, now.Add(-time.Hour))
	mustExec(`UPDATE workers SET updated_at = $1, last_heartbeat = $1 WHERE id = 'w-stale'`, now.Add(-time.Minute))
	j, err := e.svc.Submit(ctx, spec(nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.st.Workers().Create(ctx, &domain.Worker{ID: "w-gone", Provider: "fake", State: domain.WorkerCreating, JobID: j.ID}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.Workers().UpdateState(ctx, "w-gone", domain.WorkerTerminated, e.clock.Now(), nil); err != nil {
		t.Fatal(err)
	}
	for _, to := range []domain.JobState{domain.JobProvisioning, domain.JobAssigned, domain.JobRunning} {
		if _, err := e.st.Jobs().UpdateState(ctx, j.ID, to, e.clock.Now(), func(j *domain.Job) { j.WorkerID = "w-gone"; j.Attempt = 1 }); err != nil {
			t.Fatal(err)
		}
	}
	before := e.count(`SELECT count(*) FROM outbox`)

	dry := cleanupCfg
	dry.DryRun = true
	r, err := e.svc.Cleanup(ctx, dry)
	if err != nil {
		t.Fatal(err)
	}
	check := func(r *jobs.CleanupReport) {
		t.Helper()
		if len(r.StaleWorkers) != 1 || r.StaleWorkers[0] != "w-stale" || len(r.StuckCreating) != 1 ||
			r.StuckCreating[0] != "w-stuck" || len(r.OrphanedJobs) != 1 || r.OrphanedJobs[0] != j.ID {
			t.Fatalf("report %+v", r)
		}
	}
	check(r)
	if r.Destroyed != 0 || r.RecoveriesStarted != 0 || !r.DryRun {
		t.Fatalf("dry run acted: %+v", r)
	}
	if n := e.count(`SELECT count(*) FROM workers WHERE state = 'TERMINATED'`); n != 1 {
		t.Fatalf("dry run: %d TERMINATED workers, want 1", n)
	}
	if n := e.count(`SELECT count(*) FROM outbox`); n != before {
		t.Fatalf("dry run wrote %d outbox rows", n-before)
	}
	if n := e.count(`SELECT count(*) FROM sagas WHERE type = 'recovery'`); n != 0 {
		t.Fatalf("dry run started %d recoveries", n)
	}

	// Two runs at once, as two replicas that both believe they lead at a TTL boundary
	// would make them: between them they act once. A run may lose a race on a
	// command's key (a conflict, retried at the next interval).
	type res struct {
		r   *jobs.CleanupReport
		err error
	}
	results := make(chan res, 2)
	for range 2 {
		go func() {
			r, err := e.svc.Cleanup(ctx, cleanupCfg)
			results <- res{r, err}
		}()
	}
	ok, destroyed, recoveries := 0, 0, 0
	for range 2 {
		x := <-results
		if x.err != nil {
			if !errors.Is(x.err, store.ErrConflict) {
				t.Fatalf("overlapping cleanup run: %v, want success or store.ErrConflict", x.err)
			}
			continue
		}
		ok++
		destroyed += x.r.Destroyed
		recoveries += x.r.RecoveriesStarted
	}
	if ok == 0 || destroyed != 2 || recoveries != 1 {
		t.Fatalf("%d runs succeeded, destroying %d workers and starting %d recoveries between them; want 2 and 1", ok, destroyed, recoveries)
	}
	// A later run (the next leader's) finds nothing left to do.
	r, err = e.svc.Cleanup(ctx, cleanupCfg)
	if err != nil {
		t.Fatal(err)
	}
	if r.Destroyed != 0 || r.RecoveriesStarted != 0 {
		t.Fatalf("a later run acted again: %+v", r)
	}
	if n := e.count(`SELECT count(*) FROM workers WHERE state = 'TERMINATED'`); n != 3 {
		t.Fatalf("%d TERMINATED workers, want 3", n)
	}
	if n := e.count(`SELECT count(*) FROM outbox WHERE type = 'cleanup.completed'`); n < 1 {
		t.Fatal("no cleanup.completed event")
	}
	if n := e.count(`SELECT count(*) FROM sagas WHERE id = $1`, jobs.RecoverySagaID(j.ID, 1)); n != 1 {
		t.Fatalf("recovery saga of the orphaned job missing")
	}
	// The orphaned job (MaxAttempts 1) ends FAILED through its recovery.
	f := e.waitJob(j.ID, domain.JobFailed)
	if !strings.Contains(f.LastError, "attempts exhausted") {
		t.Fatalf("orphaned job last error %q", f.LastError)
	}
}
