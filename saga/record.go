package saga

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"

	"github.com/hodei-jobs/hodei/store"
)

// pending is an append the runner is about to make.
type pending struct {
	events []*store.SagaEvent
	decs   []*Event
	err    error
}

// add encodes an event and adds it to p; the first encoding error sticks in p.err and
// later adds do nothing.
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
	stampTrace(ctx, p)
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
		e.keepParked(ctx, id, next, release)
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
	e.keepParked(ctx, id, next, release)
	return next, nil
}
