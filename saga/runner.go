package saga

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hodei-jobs/hodei/command"
	"github.com/hodei-jobs/hodei/store"
)

// clone deep-copies s (maps and slices) so a fold can be tried and thrown away.
func (s *sagaState) clone() *sagaState {
	c := *s
	c.Completed = slices.Clone(s.Completed)
	c.Outputs = maps.Clone(s.Outputs)
	c.Signals = maps.Clone(s.Signals)
	c.Timers = make(map[string]*timerState, len(s.Timers))
	for k, v := range s.Timers {
		t := *v
		c.Timers[k] = &t
	}
	c.ensureMaps()
	return &c
}

// load rebuilds a saga's state from its newest valid snapshot plus the later events. A
// snapshot whose checksum or encoding is bad is logged and skipped.
func (e *Engine) load(ctx context.Context, id string) (*sagaState, error) {
	return e.loadAt(ctx, id, -1)
}

// loadAt is load for a saga whose last seq was lastSeq a moment ago (-1: unknown). A
// history shorter than SnapshotEvery has no snapshot (the first is taken when the
// history crosses SnapshotEvery), so the snapshot query is skipped; should the history
// have grown meanwhile, folding it all from the start gives the same state.
func (e *Engine) loadAt(ctx context.Context, id string, lastSeq int64) (*sagaState, error) {
	st := newState()
	var snaps []*store.SagaSnapshot
	if lastSeq < 0 || lastSeq >= int64(e.cfg.SnapshotEvery) {
		var err error
		if snaps, err = e.sagas.Snapshots(ctx, id, e.cfg.SnapshotKeep); err != nil {
			return nil, err
		}
	}
	for _, sn := range snaps {
		sum := sha256.Sum256(sn.State)
		if subtle.ConstantTimeCompare(sum[:], sn.SHA256) != 1 {
			e.log.Error("saga snapshot checksum mismatch; ignoring it", "saga", id, "seq", sn.Seq)
			continue
		}
		var s sagaState
		if err := json.Unmarshal(sn.State, &s); err != nil || s.LastSeq != sn.Seq {
			e.log.Error("saga snapshot undecodable; ignoring it", "saga", id, "seq", sn.Seq, "err", err)
			continue
		}
		s.ensureMaps()
		st = &s
		break
	}
	stored, err := e.sagas.Events(ctx, id, st.LastSeq)
	if err != nil {
		return nil, err
	}
	return e.fold(id, st, stored)
}

// fold applies stored events to st.
func (e *Engine) fold(id string, st *sagaState, stored []*store.SagaEvent) (*sagaState, error) {
	evs, err := decodeEvents(e.codecs, stored)
	if err != nil {
		return nil, err
	}
	for _, ev := range evs {
		if err := st.apply(ev); err != nil {
			return nil, fmt.Errorf("saga %s: %w", id, err)
		}
	}
	return st, nil
}

// preload reads the histories of claimed sagas too short to have a snapshot in one
// round trip, so that advance does not query each one. It returns nil (each saga then
// loads its own) on error or when there is nothing to share.
func (e *Engine) preload(ctx context.Context, recs []*store.SagaRecord) map[string][]*store.SagaEvent {
	var ids []string
	for _, r := range recs {
		if r.LastSeq < int64(e.cfg.SnapshotEvery) {
			ids = append(ids, r.ID)
		}
	}
	if len(ids) < 2 {
		return nil
	}
	h, err := e.sagas.Histories(ctx, ids)
	if err != nil {
		if ctx.Err() == nil {
			e.log.Warn("saga history preload failed; loading one by one", "sagas", len(ids), "err", err)
		}
		return nil
	}
	return h
}

// pending is an append the runner is about to make.
type pending struct {
	events []*store.SagaEvent
	decs   []*Event
	err    error
}

func (e *Engine) add(p *pending, typ, step string, attempt int, d EventData) {
	if p.err != nil {
		return
	}
	ev, err := e.encode(typ, step, attempt, &d)
	if err != nil {
		p.err = err
		return
	}
	p.events = append(p.events, ev)
	p.decs = append(p.decs, &Event{Type: typ, Step: step, Attempt: attempt, Data: d, Time: ev.CreatedAt})
}

