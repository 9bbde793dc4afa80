package saga

import (
	"context"
	"sync"
	"time"

	"github.com/hodei-jobs/hodei/store"
)

// Local hand-off. A process whose Run loop is active and that records a saga's start, a
// signal, a cancel or a fired timer takes the saga's claim in that same write
// (SagaRecord.ClaimedBy on Create, SagaUpdate.Take on Append) when nobody holds it, and
// once the transaction commits hands the claimed saga straight to its own loop. That
// saves, per wake-up, the NATS wake-up and task, a claim statement (its own commit) and
// the hop through another goroutine's poll: on the job path, every step that follows a
// signal starts a few milliseconds sooner and costs one commit less.
//
// The claim is an ordinary lease: if the process dies before it runs the saga, the
// lease expires and any runner's poll takes it (ReleaseOnStart gives it back at once
// when the same runner restarts). When the loop is full (Concurrency+BatchSize sagas
// claimed) or stopping, the saga is released and announced as before.

// A saga this engine parked (WAITING for a signal or timer) keeps its folded state in
// memory (parkedStates, at most maxParked of them), so that when this process records
// the signal or timer that wakes it and takes the claim, the state is that one plus the
// event just written: the hand-off needs no history query. Any other write in between
// (another process's signal, an incident) shows as a different last seq, and the
// history is read as usual.

// staleTake is how long a claim taken with a write may wait for its hand-off. A write
// whose commit failed ambiguously (it committed, but the caller saw an error) never
// runs its after-commit hand-off, so its claim would hold the saga for a whole lease
// (a job's timeout fired that late lets the job succeed first); the loop's poll
// releases such claims after staleTake (releaseStaleTakes).
const staleTake = 5 * time.Second

// takenClaims are the sagas whose claim this engine took with a write not yet handed
// over, by when it was taken.
type takenClaims struct {
	mu sync.Mutex
	m  map[string]time.Time
}

func (t *takenClaims) add(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = map[string]time.Time{}
	}
	t.m[id] = time.Now()
}

func (t *takenClaims) done(id string) {
	t.mu.Lock()
	delete(t.m, id)
	t.mu.Unlock()
}

// stale removes and returns the ids taken more than age ago.
func (t *takenClaims) stale(age time.Duration) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var ids []string
	for id, at := range t.m {
		if time.Since(at) > age {
			ids = append(ids, id)
			delete(t.m, id)
		}
	}
	return ids
}

// releaseStaleTakes hands back the claims taken with a write whose hand-off never came
// (its transaction rolled back, or its commit failed ambiguously) and wakes runners: a
// release of a claim that was never committed changes nothing.
func (e *Engine) releaseStaleTakes(ctx context.Context) {
	for _, id := range e.taken.stale(staleTake) {
		e.release(ctx, id)
		e.announce(context.WithoutCancel(ctx), id)
	}
}

// maxParked bounds the parked states kept per engine.
const maxParked = 4096

// handed is a saga claimed by this process's write, with its state when known.
type handed struct {
	rec *store.SagaRecord
	st  *sagaState // nil: load the history
}

// parkedStates holds the states of sagas this engine parked, each taken at most once.
type parkedStates struct {
	mu sync.Mutex
	m  map[string]*sagaState
}

func (p *parkedStates) put(id string, st *sagaState) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = map[string]*sagaState{}
	}
	if len(p.m) >= maxParked {
		for k := range p.m { // drop an arbitrary entry: a miss only costs a query
			delete(p.m, k)
			break
		}
	}
	p.m[id] = st
}

// take returns and forgets id's state if it is the one at lastSeq.
func (p *parkedStates) take(id string, lastSeq int64) *sagaState {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.m[id]
	delete(p.m, id)
	if st == nil || st.LastSeq != lastSeq {
		return nil
	}
	return st
}

