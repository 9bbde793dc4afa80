package jobs_test

import (
	"strings"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/command"
	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/jobs"
	"github.com/hodei-jobs/hodei/saga"
)

// TestExitedBeforeRegistering: a worker process that dies before it registers fails its
// provisioning at once (not after the registration timeout, here a minute) and the job
// gets its next attempt on a new worker.
func TestExitedBeforeRegistering(t *testing.T) {
	e := newEnv(t, envOpts{manual: true, regTimeout: time.Minute})
	e.runCleanupLoop(disconnectCfg)
	sp := spec(nil)
	sp.MaxAttempts = 2
	j, err := e.svc.Submit(e.ctx(), sp)
	if err != nil {
		t.Fatal(err)
	}
	first, _ := e.manualWorker(j.ID)
	exited := time.Now()
	e.svc.WorkerExited(first, "signal: killed")
	e.waitSaga(jobs.ProvisioningSagaID(j.ID, 1), saga.StateCompensated)
	var second, otp string
	for second == "" || second == first {
		if time.Since(exited) > 20*time.Second {
			t.Fatalf("no second worker for job %s", j.ID)
		}
		second, otp = e.manualWorker(j.ID)
	}
	t.Logf("worker exit → next attempt's worker created: %s", time.Since(exited))
	got, err := e.st.Jobs().Get(e.ctx(), j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Attempt != 2 || !strings.Contains(got.LastError, "worker provisioning failed") {
		t.Fatalf("job %+v", got)
	}
	if destroyed, _ := e.cloud.waitDestroyed(first); !destroyed {
		t.Fatalf("dead worker %s not destroyed (its password revoked)", first)
	}
	e.cloud.register(second, otp)
	e.waitJob(j.ID, domain.JobAssigned)
	if err := e.svc.JobFinished(e.ctx(), second, jobs.JobResult{JobID: j.ID}); err != nil {
		t.Fatal(err)
	}
	if done := e.waitJob(j.ID, domain.JobSucceeded, domain.JobFailed); done.State != domain.JobSucceeded {
		t.Fatalf("job %+v", done)
	}
}

// TestExitedWhileRunning: the death of a worker's process starts the recovery of its
// job at once, without the disconnect grace or the heartbeat rule; the exit of a
// worker whose job reported its result changes nothing.
func TestExitedWhileRunning(t *testing.T) {
	e := newEnv(t, envOpts{manual: true})
	e.runCleanupLoop(disconnectCfg)
	sp := spec(nil)
	sp.MaxAttempts = 2
	j, old := e.runningOn(sp)
	exited := time.Now()
	e.svc.WorkerExited(old, "signal: killed")
	p := e.waitJob(j.ID, domain.JobProvisioning)
	if p.Attempt != 2 || p.WorkerID == old || !strings.Contains(p.LastError, "worker process exited (signal: killed)") {
		t.Fatalf("after the exit: %+v", p)
	}
	t.Logf("worker exit → job off the dead worker: %s", time.Since(exited))
	repl := e.registerManual(p.WorkerID)
	e.waitJob(j.ID, domain.JobAssigned)
	if err := e.svc.JobFinished(e.ctx(), repl, jobs.JobResult{JobID: j.ID}); err != nil {
		t.Fatal(err)
	}
	// The replacement exits right after its result was recorded: nothing more happens.
	e.svc.WorkerExited(repl, "exit status 0")
	done := e.waitJob(j.ID, domain.JobSucceeded, domain.JobFailed)
	if done.State != domain.JobSucceeded || done.Attempt != 2 {
		t.Fatalf("job %+v", done)
	}
	time.Sleep(300 * time.Millisecond)
	if n := e.count(`SELECT count(*) FROM sagas WHERE type = 'recovery'`); n != 1 {
		t.Fatalf("%d recovery sagas, want 1", n)
	}
}

// TestAssignToDeadWorker: a worker that registered and then died (destroyed as lost)
// before its job was assigned to it does not leave the job stuck: the execution
// saga's assignment goes through and the job's recovery starts at once.
func TestAssignToDeadWorker(t *testing.T) {
	o := envOpts{manual: true, regTimeout: time.Minute}
	e := newEnv(t, o)
	ctx := e.ctx()
	sp := spec(nil)
	sp.MaxAttempts = 2
	j, err := e.svc.Submit(ctx, sp)
	if err != nil {
		t.Fatal(err)
	}
	dead, otp := e.manualWorker(j.ID)
	// The control plane stops between the registration and the assignment; meanwhile
	// the worker is destroyed.
	e.waitSaga(jobs.ProvisioningSagaID(j.ID, 1), saga.StateWaiting) // parked in await-registration
	e.stop()
	if _, err := e.svc.RegisterWorker(ctx, dead, otp); err != nil {
		t.Fatal(err)
	}
	if _, err := command.Dispatch[jobs.Outcome](ctx, e.d, jobs.DestroyWorker{Key: "test/destroy", WorkerID: dead, Reason: "lost"}); err != nil {
		t.Fatal(err)
	}
	e.start(o)
	deadline := time.Now().Add(20 * time.Second)
	p := e.waitJob(j.ID, domain.JobProvisioning)
	for p.Attempt < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("job still on attempt %d: %+v", p.Attempt, p)
		}
		time.Sleep(10 * time.Millisecond)
		p = e.waitJob(j.ID, domain.JobProvisioning)
	}
	if p.Attempt != 2 || p.WorkerID == dead || !strings.Contains(p.LastError, "TERMINATED before the job was assigned") {
		t.Fatalf("after the assignment: %+v", p)
	}
	repl := e.registerManual(p.WorkerID)
	e.waitJob(j.ID, domain.JobAssigned)
	if err := e.svc.JobFinished(ctx, repl, jobs.JobResult{JobID: j.ID}); err != nil {
		t.Fatal(err)
	}
	if done := e.waitJob(j.ID, domain.JobSucceeded, domain.JobFailed); done.State != domain.JobSucceeded || done.Attempt != 2 {
		t.Fatalf("job %+v", done)
	}
}

