package jobs_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/command"
	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/jobs"
	"github.com/hodei-jobs/hodei/saga"
)

// disconnectCfg: periodic runs never come (Interval 1h) and the heartbeat rule would
// take 10s, so only the disconnect check (grace 150ms) can act within a test.
var disconnectCfg = jobs.CleanupConfig{Interval: time.Hour, HeartbeatInterval: time.Second,
	LostAfter: 10 * time.Second, CreatingTimeout: time.Minute, DisconnectGrace: 150 * time.Millisecond}

// runCleanupLoop runs RunCleanup with cfg until the test ends.
func (e *env) runCleanupLoop(cfg jobs.CleanupConfig) {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	errc := make(chan error, 1)
	wg.Go(func() { errc <- e.svc.RunCleanup(ctx, cfg) })
	e.t.Cleanup(func() {
		cancel()
		wg.Wait()
		if err := <-errc; err != nil {
			e.t.Errorf("RunCleanup: %v", err)
		}
	})
}

func TestDisconnectedWorkerRecovered(t *testing.T) {
	e := newEnv(t, envOpts{manual: true})
	sp := spec(nil)
	sp.MaxAttempts = 2
	j, old := e.runningOn(sp)
	e.runCleanupLoop(disconnectCfg)

	closed := e.clock.Now()
	e.svc.WorkerDisconnected(old, closed)
	p := e.waitJob(j.ID, domain.JobProvisioning)
	detected := time.Since(closed)
	if p.Attempt != 2 || p.WorkerID == old || !strings.Contains(p.LastError, "stream closed at") ||
		!strings.Contains(p.LastError, "not back within 150ms") {
		t.Fatalf("after disconnect: attempt %d worker %s (old %s) last error %q", p.Attempt, p.WorkerID, old, p.LastError)
	}
	if detected < disconnectCfg.DisconnectGrace {
		t.Fatalf("recovered %s after the close, before the grace %s", detected, disconnectCfg.DisconnectGrace)
	}
	t.Logf("stream close → job off the lost worker: %s (grace %s)", detected, disconnectCfg.DisconnectGrace)

	repl := e.registerManual(p.WorkerID)
	if a := e.waitJob(j.ID, domain.JobAssigned); a.WorkerID != repl || a.Attempt != 2 {
		t.Fatalf("job on %s attempt %d, want replacement %s attempt 2", a.WorkerID, a.Attempt, repl)
	}
	e.waitSaga(jobs.RecoverySagaID(j.ID, 1), saga.StateCompleted)
	if n := e.count(`SELECT count(*) FROM outbox WHERE type = 'job.reassigned'`); n != 1 {
		t.Fatalf("%d job.reassigned events, want 1", n)
	}
	if n := e.count(`SELECT count(*) FROM outbox WHERE type = 'job.worker_lost'`); n != 1 {
		t.Fatalf("%d job.worker_lost events, want 1", n)
	}
	if destroyed, _ := e.cloud.waitDestroyed(old); !destroyed {
		t.Fatalf("lost worker %s not destroyed", old)
	}
	// A cleanup run that finds the same loss later publishes no second job.worker_lost.
	if _, err := e.svc.Cleanup(e.ctx(), cleanupCfg); err != nil {
		t.Fatal(err)
	}
	if n := e.count(`SELECT count(*) FROM outbox WHERE type = 'job.worker_lost'`); n != 1 {
		t.Fatalf("%d job.worker_lost events after a cleanup run, want 1", n)
	}
}

// A worker heard of after its stream closed is back: nothing happens. The same loop
// then recovers it after a second close without a heartbeat (so the first check ran).
func TestDisconnectedWorkerBack(t *testing.T) {
	e := newEnv(t, envOpts{manual: true})
	ctx := e.ctx()
	sp := spec(nil)
	sp.MaxAttempts = 2
	j, w := e.runningOn(sp)
	e.runCleanupLoop(disconnectCfg)

	closed := e.clock.Now()
	e.svc.WorkerDisconnected(w, closed)
	time.Sleep(5 * time.Millisecond)
	if err := e.svc.Heartbeat(ctx, w, e.clock.Now()); err != nil { // the reconnect
		t.Fatal(err)
	}
	time.Sleep(4 * disconnectCfg.DisconnectGrace)
	if got, err := e.st.Jobs().Get(ctx, j.ID); err != nil || got.State != domain.JobRunning || got.WorkerID != w || got.Attempt != 1 {
		t.Fatalf("job after the worker came back: %+v, %v; want RUNNING on %s attempt 1", got, err, w)
	}
	if n := e.count(`SELECT count(*) FROM sagas WHERE type = 'recovery'`); n != 0 {
		t.Fatalf("%d recovery sagas for a worker that came back", n)
	}
	if n := e.count(`SELECT count(*) FROM outbox WHERE type = 'job.worker_lost'`); n != 0 {
		t.Fatalf("%d job.worker_lost events for a worker that came back", n)
	}

	e.svc.WorkerDisconnected(w, e.clock.Now().Add(time.Millisecond))
	if p := e.waitJob(j.ID, domain.JobProvisioning); p.Attempt != 2 {
		t.Fatalf("second close: attempt %d, want 2", p.Attempt)
	}
}