// keepParked remembers next, the state a commit in ctx handed back, once that commits,
// if it is waiting (and hand-offs are on).
func (e *Engine) keepParked(ctx context.Context, id string, next *sagaState, release bool) {
	if !release || next.Status != StateWaiting || e.cfg.NoHandoff {
		return
	}
	kept := next.clone()
	e.afterCommit(ctx, func() { e.parked.put(id, kept) })
}

// handoff is the channel of claimed sagas from the recording code to Run's loop; nil
// while no loop accepts them.
type handoff struct {
	mu sync.RWMutex
	ch chan handed
}

// open makes ch the hand-off channel; false if a loop already has one.
func (h *handoff) open(ch chan handed) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ch != nil {
		return false
	}
	h.ch = ch
	return true
}

// close stops hand-offs; no send happens after it returns.
func (h *handoff) close() {
	h.mu.Lock()
	h.ch = nil
	h.mu.Unlock()
}

func (h *handoff) active() bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.ch != nil
}

// send hands rec over without blocking; false when no loop takes it now.
func (h *handoff) send(rec handed) bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if h.ch == nil {
		return false
	}
	select {
	case h.ch <- rec:
		return true
	default:
		return false
	}
}

// takeFor sets upd to take rec's claim for this runner until now+Lease, when this
// engine's loop accepts hand-offs and nobody holds rec (unclaimed, or the claim expired
// at now). It reports whether it did.
func (e *Engine) takeFor(rec *store.SagaRecord, upd *store.SagaUpdate, now time.Time) bool {
	if e.cfg.NoHandoff || !e.hand.active() || (rec.ClaimedBy != "" && rec.ClaimExpiresAt.After(now)) {
		return false
	}
	upd.Take, upd.TakeFrom, upd.ClaimUntil = e.cfg.RunnerID, rec.ClaimedBy, now.Add(e.cfg.Lease)
	e.taken.add(rec.ID)
	return true
}

// woken follows a successful Append of ev (one event) with upd to rec: after the
// commit, the saga goes to this engine's loop if upd took its claim (with its state, if
// it was parked here), else runners are woken.
func (e *Engine) woken(ctx context.Context, rec *store.SagaRecord, upd store.SagaUpdate, ev *store.SagaEvent) {
	if upd.Take == "" {
		e.announce(ctx, rec.ID)
		return
	}
	next := *rec
	next.LastSeq++
	next.State, next.CurrentStep, next.RunnableAt, next.Error = upd.State, upd.CurrentStep, upd.RunnableAt, upd.Error
	next.ClaimedBy, next.ClaimExpiresAt = upd.Take, upd.ClaimUntil
	e.afterCommit(ctx, func() {
		h := handed{rec: &next}
		if st := e.parked.take(rec.ID, rec.LastSeq); st != nil {
			written := *ev
			written.SagaID, written.Seq = rec.ID, next.LastSeq
			if folded, err := e.fold(rec.ID, st, []*store.SagaEvent{&written}); err == nil {
				h.st = folded
			}
		}
		e.handOff(context.Background(), h) // ctx carries the transaction that just ended
	})
}

// handOff gives the claimed saga to the loop, or, when no loop takes it now, releases
// it and wakes runners (this one's poll included).
//
// It runs in the committing goroutine's after-commit callback, which on SQLite may still
// hold the only writer connection: the release (a write) goes to a goroutine of its own.
func (e *Engine) handOff(ctx context.Context, h handed) {
	e.taken.done(h.rec.ID)
	if e.hand.send(h) {
		return
	}
	go func() {
		e.release(ctx, h.rec.ID)
		e.announce(ctx, h.rec.ID)
	}()
}

// drainHandoffs releases the sagas left in ch by a loop that stopped (after close).
func (e *Engine) drainHandoffs(ctx context.Context, ch chan handed) {
	for {
		select {
		case h := <-ch:
			e.release(ctx, h.rec.ID)
			e.announce(ctx, h.rec.ID)
		default:
			return
		}
	}
}
