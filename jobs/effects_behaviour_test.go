package jobs_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/command"
	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/jobs"
	"github.com/hodei-jobs/hodei/provider"
	"github.com/hodei-jobs/hodei/saga"
)

// flakyCloud's Destroy fails while failing is set (a cloud API that is down), counting
// every call per worker.
type flakyCloud struct {
	*fakeCloud
	failFirst atomic.Int32 // Destroy of a worker fails for its first failFirst calls
	mu        sync.Mutex
	calls     map[string]int
}

func (f *flakyCloud) Destroy(ctx context.Context, workerID string) error {
	f.mu.Lock()
	f.calls[workerID]++
	n := f.calls[workerID]
	f.mu.Unlock()
	if n <= int(f.failFirst.Load()) {
		return errors.New("cloud API unavailable")
	}
	return f.fakeCloud.Destroy(ctx, workerID)
}

func (f *flakyCloud) destroyCalls(workerID string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[workerID]
}

// waitLog polls the env's log for want.
func (e *env) waitLog(want string) {
	e.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(e.logs.String(), want) {
		if time.Now().After(deadline) {
			e.t.Fatalf("log lacks %q:\n%s", want, e.logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A worker released after its job is destroyed even when the provider fails the first
// tries: Destroy is retried after the commit, and the worker is destroyed once.
func TestDestroyRetriedAfterCommit(t *testing.T) {
	var fc *flakyCloud
	e := newEnvWith(t, envOpts{}, func(f *fakeCloud) provider.Provider {
		fc = &flakyCloud{fakeCloud: f, calls: map[string]int{}}
		fc.failFirst.Store(2)
		return fc
	}, nil)
	j, err := e.svc.Submit(e.ctx(), spec(nil))
	if err != nil {
		t.Fatal(err)
	}
	done := e.waitJob(j.ID, domain.JobSucceeded)
	if destroyed, _ := e.cloud.waitDestroyed(done.WorkerID); !destroyed {
		t.Fatalf("worker %s not destroyed after two failed tries (%d calls)", done.WorkerID, fc.destroyCalls(done.WorkerID))
	}
	if n := fc.destroyCalls(done.WorkerID); n != 3 {
		t.Fatalf("Destroy called %d times, want 3 (two failures, one success)", n)
	}
	if strings.Contains(e.logs.String(), "destroy of a terminated worker failed") {
		t.Fatalf("a destroy that succeeded on its third try was reported failed:\n%s", e.logs.String())
	}
}

// When every try fails, the destroy after the commit gives up after three attempts and
// says so; the worker sweep then destroys the worker once the provider is back.
func TestDestroyLeftToTheSweep(t *testing.T) {
	var fc *flakyCloud
	e := newEnvWith(t, envOpts{}, func(f *fakeCloud) provider.Provider {
		fc = &flakyCloud{fakeCloud: f, calls: map[string]int{}}
		fc.failFirst.Store(1000)
		return fc
	}, nil) // SweepInterval: a minute, so only the sweep this test starts runs
	j, err := e.svc.Submit(e.ctx(), spec(nil))
	if err != nil {
		t.Fatal(err)
	}
	done := e.waitJob(j.ID, domain.JobSucceeded)
	e.waitSaga(jobs.ExecutionSagaID(j.ID), saga.StateCompleted)
	e.waitLog("destroy of a terminated worker failed; the worker sweep retries it")
	if n := fc.destroyCalls(done.WorkerID); n != 3 {
		t.Fatalf("Destroy called %d times before giving up, want 3", n)
	}
	if n := e.count(`SELECT count(*) FROM workers WHERE id = $1 AND state = 'TERMINATED'`, done.WorkerID); n != 1 {
		t.Fatal("the worker's row is not TERMINATED (its slot is not free)")
	}
	if destroyed, _ := e.cloud.wasDestroyed(done.WorkerID); destroyed {
		t.Fatal("the fake cloud's worker is gone although every Destroy failed")
	}

	// The provider is back; the next sweep (a scheduler starting sweeps at once)
	// destroys the worker the database says is TERMINATED.
	fc.failFirst.Store(0)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	e.startScheduler(ctx, &wg)
	defer func() { cancel(); wg.Wait() }()
	if destroyed, _ := e.cloud.waitDestroyed(done.WorkerID); !destroyed {
		t.Fatalf("the sweep did not destroy TERMINATED worker %s", done.WorkerID)
	}
	e.waitLog("destroyed a worker left behind")
}

// immortalCloud's Destroy reports success but the worker keeps running (a destroy the
// cloud accepted and never carried out).
type immortalCloud struct{ *fakeCloud }

func (immortalCloud) Destroy(context.Context, string) error { return nil }

// A timed-out job whose worker still runs after Destroy is not reported TIMED_OUT: it
// needs an operator, and its worker keeps its slot.
func TestTimeoutWorkerStillRunning(t *testing.T) {
	e := newEnvWith(t, envOpts{}, func(f *fakeCloud) provider.Provider { return immortalCloud{f} }, nil)
	got := timedOutJob(t, e)
	if got.State != domain.JobManualInterventionRequired {
		t.Fatalf("job %s (%q), want MANUAL_INTERVENTION_REQUIRED", got.State, got.LastError)
	}
	if !strings.Contains(got.LastError, "still running after destroy") {
		t.Fatalf("reason %q does not say the worker still runs", got.LastError)
	}
	e.waitSaga(jobs.TimeoutSagaID(got.ID), saga.StateCompleted)
	if n := e.count(`SELECT count(*) FROM workers WHERE id = $1 AND state <> 'TERMINATED'`, got.WorkerID); n != 1 {
		t.Fatal("the worker that still runs was marked TERMINATED")
	}
}

// A CancelJob the agent does not acknowledge is sent again, with the same round (so the
// same message id: the agent drops a copy), until it is acknowledged.
func TestCancelResentUntilAcknowledged(t *testing.T) {
	e := newEnvWith(t, envOpts{}, nil, func(c *jobs.Config) { c.CancelGrace = 5 * time.Second })
	a := &cancelAgent{e: e, confirm: true}
	var mu sync.Mutex
	var rounds []int
	j := e.runningJob(a)
	e.cloud.setCanceller(func(ctx context.Context, workerID string, c domain.CancelRequest) error {
		mu.Lock()
		rounds = append(rounds, c.Round)
		n := len(rounds)
		mu.Unlock()
		if n <= 2 {
			return errors.New("stream broken: not acknowledged")
		}
		return a.cancel(ctx, workerID, c)
	})
	if _, err := e.svc.Cancel(e.ctx(), j.ID, "stop"); err != nil {
		t.Fatal(err)
	}
	done := e.waitJob(j.ID, domain.JobCancelled, domain.JobFailed, domain.JobSucceeded)
	if done.State != domain.JobCancelled || strings.Contains(done.LastError, "did not confirm") {
		t.Fatalf("job %s (%q), want CANCELLED and confirmed", done.State, done.LastError)
	}
	e.waitSaga(jobs.CancellationSagaID(j.ID), saga.StateCompleted)
	mu.Lock()
	defer mu.Unlock()
	if len(rounds) != 3 || rounds[0] != rounds[1] || rounds[1] != rounds[2] {
		t.Fatalf("CancelJob rounds sent %v, want the same round three times (two unacknowledged, one acknowledged)", rounds)
	}
}

// CancelJob messages nobody acknowledges stop being re-sent once the worker is
// terminated (each delivery loop sends at most once more after that), instead of for
// 20 × DeliveryTimeout.
func TestCancelResendStopsWhenWorkerTerminated(t *testing.T) {
	e := newEnvWith(t, envOpts{}, nil, func(c *jobs.Config) {
		c.CancelGrace = 50 * time.Millisecond
		c.DeliveryTimeout = time.Minute // loops that never stopped would run for 20 minutes
	})
	j := e.runningJob(&cancelAgent{e: e})
	var sends, afterTerminated atomic.Int32
	e.cloud.setCanceller(func(ctx context.Context, workerID string, c domain.CancelRequest) error {
		sends.Add(1)
		if w, err := e.st.Workers().Get(context.Background(), workerID); err != nil {
			t.Errorf("worker %s: %v", workerID, err)
		} else if w.State == domain.WorkerTerminated {
			afterTerminated.Add(1)
		}
		return errors.New("stream broken: not acknowledged")
	})
	if _, err := e.svc.Cancel(e.ctx(), j.ID, ""); err != nil {
		t.Fatal(err)
	}
	done := e.waitJob(j.ID, domain.JobCancelled, domain.JobFailed)
	if done.State != domain.JobCancelled || !strings.Contains(done.LastError, "did not confirm") {
		t.Fatalf("job %s (%q), want CANCELLED, unconfirmed", done.State, done.LastError)
	}
	if destroyed, _ := e.cloud.waitDestroyed(j.WorkerID); !destroyed {
		t.Fatalf("worker %s not destroyed", j.WorkerID)
	}
	if n := sends.Load(); n < 3 {
		t.Fatalf("%d CancelJob sends before the worker was terminated, want at least one per round", n)
	}
	// Unstopped, each of the (up to three) loops would send every 2s at most: within
	// 5s that is at least two more each.
	time.Sleep(5 * time.Second)
	if n := afterTerminated.Load(); n > 3 {
		t.Fatalf("%d CancelJob sends after the worker was terminated, want at most one per delivery loop", n)
	}
}

// CreateWorker of a worker another node started (a node-local provider, the owner out
// of reach) warns that it could not destroy that copy, takes the worker over with a new
// password (so the old copy cannot register) and starts it here; a worker that has
// registered meanwhile is left alone.
func TestCreateWorkerTakesOverAnotherNodesWorker(t *testing.T) {
	e := newEnv(t, envOpts{manual: true, regTimeout: time.Minute})
	ctx := e.ctx()
	j, err := e.svc.Submit(ctx, spec(nil))
	if err != nil {
		t.Fatal(err)
	}
	wid, oldOTP := e.manualWorker(j.ID)
	e.stop() // the provisioning saga waits; this test plays the activity's re-run
	if _, err := e.st.Pool().Exec(ctx, `UPDATE workers SET owner = 'node-b' WHERE id = $1`, wid); err != nil {
		t.Fatal(err)
	}
	out, err := command.Dispatch[jobs.Outcome](ctx, e.d, jobs.CreateWorker{Key: "test/create-on-a", WorkerID: wid, JobID: j.ID, Provider: "fake"})
	if err != nil || out.Skipped {
		t.Fatalf("CreateWorker = %+v, %v", out, err)
	}
	if !strings.Contains(e.logs.String(), "could not destroy a copy of a worker started by another node") ||
		!strings.Contains(e.logs.String(), "owner=node-b") {
		t.Fatalf("no warning about node-b's copy:\n%s", e.logs.String())
	}
	if n := e.count(`SELECT count(*) FROM workers WHERE id = $1 AND owner = 'local'`, wid); n != 1 {
		t.Fatal("the worker is not owned by this node after CreateWorker")
	}
	if _, err := e.svc.RegisterWorker(ctx, wid, oldOTP); err == nil {
		t.Fatal("the other node's copy registered with its old password")
	}
	newOTP := e.cloud.otp(wid)
	if newOTP == oldOTP {
		t.Fatal("the worker was started with the old password")
	}
	if _, err := e.svc.RegisterWorker(ctx, wid, newOTP); err != nil {
		t.Fatalf("the worker started here cannot register: %v", err)
	}
	_, creates := e.cloud.wasDestroyed(wid)
	out, err = command.Dispatch[jobs.Outcome](ctx, e.d, jobs.CreateWorker{Key: "test/create-again", WorkerID: wid, JobID: j.ID, Provider: "fake"})
	if err != nil || !out.Skipped {
		t.Fatalf("CreateWorker of a registered worker = %+v, %v; want skipped", out, err)
	}
	if _, again := e.cloud.wasDestroyed(wid); again != creates {
		t.Fatalf("a registered worker was created again (%d → %d creates)", creates, again)
	}
}

// A RunJob the agent never acknowledged is delivered again, and the job runs once.
func TestRunJobDroppedOnceIsResent(t *testing.T) {
	e := newEnv(t, envOpts{})
	var drops atomic.Int32
	drop := func(workerID string, j *domain.Job) bool { return drops.Add(1) == 1 }
	e.cloud.dropRun.Store(&drop)
	j, err := e.svc.Submit(e.ctx(), spec(nil))
	if err != nil {
		t.Fatal(err)
	}
	done := e.waitJob(j.ID, domain.JobSucceeded, domain.JobFailed)
	if done.State != domain.JobSucceeded || done.Attempt != 1 {
		t.Fatalf("job %s attempt %d, want SUCCEEDED on attempt 1", done.State, done.Attempt)
	}
	if n := drops.Load(); n < 2 {
		t.Fatalf("%d RunJob deliveries, want the dropped one and a re-send", n)
	}
	e.cloud.mu.Lock()
	defer e.cloud.mu.Unlock()
	if n := e.cloud.ran[j.ID]; n != 1 {
		t.Fatalf("the agent received %d RunJobs, want 1 (the dropped one never arrived)", n)
	}
}