// commit appends p's events to the saga at st.LastSeq together with the row projection
// of the resulting state, adds a snapshot when the history crosses a multiple of
// SnapshotEvery, and returns the new state. release hands the saga back. It joins ctx's
// transaction; a stale st is a store.ErrConflict and writes nothing.
func (e *Engine) commit(ctx context.Context, id string, st *sagaState, p *pending, release bool) (*sagaState, error) {
	if p.err != nil {
		return nil, p.err
	}
	now := e.cfg.Clock.Now()
	next := st.clone()
	for i, d := range p.decs {
		d.Seq = st.LastSeq + int64(i) + 1
		if err := next.apply(d); err != nil {
			return nil, err
		}
	}
	every := int64(e.cfg.SnapshotEvery)
	snap := len(p.decs) > 0 && next.LastSeq/every > st.LastSeq/every
	var snapBytes []byte
	if snap {
		e.add(p, EventSnapshotTaken, "", 0, EventData{Seq: next.LastSeq + 1})
		if p.err != nil {
			return nil, p.err
		}
		d := p.decs[len(p.decs)-1]
		d.Seq = next.LastSeq + 1
		if err := next.apply(d); err != nil {
			return nil, err
		}
		b, err := json.Marshal(next)
		if err != nil {
			return nil, fmt.Errorf("saga %s: encode snapshot: %w", id, err)
		}
		snapBytes = b
	}
	upd := store.SagaUpdate{State: string(next.Status), CurrentStep: next.Step, Error: next.Error,
		ClaimedBy: e.cfg.RunnerID, Release: release}
	switch {
	case next.Status.Terminal() || next.Status == StateWaiting:
	case next.NotBefore.After(now):
		upd.RunnableAt = next.NotBefore
	default:
		upd.RunnableAt = now
	}
	if !release {
		upd.ClaimUntil = now.Add(e.cfg.Lease)
	}
	if !snap {
		if err := e.sagas.Append(ctx, id, st.LastSeq, upd, p.events...); err != nil {
			return nil, err
		}
		return next, nil
	}
	err := e.st.InTx(ctx, func(ctx context.Context) error {
		if err := e.sagas.Append(ctx, id, st.LastSeq, upd, p.events...); err != nil {
			return err
		}
		sum := sha256.Sum256(snapBytes)
		return e.sagas.PutSnapshot(ctx, &store.SagaSnapshot{SagaID: id, Seq: next.LastSeq, State: snapBytes,
			SHA256: sum[:], CreatedAt: now}, e.cfg.SnapshotKeep)
	})
	if err != nil {
		return nil, err
	}
	return next, nil
}

// RunOnce claims up to BatchSize runnable sagas and advances each as far as it can
// (until it completes, parks, backs off or loses its claim), Concurrency at a time. It
// returns how many sagas it claimed.
func (e *Engine) RunOnce(ctx context.Context) (int, error) {
	recs, err := e.sagas.Claim(ctx, e.cfg.RunnerID, e.cfg.Clock.Now(), e.cfg.Lease, e.cfg.BatchSize)
	if err != nil {
		return 0, err
	}
	e.runClaimed(ctx, recs)
	return len(recs), nil
}

// advance runs a claimed saga until it parks, finishes, backs off or the claim is lost.
func (e *Engine) advance(ctx context.Context, rec *store.SagaRecord) error {
	return e.advanceFrom(ctx, rec, nil)
}

// RunSaga claims saga id if it is runnable and free, and advances it. It reports whether
// it got the claim.
func (e *Engine) RunSaga(ctx context.Context, id string) (bool, error) {
	rec, err := e.sagas.ClaimByID(ctx, id, e.cfg.RunnerID, e.cfg.Clock.Now(), e.cfg.Lease)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, e.advance(ctx, rec)
}