// DryRun only reports.
func TestDisconnectDryRun(t *testing.T) {
	e := newEnv(t, envOpts{manual: true})
	j, w := e.runningOn(spec(nil))
	cfg := disconnectCfg
	cfg.DryRun = true
	e.runCleanupLoop(cfg)
	e.svc.WorkerDisconnected(w, e.clock.Now())
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(e.logs.String(), "dry run: would recover the job of a disconnected worker") {
		if time.Now().After(deadline) {
			t.Fatalf("no dry-run report; log:\n%s", e.logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := e.waitJob(j.ID, domain.JobRunning); got.WorkerID != w || got.Attempt != 1 {
		t.Fatalf("dry run moved the job: %+v", got)
	}
	if n := e.count(`SELECT count(*) FROM sagas WHERE type = 'recovery'`); n != 0 {
		t.Fatalf("dry run started %d recoveries", n)
	}
}

// A worker that reported its result and then vanished: the job must not run again, so
// StartRecovery and ReserveReplacement skip it.
func TestRecoverySkipsRecordedResult(t *testing.T) {
	e := newEnv(t, envOpts{manual: true})
	ctx := e.ctx()
	sp := spec(nil)
	sp.MaxAttempts = 3
	j, w := e.runningOn(sp)
	e.stop() // the execution saga does not complete the job: it stays RUNNING
	if err := e.svc.JobFinished(ctx, w, jobs.JobResult{JobID: j.ID, ExitCode: 0}); err != nil {
		t.Fatal(err)
	}

	out, err := e.svc.RecoverJob(ctx, j.ID, w, "stream closed")
	if err != nil {
		t.Fatal(err)
	}
	if !out.Skipped || out.Started || !strings.Contains(out.Reason, "result of attempt 1 is already recorded") {
		t.Fatalf("StartRecovery: %+v, want skipped because the result is recorded", out)
	}
	if n := e.count(`SELECT count(*) FROM sagas WHERE type = 'recovery'`); n != 0 {
		t.Fatalf("%d recovery sagas started", n)
	}

	// The recovery saga's first step (a recovery started before the result arrived).
	res, err := command.Dispatch[jobs.RecoveryOutcome](ctx, e.d, jobs.ReserveReplacement{Key: "test/reserve",
		JobID: j.ID, LostWorkerID: w, Attempt: 1, Reason: "stream closed"})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Skipped || res.WorkerID != "" || !strings.Contains(res.Reason, "already recorded") {
		t.Fatalf("ReserveReplacement: %+v, want skipped because the result is recorded", res)
	}
	got, err := e.st.Jobs().Get(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != domain.JobRunning || got.Attempt != 1 || got.WorkerID != w {
		t.Fatalf("job %s attempt %d on %s, want RUNNING attempt 1 on %s", got.State, got.Attempt, got.WorkerID, w)
	}
	if n := e.count(`SELECT count(*) FROM workers WHERE job_id = $1`, j.ID); n != 1 {
		t.Fatalf("%d workers for the job, want no replacement", n)
	}

	// Restarted, the control plane completes the job with the recorded result.
	e.start(envOpts{manual: true})
	if done := e.waitJob(j.ID, domain.JobSucceeded); done.Attempt != 1 {
		t.Fatalf("job succeeded at attempt %d, want 1", done.Attempt)
	}
}

func TestCleanupConfigDisconnectGrace(t *testing.T) {
	var c jobs.CleanupConfig
	c.SetDefaults()
	if c.DisconnectGrace != 2*c.HeartbeatInterval || c.DisconnectGrace != 10*time.Second {
		t.Fatalf("default DisconnectGrace %s, want 2 × HeartbeatInterval %s", c.DisconnectGrace, c.HeartbeatInterval)
	}
	// Never above LostAfter.
	c = jobs.CleanupConfig{HeartbeatInterval: time.Second, LostAfter: 1500 * time.Millisecond}
	c.SetDefaults()
	if c.DisconnectGrace != 1500*time.Millisecond {
		t.Fatalf("DisconnectGrace %s with LostAfter 1.5s, want 1.5s", c.DisconnectGrace)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	for _, tc := range []struct {
		grace time.Duration
		want  string
	}{
		{5 * time.Millisecond, "CleanupConfig.DisconnectGrace 5ms is below 10ms"},
		{time.Minute, "CleanupConfig.DisconnectGrace 1m0s is above LostAfter 15s"},
	} {
		c := jobs.CleanupConfig{DisconnectGrace: tc.grace}
		c.SetDefaults()
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("DisconnectGrace %s: %v, want an error containing %q", tc.grace, err, tc.want)
		}
	}
}
