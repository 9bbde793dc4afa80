package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hodei-jobs/hodei/store"
)

// sagaStore implements store.SagaStore on the tables of migration 0002.
type sagaStore struct{ s *Store }

var _ store.SagaStore = sagaStore{}

// Sagas returns the saga port.
func (s *Store) Sagas() store.SagaStore { return sagaStore{s} }

const sagaColumns = `id, type, version, state, input, current_step, last_seq, runnable_at,
	claimed_by, claim_expires_at, error, created_at, updated_at`

func scanSaga(row scanner) (*store.SagaRecord, error) {
	var (
		r                    store.SagaRecord
		runnable, claimUntil sql.NullInt64
		claimedBy            sql.NullString
		created, updated     int64
	)
	if err := row.Scan(&r.ID, &r.Type, &r.Version, &r.State, &r.Input, &r.CurrentStep, &r.LastSeq,
		&runnable, &claimedBy, &claimUntil, &r.Error, &created, &updated); err != nil {
		return nil, err
	}
	r.RunnableAt, r.ClaimExpiresAt = fromTS(runnable), fromTS(claimUntil)
	r.ClaimedBy = claimedBy.String
	r.CreatedAt = fromTS(sql.NullInt64{Int64: created, Valid: true})
	r.UpdatedAt = fromTS(sql.NullInt64{Int64: updated, Valid: true})
	return &r, nil
}