// TestNoRecoveryWhileTimingOut: a job whose timeout saga has started is not recovered
// when its worker dies (the saga's TerminateWorker kills it; the timeout wins).
func TestNoRecoveryWhileTimingOut(t *testing.T) {
	e := newEnv(t, envOpts{manual: true})
	ctx := e.ctx()
	j, w := e.runningOn(spec(nil))
	e.stop() // no engine loop: the timeout saga stays at its first step
	if _, err := command.Dispatch[jobs.Outcome](ctx, e.d, jobs.StartJobTimeout{Key: "test/timeout", JobID: j.ID,
		WorkerID: w, Timeout: time.Second}); err != nil {
		t.Fatal(err)
	}
	out, err := e.svc.RecoverJob(ctx, j.ID, w, "worker process exited (exit status 0)")
	if err != nil {
		t.Fatal(err)
	}
	if !out.Skipped || out.Started || !strings.Contains(out.Reason, "timed out") {
		t.Fatalf("recovery of a timing-out job: %+v, want skipped", out)
	}
}

// TestRecoveryRetriesReplacement: a replacement that dies before registering is
// followed by another (the next attempt), which the same recovery saga transfers the
// job to.
func TestRecoveryRetriesReplacement(t *testing.T) {
	e := newEnv(t, envOpts{manual: true, regTimeout: time.Minute})
	e.runCleanupLoop(disconnectCfg)
	ctx := e.ctx()
	sp := spec(nil)
	sp.MaxAttempts = 3
	j, old := e.runningOn(sp)
	if _, err := e.svc.RecoverJob(ctx, j.ID, old, "test"); err != nil {
		t.Fatal(err)
	}
	first := e.waitJob(j.ID, domain.JobProvisioning)
	if first.Attempt != 2 {
		t.Fatalf("after the loss: %+v", first)
	}
	deadline := time.Now().Add(20 * time.Second)
	for e.cloud.otp(first.WorkerID) == "" { // created; then it dies before registering
		if time.Now().After(deadline) {
			t.Fatalf("replacement %s never created", first.WorkerID)
		}
		time.Sleep(5 * time.Millisecond)
	}
	e.svc.WorkerExited(first.WorkerID, "signal: killed")
	second := e.waitJob(j.ID, domain.JobProvisioning)
	for second.Attempt != 3 {
		if time.Now().After(deadline) {
			t.Fatalf("no second replacement: %+v", second)
		}
		time.Sleep(10 * time.Millisecond)
		second = e.waitJob(j.ID, domain.JobProvisioning, domain.JobFailed)
	}
	if second.State != domain.JobProvisioning || second.WorkerID == first.WorkerID || second.WorkerID == old ||
		!strings.Contains(second.LastError, "another replacement") {
		t.Fatalf("second replacement: %+v", second)
	}
	repl := e.registerManual(second.WorkerID)
	a := e.waitJob(j.ID, domain.JobAssigned)
	if a.WorkerID != repl || a.Attempt != 3 {
		t.Fatalf("job on %s attempt %d, want %s attempt 3", a.WorkerID, a.Attempt, repl)
	}
	if err := e.svc.JobFinished(ctx, repl, jobs.JobResult{JobID: j.ID}); err != nil {
		t.Fatal(err)
	}
	if done := e.waitJob(j.ID, domain.JobSucceeded, domain.JobFailed); done.State != domain.JobSucceeded || done.Attempt != 3 {
		t.Fatalf("job %+v", done)
	}
	e.waitSaga(jobs.RecoverySagaID(j.ID, 1), saga.StateCompleted)
	for _, w := range []string{old, first.WorkerID, repl} {
		if destroyed, _ := e.cloud.waitDestroyed(w); !destroyed {
			t.Errorf("worker %s not destroyed", w)
		}
	}
}

