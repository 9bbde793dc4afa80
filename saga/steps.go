package saga

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/hodei-jobs/hodei/command"
	"github.com/hodei-jobs/hodei/store"
)

// advance runs a claimed saga until it parks, finishes, backs off or the claim is lost.
func (e *Engine) advance(ctx context.Context, rec *store.SagaRecord) error {
	return e.advanceFrom(ctx, rec, nil)
}

// release hands a claimed saga back without other changes (also when ctx is done).
func (e *Engine) release(ctx context.Context, id string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := e.sagas.Release(ctx, id, e.cfg.RunnerID); err != nil {
		e.log.Warn("saga release failed; the claim will expire", "saga", id, "err", err)
	}
}

// advanceFrom is advance with the saga's history when it was already read (nil: load it).
func (e *Engine) advanceFrom(ctx context.Context, rec *store.SagaRecord, hist []*store.SagaEvent) error {
	return e.advanceWith(ctx, rec, hist, nil)
}

// advanceWith is advanceFrom with the saga's state at rec.LastSeq when it is known
// (handoff.go; it is used, not copied), else from hist or the store.
func (e *Engine) advanceWith(ctx context.Context, rec *store.SagaRecord, hist []*store.SagaEvent, known *sagaState) error {
	// Perhaps a replica that knows this version (or can read this history: a newer
	// release) will take it; here it is looked at again in a minute, not at every poll.
	later := func(msg string, err error) error {
		e.log.Error(msg+"; retrying in a minute", "saga", rec.ID, "type", rec.Type, "version", rec.Version, "err", err)
		upd := store.SagaUpdate{State: rec.State, CurrentStep: rec.CurrentStep, Error: rec.Error,
			RunnableAt: e.cfg.Clock.Now().Add(time.Minute), ClaimedBy: e.cfg.RunnerID, Release: true}
		if aerr := e.sagas.Append(ctx, rec.ID, rec.LastSeq, upd); aerr != nil {
			e.release(ctx, rec.ID)
		}
		return err
	}
	def, err := e.reg.Lookup(rec.Type, rec.Version)
	if err != nil {
		return later("saga definition not registered here", err)
	}
	var st *sagaState
	switch {
	case known != nil:
		st = known
	case len(hist) > 0:
		st, err = e.fold(rec.ID, newState(), hist)
	default:
		st, err = e.loadAt(ctx, rec.ID, rec.LastSeq)
	}
	var unreadable *unreadableError
	if errors.As(err, &unreadable) {
		return later("saga history unreadable here", err)
	}
	if err != nil {
		e.release(ctx, rec.ID)
		return err
	}
	ctx = inSagaTrace(ctx, st) // telemetry.go
	var act *activityResult    // an activity's outcome not yet recorded (kept across conflicts)
	for range e.cfg.MaxTransitions {
		if ctx.Err() != nil {
			e.release(ctx, rec.ID)
			return ctx.Err()
		}
		next, done, err := e.transition(ctx, rec, def, st, &act)
		if errors.Is(err, store.ErrConflict) {
			e.conflict(rec.Type)
			// Someone else appended (a signal, a timer, another runner). Keep going only
			// if the saga is still ours.
			cur, gerr := e.sagas.Get(ctx, rec.ID)
			if gerr != nil {
				return gerr
			}
			now := e.cfg.Clock.Now()
			if cur.ClaimedBy != e.cfg.RunnerID || !cur.ClaimExpiresAt.After(now) {
				e.log.Info("saga taken over by another runner", "saga", rec.ID, "by", cur.ClaimedBy)
				return nil
			}
			if st, err = e.loadAt(ctx, rec.ID, cur.LastSeq); err != nil {
				e.release(ctx, rec.ID)
				return err
			}
			continue
		}
		if err != nil {
			e.release(ctx, rec.ID)
			return err
		}
		st, act = next, nil
		if done {
			return nil
		}
	}
	e.release(ctx, rec.ID)
	return nil
}