func scanSagas(rows *sql.Rows) ([]*store.SagaRecord, error) {
	defer rows.Close()
	var out []*store.SagaRecord
	for rows.Next() {
		r, err := scanSaga(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// prepareEvents validates events and assigns their saga id, seqs firstSeq… and
// creation times.
func prepareEvents(id string, firstSeq int64, events []*store.SagaEvent) error {
	t := now()
	for i, e := range events {
		if e == nil {
			return fmt.Errorf("event %d is nil", i)
		}
		if e.Type == "" {
			return fmt.Errorf("event %d: Type is empty", i)
		}
		if e.Codec == "" {
			return fmt.Errorf("event %d (%s): Codec is empty", i, e.Type)
		}
		e.SagaID = id
		e.Seq = firstSeq + int64(i)
		if e.CreatedAt.IsZero() {
			e.CreatedAt = t
		}
		e.CreatedAt = normTime(e.CreatedAt)
	}
	return nil
}

func insertEvents(ctx context.Context, q querier, events []*store.SagaEvent) error {
	for i, e := range events {
		tc := "{}"
		if len(e.TraceContext) > 0 {
			b, err := json.Marshal(e.TraceContext)
			if err != nil {
				return fmt.Errorf("event %d: encode trace context: %w", i, err)
			}
			tc = string(b)
		}
		payload := e.Payload
		if payload == nil {
			payload = []byte{}
		}
		if _, err := q.ExecContext(ctx, `INSERT INTO saga_events (saga_id, seq, type, step, attempt, codec,
			payload, trace_context, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			e.SagaID, e.Seq, e.Type, e.Step, e.Attempt, e.Codec, payload, tc, nanos(e.CreatedAt)); err != nil {
			return err
		}
	}
	return nil
}

func (ss sagaStore) Create(ctx context.Context, rec *store.SagaRecord, events ...*store.SagaEvent) (*store.SagaRecord, bool, error) {
	if rec == nil || rec.ID == "" || rec.Type == "" || rec.State == "" {
		return nil, false, errors.New("sqlite: create saga: ID, Type and State are required")
	}
	if len(events) == 0 {
		return nil, false, fmt.Errorf("sqlite: create saga %s: at least one event is required", rec.ID)
	}
	if err := prepareEvents(rec.ID, 1, events); err != nil {
		return nil, false, fmt.Errorf("sqlite: create saga %s: %w", rec.ID, err)
	}
	if rec.CreatedAt.IsZero() {
		rec.CreatedAt = now()
	}
	rec.CreatedAt = normTime(rec.CreatedAt)
	rec.UpdatedAt = rec.CreatedAt
	rec.LastSeq = int64(len(events))
	rec.RunnableAt = normTime(rec.RunnableAt)
	input := rec.Input
	if input == nil {
		input = []byte{}
	}
	var saved *store.SagaRecord
	err := ss.s.writeAtomic(ctx, func(ctx context.Context, q querier) error {
		res, err := q.ExecContext(ctx, `INSERT INTO sagas (id, type, version, state, input, current_step,
			last_seq, runnable_at, error, created_at, updated_at, claimed_by, claim_expires_at)
			VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, NULLIF(?11, ''), ?12) ON CONFLICT (id) DO NOTHING`,
			rec.ID, rec.Type, rec.Version, rec.State, input, rec.CurrentStep, rec.LastSeq,
			ts(rec.RunnableAt), rec.Error, nanos(rec.CreatedAt), rec.ClaimedBy, ts(normTime(rec.ClaimExpiresAt)))
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if n == 0 {
			saved, err = ss.Get(ctx, rec.ID)
			return err
		}
		return insertEvents(ctx, q, events)
	})
	if err != nil {
		return nil, false, fmt.Errorf("sqlite: create saga %s: %w", rec.ID, err)
	}
	if saved != nil {
		return saved, false, nil
	}
	cp := *rec
	return &cp, true, nil
}

func (ss sagaStore) Get(ctx context.Context, id string) (*store.SagaRecord, error) {
	r, err := scanSaga(ss.s.q(ctx).QueryRowContext(ctx, `SELECT `+sagaColumns+` FROM sagas WHERE id = ?`, id))
	if noRows(err) {
		return nil, fmt.Errorf("sqlite: saga %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: get saga %s: %w", id, err)
	}
	return r, nil
}

// updateSagaSQL writes the projection and the claim change: ?1 id, ?2 expected seq, ?3
// new last seq, ?4.. the update. Column references on the right see the old row.
const updateSagaSQL = `UPDATE sagas SET last_seq = ?3, state = ?4, current_step = ?5, runnable_at = ?6,
		error = ?7, updated_at = ?11,
		claimed_by = CASE WHEN ?12 <> '' THEN ?12
			WHEN ?8 <> '' AND claimed_by = ?8 AND ?9 THEN NULL ELSE claimed_by END,
		claim_expires_at = CASE
			WHEN ?12 <> '' THEN ?10
			WHEN ?8 <> '' AND claimed_by = ?8 AND ?9 THEN NULL
			WHEN ?8 <> '' AND claimed_by = ?8 AND ?10 IS NOT NULL THEN ?10
			ELSE claim_expires_at END
		WHERE id = ?1 AND last_seq = ?2 AND (?12 = '' OR COALESCE(claimed_by, '') = ?13)`

// Append checks the seq and writes the row and the events on the writer connection, in
// a savepoint (or a transaction of its own): all or nothing.
func (ss sagaStore) Append(ctx context.Context, id string, expectedSeq int64, upd store.SagaUpdate, events ...*store.SagaEvent) error {
	if err := prepareEvents(id, expectedSeq+1, events); err != nil {
		return fmt.Errorf("sqlite: append to saga %s: %w", id, err)
	}
	var conflict error
	err := ss.s.writeAtomic(ctx, func(ctx context.Context, q querier) error {
		res, err := q.ExecContext(ctx, updateSagaSQL, id, expectedSeq, expectedSeq+int64(len(events)),
			upd.State, upd.CurrentStep, ts(normTime(upd.RunnableAt)), upd.Error, upd.ClaimedBy, upd.Release,
			ts(normTime(upd.ClaimUntil)), nanos(now()), upd.Take, upd.TakeFrom)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if n == 0 {
			r, err := ss.Get(ctx, id)
			if err != nil {
				return err
			}
			conflict = &store.SagaConflictError{SagaID: id, ExpectedSeq: expectedSeq, ActualSeq: r.LastSeq}
			return conflict
		}
		err = insertEvents(ctx, q, events)
		if isUniqueViolation(err) {
			conflict = &store.SagaConflictError{SagaID: id, ExpectedSeq: expectedSeq, Reason: "duplicate seq"}
			return conflict
		}
		return err
	})
	switch {
	case err == nil:
		return nil
	case conflict != nil:
		return conflict
	case errors.Is(err, store.ErrNotFound):
		return err
	}
	return fmt.Errorf("sqlite: append to saga %s: %w", id, err)
}

func (ss sagaStore) Events(ctx context.Context, id string, afterSeq int64) ([]*store.SagaEvent, error) {
	rows, err := ss.s.q(ctx).QueryContext(ctx, `SELECT `+eventColumns+`
		FROM saga_events WHERE saga_id = ? AND seq > ? ORDER BY seq`, id, afterSeq)
	if err != nil {
		return nil, fmt.Errorf("sqlite: events of saga %s: %w", id, err)
	}
	var out []*store.SagaEvent
	if err := scanEvents(rows, func(e *store.SagaEvent) { out = append(out, e) }); err != nil {
		return nil, fmt.Errorf("sqlite: events of saga %s: %w", id, err)
	}
	return out, nil
}

// Histories returns the whole history of each of ids in one query; missing sagas are
// absent from the map.
func (ss sagaStore) Histories(ctx context.Context, ids []string) (map[string][]*store.SagaEvent, error) {
	out := make(map[string][]*store.SagaEvent, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	list, err := json.Marshal(ids)
	if err != nil {
		return nil, fmt.Errorf("sqlite: histories of %d sagas: %w", len(ids), err)
	}
	rows, err := ss.s.q(ctx).QueryContext(ctx, `SELECT `+eventColumns+` FROM saga_events
		WHERE saga_id IN (SELECT value FROM json_each(?)) ORDER BY saga_id, seq`, string(list))
	if err != nil {
		return nil, fmt.Errorf("sqlite: histories of %d sagas: %w", len(ids), err)
	}
	if err := scanEvents(rows, func(e *store.SagaEvent) { out[e.SagaID] = append(out[e.SagaID], e) }); err != nil {
		return nil, fmt.Errorf("sqlite: histories of %d sagas: %w", len(ids), err)
	}
	return out, nil
}

const eventColumns = `saga_id, seq, type, step, attempt, codec, payload, trace_context, created_at`

// scanEvents reads rows of eventColumns and hands each event to add.
func scanEvents(rows *sql.Rows, add func(*store.SagaEvent)) error {
	defer rows.Close()
	for rows.Next() {
		e := &store.SagaEvent{}
		var (
			tc      string
			created int64
		)
		if err := rows.Scan(&e.SagaID, &e.Seq, &e.Type, &e.Step, &e.Attempt, &e.Codec, &e.Payload, &tc, &created); err != nil {
			return err
		}
		e.CreatedAt = fromTS(sql.NullInt64{Int64: created, Valid: true})
		if len(tc) > 2 {
			if err := json.Unmarshal([]byte(tc), &e.TraceContext); err != nil {
				return fmt.Errorf("saga %s seq %d trace context: %w", e.SagaID, e.Seq, err)
			}
		}
		add(e)
	}
	return rows.Err()
}

// Claim leases due sagas with one UPDATE … RETURNING on the writer connection (the
// single writer stands in for FOR UPDATE SKIP LOCKED).
func (ss sagaStore) Claim(ctx context.Context, runnerID string, at time.Time, lease time.Duration, limit int) ([]*store.SagaRecord, error) {
	if runnerID == "" || lease <= 0 || limit <= 0 {
		return nil, fmt.Errorf("sqlite: claim sagas: runnerID, lease > 0 and limit > 0 are required (got %q, %s, %d)", runnerID, lease, limit)
	}
	at = normTime(at)
	var out []*store.SagaRecord
	err := ss.s.write(ctx, func(ctx context.Context, q querier) error {
		rows, err := q.QueryContext(ctx, `UPDATE sagas SET claimed_by = ?1, claim_expires_at = ?3
			WHERE id IN (SELECT id FROM sagas INDEXED BY sagas_runnable_idx
				WHERE runnable_at <= ?2 AND (claimed_by IS NULL OR claim_expires_at < ?2)
				ORDER BY runnable_at LIMIT ?4)
			RETURNING `+sagaColumns, runnerID, nanos(at), nanos(at.Add(lease)), limit)
		if err != nil {
			return err
		}
		out, err = scanSagas(rows)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: claim sagas: %w", err)
	}
	return out, nil
}

func (ss sagaStore) ClaimByID(ctx context.Context, id, runnerID string, at time.Time, lease time.Duration) (*store.SagaRecord, error) {
	if runnerID == "" || lease <= 0 {
		return nil, fmt.Errorf("sqlite: claim saga %s: runnerID and lease > 0 are required", id)
	}
	at = normTime(at)
	var r *store.SagaRecord
	err := ss.s.write(ctx, func(ctx context.Context, q querier) error {
		var err error
		r, err = scanSaga(q.QueryRowContext(ctx, `UPDATE sagas SET claimed_by = ?2, claim_expires_at = ?4
			WHERE id = ?1 AND runnable_at <= ?3 AND (claimed_by IS NULL OR claim_expires_at < ?3)
			RETURNING `+sagaColumns, id, runnerID, nanos(at), nanos(at.Add(lease))))
		return err
	})
	if noRows(err) {
		return nil, fmt.Errorf("sqlite: claim saga %s: not runnable or held: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: claim saga %s: %w", id, err)
	}
	return r, nil
}

// ClaimIDs leases those of ids that are runnable at now and free (or whose claim
// expired) with one UPDATE … RETURNING on the writer connection; the others are left out.
func (ss sagaStore) ClaimIDs(ctx context.Context, ids []string, runnerID string, at time.Time, lease time.Duration) ([]*store.SagaRecord, error) {
	if runnerID == "" || lease <= 0 {
		return nil, fmt.Errorf("sqlite: claim sagas by id: runnerID and lease > 0 are required (got %q, %s)", runnerID, lease)
	}
	if len(ids) == 0 {
		return nil, nil
	}
	list, err := json.Marshal(ids)
	if err != nil {
		return nil, fmt.Errorf("sqlite: claim %d sagas by id: %w", len(ids), err)
	}
	at = normTime(at)
	var out []*store.SagaRecord
	err = ss.s.write(ctx, func(ctx context.Context, q querier) error {
		rows, err := q.QueryContext(ctx, `UPDATE sagas SET claimed_by = ?2, claim_expires_at = ?4
			WHERE id IN (SELECT value FROM json_each(?1)) AND runnable_at <= ?3
				AND (claimed_by IS NULL OR claim_expires_at < ?3)
			RETURNING `+sagaColumns, string(list), runnerID, nanos(at), nanos(at.Add(lease)))
		if err != nil {
			return err
		}
		out, err = scanSagas(rows)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: claim %d sagas by id: %w", len(ids), err)
	}
	return out, nil
}

// sagaSavepoint is the savepoint name of Savepoint. Reusing one name is fine: ROLLBACK
// TO goes back to the newest savepoint of that name.
const sagaSavepoint = "hodei_saga_step"

// Savepoint marks the current point of ctx's transaction. If the transaction has not
// written yet it holds no writer connection and there is nothing to mark: rolling back
// then ends the SQLite write transaction begun since (if any) and hands the writer
// back, which undoes exactly the writes made after the mark. Otherwise it is an SQL
// SAVEPOINT on the writer connection.
func (ss sagaStore) Savepoint(ctx context.Context) (func(ctx context.Context) error, error) {
	st := ss.s.txFrom(ctx)
	if st == nil {
		return nil, errors.New("sqlite: saga savepoint: ctx carries no transaction (use Store.InTx)")
	}
	st.mu.Lock()
	conn := st.conn
	mark := len(st.afterCommit)
	st.mu.Unlock()
	dropCallbacks := func() {
		if len(st.afterCommit) > mark {
			clear(st.afterCommit[mark:])
			st.afterCommit = st.afterCommit[:mark]
		}
	}
	if conn == nil {
		return func(ctx context.Context) error {
			st.mu.Lock()
			c := st.conn
			st.conn = nil
			dropCallbacks()
			st.mu.Unlock()
			if c != nil {
				rollback(ctx, c)
			}
			return nil
		}, nil
	}
	if _, err := conn.ExecContext(ctx, "SAVEPOINT "+sagaSavepoint); err != nil {
		return nil, fmt.Errorf("sqlite: saga savepoint: %w", err)
	}
	return func(ctx context.Context) error {
		if _, err := conn.ExecContext(ctx, "ROLLBACK TO SAVEPOINT "+sagaSavepoint); err != nil {
			return fmt.Errorf("sqlite: rollback to saga savepoint: %w", err)
		}
		st.mu.Lock()
		dropCallbacks()
		st.mu.Unlock()
		return nil
	}, nil
}

func (ss sagaStore) Release(ctx context.Context, id, runnerID string) error {
	err := ss.s.write(ctx, func(ctx context.Context, q querier) error {
		_, err := q.ExecContext(ctx, `UPDATE sagas SET claimed_by = NULL, claim_expires_at = NULL
			WHERE id = ? AND claimed_by = ?`, id, runnerID)
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite: release saga %s: %w", id, err)
	}
	return nil
}

func (ss sagaStore) ReleaseRunner(ctx context.Context, runnerID string) (int, error) {
	var n int
	err := ss.s.write(ctx, func(ctx context.Context, q querier) error {
		n = 0
		for _, table := range []string{"sagas", "saga_timers"} {
			res, err := q.ExecContext(ctx, `UPDATE `+table+` SET claimed_by = NULL, claim_expires_at = NULL
				WHERE claimed_by = ?`, runnerID)
			if err != nil {
				return err
			}
			k, err := res.RowsAffected()
			if err != nil {
				return err
			}
			n += int(k)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("sqlite: release the claims of runner %s: %w", runnerID, err)
	}
	return n, nil
}

func (ss sagaStore) PutSnapshot(ctx context.Context, snap *store.SagaSnapshot, keep int) error {
	if snap == nil || snap.SagaID == "" || len(snap.SHA256) == 0 {
		return errors.New("sqlite: put saga snapshot: SagaID and SHA256 are required")
	}
	if keep < 1 {
		keep = 1
	}
	if snap.CreatedAt.IsZero() {
		snap.CreatedAt = now()
	}
	state := snap.State
	if state == nil {
		state = []byte{}
	}
	err := ss.s.writeAtomic(ctx, func(ctx context.Context, q querier) error {
		if _, err := q.ExecContext(ctx, `INSERT INTO saga_snapshots (saga_id, seq, state, sha256, created_at)
			VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (saga_id, seq) DO UPDATE SET state = excluded.state, sha256 = excluded.sha256,
				created_at = excluded.created_at`,
			snap.SagaID, snap.Seq, state, snap.SHA256, nanos(snap.CreatedAt)); err != nil {
			return err
		}
		_, err := q.ExecContext(ctx, `DELETE FROM saga_snapshots WHERE saga_id = ?1 AND seq NOT IN (
			SELECT seq FROM saga_snapshots WHERE saga_id = ?1 ORDER BY seq DESC LIMIT ?2)`, snap.SagaID, keep)
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite: put snapshot of saga %s at %d: %w", snap.SagaID, snap.Seq, err)
	}
	return nil
}

func (ss sagaStore) Snapshots(ctx context.Context, id string, limit int) ([]*store.SagaSnapshot, error) {
	if limit < 0 {
		limit = 0
	}
	rows, err := ss.s.q(ctx).QueryContext(ctx, `SELECT seq, state, sha256, created_at FROM saga_snapshots
		WHERE saga_id = ? ORDER BY seq DESC LIMIT ?`, id, limit)
	if err != nil {
		return nil, fmt.Errorf("sqlite: snapshots of saga %s: %w", id, err)
	}
	defer rows.Close()
	var out []*store.SagaSnapshot
	for rows.Next() {
		s := &store.SagaSnapshot{SagaID: id}
		var created int64
		if err := rows.Scan(&s.Seq, &s.State, &s.SHA256, &created); err != nil {
			return nil, fmt.Errorf("sqlite: snapshots of saga %s: %w", id, err)
		}
		s.CreatedAt = fromTS(sql.NullInt64{Int64: created, Valid: true})
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: snapshots of saga %s: %w", id, err)
	}
	return out, nil
}

func (ss sagaStore) CreateTimer(ctx context.Context, t *store.SagaTimer) error {
	if t == nil || t.ID == "" || t.SagaID == "" || t.FireAt.IsZero() {
		return errors.New("sqlite: create saga timer: ID, SagaID and FireAt are required")
	}
	if t.CreatedAt.IsZero() {
		t.CreatedAt = now()
	}
	t.Status = store.TimerPending
	err := ss.s.write(ctx, func(ctx context.Context, q querier) error {
		_, err := q.ExecContext(ctx, `INSERT INTO saga_timers (id, saga_id, name, fire_at, status, created_at)
			VALUES (?, ?, ?, ?, 'PENDING', ?) ON CONFLICT (id) DO NOTHING`,
			t.ID, t.SagaID, t.Name, nanos(t.FireAt), nanos(t.CreatedAt))
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite: create saga timer %s: %w", t.ID, err)
	}
	return nil
}

const timerColumns = `id, saga_id, name, fire_at, status, claimed_by, claim_expires_at, created_at`

func scanTimers(rows *sql.Rows) ([]*store.SagaTimer, error) {
	defer rows.Close()
	var out []*store.SagaTimer
	for rows.Next() {
		var (
			t             store.SagaTimer
			claimedBy     sql.NullString
			fire, created int64
			until         sql.NullInt64
		)
		if err := rows.Scan(&t.ID, &t.SagaID, &t.Name, &fire, &t.Status, &claimedBy, &until, &created); err != nil {
			return nil, err
		}
		t.ClaimedBy = claimedBy.String
		t.FireAt = fromTS(sql.NullInt64{Int64: fire, Valid: true})
		t.CreatedAt = fromTS(sql.NullInt64{Int64: created, Valid: true})
		t.ClaimExpiresAt = fromTS(until)
		out = append(out, &t)
	}
	return out, rows.Err()
}

func (ss sagaStore) ClaimDueTimers(ctx context.Context, pollerID string, at time.Time, lease time.Duration, limit int) ([]*store.SagaTimer, error) {
	if pollerID == "" || lease <= 0 || limit <= 0 {
		return nil, fmt.Errorf("sqlite: claim saga timers: pollerID, lease > 0 and limit > 0 are required (got %q, %s, %d)", pollerID, lease, limit)
	}
	at = normTime(at)
	var out []*store.SagaTimer
	err := ss.s.write(ctx, func(ctx context.Context, q querier) error {
		rows, err := q.QueryContext(ctx, `UPDATE saga_timers SET claimed_by = ?1, claim_expires_at = ?3
			WHERE id IN (SELECT id FROM saga_timers INDEXED BY saga_timers_due_idx
				WHERE status = 'PENDING' AND fire_at <= ?2 AND (claimed_by IS NULL OR claim_expires_at < ?2)
				ORDER BY fire_at LIMIT ?4)
			RETURNING `+timerColumns, pollerID, nanos(at), nanos(at.Add(lease)), limit)
		if err != nil {
			return err
		}
		out, err = scanTimers(rows)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: claim saga timers: %w", err)
	}
	return out, nil
}

func (ss sagaStore) FinishTimer(ctx context.Context, id, pollerID, status string) error {
	if status != store.TimerFired && status != store.TimerCancelled {
		return fmt.Errorf("sqlite: finish saga timer %s: status %q is not FIRED or CANCELLED", id, status)
	}
	var n, exists int64
	err := ss.s.write(ctx, func(ctx context.Context, q querier) error {
		res, err := q.ExecContext(ctx, `UPDATE saga_timers SET status = ?3, claimed_by = NULL, claim_expires_at = NULL
			WHERE id = ?1 AND status = 'PENDING' AND (?2 = '' OR claimed_by = ?2)`, id, pollerID, status)
		if err != nil {
			return err
		}
		if n, err = res.RowsAffected(); err != nil || n == 1 {
			return err
		}
		return q.QueryRowContext(ctx, `SELECT count(*) FROM saga_timers WHERE id = ?`, id).Scan(&exists)
	})
	if err != nil {
		return fmt.Errorf("sqlite: finish saga timer %s: %w", id, err)
	}
	switch {
	case n == 1:
		return nil
	case exists == 0:
		return fmt.Errorf("sqlite: saga timer %s: %w", id, store.ErrNotFound)
	}
	return fmt.Errorf("sqlite: finish saga timer %s: not pending or held by another poller: %w", id, store.ErrConflict)
}

func (ss sagaStore) Timers(ctx context.Context, sagaID string) ([]*store.SagaTimer, error) {
	rows, err := ss.s.q(ctx).QueryContext(ctx, `SELECT `+timerColumns+` FROM saga_timers WHERE saga_id = ? ORDER BY fire_at, id`, sagaID)
	if err != nil {
		return nil, fmt.Errorf("sqlite: timers of saga %s: %w", sagaID, err)
	}
	out, err := scanTimers(rows)
	if err != nil {
		return nil, fmt.Errorf("sqlite: timers of saga %s: %w", sagaID, err)
	}
	return out, nil
}
