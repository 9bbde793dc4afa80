package saga

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"maps"
	"slices"

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
		return nil, &unreadableError{err}
	}
	for _, ev := range evs {
		if err := st.apply(ev); err != nil {
			return nil, &unreadableError{fmt.Errorf("saga %s: %w", id, err)}
		}
	}
	return st, nil
}

// unreadableError marks a history this engine cannot fold (an unknown codec or event
// type, say from a newer release): reading it again soon gives the same error.
type unreadableError struct{ err error }

func (u *unreadableError) Error() string { return u.err.Error() }
func (u *unreadableError) Unwrap() error { return u.err }

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