// transition makes one recorded move of the saga. done means the saga was handed back.
// An activity step runs here, outside any transaction, before its outcome is recorded;
// *act keeps that outcome until it is recorded (see activityResult).
func (e *Engine) transition(ctx context.Context, rec *store.SagaRecord, def *Definition, st *sagaState, act **activityResult) (*sagaState, bool, error) {
	now := e.cfg.Clock.Now()
	p := &pending{}
	switch st.Status {
	case StateRunning:
		if st.Step >= len(def.Steps) {
			e.add(p, EventCompleted, "", 0, EventData{})
			next, err := e.commit(ctx, rec.ID, st, p, true)
			return next, true, err
		}
		if !st.Scheduled {
			e.add(p, EventStepScheduled, def.Steps[st.Step].Name, st.Attempt+1, EventData{Index: st.Step})
			next, err := e.commit(ctx, rec.ID, st, p, false)
			return next, false, err
		}
		if st.NotBefore.After(now) {
			next, err := e.commit(ctx, rec.ID, st, p, true) // re-park until the backoff ends
			return next, true, err
		}
		if step := &def.Steps[st.Step]; step.Activity != nil && !(*act).matches(st) {
			*act = e.runActivity(ctx, rec, st, step)
			if ctx.Err() != nil {
				return nil, false, ctx.Err() // stopping: record nothing; the activity runs again
			}
		}
		if !(*act).matches(st) {
			*act = nil
		}
		return e.runSteps(ctx, rec, def, st, *act)
	case StateCompensating:
		if !st.Scheduled {
			pos := st.Comp
			for pos >= 0 && def.Steps[st.Completed[pos]].Compensate == nil {
				pos--
			}
			if pos < 0 {
				switch {
				case st.Cancelling:
					e.add(p, EventCancelled, "", 0, EventData{})
				case st.Compensated > 0:
					e.add(p, EventCompensated, "", 0, EventData{})
				default:
					e.add(p, EventFailed, "", 0, EventData{})
				}
				next, err := e.commit(ctx, rec.ID, st, p, true)
				return next, true, err
			}
			e.add(p, EventCompensationStarted, def.Steps[st.Completed[pos]].Name, st.Attempt+1, EventData{Index: pos})
			next, err := e.commit(ctx, rec.ID, st, p, false)
			return next, false, err
		}
		if st.NotBefore.After(now) {
			next, err := e.commit(ctx, rec.ID, st, p, true)
			return next, true, err
		}
		return e.runStep(ctx, rec, def, st, true, nil)
	default: // WAITING (woken by nothing new) or terminal: make the row say so, hand back.
		next, err := e.commit(ctx, rec.ID, st, p, true)
		return next, true, err
	}
}

// stepError carries the error a step returned through InTx.
type stepError struct{ err error }

func (s *stepError) Error() string { return s.err.Error() }
func (s *stepError) Unwrap() error { return s.err }

// call runs fn (a step's Do or Compensate) under the step's timeout and returns its
// output as JSON, or the step's error (a timeout becomes a transient error).
func call(ctx context.Context, step *Step, fn StepFunc, sc *StepContext) ([]byte, error) {
	timeout := step.Timeout
	if timeout == 0 { // an activity step's compensation: the default of steps
		timeout = defaultStepTimeout
	}
	sctx, cancel := context.WithTimeout(ctx, timeout)
	out, err := fn(sctx, sc)
	timedOut := sctx.Err() == context.DeadlineExceeded && ctx.Err() == nil
	cancel()
	if err == nil && timedOut {
		err = context.DeadlineExceeded
	}
	if err != nil {
		if timedOut && !errors.Is(err, ErrWaiting) {
			err = command.Transient(fmt.Errorf("step timed out after %s: %w", timeout, err))
		}
		return nil, err
	}
	outJSON, err := toJSON(out)
	if err != nil {
		return nil, fmt.Errorf("encode output: %w", err)
	}
	return outJSON, nil
}

// stepContext builds the StepContext of the scheduled run of step idx.
func (e *Engine) stepContext(rec *store.SagaRecord, st *sagaState, step *Step, idx int, comp bool) *StepContext {
	return &StepContext{sagaID: rec.ID, sagaType: rec.Type, version: rec.Version, step: step.Name, index: idx,
		attempt: st.Attempt, compensating: comp, input: rec.Input, st: st, now: e.cfg.Clock.Now(), d: e.d}
}

