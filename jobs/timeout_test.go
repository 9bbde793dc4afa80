package jobs_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/jobs"
	"github.com/hodei-jobs/hodei/provider"
	"github.com/hodei-jobs/hodei/saga"
)

// stuckCloud is the fake cloud whose Destroy always fails: the worker keeps running.
type stuckCloud struct {
	*fakeCloud
	destroys atomic.Int32
}

func (s *stuckCloud) Destroy(ctx context.Context, workerID string) error {
	s.destroys.Add(1)
	return errors.New("cloud API unavailable")
}

func timedOutJob(t *testing.T, e *env) *domain.Job {
	t.Helper()
	s := spec(map[string]string{"FAKE_HANG": "1"})
	s.Timeout = 300 * time.Millisecond
	j, err := e.svc.Submit(e.ctx(), s)
	if err != nil {
		t.Fatal(err)
	}
	return e.waitJob(j.ID, domain.JobTimedOut, domain.JobManualInterventionRequired, domain.JobSucceeded, domain.JobFailed)
}

func TestTimeoutTerminatesWorker(t *testing.T) {
	e := newEnv(t, envOpts{})
	got := timedOutJob(t, e)
	if got.State != domain.JobTimedOut || got.ExitCode != nil || !strings.Contains(got.LastError, "timed out after 300ms") {
		t.Fatalf("job %+v", got)
	}
	if destroyed, _ := e.cloud.waitDestroyed(got.WorkerID); !destroyed {
		t.Fatalf("worker %s not destroyed", got.WorkerID)
	}
	e.waitSaga(jobs.TimeoutSagaID(got.ID), saga.StateCompleted)
	e.waitSaga(jobs.ExecutionSagaID(got.ID), saga.StateCompleted)
	deadline := time.Now().Add(5 * time.Second)
	for e.count(`SELECT count(*) FROM workers WHERE state <> 'TERMINATED'`) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the timed-out job's worker still holds a slot")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestTimeoutUnconfirmedTermination: the provider cannot destroy the worker, so the job
// needs an operator: MANUAL_INTERVENTION_REQUIRED with the reason, not TIMED_OUT.
func TestTimeoutUnconfirmedTermination(t *testing.T) {
	var stuck *stuckCloud
	e := newEnvWith(t, envOpts{}, func(f *fakeCloud) provider.Provider {
		stuck = &stuckCloud{fakeCloud: f}
		return stuck
	}, nil)
	got := timedOutJob(t, e)
	if got.State != domain.JobManualInterventionRequired {
		t.Fatalf("job %+v", got)
	}
	for _, want := range []string{"timed out after 300ms", "could not be confirmed terminated", "cloud API unavailable"} {
		if !strings.Contains(got.LastError, want) {
			t.Fatalf("reason %q lacks %q", got.LastError, want)
		}
	}
	if n := stuck.destroys.Load(); n < 3 {
		t.Fatalf("Destroy tried %d times, want >= 3", n)
	}
	e.waitSaga(jobs.TimeoutSagaID(got.ID), saga.StateCompleted)
	e.waitSaga(jobs.ExecutionSagaID(got.ID), saga.StateCompleted)
	if n := e.count(`SELECT count(*) FROM workers WHERE id = $1 AND state <> 'TERMINATED'`, got.WorkerID); n != 1 {
		t.Fatal("the worker that may still run was marked TERMINATED")
	}
	if _, err := e.svc.Cancel(e.ctx(), got.ID, ""); !errors.Is(err, jobs.ErrNotCancellable) {
		t.Fatalf("Cancel of a job under review: %v", err)
	}
}

// TestTimeoutWhileCancelling: a job being cancelled is not taken over by the timeout
// saga; it ends CANCELLED.
func TestTimeoutWhileCancelling(t *testing.T) {
	e := newEnv(t, envOpts{})
	a := &cancelAgent{e: e}
	e.cloud.setCanceller(a.cancel)
	s := spec(map[string]string{"FAKE_HANG": "1"})
	s.Timeout = 500 * time.Millisecond
	j, err := e.svc.Submit(e.ctx(), s)
	if err != nil {
		t.Fatal(err)
	}
	e.waitJob(j.ID, domain.JobRunning)
	if _, err := e.svc.Cancel(e.ctx(), j.ID, ""); err != nil {
		t.Fatal(err)
	}
	got := e.waitJob(j.ID, domain.JobCancelled, domain.JobTimedOut, domain.JobManualInterventionRequired)
	if got.State != domain.JobCancelled {
		t.Fatalf("job %+v", got)
	}
	if _, err := e.engine.Get(e.ctx(), jobs.TimeoutSagaID(j.ID)); err == nil {
		t.Fatal("a cancelling job got a timeout saga")
	}
	e.waitSaga(jobs.ExecutionSagaID(j.ID), saga.StateCompleted)
}
