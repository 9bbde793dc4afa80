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

// handoff is the channel of claimed sagas from the recording code to Run's loop; nil
// while no loop accepts them.
type handoff struct {
	mu sync.RWMutex
	ch chan *store.SagaRecord
}

// open makes ch the hand-off channel; false if a loop already has one.
func (h *handoff) open(ch chan *store.SagaRecord) bool {
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
func (h *handoff) send(rec *store.SagaRecord) bool {
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
	return true
}

// woken follows a successful Append of n events with upd to rec: after the commit, the
// saga goes to this engine's loop if upd took its claim, else runners are woken.
func (e *Engine) woken(ctx context.Context, rec *store.SagaRecord, upd store.SagaUpdate, n int) {
	if upd.Take == "" {
		e.announce(ctx, rec.ID)
		return
	}
	next := *rec
	next.LastSeq += int64(n)
	next.State, next.CurrentStep, next.RunnableAt, next.Error = upd.State, upd.CurrentStep, upd.RunnableAt, upd.Error
	next.ClaimedBy, next.ClaimExpiresAt = upd.Take, upd.ClaimUntil
	e.afterCommit(ctx, func() { e.handOff(context.WithoutCancel(ctx), &next) })
}

// handOff gives the claimed rec to the loop, or, when no loop takes it now, releases it
// and wakes runners (this one's poll included).
func (e *Engine) handOff(ctx context.Context, rec *store.SagaRecord) {
	if e.hand.send(rec) {
		return
	}
	e.release(ctx, rec.ID)
	e.announce(ctx, rec.ID)
}

// drainHandoffs releases the sagas left in ch by a loop that stopped (after close).
func (e *Engine) drainHandoffs(ctx context.Context, ch chan *store.SagaRecord) {
	for {
		select {
		case rec := <-ch:
			e.release(ctx, rec.ID)
			e.announce(ctx, rec.ID)
		default:
			return
		}
	}
}