// groupFailure is the step that ended a group of steps by failing or waiting.
type groupFailure struct {
	step *Step
	sc   *StepContext
	err  error
}

// runSteps runs the scheduled forward step and the ready steps after it, up to
// MaxStepsPerTx, in one transaction that also records their outcomes with one append
// (see "Step groups" in doc.go). Every step after the first runs behind a savepoint: if
// it fails or waits, its writes are rolled back to the savepoint, the steps before it
// are recorded as completed and its failure (or wait) is recorded after them, all in the
// same transaction. If the first step fails, the transaction is rolled back and the
// failure recorded on its own, as for a single step.
//
// act is the outcome of the first step when it is an activity (run before, outside the
// transaction); the group ends before any later activity step, whose step.scheduled is
// then committed with the group.
func (e *Engine) runSteps(ctx context.Context, rec *store.SagaRecord, def *Definition, st *sagaState, act *activityResult) (*sagaState, bool, error) {
	if e.cfg.MaxStepsPerTx == 1 {
		return e.runStep(ctx, rec, def, st, false, act)
	}
	began := e.cfg.Clock.Now()
	var (
		next *sagaState
		done bool
		sc0  *StepContext
	)
	err := e.st.InTx(ctx, func(ctx context.Context) error {
		g := &stepGroup{e: e, rec: rec, def: def, base: st, began: began, p: &pending{}, cur: st.clone()}
		fail, sc, err := g.run(ctx, act)
		sc0 = sc
		if err != nil {
			return err
		}
		release := fail == nil && g.cur.Status.Terminal()
		n, err := e.commit(ctx, rec.ID, st, g.p, release)
		if err != nil {
			return err
		}
		next, done = n, release
		if fail != nil {
			next, done, err = e.recordFailure(ctx, rec, n, fail.step, fail.sc, false, fail.err)
			return err
		}
		return nil
	})
	if err == nil {
		return next, done, nil
	}
	var se *stepError
	if !errors.As(err, &se) {
		return nil, false, err // conflict or store failure
	}
	if ctx.Err() != nil {
		// The runner is stopping: record nothing; the step runs again with the same attempt.
		return nil, false, ctx.Err()
	}
	return e.recordFailure(ctx, rec, st, &def.Steps[st.Step], sc0, false, se.err)
}

// stepGroup is a group of steps under way in runSteps's transaction: the events recorded
// so far and the state they lead to.
type stepGroup struct {
	e      *Engine
	rec    *store.SagaRecord
	def    *Definition
	base   *sagaState // the state the group starts from; its append expects base.LastSeq
	began  time.Time  // when the group started (it ends once half the lease has gone by)
	p      *pending   // the group's events, appended by one commit at the end
	cur    *sagaState // base with p's events folded in
	folded int        // how many of p's events are folded into cur
}

// run runs the group's steps in ctx's transaction, recording each completion in g.p,
// until the last step, MaxStepsPerTx steps, half the lease, the next activity step or a
// step that fails or waits. It returns the StepContext of the first step (always, once
// built), and the step that failed or waited after the first, rolled back to its
// savepoint; a failure of the first step is a *stepError, and a ctx that ends mid-group
// is ctx.Err() (the whole group then records nothing and runs again).
func (g *stepGroup) run(ctx context.Context, act *activityResult) (*groupFailure, *StepContext, error) {
	e := g.e
	var sc0 *StepContext
	for n := 0; ; n++ {
		idx := g.cur.Step
		step := &g.def.Steps[idx]
		if n > 0 && step.Activity != nil {
			return nil, sc0, nil // it runs after this commit, outside the transaction
		}
		sc := e.stepContext(g.rec, g.cur, step, idx, false)
		if n == 0 {
			sc0 = sc
		}
		out, fail, err := g.try(ctx, n, step, sc, act)
		if err != nil || fail != nil {
			return fail, sc0, err
		}
		last, err := g.complete(ctx, step, idx, sc, out)
		if err != nil {
			return nil, sc0, err
		}
		if ctx.Err() != nil {
			return nil, sc0, ctx.Err() // stopping: record nothing; the group runs again
		}
		if last || n+1 >= e.cfg.MaxStepsPerTx || e.cfg.Clock.Now().Sub(g.began) >= e.cfg.Lease/2 {
			return nil, sc0, nil
		}
	}
}

