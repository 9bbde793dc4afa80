package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/hodei-jobs/hodei/store"
)

// sagaStore implements store.SagaStore on the tables of migration 0002.
type sagaStore struct{ s *Store }

var _ store.SagaStore = sagaStore{}

// Sagas returns the saga port.
func (s *Store) Sagas() store.SagaStore { return sagaStore{s} }

const sagaColumns = `id, type, version, state, input, current_step, last_seq, runnable_at,
	claimed_by, claim_expires_at, error, created_at, updated_at`

func scanSaga(row pgx.Row) (*store.SagaRecord, error) {
	var (
		r                    store.SagaRecord
		runnable, claimUntil pgtype.Timestamptz
		claimedBy            *string
	)
	if err := row.Scan(&r.ID, &r.Type, &r.Version, &r.State, &r.Input, &r.CurrentStep, &r.LastSeq,
		&runnable, &claimedBy, &claimUntil, &r.Error, &r.CreatedAt, &r.UpdatedAt); err != nil {
		return nil, err
	}
	r.RunnableAt, r.ClaimExpiresAt = fromNullTime(runnable), fromNullTime(claimUntil)
	if claimedBy != nil {
		r.ClaimedBy = *claimedBy
	}
	r.CreatedAt, r.UpdatedAt = r.CreatedAt.UTC(), r.UpdatedAt.UTC()
	return &r, nil
}

