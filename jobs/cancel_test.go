package jobs_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/command"
	"github.com/hodei-jobs/hodei/command/commandtest"
	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/internal/pgtest"
	"github.com/hodei-jobs/hodei/jobs"
	"github.com/hodei-jobs/hodei/provider"
	"github.com/hodei-jobs/hodei/saga"
	"github.com/hodei-jobs/hodei/store"
)

// newEnvWith is newEnv with the provider replaced (wrap gets the fake cloud, which
// stays the WorkerChannel) and the Service's Config adjusted by cfg.
func newEnvWith(t *testing.T, o envOpts, wrap func(*fakeCloud) provider.Provider, cfg func(*jobs.Config)) *env {
	t.Helper()
	e := &env{t: t, st: pgtest.NewStore(t), cloud: newFakeCloud(t, !o.manual), logs: &syncBuffer{}, clock: &clock{}}
	e.cloud.svc = func() *jobs.Service { return e.current.Load() }
	bus := command.NewBus()
	reg := saga.NewRegistry()
	if err := jobs.RegisterSagas(reg); err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	// Wired as server.Run wires it: the engine's steps dispatch through the in-transaction
	// chain; jobs.New builds the Service's own chains from the same constructors.
	chain := command.ChainConfig{Idempotency: command.StoreDeps(e.st), Logger: logger}
	d := command.InTxChain(bus, chain)
	eng, err := saga.New(e.st, reg, d, saga.Config{PollInterval: 20 * time.Millisecond,
		Lease: 10 * time.Second, Concurrency: 8, Logger: logger, ActivityDispatcher: command.ActivityChain(bus, chain)})
	if err != nil {
		t.Fatal(err)
	}
	e.engine = eng
	var p provider.Provider = e.cloud
	if wrap != nil {
		p = wrap(e.cloud)
	}
	c := jobs.Config{ServerURL: "http://127.0.0.1:1", Capacity: 4, SchedulerPoll: 50 * time.Millisecond,
		SweepInterval: time.Minute, DestroyTimeout: time.Second, Logger: logger, Now: e.clock.Now}
	if cfg != nil {
		cfg(&c)
	}
	svc, err := jobs.New(e.st, bus, eng, newProviders(t, p), e.cloud, c)
	if err != nil {
		t.Fatal(err)
	}
	e.svc = svc
	e.current.Store(svc)
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	e.wg.Add(1)
	go func() { defer e.wg.Done(); _ = eng.Run(ctx) }()
	e.startScheduler(ctx, &e.wg)
	t.Cleanup(e.stop)
	return e
}

// cancelAgent is the WorkerChannel of the cancellation tests: RunJobs go to the fake
// cloud's agent; CancelJobs are recorded and, when confirm is set, answered with a
// cancelled result as the real agent does after stopping the job.
type cancelAgent struct {
	e       *env
	confirm bool

	mu      sync.Mutex
	cancels []domain.CancelRequest
}

func (a *cancelAgent) cancel(ctx context.Context, workerID string, c domain.CancelRequest) error {
	a.mu.Lock()
	a.cancels = append(a.cancels, c)
	a.mu.Unlock()
	if a.confirm {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := a.e.svc.JobFinished(ctx, workerID, jobs.JobResult{JobID: c.JobID,
				ExitCode: -1, Cancelled: true, Error: "terminated by signal"}); err != nil {
				a.e.t.Errorf("agent: cancelled result: %v", err)
			}
		}()
	}
	return nil
}

func (a *cancelAgent) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.cancels)
}

func (e *env) runningJob(a *cancelAgent) *domain.Job {
	e.t.Helper()
	e.cloud.setCanceller(a.cancel)
	j, err := e.svc.Submit(e.ctx(), spec(map[string]string{"FAKE_HANG": "1"}))
	if err != nil {
		e.t.Fatal(err)
	}
	return e.waitJob(j.ID, domain.JobRunning)
}