// try runs step, the nth of the group (act is the first step's outcome when it is an
// activity), and returns its output. The first step's failure is returned as a
// *stepError (the transaction rolls back). Every later step runs behind a savepoint:
// when it fails or waits its writes are rolled back to it and it is returned as the
// group's failure, unless ctx ended (then ctx.Err() is returned).
func (g *stepGroup) try(ctx context.Context, n int, step *Step, sc *StepContext, act *activityResult) ([]byte, *groupFailure, error) {
	var rollback func(context.Context) error
	if n > 0 {
		rb, err := g.e.sagas.Savepoint(ctx)
		if err != nil {
			return nil, nil, err
		}
		rollback = rb
	}
	var (
		out  []byte
		serr error
	)
	if n == 0 && act != nil {
		out, serr = act.out, act.err
	} else {
		sctx, run := g.e.startStep(ctx, sc.sagaID, sc.sagaType, step.Name, sc.attempt, false)
		out, serr = call(sctx, step, step.Do, sc)
		run.end(serr)
	}
	if serr == nil {
		return out, nil, nil
	}
	if n == 0 {
		return nil, nil, &stepError{serr}
	}
	if ctx.Err() != nil {
		return nil, nil, ctx.Err() // stopping: record nothing; the group runs again
	}
	if err := rollback(ctx); err != nil {
		return nil, nil, err
	}
	return nil, &groupFailure{step: step, sc: sc, err: serr}, nil
}

// complete records in g.p that step idx completed with out (after cancelling its pending
// timers) and that the next step is scheduled, or the saga completed after the last one,
// and folds those events into g.cur. It reports whether step idx was the last.
func (g *stepGroup) complete(ctx context.Context, step *Step, idx int, sc *StepContext, out []byte) (bool, error) {
	e, p := g.e, g.p
	if err := e.cancelStepTimers(ctx, p, g.cur, step.Name); err != nil {
		return false, err
	}
	e.add(p, EventStepCompleted, step.Name, sc.attempt, EventData{Index: idx, Output: out})
	last := idx+1 >= len(g.def.Steps)
	if last {
		e.add(p, EventCompleted, "", 0, EventData{})
	} else {
		e.add(p, EventStepScheduled, g.def.Steps[idx+1].Name, 1, EventData{Index: idx + 1})
	}
	if p.err != nil {
		return false, p.err
	}
	for ; g.folded < len(p.decs); g.folded++ {
		d := p.decs[g.folded]
		d.Seq = g.base.LastSeq + int64(g.folded) + 1
		if err := g.cur.apply(d); err != nil {
			return false, err
		}
	}
	return last, nil
}

// runStep runs the scheduled step (or compensation) alone inside the transaction that
// records its outcome, then records a failure, a wait or a retry when it did not succeed.
// act is the outcome of the step when it is an activity (run before, outside the
// transaction).
func (e *Engine) runStep(ctx context.Context, rec *store.SagaRecord, def *Definition, st *sagaState, comp bool, act *activityResult) (*sagaState, bool, error) {
	idx := st.Step
	if comp {
		idx = st.Completed[st.Comp]
	}
	step := &def.Steps[idx]
	fn := step.Do
	if comp {
		fn = step.Compensate
	}
	sc := e.stepContext(rec, st, step, idx, comp)
	var next *sagaState
	err := e.st.InTx(ctx, func(ctx context.Context) error {
		var (
			outJSON []byte
			err     error
		)
		if act != nil && !comp {
			outJSON, err = act.out, act.err
		} else {
			sctx, run := e.startStep(ctx, rec.ID, rec.Type, step.Name, sc.attempt, comp)
			outJSON, err = call(sctx, step, fn, sc)
			run.end(err)
		}
		if err != nil {
			return &stepError{err}
		}
		p := &pending{}
		if err := e.cancelStepTimers(ctx, p, st, step.Name); err != nil {
			return err
		}
		if comp {
			e.add(p, EventCompensationCompleted, step.Name, sc.attempt, EventData{Index: st.Comp, Output: outJSON})
		} else {
			e.add(p, EventStepCompleted, step.Name, sc.attempt, EventData{Index: idx, Output: outJSON})
			if idx+1 < len(def.Steps) {
				e.add(p, EventStepScheduled, def.Steps[idx+1].Name, 1, EventData{Index: idx + 1})
			} else {
				e.add(p, EventCompleted, "", 0, EventData{})
			}
		}
		n, err := e.commit(ctx, rec.ID, st, p, !comp && idx+1 >= len(def.Steps))
		next = n
		return err
	})
	if err == nil {
		return next, next.Status.Terminal(), nil
	}
	var se *stepError
	if !errors.As(err, &se) {
		return nil, false, err // conflict or store failure
	}
	if ctx.Err() != nil {
		// The runner is stopping: record nothing; the step runs again with the same attempt.
		return nil, false, ctx.Err()
	}
	return e.recordFailure(ctx, rec, st, step, sc, comp, se.err)
}