func scanSagas(rows pgx.Rows) ([]*store.SagaRecord, error) {
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

// eventColumns are the arrays unnest()ed by insertEvents, in order.
type eventArrays struct {
	seq     []int64
	typ     []string
	step    []string
	attempt []int32
	codec   []string
	payload [][]byte
	trace   []string
	created []time.Time
}

func buildEventArrays(id string, firstSeq int64, events []*store.SagaEvent) (*eventArrays, error) {
	a := &eventArrays{}
	t := now()
	for i, e := range events {
		if e == nil {
			return nil, fmt.Errorf("event %d is nil", i)
		}
		if e.Type == "" {
			return nil, fmt.Errorf("event %d: Type is empty", i)
		}
		if e.Codec == "" {
			return nil, fmt.Errorf("event %d (%s): Codec is empty", i, e.Type)
		}
		e.SagaID = id
		e.Seq = firstSeq + int64(i)
		if e.CreatedAt.IsZero() {
			e.CreatedAt = t
		}
		e.CreatedAt = normTime(e.CreatedAt)
		tc := []byte("{}")
		if len(e.TraceContext) > 0 {
			b, err := json.Marshal(e.TraceContext)
			if err != nil {
				return nil, fmt.Errorf("event %d: encode trace context: %w", i, err)
			}
			tc = b
		}
		payload := e.Payload
		if payload == nil {
			payload = []byte{}
		}
		a.seq = append(a.seq, e.Seq)
		a.typ = append(a.typ, e.Type)
		a.step = append(a.step, e.Step)
		a.attempt = append(a.attempt, int32(e.Attempt))
		a.codec = append(a.codec, e.Codec)
		a.payload = append(a.payload, payload)
		a.trace = append(a.trace, string(tc))
		a.created = append(a.created, e.CreatedAt)
	}
	return a, nil
}

// insertEventsSQL selects the event arrays from parameters $N.. onward; the caller puts
// the saga id source in front (a CTE named src with column id).
func eventsSelect(p int) string {
	return fmt.Sprintf(`INSERT INTO saga_events (saga_id, seq, type, step, attempt, codec, payload, trace_context, created_at)
		SELECT src.id, e.seq, e.type, e.step, e.attempt, e.codec, e.payload, e.tc::jsonb, e.created
		FROM src, unnest($%d::bigint[], $%d::text[], $%d::text[], $%d::int[], $%d::text[], $%d::bytea[], $%d::text[], $%d::timestamptz[])
			AS e(seq, type, step, attempt, codec, payload, tc, created)`,
		p, p+1, p+2, p+3, p+4, p+5, p+6, p+7)
}

func (a *eventArrays) args() []any {
	return []any{a.seq, a.typ, a.step, a.attempt, a.codec, a.payload, a.trace, a.created}
}

func (ss sagaStore) Create(ctx context.Context, rec *store.SagaRecord, events ...*store.SagaEvent) (*store.SagaRecord, bool, error) {
	if rec == nil || rec.ID == "" || rec.Type == "" || rec.State == "" {
		return nil, false, errors.New("postgres: create saga: ID, Type and State are required")
	}
	if len(events) == 0 {
		return nil, false, fmt.Errorf("postgres: create saga %s: at least one event is required", rec.ID)
	}
	arr, err := buildEventArrays(rec.ID, 1, events)
	if err != nil {
		return nil, false, fmt.Errorf("postgres: create saga %s: %w", rec.ID, err)
	}
	t := now()
	if rec.CreatedAt.IsZero() {
		rec.CreatedAt = t
	}
	rec.CreatedAt = normTime(rec.CreatedAt)
	rec.UpdatedAt = rec.CreatedAt
	rec.LastSeq = int64(len(events))
	rec.RunnableAt = normTime(rec.RunnableAt)
	input := rec.Input
	if input == nil {
		input = []byte{}
	}
	// One statement, so no transaction of its own is needed: the row and its events are
	// inserted together or not at all (and join ctx's transaction when there is one).
	args := append([]any{rec.ID, rec.Type, rec.Version, rec.State, input, rec.CurrentStep, rec.LastSeq,
		nullTime(rec.RunnableAt), rec.Error, rec.CreatedAt, rec.ClaimedBy, nullTime(normTime(rec.ClaimExpiresAt))},
		arr.args()...)
	tag, err := ss.s.q(ctx).Exec(ctx, `WITH src AS (
		INSERT INTO sagas (id, type, version, state, input, current_step, last_seq, runnable_at, error, created_at, updated_at,
			claimed_by, claim_expires_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, NULLIF($11::text, ''), $12)
		ON CONFLICT (id) DO NOTHING RETURNING id)
		`+eventsSelect(13), args...)
	if err != nil {
		return nil, false, fmt.Errorf("postgres: create saga %s: %w", rec.ID, err)
	}
	if tag.RowsAffected() == int64(len(events)) {
		cp := *rec
		return &cp, true, nil
	}
	saved, err := ss.Get(ctx, rec.ID)
	if err != nil {
		return nil, false, fmt.Errorf("postgres: create saga %s: %w", rec.ID, err)
	}
	return saved, false, nil
}

func (ss sagaStore) Get(ctx context.Context, id string) (*store.SagaRecord, error) {
	r, err := scanSaga(ss.s.q(ctx).QueryRow(ctx, `SELECT `+sagaColumns+` FROM sagas WHERE id = $1`, id))
	if errNoRows(err) {
		return nil, fmt.Errorf("postgres: saga %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: get saga %s: %w", id, err)
	}
	return r, nil
}

// updateSagaSQL writes the projection and the claim change; $1 id, $2 expected seq, $3 new
// last seq, $4.. the update. Column references on the right see the old row.
const updateSagaSQL = `UPDATE sagas SET last_seq = $3, state = $4, current_step = $5, runnable_at = $6,
		error = $7, updated_at = $11,
		claimed_by = CASE WHEN $12::text <> '' THEN $12::text
			WHEN $8::text <> '' AND claimed_by = $8::text AND $9::bool THEN NULL ELSE claimed_by END,
		claim_expires_at = CASE
			WHEN $12::text <> '' THEN $10::timestamptz
			WHEN $8::text <> '' AND claimed_by = $8::text AND $9::bool THEN NULL
			WHEN $8::text <> '' AND claimed_by = $8::text AND $10::timestamptz IS NOT NULL THEN $10::timestamptz
			ELSE claim_expires_at END
		WHERE id = $1 AND last_seq = $2 AND ($12::text = '' OR COALESCE(claimed_by, '') = $13::text)`

func (ss sagaStore) Append(ctx context.Context, id string, expectedSeq int64, upd store.SagaUpdate, events ...*store.SagaEvent) error {
	arr, err := buildEventArrays(id, expectedSeq+1, events)
	if err != nil {
		return fmt.Errorf("postgres: append to saga %s: %w", id, err)
	}
	args := []any{id, expectedSeq, expectedSeq + int64(len(events)), upd.State, upd.CurrentStep,
		nullTime(normTime(upd.RunnableAt)), upd.Error, upd.ClaimedBy, upd.Release,
		nullTime(normTime(upd.ClaimUntil)), now(), upd.Take, upd.TakeFrom}
	var n int64
	if len(events) == 0 {
		tag, err := ss.s.q(ctx).Exec(ctx, updateSagaSQL, args...)
		if err != nil {
			return fmt.Errorf("postgres: append to saga %s: %w", id, err)
		}
		n = tag.RowsAffected()
	} else {
		// One statement: the row update and the event inserts happen together or not at
		// all, with or without an enclosing transaction.
		tag, err := ss.s.q(ctx).Exec(ctx, `WITH src AS (`+updateSagaSQL+` RETURNING id) `+eventsSelect(14),
			append(args, arr.args()...)...)
		if isUniqueViolation(err) {
			return &store.SagaConflictError{SagaID: id, ExpectedSeq: expectedSeq, Reason: "duplicate seq"}
		}
		if err != nil {
			return fmt.Errorf("postgres: append to saga %s: %w", id, err)
		}
		n = tag.RowsAffected()
	}
	if n > 0 {
		return nil
	}
	r, err := ss.Get(ctx, id)
	if err != nil {
		return err
	}
	return &store.SagaConflictError{SagaID: id, ExpectedSeq: expectedSeq, ActualSeq: r.LastSeq}
}

func (ss sagaStore) Events(ctx context.Context, id string, afterSeq int64) ([]*store.SagaEvent, error) {
	rows, err := ss.s.q(ctx).Query(ctx, `SELECT saga_id, seq, type, step, attempt, codec, payload, trace_context, created_at
		FROM saga_events WHERE saga_id = $1 AND seq > $2 ORDER BY seq`, id, afterSeq)
	if err != nil {
		return nil, fmt.Errorf("postgres: events of saga %s: %w", id, err)
	}
	var out []*store.SagaEvent
	err = scanEvents(rows, func(e *store.SagaEvent) { out = append(out, e) })
	if err != nil {
		return nil, fmt.Errorf("postgres: events of saga %s: %w", id, err)
	}
	return out, nil
}

func (ss sagaStore) Histories(ctx context.Context, ids []string) (map[string][]*store.SagaEvent, error) {
	out := make(map[string][]*store.SagaEvent, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	rows, err := ss.s.q(ctx).Query(ctx, `SELECT saga_id, seq, type, step, attempt, codec, payload, trace_context, created_at
		FROM saga_events WHERE saga_id = ANY($1::text[]) ORDER BY saga_id, seq`, ids)
	if err != nil {
		return nil, fmt.Errorf("postgres: histories of %d sagas: %w", len(ids), err)
	}
	err = scanEvents(rows, func(e *store.SagaEvent) { out[e.SagaID] = append(out[e.SagaID], e) })
	if err != nil {
		return nil, fmt.Errorf("postgres: histories of %d sagas: %w", len(ids), err)
	}
	return out, nil
}

// scanEvents reads rows of (saga_id, seq, type, step, attempt, codec, payload,
// trace_context, created_at) and hands each event to add.
func scanEvents(rows pgx.Rows, add func(*store.SagaEvent)) error {
	defer rows.Close()
	for rows.Next() {
		e := &store.SagaEvent{}
		var tc []byte
		if err := rows.Scan(&e.SagaID, &e.Seq, &e.Type, &e.Step, &e.Attempt, &e.Codec, &e.Payload, &tc, &e.CreatedAt); err != nil {
			return err
		}
		e.CreatedAt = e.CreatedAt.UTC()
		if len(tc) > 2 {
			if err := json.Unmarshal(tc, &e.TraceContext); err != nil {
				return fmt.Errorf("saga %s seq %d trace context: %w", e.SagaID, e.Seq, err)
			}
		}
		add(e)
	}
	return rows.Err()
}

func (ss sagaStore) Claim(ctx context.Context, runnerID string, at time.Time, lease time.Duration, limit int) ([]*store.SagaRecord, error) {
	if runnerID == "" || lease <= 0 || limit <= 0 {
		return nil, fmt.Errorf("postgres: claim sagas: runnerID, lease > 0 and limit > 0 are required (got %q, %s, %d)", runnerID, lease, limit)
	}
	at = normTime(at)
	rows, err := ss.s.q(ctx).Query(ctx, `UPDATE sagas s SET claimed_by = $1, claim_expires_at = $3
		FROM (SELECT id FROM sagas
			WHERE runnable_at <= $2 AND (claimed_by IS NULL OR claim_expires_at < $2)
			ORDER BY runnable_at LIMIT $4 FOR UPDATE SKIP LOCKED) c
		WHERE s.id = c.id
		RETURNING s.id, s.type, s.version, s.state, s.input, s.current_step, s.last_seq, s.runnable_at,
			s.claimed_by, s.claim_expires_at, s.error, s.created_at, s.updated_at`,
		runnerID, at, at.Add(lease), limit)
	if err != nil {
		return nil, fmt.Errorf("postgres: claim sagas: %w", err)
	}
	out, err := scanSagas(rows)
	if err != nil {
		return nil, fmt.Errorf("postgres: claim sagas: %w", err)
	}
	return out, nil
}

func (ss sagaStore) ClaimByID(ctx context.Context, id, runnerID string, at time.Time, lease time.Duration) (*store.SagaRecord, error) {
	if runnerID == "" || lease <= 0 {
		return nil, fmt.Errorf("postgres: claim saga %s: runnerID and lease > 0 are required", id)
	}
	at = normTime(at)
	r, err := scanSaga(ss.s.q(ctx).QueryRow(ctx, `UPDATE sagas SET claimed_by = $2, claim_expires_at = $4
		WHERE id = $1 AND runnable_at <= $3 AND (claimed_by IS NULL OR claim_expires_at < $3)
		RETURNING `+sagaColumns, id, runnerID, at, at.Add(lease)))
	if errNoRows(err) {
		return nil, fmt.Errorf("postgres: claim saga %s: not runnable or held: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: claim saga %s: %w", id, err)
	}
	return r, nil
}

func (ss sagaStore) ClaimIDs(ctx context.Context, ids []string, runnerID string, at time.Time, lease time.Duration) ([]*store.SagaRecord, error) {
	if runnerID == "" || lease <= 0 {
		return nil, fmt.Errorf("postgres: claim sagas by id: runnerID and lease > 0 are required (got %q, %s)", runnerID, lease)
	}
	if len(ids) == 0 {
		return nil, nil
	}
	at = normTime(at)
	rows, err := ss.s.q(ctx).Query(ctx, `UPDATE sagas s SET claimed_by = $2, claim_expires_at = $4
		FROM (SELECT id FROM sagas
			WHERE id = ANY($1::text[]) AND runnable_at <= $3 AND (claimed_by IS NULL OR claim_expires_at < $3)
			FOR UPDATE SKIP LOCKED) c
		WHERE s.id = c.id
		RETURNING s.id, s.type, s.version, s.state, s.input, s.current_step, s.last_seq, s.runnable_at,
			s.claimed_by, s.claim_expires_at, s.error, s.created_at, s.updated_at`,
		ids, runnerID, at, at.Add(lease))
	if err != nil {
		return nil, fmt.Errorf("postgres: claim %d sagas by id: %w", len(ids), err)
	}
	out, err := scanSagas(rows)
	if err != nil {
		return nil, fmt.Errorf("postgres: claim %d sagas by id: %w", len(ids), err)
	}
	return out, nil
}

// sagaSavepoint is the savepoint name of Savepoint. Reusing one name is fine: ROLLBACK
// TO goes back to the newest savepoint of that name.
const sagaSavepoint = "hodei_saga_step"

func (ss sagaStore) Savepoint(ctx context.Context) (func(ctx context.Context) error, error) {
	ts := ss.s.txFrom(ctx)
	if ts == nil {
		return nil, errors.New("postgres: saga savepoint: ctx carries no transaction (use Store.InTx)")
	}
	if _, err := ts.tx.Exec(ctx, "SAVEPOINT "+sagaSavepoint); err != nil {
		return nil, fmt.Errorf("postgres: saga savepoint: %w", err)
	}
	ts.mu.Lock()
	mark := len(ts.afterCommit)
	ts.mu.Unlock()
	return func(ctx context.Context) error {
		if _, err := ts.tx.Exec(ctx, "ROLLBACK TO SAVEPOINT "+sagaSavepoint); err != nil {
			return fmt.Errorf("postgres: rollback to saga savepoint: %w", err)
		}
		ts.mu.Lock()
		if len(ts.afterCommit) > mark {
			clear(ts.afterCommit[mark:])
			ts.afterCommit = ts.afterCommit[:mark]
		}
		ts.mu.Unlock()
		return nil
	}, nil
}

func (ss sagaStore) Release(ctx context.Context, id, runnerID string) error {
	if _, err := ss.s.q(ctx).Exec(ctx, `UPDATE sagas SET claimed_by = NULL, claim_expires_at = NULL
		WHERE id = $1 AND claimed_by = $2`, id, runnerID); err != nil {
		return fmt.Errorf("postgres: release saga %s: %w", id, err)
	}
	return nil
}

func (ss sagaStore) ReleaseRunner(ctx context.Context, runnerID string) (int, error) {
	var n int
	err := ss.s.InTx(ctx, func(ctx context.Context) error {
		for _, table := range []string{"sagas", "saga_timers"} {
			tag, err := ss.s.q(ctx).Exec(ctx, `UPDATE `+table+` SET claimed_by = NULL, claim_expires_at = NULL
				WHERE claimed_by = $1`, runnerID)
			if err != nil {
				return err
			}
			n += int(tag.RowsAffected())
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("postgres: release the claims of runner %s: %w", runnerID, err)
	}
	return n, nil
}

func (ss sagaStore) PutSnapshot(ctx context.Context, snap *store.SagaSnapshot, keep int) error {
	if snap == nil || snap.SagaID == "" || len(snap.SHA256) == 0 {
		return errors.New("postgres: put saga snapshot: SagaID and SHA256 are required")
	}
	if keep < 1 {
		keep = 1
	}
	if snap.CreatedAt.IsZero() {
		snap.CreatedAt = now()
	}
	b := &pgx.Batch{}
	b.Queue(`INSERT INTO saga_snapshots (saga_id, seq, state, sha256, created_at) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (saga_id, seq) DO UPDATE SET state = EXCLUDED.state, sha256 = EXCLUDED.sha256, created_at = EXCLUDED.created_at`,
		snap.SagaID, snap.Seq, snap.State, snap.SHA256, normTime(snap.CreatedAt))
	b.Queue(`DELETE FROM saga_snapshots WHERE saga_id = $1 AND seq NOT IN (
		SELECT seq FROM saga_snapshots WHERE saga_id = $1 ORDER BY seq DESC LIMIT $2)`, snap.SagaID, keep)
	if err := ss.s.q(ctx).SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("postgres: put snapshot of saga %s at %d: %w", snap.SagaID, snap.Seq, err)
	}
	return nil
}

func (ss sagaStore) Snapshots(ctx context.Context, id string, limit int) ([]*store.SagaSnapshot, error) {
	rows, err := ss.s.q(ctx).Query(ctx, `SELECT seq, state, sha256, created_at FROM saga_snapshots
		WHERE saga_id = $1 ORDER BY seq DESC LIMIT $2`, id, limit)
	if err != nil {
		return nil, fmt.Errorf("postgres: snapshots of saga %s: %w", id, err)
	}
	defer rows.Close()
	var out []*store.SagaSnapshot
	for rows.Next() {
		s := &store.SagaSnapshot{SagaID: id}
		if err := rows.Scan(&s.Seq, &s.State, &s.SHA256, &s.CreatedAt); err != nil {
			return nil, fmt.Errorf("postgres: snapshots of saga %s: %w", id, err)
		}
		s.CreatedAt = s.CreatedAt.UTC()
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: snapshots of saga %s: %w", id, err)
	}
	return out, nil
}

func (ss sagaStore) CreateTimer(ctx context.Context, t *store.SagaTimer) error {
	if t == nil || t.ID == "" || t.SagaID == "" || t.FireAt.IsZero() {
		return errors.New("postgres: create saga timer: ID, SagaID and FireAt are required")
	}
	if t.CreatedAt.IsZero() {
		t.CreatedAt = now()
	}
	t.Status = store.TimerPending
	if _, err := ss.s.q(ctx).Exec(ctx, `INSERT INTO saga_timers (id, saga_id, name, fire_at, status, created_at)
		VALUES ($1, $2, $3, $4, 'PENDING', $5) ON CONFLICT (id) DO NOTHING`,
		t.ID, t.SagaID, t.Name, normTime(t.FireAt), normTime(t.CreatedAt)); err != nil {
		return fmt.Errorf("postgres: create saga timer %s: %w", t.ID, err)
	}
	return nil
}

const timerColumns = `id, saga_id, name, fire_at, status, claimed_by, claim_expires_at, created_at`

func scanTimers(rows pgx.Rows) ([]*store.SagaTimer, error) {
	defer rows.Close()
	var out []*store.SagaTimer
	for rows.Next() {
		var (
			t         store.SagaTimer
			claimedBy *string
			until     pgtype.Timestamptz
		)
		if err := rows.Scan(&t.ID, &t.SagaID, &t.Name, &t.FireAt, &t.Status, &claimedBy, &until, &t.CreatedAt); err != nil {
			return nil, err
		}
		if claimedBy != nil {
			t.ClaimedBy = *claimedBy
		}
		t.FireAt, t.CreatedAt, t.ClaimExpiresAt = t.FireAt.UTC(), t.CreatedAt.UTC(), fromNullTime(until)
		out = append(out, &t)
	}
	return out, rows.Err()
}

func (ss sagaStore) ClaimDueTimers(ctx context.Context, pollerID string, at time.Time, lease time.Duration, limit int) ([]*store.SagaTimer, error) {
	if pollerID == "" || lease <= 0 || limit <= 0 {
		return nil, fmt.Errorf("postgres: claim saga timers: pollerID, lease > 0 and limit > 0 are required (got %q, %s, %d)", pollerID, lease, limit)
	}
	at = normTime(at)
	rows, err := ss.s.q(ctx).Query(ctx, `UPDATE saga_timers t SET claimed_by = $1, claim_expires_at = $3
		FROM (SELECT id FROM saga_timers
			WHERE status = 'PENDING' AND fire_at <= $2 AND (claimed_by IS NULL OR claim_expires_at < $2)
			ORDER BY fire_at LIMIT $4 FOR UPDATE SKIP LOCKED) c
		WHERE t.id = c.id
		RETURNING t.id, t.saga_id, t.name, t.fire_at, t.status, t.claimed_by, t.claim_expires_at, t.created_at`,
		pollerID, at, at.Add(lease), limit)
	if err != nil {
		return nil, fmt.Errorf("postgres: claim saga timers: %w", err)
	}
	out, err := scanTimers(rows)
	if err != nil {
		return nil, fmt.Errorf("postgres: claim saga timers: %w", err)
	}
	return out, nil
}

func (ss sagaStore) FinishTimer(ctx context.Context, id, pollerID, status string) error {
	if status != store.TimerFired && status != store.TimerCancelled {
		return fmt.Errorf("postgres: finish saga timer %s: status %q is not FIRED or CANCELLED", id, status)
	}
	tag, err := ss.s.q(ctx).Exec(ctx, `UPDATE saga_timers SET status = $3, claimed_by = NULL, claim_expires_at = NULL
		WHERE id = $1 AND status = 'PENDING' AND ($2 = '' OR claimed_by = $2)`, id, pollerID, status)
	if err != nil {
		return fmt.Errorf("postgres: finish saga timer %s: %w", id, err)
	}
	if tag.RowsAffected() == 1 {
		return nil
	}
	var exists bool
	if err := ss.s.q(ctx).QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM saga_timers WHERE id = $1)`, id).Scan(&exists); err != nil {
		return fmt.Errorf("postgres: finish saga timer %s: %w", id, err)
	}
	if !exists {
		return fmt.Errorf("postgres: saga timer %s: %w", id, store.ErrNotFound)
	}
	return fmt.Errorf("postgres: finish saga timer %s: not pending or held by another poller: %w", id, store.ErrConflict)
}

func (ss sagaStore) Timers(ctx context.Context, sagaID string) ([]*store.SagaTimer, error) {
	rows, err := ss.s.q(ctx).Query(ctx, `SELECT `+timerColumns+` FROM saga_timers WHERE saga_id = $1 ORDER BY fire_at, id`, sagaID)
	if err != nil {
		return nil, fmt.Errorf("postgres: timers of saga %s: %w", sagaID, err)
	}
	out, err := scanTimers(rows)
	if err != nil {
		return nil, fmt.Errorf("postgres: timers of saga %s: %w", sagaID, err)
	}
	return out, nil
}