func TestCancelRunning(t *testing.T) {
	e := newEnv(t, envOpts{})
	a := &cancelAgent{e: e, confirm: true}
	j := e.runningJob(a)
	got, err := e.svc.Cancel(e.ctx(), j.ID, "stop it")
	if err != nil || got.State != domain.JobCancelling {
		t.Fatalf("Cancel = %+v, %v", got, err)
	}
	done := e.waitJob(j.ID, domain.JobCancelled, domain.JobFailed, domain.JobSucceeded)
	if done.State != domain.JobCancelled {
		t.Fatalf("job %+v", done)
	}
	if a.count() < 1 {
		t.Fatal("the worker got no CancelJob")
	}
	a.mu.Lock()
	c := a.cancels[0]
	a.mu.Unlock()
	if c.JobID != j.ID || c.Reason != "stop it" || c.Grace != 10*time.Second {
		t.Fatalf("CancelJob %v", c)
	}
	if destroyed, _ := e.cloud.waitDestroyed(j.WorkerID); !destroyed {
		t.Fatalf("worker %s not destroyed", j.WorkerID)
	}
	e.waitSaga(jobs.CancellationSagaID(j.ID), saga.StateCompleted)
	e.waitSaga(jobs.ExecutionSagaID(j.ID), saga.StateCompleted)
	if n := e.count(`SELECT count(*) FROM workers WHERE state <> 'TERMINATED'`); n != 0 {
		t.Fatalf("%d workers hold a slot after the cancel", n)
	}
}

// TestCancelUnconfirmed: the worker never answers. CancelJob is re-sent each round, a
// second Cancel while CANCELLING is harmless, and the job still ends CANCELLED with its
// worker destroyed.
func TestCancelUnconfirmed(t *testing.T) {
	e := newEnvWith(t, envOpts{}, nil, func(c *jobs.Config) { c.CancelGrace = 50 * time.Millisecond })
	a := &cancelAgent{e: e}
	j := e.runningJob(a)
	for i := range 2 {
		got, err := e.svc.Cancel(e.ctx(), j.ID, "")
		if err != nil || got.State != domain.JobCancelling {
			t.Fatalf("Cancel #%d = %+v, %v", i+1, got, err)
		}
	}
	// A worker that reconnects now is sent the CancelJob again (PendingCancel).
	if c, err := e.svc.PendingCancel(e.ctx(), j.WorkerID); err != nil || c == nil || c.JobID != j.ID ||
		c.Reason != "cancelled by user" || c.Grace != 50*time.Millisecond {
		t.Fatalf("PendingCancel while CANCELLING = %v, %v", c, err)
	}
	done := e.waitJob(j.ID, domain.JobCancelled, domain.JobFailed)
	if done.State != domain.JobCancelled || !strings.Contains(done.LastError, "did not confirm") {
		t.Fatalf("job %+v", done)
	}
	if n := a.count(); n != 3 {
		t.Fatalf("CancelJob sent %d times, want 3 (one per round)", n)
	}
	if destroyed, _ := e.cloud.waitDestroyed(j.WorkerID); !destroyed {
		t.Fatalf("worker %s not destroyed", j.WorkerID)
	}
	e.waitSaga(jobs.CancellationSagaID(j.ID), saga.StateCompleted)
	e.waitSaga(jobs.ExecutionSagaID(j.ID), saga.StateCompleted)
	if c, err := e.svc.PendingCancel(e.ctx(), j.WorkerID); err != nil || c != nil {
		t.Fatalf("PendingCancel after the end = %v, %v", c, err)
	}
	// A late result from the worker is a no-op.
	if err := e.svc.JobFinished(e.ctx(), j.WorkerID, jobs.JobResult{JobID: j.ID, Cancelled: true}); err != nil {
		t.Fatalf("late result: %v", err)
	}
}

func TestCancelPendingHasNoWorker(t *testing.T) {
	e := newEnv(t, envOpts{noScheduler: true})
	ctx := e.ctx()
	j, err := e.svc.Submit(ctx, spec(nil))
	if err != nil {
		t.Fatal(err)
	}
	got, err := e.svc.Cancel(ctx, j.ID, "")
	if err != nil || got.State != domain.JobCancelled {
		t.Fatalf("Cancel = %+v, %v", got, err)
	}
	if _, err := e.engine.Get(ctx, jobs.CancellationSagaID(j.ID)); err == nil {
		t.Fatal("a PENDING job got a cancellation saga")
	}
	e.waitSaga(jobs.ExecutionSagaID(j.ID), saga.StateCompleted)
	if n := e.count(`SELECT count(*) FROM workers`); n != 0 {
		t.Fatalf("a cancelled job got %d workers", n)
	}
}