// TestCreatingWorkerFoundDead: a worker that died before registering and whose exit
// nobody reported (it was started by an earlier server process) is found by the
// cleanup run asking its provider, not after the registration timeout (a minute here).
func TestCreatingWorkerFoundDead(t *testing.T) {
	e := newEnv(t, envOpts{manual: true, regTimeout: time.Minute})
	e.runCleanupLoop(jobs.CleanupConfig{Interval: 100 * time.Millisecond, HeartbeatInterval: 50 * time.Millisecond,
		LostAfter: 10 * time.Second, CreatingTimeout: time.Minute})
	sp := spec(nil)
	sp.MaxAttempts = 2
	j, err := e.svc.Submit(e.ctx(), sp)
	if err != nil {
		t.Fatal(err)
	}
	first, _ := e.manualWorker(j.ID)
	died := time.Now()
	e.cloud.kill(first)
	deadline := time.Now().Add(20 * time.Second)
	for {
		got, err := e.st.Jobs().Get(e.ctx(), j.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Attempt == 2 && got.WorkerID != "" && got.WorkerID != first {
			if !strings.Contains(got.LastError, "worker provisioning failed") {
				t.Fatalf("job %+v", got)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the dead CREATING worker was not found: job %+v", got)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("dead CREATING worker → next attempt: %s", time.Since(died))
	if !strings.Contains(e.logs.String(), "provider status exited") {
		t.Errorf("the log does not say why the worker was given up:\n%s", e.logs.String())
	}
}

// TestCreateReplacesWorkerOfRolledBackAttempt: when CreateWorker runs again for a worker
// the provider already knows of (an attempt whose transaction did not commit started
// it; it has since exited, its registration refused), the stale worker is destroyed and
// a fresh one created, which can register with the password committed now.
func TestCreateReplacesWorkerOfRolledBackAttempt(t *testing.T) {
	e := newEnv(t, envOpts{manual: true, regTimeout: time.Minute})
	ctx := e.ctx()
	j, err := e.svc.Submit(ctx, spec(nil))
	if err != nil {
		t.Fatal(err)
	}
	wid, _ := e.manualWorker(j.ID)
	e.cloud.kill(wid) // the process of the "rolled-back" attempt is gone
	if _, err := command.Dispatch[jobs.Outcome](ctx, e.d, jobs.CreateWorker{Key: "test/create-again",
		WorkerID: wid, JobID: j.ID, Provider: "fake"}); err != nil {
		t.Fatal(err)
	}
	if destroyed, creates := e.cloud.wasDestroyed(wid); !destroyed || creates != 2 {
		t.Fatalf("stale worker destroyed %v, created %d times; want destroyed and created again", destroyed, creates)
	}
	if _, err := e.svc.RegisterWorker(ctx, wid, e.cloud.otp(wid)); err != nil {
		t.Fatalf("the fresh worker cannot register: %v", err)
	}
}