// cancelStepTimers cancels the still-pending timers of a step that is finishing. The
// timer rows are updated before the saga row (the timer poller locks in the same order).
func (e *Engine) cancelStepTimers(ctx context.Context, p *pending, st *sagaState, step string) error {
	names := slices.Sorted(maps.Keys(st.Timers))
	for _, name := range names {
		t := st.Timers[name]
		if t.Fired || t.Cancelled || !strings.HasPrefix(name, step+"/") {
			continue
		}
		err := e.sagas.FinishTimer(ctx, t.ID, "", store.TimerCancelled)
		if errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound) {
			continue // fired meanwhile: the saga's append will conflict and reload
		}
		if err != nil {
			return err
		}
		e.add(p, EventTimerCancelled, step, 0, EventData{Name: name, TimerID: t.ID})
	}
	return nil
}

// recordFailure records a step that waits, will be retried, or failed for good.
func (e *Engine) recordFailure(ctx context.Context, rec *store.SagaRecord, st *sagaState, step *Step, sc *StepContext, comp bool, serr error) (*sagaState, bool, error) {
	now := e.cfg.Clock.Now()
	p := &pending{}
	failed, scheduled := EventStepFailed, EventStepScheduled
	index := sc.index
	if comp {
		failed, scheduled = EventCompensationFailed, EventCompensationStarted
		index = st.Comp
	}
	if errors.Is(serr, ErrWaiting) && !comp {
		var next *sagaState
		err := e.st.InTx(ctx, func(ctx context.Context) error {
			for _, t := range sc.timers {
				id := rec.ID + "/" + t.Name
				e.add(p, EventTimerCreated, step.Name, sc.attempt, EventData{Name: t.Name, TimerID: id, FireAt: t.FireAt})
			}
			e.add(p, EventStepWaiting, step.Name, sc.attempt, EventData{Index: index, Name: strings.Join(sc.waitFor, ",")})
			n, err := e.commit(ctx, rec.ID, st, p, true)
			if err != nil {
				return err
			}
			for _, t := range sc.timers {
				if err := e.sagas.CreateTimer(ctx, &store.SagaTimer{ID: rec.ID + "/" + t.Name, SagaID: rec.ID,
					Name: t.Name, FireAt: t.FireAt, CreatedAt: now}); err != nil {
					return err
				}
			}
			next = n
			return nil
		})
		return next, true, err
	}
	if errors.Is(serr, ErrWaiting) {
		serr = fmt.Errorf("compensations cannot wait: %w", serr)
	}
	if command.IsTransient(serr) && sc.attempt < step.Retry.MaxAttempts {
		delay := command.Backoff(sc.attempt-1, step.Retry.Initial, step.Retry.Max, step.Retry.Jitter, e.cfg.Rand)
		e.add(p, failed, step.Name, sc.attempt, EventData{Index: index, Error: serr.Error()})
		e.add(p, scheduled, step.Name, sc.attempt+1, EventData{Index: index, NotBefore: now.Add(delay)})
		next, err := e.commit(ctx, rec.ID, st, p, true)
		return next, true, err
	}
	e.add(p, failed, step.Name, sc.attempt, EventData{Index: index, Error: serr.Error(), Final: true})
	done := comp // a final compensation failure ends the saga (COMPENSATION_FAILED)
	next, err := e.commit(ctx, rec.ID, st, p, done)
	return next, done, err
}