// TestCancelProvisioning: the worker is created but never registers; Cancel ends the job
// at once and destroys the reserved worker.
func TestCancelProvisioning(t *testing.T) {
	e := newEnv(t, envOpts{manual: true})
	ctx := e.ctx()
	j, err := e.svc.Submit(ctx, spec(nil))
	if err != nil {
		t.Fatal(err)
	}
	e.waitJob(j.ID, domain.JobProvisioning)
	var wid string
	deadline := time.Now().Add(10 * time.Second)
	for wid == "" {
		_ = e.st.Pool().QueryRow(ctx, `SELECT id FROM workers WHERE job_id = $1`, j.ID).Scan(&wid)
		if _, creates := e.cloud.wasDestroyed(wid); wid != "" && creates == 0 {
			wid = ""
		}
		if time.Now().After(deadline) {
			t.Fatal("no worker created")
		}
		time.Sleep(10 * time.Millisecond)
	}
	got, err := e.svc.Cancel(ctx, j.ID, "")
	if err != nil || got.State != domain.JobCancelled {
		t.Fatalf("Cancel = %+v, %v", got, err)
	}
	if destroyed, _ := e.cloud.waitDestroyed(wid); !destroyed {
		t.Fatalf("reserved worker %s not destroyed", wid)
	}
	e.waitSaga(jobs.ExecutionSagaID(j.ID), saga.StateCompleted)
	if _, err := e.svc.RegisterWorker(ctx, wid, e.cloud.otp(wid)); !errors.Is(err, jobs.ErrInvalidCredentials) {
		t.Fatalf("registration after cancel: %v", err)
	}
	if got := e.waitJob(j.ID, domain.JobCancelled); got.WorkerID != wid {
		t.Fatalf("job %+v", got)
	}
}

func TestCancelFinishedJob(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx := e.ctx()
	j, err := e.svc.Submit(ctx, spec(nil))
	if err != nil {
		t.Fatal(err)
	}
	e.waitJob(j.ID, domain.JobSucceeded)
	_, err = e.svc.Cancel(ctx, j.ID, "")
	var nc *jobs.NotCancellableError
	if !errors.As(err, &nc) || nc.State != domain.JobSucceeded || !errors.Is(err, jobs.ErrNotCancellable) ||
		!errors.Is(err, domain.ErrIllegalTransition) {
		t.Fatalf("Cancel of a SUCCEEDED job: %v", err)
	}
	if want := "job " + j.ID + " already SUCCEEDED; nothing to cancel"; err.Error() != want {
		t.Fatalf("message %q, want %q", err, want)
	}
	if got := e.waitJob(j.ID, domain.JobSucceeded); got.State != domain.JobSucceeded {
		t.Fatalf("job %+v", got)
	}
}

func TestCancellationCommandsRegistered(t *testing.T) {
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
	commandtest.CheckRegistered(t, bus, jobs.CancellationCommands()...)
}

// staleStore returns, once, an older copy of a job from Jobs().Get: what Cancel reads
// when the job moves right after its (unlocked) read.
type staleStore struct {
	store.Store
	stale atomic.Pointer[domain.Job]
}

type staleJobs struct {
	store.JobStore
	s *staleStore
}

func (s *staleStore) Jobs() store.JobStore { return staleJobs{s.Store.Jobs(), s} }

func (j staleJobs) Get(ctx context.Context, id string) (*domain.Job, error) {
	if old := j.s.stale.Load(); old != nil && old.ID == id && j.s.stale.CompareAndSwap(old, nil) {
		cp := *old
		return &cp, nil
	}
	return j.JobStore.Get(ctx, id)
}

// A job read PENDING by Cancel that the scheduler took meanwhile (PROVISIONING) is
// cancelled on its new state. Before, the cancel was refused as an illegal transition
// PROVISIONING → CANCELLED (FailedPrecondition: "already ended") and the job ran on;
// the chaos test saw a cancelled job end SUCCEEDED.
func TestCancelOfAJobThatMovedMeanwhile(t *testing.T) {
	stale := &staleStore{}
	e := newEnv(t, envOpts{manual: true, wrap: func(st store.Store) store.Store { stale.Store = st; return stale }})
	ctx := e.ctx()
	j, err := e.svc.Submit(ctx, spec(nil))
	if err != nil {
		t.Fatal(err)
	}
	p := e.waitJob(j.ID, domain.JobProvisioning)
	read := *p
	read.State, read.WorkerID = domain.JobPending, ""
	stale.stale.Store(&read)
	got, err := e.svc.Cancel(ctx, j.ID, "")
	if err != nil || got.State != domain.JobCancelled {
		t.Fatalf("Cancel = %+v, %v; want CANCELLED", got, err)
	}
	if stale.stale.Load() != nil {
		t.Fatal("Cancel did not read the stale copy: the test injected nothing")
	}
	if destroyed, _ := e.cloud.waitDestroyed(p.WorkerID); !destroyed {
		t.Fatalf("reserved worker %s not destroyed", p.WorkerID)
	}
	e.waitSaga(jobs.ExecutionSagaID(j.ID), saga.StateCompleted)
	e.waitJob(j.ID, domain.JobCancelled)
}
