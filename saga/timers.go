package saga

import (
	"context"
	"errors"
	"fmt"

	"github.com/hodei-jobs/hodei/store"
)

// FireDueTimers claims timers due at the engine clock's now and fires each: the saga's
// history gets timer.fired and the saga becomes runnable. Exactly one replica fires a
// timer. It returns how many timers it fired.
func (e *Engine) FireDueTimers(ctx context.Context) (int, error) {
	timers, err := e.sagas.ClaimDueTimers(ctx, e.cfg.RunnerID, e.cfg.Clock.Now(), e.cfg.Lease, e.cfg.BatchSize)
	if err != nil {
		return 0, err
	}
	fired := 0
	for _, t := range timers {
		ok, err := e.fireTimer(ctx, t)
		if err != nil {
			e.log.Error("saga timer fire failed; it will be claimed again", "timer", t.ID, "err", err)
			continue
		}
		if ok {
			fired++
		}
	}
	return fired, nil
}

// fireTimer fires one claimed timer in one transaction: timer.fired is appended and the
// row marked FIRED only while this runner still holds the timer's claim (a saga that has
// ended gets the timer CANCELLED instead). It reloads and retries when the saga's
// history moved, and reports false when someone else finished the timer.
func (e *Engine) fireTimer(ctx context.Context, t *store.SagaTimer) (bool, error) {
	for range maxAppendRetries {
		fired := false
		err := e.st.InTx(ctx, func(ctx context.Context) error {
			rec, err := e.sagas.Get(ctx, t.SagaID)
			if err != nil {
				return err
			}
			if State(rec.State).Terminal() {
				return e.sagas.FinishTimer(ctx, t.ID, e.cfg.RunnerID, store.TimerCancelled)
			}
			// Timer row first, then the saga row: the lock order of cancelStepTimers.
			if err := e.sagas.FinishTimer(ctx, t.ID, e.cfg.RunnerID, store.TimerFired); err != nil {
				return err
			}
			ev, err := e.encode(EventTimerFired, "", 0, &EventData{Name: t.Name, TimerID: t.ID, FireAt: t.FireAt})
			if err != nil {
				return err
			}
			now := e.cfg.Clock.Now()
			upd := wakeUpdate(rec, now)
			e.takeFor(rec, &upd, now)
			if err := e.sagas.Append(ctx, t.SagaID, rec.LastSeq, upd, ev); err != nil {
				return err
			}
			fired = true
			e.woken(ctx, rec, upd, ev)
			return nil
		})
		if err == nil {
			return fired, nil
		}
		var ce *store.SagaConflictError
		if errors.As(err, &ce) {
			continue // the saga moved: read it again
		}
		if errors.Is(err, store.ErrConflict) {
			return false, nil // the timer was finished by someone else
		}
		return false, err
	}
	return false, fmt.Errorf("saga timer %s: gave up after %d conflicting appends", t.ID, maxAppendRetries)
}
