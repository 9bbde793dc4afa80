package jobs_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/jobs"
	"github.com/hodei-jobs/hodei/provider"
	"github.com/hodei-jobs/hodei/saga"
)

// exitingCloud is a provider that reports the exits of its workers
// (provider.ExitNotifier), as the local provider does when it reaps a process.
type exitingCloud struct {
	*fakeCloud
	mu      sync.Mutex
	handler func(workerID string, err error)
}

var _ provider.ExitNotifier = (*exitingCloud)(nil)

func (c *exitingCloud) OnExit(h func(workerID string, err error)) {
	c.mu.Lock()
	c.handler = h
	c.mu.Unlock()
}

// exit makes workerID's process end with err and reports it.
func (c *exitingCloud) exit(workerID string, err error) {
	c.kill(workerID)
	c.mu.Lock()
	h := c.handler
	c.mu.Unlock()
	if h != nil {
		h(workerID, err)
	}
}

// A provider that reports exits is heard without any other wiring: a worker whose
// process ends before registering fails its provisioning at once (the registration
// timeout here is a minute) and the job gets its next attempt.
func TestProviderExitNoticeFailsProvisioning(t *testing.T) {
	var ec *exitingCloud
	e := newEnvWith(t, envOpts{manual: true}, func(f *fakeCloud) provider.Provider {
		ec = &exitingCloud{fakeCloud: f}
		return ec
	}, func(c *jobs.Config) { c.RegistrationTimeout = time.Minute })
	e.runCleanupLoop(disconnectCfg)
	sp := spec(nil)
	sp.MaxAttempts = 2
	j, err := e.svc.Submit(e.ctx(), sp)
	if err != nil {
		t.Fatal(err)
	}
	first, _ := e.manualWorker(j.ID)
	ec.exit(first, errors.New("signal: killed"))
	e.waitSaga(jobs.ProvisioningSagaID(j.ID, 1), saga.StateCompensated)
	e.waitLog("worker process exited (signal: killed)")
	deadline := time.Now().Add(20 * time.Second)
	for {
		got, err := e.st.Jobs().Get(e.ctx(), j.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Attempt == 2 && got.WorkerID != first && got.State == domain.JobProvisioning {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no second attempt after the exit: %+v", got)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A clean exit of a worker whose job has ended changes nothing (and is reported as
	// exit status 0).
	second, otp := e.manualWorker(j.ID)
	e.cloud.register(second, otp)
	e.waitJob(j.ID, domain.JobAssigned)
	if err := e.svc.JobFinished(e.ctx(), second, jobs.JobResult{JobID: j.ID}); err != nil {
		t.Fatal(err)
	}
	e.waitJob(j.ID, domain.JobSucceeded)
	ec.exit(second, nil)
	if got := e.waitJob(j.ID, domain.JobSucceeded); got.Attempt != 2 {
		t.Fatalf("job %+v", got)
	}
	if n := e.count(`SELECT count(*) FROM sagas WHERE type = 'recovery'`); n != 0 {
		t.Fatalf("the exit of a finished job's worker started %d recoveries", n)
	}
}

// In a dry run an exit notice is reported, with what would be done, and nothing is
// done: the running job keeps its worker, the provisioning job keeps waiting for its
// worker. Notices about unknown workers are ignored.
func TestWorkerExitedDryRun(t *testing.T) {
	e := newEnv(t, envOpts{manual: true, regTimeout: time.Minute})
	running, w := e.runningOn(spec(nil))
	prov, err := e.svc.Submit(e.ctx(), spec(nil))
	if err != nil {
		t.Fatal(err)
	}
	creating, _ := e.manualWorker(prov.ID)
	cfg := disconnectCfg
	cfg.DryRun = true
	e.runCleanupLoop(cfg)
	e.svc.WorkerExited("no-such-worker", "signal: killed")
	e.svc.WorkerExited(w, "signal: killed")
	e.svc.WorkerExited(creating, "exit status 1")
	e.waitLog("worker=" + w + " job=" + running.ID + " action=recovery dry_run=true")
	e.waitLog("worker=" + creating + " job=" + prov.ID + ` action="provisioning failed" dry_run=true`)
	if strings.Contains(e.logs.String(), "no-such-worker") {
		t.Fatalf("an unknown worker's exit was acted on:\n%s", e.logs.String())
	}
	if got := e.waitJob(running.ID, domain.JobRunning); got.WorkerID != w || got.Attempt != 1 {
		t.Fatalf("dry run moved the running job: %+v", got)
	}
	if n := e.count(`SELECT count(*) FROM sagas WHERE type = 'recovery'`); n != 0 {
		t.Fatalf("dry run started %d recoveries", n)
	}
	info, err := e.engine.Get(e.ctx(), jobs.ProvisioningSagaID(prov.ID, 1))
	if err != nil || info.State != saga.StateWaiting {
		t.Fatalf("dry run: provisioning saga %+v, %v; want still waiting for registration", info, err)
	}
	if got := e.waitJob(prov.ID, domain.JobProvisioning); got.WorkerID != creating || got.Attempt != 1 {
		t.Fatalf("dry run moved the provisioning job: %+v", got)
	}
}

// statusErrCloud cannot tell the status of its workers while failing is set (a cloud
// API that errors); it counts the calls.
type statusErrCloud struct {
	*fakeCloud
	failing atomic.Bool
	calls   atomic.Int32
}

func (c *statusErrCloud) Status(ctx context.Context, workerID string) (provider.Status, error) {
	c.calls.Add(1)
	if c.failing.Load() {
		return "", errors.New("cloud API unavailable")
	}
	return c.fakeCloud.Status(ctx, workerID)
}

// A provider that cannot report a worker's status: no worker is created while it
// cannot tell whether an earlier copy runs, and a CREATING worker is not given up
// (only one known to have exited is, or one past the registration timeout): it can
// still register.
func TestStatusUnknownIsNotAnExit(t *testing.T) {
	var sc *statusErrCloud
	e := newEnvWith(t, envOpts{manual: true}, func(f *fakeCloud) provider.Provider {
		sc = &statusErrCloud{fakeCloud: f}
		sc.failing.Store(true)
		return sc
	}, func(c *jobs.Config) { c.RegistrationTimeout = time.Minute })
	e.runCleanupLoop(jobs.CleanupConfig{Interval: 20 * time.Millisecond, HeartbeatInterval: 10 * time.Millisecond,
		LostAfter: 10 * time.Second, CreatingTimeout: time.Minute, DisconnectGrace: 5 * time.Second})
	j, err := e.svc.Submit(e.ctx(), spec(nil))
	if err != nil {
		t.Fatal(err)
	}
	p := e.waitJob(j.ID, domain.JobProvisioning)
	waitCalls := func(n int32) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for sc.calls.Load() < n {
			if time.Now().After(deadline) {
				t.Fatalf("Status asked %d times, want %d", sc.calls.Load(), n)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitCalls(2) // CreateWorker asked, failed, and is retried
	if _, creates := e.cloud.wasDestroyed(p.WorkerID); creates != 0 {
		t.Fatalf("worker created %d times while its provider's status was unknown", creates)
	}
	sc.failing.Store(false)
	wid, otp := e.manualWorker(j.ID)
	sc.failing.Store(true)
	e.cloud.kill(wid) // were its status known now, it would be found exited
	base := sc.calls.Load()
	waitCalls(base + 5) // five cleanup intervals asked about the worker
	info, err := e.engine.Get(e.ctx(), jobs.ProvisioningSagaID(j.ID, 1))
	if err != nil || info.State != saga.StateWaiting {
		t.Fatalf("provisioning saga %+v, %v; want still waiting for registration", info, err)
	}
	if _, err := e.svc.RegisterWorker(e.ctx(), wid, otp); err != nil {
		t.Fatalf("the worker cannot register: %v", err)
	}
	e.waitJob(j.ID, domain.JobAssigned)
}

// sweepCloud lists its workers but can fail to list them or to destroy them.
type sweepCloud struct {
	*fakeCloud
	listFails    atomic.Bool
	destroyFails atomic.Bool
	mu           sync.Mutex
	calls        map[string]int
}

func (c *sweepCloud) List(ctx context.Context) ([]string, error) {
	if c.listFails.Load() {
		return nil, errors.New("cloud API unavailable")
	}
	return c.fakeCloud.List(ctx)
}

func (c *sweepCloud) Destroy(ctx context.Context, workerID string) error {
	c.mu.Lock()
	c.calls[workerID]++
	c.mu.Unlock()
	if c.destroyFails.Load() {
		return errors.New("cloud API unavailable")
	}
	return c.fakeCloud.Destroy(ctx, workerID)
}

func (c *sweepCloud) destroyCalls(workerID string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[workerID]
}

// The worker sweep destroys what the provider runs for a TERMINATED or unknown worker
// row, never a live reservation (a CREATING row); a provider that fails to list or to
// destroy is reported, and the next sweep finishes the job.
func TestSweepDestroysOnlyDeadWorkers(t *testing.T) {
	var sc *sweepCloud
	e := newEnvWith(t, envOpts{manual: true}, func(f *fakeCloud) provider.Provider {
		sc = &sweepCloud{fakeCloud: f, calls: map[string]int{}}
		sc.listFails.Store(true)
		sc.destroyFails.Store(true)
		return sc
	}, func(c *jobs.Config) { c.SweepInterval = 20 * time.Millisecond })
	ctx := e.ctx()
	e.waitLog("worker sweep incomplete")
	if !strings.Contains(e.logs.String(), "provider fake: cloud API unavailable") {
		t.Fatalf("the failed listing is not reported:\n%s", e.logs.String())
	}
	if err := e.st.Workers().Create(ctx, &domain.Worker{ID: "w-terminated", Provider: "fake", State: domain.WorkerCreating}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.Workers().UpdateState(ctx, "w-terminated", domain.WorkerTerminated, e.clock.Now(), nil); err != nil {
		t.Fatal(err)
	}
	if err := e.st.Workers().Create(ctx, &domain.Worker{ID: "w-reserved", Provider: "fake", State: domain.WorkerCreating}); err != nil {
		t.Fatal(err)
	}
	e.cloud.mu.Lock()
	for _, id := range []string{"w-terminated", "w-reserved", "w-unknown"} {
		e.cloud.live[id] = true
	}
	e.cloud.mu.Unlock()

	sc.listFails.Store(false) // listing works; destroying does not yet
	e.waitLog("destroy worker w-terminated with provider fake: cloud API unavailable")
	e.waitLog("destroy worker w-unknown with provider fake: cloud API unavailable")
	sc.destroyFails.Store(false)
	for _, id := range []string{"w-terminated", "w-unknown"} {
		if destroyed, _ := e.cloud.waitDestroyed(id); !destroyed {
			t.Fatalf("the sweep did not destroy %s", id)
		}
	}
	// Destroyed, a worker is no longer listed: no further Destroy of it.
	tried := map[string]int{"w-terminated": sc.destroyCalls("w-terminated"), "w-unknown": sc.destroyCalls("w-unknown")}
	e.waitLog("destroyed a worker left behind")
	time.Sleep(200 * time.Millisecond) // ten more sweeps
	for id, n := range tried {
		if got := sc.destroyCalls(id); got != n {
			t.Errorf("Destroy of %s called %d times after it succeeded (was %d)", id, got, n)
		}
	}
	if n := sc.destroyCalls("w-reserved"); n != 0 {
		t.Fatalf("the sweep tried to destroy the live reservation %d times", n)
	}
	if destroyed, _ := e.cloud.wasDestroyed("w-reserved"); destroyed {
		t.Fatal("the sweep destroyed a live reservation")
	}
}