func (e *Engine) runClaimed(ctx context.Context, recs []*store.SagaRecord) {
	hist := e.preload(ctx, recs)
	sem := make(chan struct{}, e.cfg.Concurrency)
	var wg sync.WaitGroup
	for _, rec := range recs {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := e.advanceFrom(ctx, rec, hist[rec.ID]); err != nil && ctx.Err() == nil {
				e.log.Error("saga run failed", "saga", rec.ID, "err", err)
			}
		})
	}
	wg.Wait()
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
	def, err := e.reg.Lookup(rec.Type, rec.Version)
	if err != nil {
		// Perhaps a replica that knows this version will take it: look again later.
		e.log.Error("saga definition not registered here; retrying in a minute", "saga", rec.ID,
			"type", rec.Type, "version", rec.Version)
		upd := store.SagaUpdate{State: rec.State, CurrentStep: rec.CurrentStep, Error: rec.Error,
			RunnableAt: e.cfg.Clock.Now().Add(time.Minute), ClaimedBy: e.cfg.RunnerID, Release: true}
		if aerr := e.sagas.Append(ctx, rec.ID, rec.LastSeq, upd); aerr != nil {
			e.release(ctx, rec.ID)
		}
		return err
	}
	var st *sagaState
	if len(hist) > 0 {
		st, err = e.fold(rec.ID, newState(), hist)
	} else {
		st, err = e.loadAt(ctx, rec.ID, rec.LastSeq)
	}
	if err != nil {
		e.release(ctx, rec.ID)
		return err
	}
	var act *activityResult // an activity's outcome not yet recorded (kept across conflicts)
	for range e.cfg.MaxTransitions {
		if ctx.Err() != nil {
			e.release(ctx, rec.ID)
			return ctx.Err()
		}
		next, done, err := e.transition(ctx, rec, def, st, &act)
		if errors.Is(err, store.ErrConflict) {
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
		fail *groupFailure
		sc0  *StepContext
	)
	err := e.st.InTx(ctx, func(ctx context.Context) error {
		fail = nil
		p := &pending{}
		cur := st.clone() // st with p's events folded in
		folded := 0
		for n := 0; ; n++ {
			idx := cur.Step
			step := &def.Steps[idx]
			if n > 0 && step.Activity != nil {
				break // it runs after this commit, outside the transaction
			}
			sc := e.stepContext(rec, cur, step, idx, false)
			var rollback func(context.Context) error
			if n == 0 {
				sc0 = sc
			} else {
				rb, err := e.sagas.Savepoint(ctx)
				if err != nil {
					return err
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
				out, serr = call(ctx, step, step.Do, sc)
			}
			if serr != nil {
				if n == 0 {
					return &stepError{serr}
				}
				if ctx.Err() != nil {
					return ctx.Err() // stopping: record nothing; the group runs again
				}
				if err := rollback(ctx); err != nil {
					return err
				}
				fail = &groupFailure{step: step, sc: sc, err: serr}
				break
			}
			if err := e.cancelStepTimers(ctx, p, cur, step.Name); err != nil {
				return err
			}
			e.add(p, EventStepCompleted, step.Name, sc.attempt, EventData{Index: idx, Output: out})
			last := idx+1 >= len(def.Steps)
			if last {
				e.add(p, EventCompleted, "", 0, EventData{})
			} else {
				e.add(p, EventStepScheduled, def.Steps[idx+1].Name, 1, EventData{Index: idx + 1})
			}
			if p.err != nil {
				return p.err
			}
			for ; folded < len(p.decs); folded++ {
				d := p.decs[folded]
				d.Seq = st.LastSeq + int64(folded) + 1
				if err := cur.apply(d); err != nil {
					return err
				}
			}
			if ctx.Err() != nil {
				return ctx.Err() // stopping: record nothing; the group runs again
			}
			if last || n+1 >= e.cfg.MaxStepsPerTx || e.cfg.Clock.Now().Sub(began) >= e.cfg.Lease/2 {
				break
			}
		}
		release := fail == nil && cur.Status.Terminal()
		n, err := e.commit(ctx, rec.ID, st, p, release)
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
			outJSON, err = call(ctx, step, fn, sc)
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
			if err := e.sagas.Append(ctx, t.SagaID, rec.LastSeq, wakeUpdate(rec, e.cfg.Clock.Now()), ev); err != nil {
				return err
			}
			fired = true
			e.announce(ctx, t.SagaID)
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

// claimedSaga is a saga claimed by Run, with its preloaded history (if any) and the
// task deliveries that asked for it.
type claimedSaga struct {
	rec   *store.SagaRecord
	hist  []*store.SagaEvent
	tasks []Task
}

// Run fires timers and runs sagas until ctx ends, and returns nil then. Concurrency
// workers advance claimed sagas; one loop claims work for them, keeping at most
// Concurrency+BatchSize sagas claimed (running or queued): on every poll tick (timers,
// then up to BatchSize runnable sagas; again as soon as half a batch of slots is free
// while polls come back full), and on wake-ups and tasks, which are gathered while more
// are ready and claimed together with one ClaimIDs. A task is acked once its saga was run (or was not
// claimable: held elsewhere, parked or finished) and naked when the run failed. On
// return, sagas claimed and not started are released.
func (e *Engine) Run(ctx context.Context) error {
	if e.cfg.ReleaseOnStart {
		n, err := e.st.Sagas().ReleaseRunner(ctx, e.cfg.RunnerID)
		if err != nil {
			return fmt.Errorf("saga: release the claims of an earlier run of %s: %w", e.cfg.RunnerID, err)
		}
		if n > 0 {
			e.log.Info("released claims held by an earlier run of this runner", "claims", n)
		}
	}
	wake := e.cfg.Waker.Wakeups(ctx)
	tasks, err := e.cfg.Queue.Tasks(ctx)
	if err != nil {
		return fmt.Errorf("saga: task queue: %w", err)
	}
	tick := time.NewTicker(e.cfg.PollInterval)
	defer tick.Stop()

	// Up to Concurrency sagas running and a batch queued behind them; a backlogged runner
	// claims again once half a batch of slots is free, so workers rarely wait for the
	// claiming loop and claims stay large.
	capacity := e.cfg.Concurrency + e.cfg.BatchSize
	refill := max(1, e.cfg.BatchSize/2)
	work := make(chan claimedSaga)
	finished := make(chan struct{}, capacity)
	var wg sync.WaitGroup
	for range e.cfg.Concurrency {
		wg.Go(func() {
			for c := range work {
				err := e.advanceFrom(ctx, c.rec, c.hist)
				failed := err != nil && ctx.Err() == nil
				if failed {
					e.log.Error("saga run failed", "saga", c.rec.ID, "err", err)
				}
				for _, t := range c.tasks {
					if failed {
						_ = t.Nak(ctx, e.cfg.PollInterval)
					} else {
						_ = t.Ack(ctx)
					}
				}
				finished <- struct{}{}
			}
		})
	}
	var (
		queue    []claimedSaga
		inflight int  // claimed and not finished: queued or running
		more     bool // the last poll came back full: more sagas are probably runnable
	)
	defer func() {
		close(work)
		for _, c := range queue { // claimed, never started: hand back at once
			e.release(ctx, c.rec.ID)
			for _, t := range c.tasks {
				_ = t.Nak(context.WithoutCancel(ctx), 0)
			}
		}
		wg.Wait()
	}()
	poll := func(timers bool) {
		if timers {
			if _, err := e.FireDueTimers(ctx); err != nil && ctx.Err() == nil {
				e.log.Error("saga timer poll failed", "err", err)
			}
		}
		free := capacity - inflight
		if free <= 0 {
			more = true
			return
		}
		limit := min(e.cfg.BatchSize, free)
		recs, err := e.sagas.Claim(ctx, e.cfg.RunnerID, e.cfg.Clock.Now(), e.cfg.Lease, limit)
		if err != nil {
			if ctx.Err() == nil {
				e.log.Error("saga poll failed", "err", err)
			}
			more = false
			return
		}
		more = len(recs) == limit
		hist := e.preload(ctx, recs)
		for _, r := range recs {
			queue = append(queue, claimedSaga{rec: r, hist: hist[r.ID]})
		}
		inflight += len(recs)
	}
	// gather collects the id of a wake-up or task and those that are ready right after
	// it (as many as there are free slots), and claims them together.
	gather := func(id string, t Task) {
		room := min(e.cfg.BatchSize, capacity-inflight)
		ids := []string{id}
		byID := map[string][]Task{id: nil}
		add := func(id string, t Task) {
			if _, seen := byID[id]; !seen {
				ids = append(ids, id)
			}
			if t != nil {
				byID[id] = append(byID[id], t)
			}
		}
		if t != nil {
			byID[id] = []Task{t}
		}
	drain:
		for len(ids) < room {
			select {
			case id, ok := <-wake:
				if !ok {
					wake = nil
					continue
				}
				add(id, nil)
			case t, ok := <-tasks:
				if !ok {
					tasks = nil
					continue
				}
				add(t.SagaID(), t)
			default:
				break drain
			}
		}
		recs, err := e.sagas.ClaimIDs(ctx, ids, e.cfg.RunnerID, e.cfg.Clock.Now(), e.cfg.Lease)
		if err != nil {
			if ctx.Err() == nil {
				e.log.Error("saga claim failed", "sagas", len(ids), "err", err)
			}
			for _, ts := range byID {
				for _, t := range ts {
					_ = t.Nak(context.WithoutCancel(ctx), e.cfg.PollInterval)
				}
			}
			return
		}
		hist := e.preload(ctx, recs)
		for _, r := range recs {
			queue = append(queue, claimedSaga{rec: r, hist: hist[r.ID], tasks: byID[r.ID]})
			delete(byID, r.ID)
		}
		inflight += len(recs)
		for _, ts := range byID { // held elsewhere or not runnable: the holder or the poll has it
			for _, t := range ts {
				_ = t.Ack(ctx)
			}
		}
	}

	poll(true)
	for {
		var (
			out  chan<- claimedSaga
			head claimedSaga
		)
		if len(queue) > 0 {
			out, head = work, queue[0]
		}
		wakeC, taskC := wake, tasks
		if inflight >= capacity {
			wakeC, taskC = nil, nil // full: leave wake-ups and tasks where they are
		}
		select {
		case <-ctx.Done():
			return nil
		case out <- head:
			queue[0] = claimedSaga{}
			queue = queue[1:]
		case <-finished:
			inflight--
			if more && capacity-inflight >= refill {
				poll(false)
			}
		case <-tick.C:
			poll(true)
		case id, ok := <-wakeC:
			if !ok {
				wake = nil
				continue
			}
			gather(id, nil)
		case t, ok := <-taskC:
			if !ok {
				tasks = nil
				continue
			}
			gather(t.SagaID(), t)
		}
	}
}
