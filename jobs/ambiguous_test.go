package jobs_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/jobs"
	"github.com/hodei-jobs/hodei/saga"
	"github.com/hodei-jobs/hodei/store"
)

// lossyStore loses the answer of one commit: the transaction in which changed turns
// from false to true commits, and InTx then reports an error and runs none of its
// after-commit callbacks, as when the connection drops after PostgreSQL committed
// ("committed, but the answer was lost"; e2e/ha_test.go injects it at random through a
// TCP proxy, this picks the transaction).
type lossyStore struct {
	store.Store
	changed func(ctx context.Context) bool // read inside the transaction, before and after its work
	lost    atomic.Bool                    // a commit's answer was lost (once)
}

type txCallbacks struct{ fns []func() }

type txCallbacksKey struct{}

func (s *lossyStore) InTx(ctx context.Context, fn func(ctx context.Context) error) error {
	if _, ok := ctx.Value(txCallbacksKey{}).(*txCallbacks); ok {
		return s.Store.InTx(ctx, fn) // joins the enclosing transaction
	}
	cbs := &txCallbacks{}
	lose := false
	err := s.Store.InTx(context.WithValue(ctx, txCallbacksKey{}, cbs), func(ctx context.Context) error {
		before := s.changed(ctx)
		if err := fn(ctx); err != nil {
			return err
		}
		lose = !before && s.changed(ctx) && s.lost.CompareAndSwap(false, true)
		return nil
	})
	if err != nil {
		return err
	}
	if lose {
		return errors.New("lossy store: committed, but the answer was lost")
	}
	for _, f := range cbs.fns {
		f()
	}
	return nil
}

func (s *lossyStore) AfterCommit(ctx context.Context, fn func()) {
	if cbs, ok := ctx.Value(txCallbacksKey{}).(*txCallbacks); ok {
		cbs.fns = append(cbs.fns, fn)
		return
	}
	s.Store.AfterCommit(ctx, fn)
}

// A job transferred to a replacement that registered already reaches it even when the
// transfer's commit answer is lost: the recovery saga's transfer step is retried, finds
// the transfer done (its idempotency record committed with it) and sends nothing, so
// RunJob must come from the deliver activity. Before it, such a job stayed ASSIGNED
// forever (seen in the HA ambiguous-commit test).
func TestTransferWithLostCommitAnswerStillDeliversRunJob(t *testing.T) {
	var jobID, lostWorker atomic.Value
	jobID.Store("")
	lossy := &lossyStore{}
	lossy.changed = func(ctx context.Context) bool {
		id := jobID.Load().(string)
		if id == "" {
			return false
		}
		j, err := lossy.Store.Jobs().Get(ctx, id)
		return err == nil && j.State == domain.JobAssigned && j.Attempt == 2 && j.WorkerID != lostWorker.Load()
	}
	e := newEnv(t, envOpts{manual: true, wrap: func(st store.Store) store.Store { lossy.Store = st; return lossy }})
	ctx := e.ctx()
	sp := spec(nil)
	sp.MaxAttempts = 2
	j, old := e.runningOn(sp)
	lostWorker.Store(old)
	jobID.Store(j.ID)

	e.clock.Advance(2 * time.Second)
	if r, err := e.svc.Cleanup(ctx, cleanupCfg); err != nil || r.RecoveriesStarted != 1 {
		t.Fatalf("cleanup: %+v, %v; want one recovery started", r, err)
	}
	p := e.waitJob(j.ID, domain.JobProvisioning)
	repl := e.registerManual(p.WorkerID)
	a := e.waitJob(j.ID, domain.JobAssigned)
	if a.WorkerID != repl || a.Attempt != 2 {
		t.Fatalf("job on %s attempt %d, want replacement %s attempt 2", a.WorkerID, a.Attempt, repl)
	}
	runID := fmt.Sprintf("run/%s/2", j.ID)
	deadline := time.Now().Add(15 * time.Second)
	for {
		e.cloud.mu.Lock()
		got := e.cloud.msgs[runID]
		e.cloud.mu.Unlock()
		if got {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("RunJob for attempt 2 never reached the replacement (transfer's answer lost: %v)", lossy.lost.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !lossy.lost.Load() {
		t.Fatal("the transfer's commit answer was not lost: the test did not inject its fault")
	}
	e.waitSaga(jobs.RecoverySagaID(j.ID, 1), saga.StateCompleted)
	if err := e.svc.JobStarted(ctx, repl, j.ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.JobFinished(ctx, repl, jobs.JobResult{JobID: j.ID}); err != nil {
		t.Fatal(err)
	}
	if done := e.waitJob(j.ID, domain.JobSucceeded); done.Attempt != 2 {
		t.Fatalf("job succeeded on attempt %d, want 2", done.Attempt)
	}
	if n := e.count(`SELECT count(*) FROM outbox WHERE type = 'job.reassigned'`); n != 1 {
		t.Fatalf("%d job.reassigned events, want 1", n)
	}
}
