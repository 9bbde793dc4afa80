package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/hodei-jobs/hodei/store"
)

// Limits of the outbox port.
const (
	defaultMaxAttempts = 5
	maxClaimLimit      = 10000
	maxListLimit       = 10000
)

type outboxStore struct{ s *Store }

const outboxColumns = `id, kind, type, idempotency_key, payload, status, attempts, max_attempts,
	scheduled_at, last_error, claimed_by, claim_expires_at, trace_context, created_at, updated_at`

func scanOutbox(row scanner) (*store.OutboxMessage, error) {
	var (
		m                                 store.OutboxMessage
		payload, trace, status            string
		claimedBy                         sql.NullString
		expires                           sql.NullInt64
		scheduledAt, createdAt, updatedAt int64
	)
	if err := row.Scan(&m.ID, &m.Kind, &m.Type, &m.IdempotencyKey, &payload, &status, &m.Attempts,
		&m.MaxAttempts, &scheduledAt, &m.LastError, &claimedBy, &expires, &trace, &createdAt, &updatedAt); err != nil {
		return nil, err
	}
	m.Payload = json.RawMessage(payload)
	m.Status = store.OutboxStatus(status)
	m.ClaimedBy = claimedBy.String
	m.ClaimExpiresAt = fromTS(expires)
	if trace != "" && trace != "{}" {
		if err := json.Unmarshal([]byte(trace), &m.TraceContext); err != nil {
			return nil, fmt.Errorf("decode trace_context of outbox row %d: %w", m.ID, err)
		}
	}
	m.ScheduledAt = fromTS(sql.NullInt64{Int64: scheduledAt, Valid: true})
	m.CreatedAt = fromTS(sql.NullInt64{Int64: createdAt, Valid: true})
	m.UpdatedAt = fromTS(sql.NullInt64{Int64: updatedAt, Valid: true})
	return &m, nil
}

func collectOutbox(rows *sql.Rows) ([]*store.OutboxMessage, error) {
	defer rows.Close()
	var out []*store.OutboxMessage
	for rows.Next() {
		m, err := scanOutbox(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// outboxRow is a validated message ready to insert.
type outboxRow struct {
	kind, typ, key, payload, trace string
	maxAttempts                    int
	scheduledAt                    time.Time
}

func outboxRows(msgs []*store.OutboxMessage) ([]outboxRow, error) {
	rows := make([]outboxRow, len(msgs))
	for i, m := range msgs {
		if m == nil {
			return nil, fmt.Errorf("sqlite: outbox insert: message %d is nil", i)
		}
		if m.Kind != store.KindCommand && m.Kind != store.KindEvent {
			return nil, fmt.Errorf("sqlite: outbox insert: message %d: Kind %q is not %q or %q",
				i, m.Kind, store.KindCommand, store.KindEvent)
		}
		if m.Type == "" {
			return nil, fmt.Errorf("sqlite: outbox insert: message %d: Type is empty", i)
		}
		if m.IdempotencyKey == "" {
			return nil, fmt.Errorf("sqlite: outbox insert: message %d: IdempotencyKey is empty", i)
		}
		if m.MaxAttempts < 0 {
			return nil, fmt.Errorf("sqlite: outbox insert: message %d: MaxAttempts %d is negative", i, m.MaxAttempts)
		}
		r := outboxRow{kind: m.Kind, typ: m.Type, key: m.IdempotencyKey, payload: "null", trace: "{}",
			maxAttempts: m.MaxAttempts, scheduledAt: normTime(m.ScheduledAt)}
		if len(m.Payload) > 0 {
			if !json.Valid(m.Payload) {
				return nil, fmt.Errorf("sqlite: outbox insert: message %d (key %q): Payload is not valid JSON", i, m.IdempotencyKey)
			}
			r.payload = string(m.Payload)
		}
		if r.maxAttempts == 0 {
			r.maxAttempts = defaultMaxAttempts
		}
		if len(m.TraceContext) > 0 {
			b, err := json.Marshal(m.TraceContext)
			if err != nil {
				return nil, fmt.Errorf("sqlite: outbox insert: message %d: encode TraceContext: %w", i, err)
			}
			r.trace = string(b)
		}
		rows[i] = r
	}
	return rows, nil
}

// Insert writes msgs on the writer connection, one INSERT … ON CONFLICT
// (idempotency_key) DO NOTHING per message; a key that already exists (before or
// earlier in msgs) is looked up instead. On success each message's ID is set and the
// ids are returned in input order. A zero ScheduledAt means now, a zero MaxAttempts
// means 5; new rows start PENDING.
//
// Ids are assigned by the driver: one more than the highest of sqlite_sequence and the
// last id this Store handed out, so an id of a rolled-back insert is not reused.
//
// Wakeups subscribers are signalled after the transaction in ctx commits.
func (ob *outboxStore) Insert(ctx context.Context, msgs ...*store.OutboxMessage) ([]int64, error) {
	if len(msgs) == 0 {
		return nil, nil
	}
	rows, err := outboxRows(msgs)
	if err != nil {
		return nil, err
	}
	ids := make([]int64, len(msgs))
	write := ob.s.write
	if len(rows) > 1 {
		write = ob.s.writeAtomic
	}
	err = write(ctx, func(ctx context.Context, q querier) error {
		var seq int64
		if err := q.QueryRowContext(ctx, `SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'outbox'), 0)`).
			Scan(&seq); err != nil {
			return fmt.Errorf("read id sequence: %w", err)
		}
		next := max(seq, ob.s.lastOutboxID.Load())
		t := nanos(now())
		inserted := 0
		insert, done, err := batchExec(ctx, q, `INSERT INTO outbox (id, kind, type, idempotency_key, payload,
			max_attempts, scheduled_at, trace_context, created_at, updated_at)
			VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)
			ON CONFLICT (idempotency_key) DO NOTHING`, len(rows))
		if err != nil {
			return err
		}
		defer done()
		for i, r := range rows {
			sched := t
			if !r.scheduledAt.IsZero() {
				sched = nanos(r.scheduledAt)
			}
			res, err := insert(ctx, next+1, r.kind, r.typ, r.key, r.payload, r.maxAttempts, sched, r.trace, t)
			if err != nil {
				return err
			}
			n, err := res.RowsAffected()
			if err != nil {
				return err
			}
			if n == 1 {
				next++
				ids[i] = next
				inserted++
				continue
			}
			if err := q.QueryRowContext(ctx, `SELECT id FROM outbox WHERE idempotency_key = ?`, r.key).
				Scan(&ids[i]); err != nil {
				return fmt.Errorf("look up existing key %q: %w", r.key, err)
			}
		}
		storeMax(&ob.s.lastOutboxID, next)
		if inserted > 0 {
			ob.s.AfterCommit(ctx, ob.s.wake)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: outbox insert: %w", err)
	}
	for i, id := range ids {
		msgs[i].ID = id
	}
	return ids, nil
}

// Claim leases due rows in one UPDATE … WHERE id IN (SELECT … LIMIT n) RETURNING on the
// writer connection. Only one write transaction runs at a time, so a row claimed here
// has claimed_by set before any other claim can read it: the single writer does what
// FOR UPDATE SKIP LOCKED does in PostgreSQL. Rows are returned ordered by
// (scheduled_at, id).
func (ob *outboxStore) Claim(ctx context.Context, relayID string, limit int, lease time.Duration) ([]*store.OutboxMessage, error) {
	if relayID == "" {
		return nil, errors.New("sqlite: outbox claim: relayID is empty")
	}
	if limit < 1 || limit > maxClaimLimit {
		return nil, fmt.Errorf("sqlite: outbox claim: limit %d out of range [1, %d]", limit, maxClaimLimit)
	}
	if lease <= 0 {
		return nil, fmt.Errorf("sqlite: outbox claim: lease %s must be positive", lease)
	}
	var out []*store.OutboxMessage
	err := ob.s.write(ctx, func(ctx context.Context, q querier) error {
		t := now()
		rows, err := q.QueryContext(ctx, `UPDATE outbox
			SET claimed_by = ?1, claim_expires_at = ?3, attempts = attempts + 1, updated_at = ?2
			WHERE id IN (
				SELECT id FROM outbox INDEXED BY outbox_due_idx
				WHERE status IN ('PENDING', 'RETRY') AND claimed_by IS NULL AND scheduled_at <= ?2
				ORDER BY scheduled_at, id
				LIMIT ?4)
			RETURNING `+outboxColumns, relayID, nanos(t), nanos(t.Add(lease)), limit)
		if err != nil {
			return err
		}
		out, err = collectOutbox(rows)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: outbox claim: %w", err)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].ScheduledAt.Equal(out[j].ScheduledAt) {
			return out[i].ScheduledAt.Before(out[j].ScheduledAt)
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// idsJSON encodes ids as a JSON array, bound as one parameter and read with json_each.
func idsJSON(ids []int64) string {
	b, _ := json.Marshal(ids) // cannot fail
	return string(b)
}

// Complete marks the rows still leased by relayID COMPLETED and releases the lease.
func (ob *outboxStore) Complete(ctx context.Context, relayID string, ids ...int64) (int, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	var n int64
	err := ob.s.write(ctx, func(ctx context.Context, q querier) error {
		res, err := q.ExecContext(ctx, `UPDATE outbox
			SET status = 'COMPLETED', claimed_by = NULL, claim_expires_at = NULL, updated_at = ?3
			WHERE id IN (SELECT value FROM json_each(?2)) AND claimed_by = ?1 AND status IN ('PENDING', 'RETRY')`,
			relayID, idsJSON(ids), nanos(now()))
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("sqlite: outbox complete: %w", err)
	}
	return int(n), nil
}

// Fail records errMsg on a row leased by relayID and releases the lease: the row goes to
// RETRY at retryAt, or to DEAD_LETTER when dead. ErrNotFound if the row does not exist;
// ErrConflict if relayID no longer holds its lease: nothing is written then.
func (ob *outboxStore) Fail(ctx context.Context, relayID string, id int64, errMsg string, retryAt time.Time, dead bool) error {
	if !dead && retryAt.IsZero() {
		return fmt.Errorf("sqlite: outbox fail %d: retryAt is zero for a retry", id)
	}
	var n int64
	err := ob.s.write(ctx, func(ctx context.Context, q querier) error {
		res, err := q.ExecContext(ctx, `UPDATE outbox
			SET status = CASE WHEN ?5 THEN 'DEAD_LETTER' ELSE 'RETRY' END,
			    scheduled_at = CASE WHEN ?5 THEN scheduled_at ELSE ?4 END,
			    last_error = ?3, claimed_by = NULL, claim_expires_at = NULL, updated_at = ?6
			WHERE id = ?2 AND claimed_by = ?1 AND status IN ('PENDING', 'RETRY')`,
			relayID, id, errMsg, ts(normTime(retryAt)), dead, nanos(now()))
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite: outbox fail %d: %w", id, err)
	}
	if n == 1 {
		return nil
	}
	return ob.missingOrConflict(ctx, id, fmt.Sprintf("not leased by %q", relayID))
}

func (ob *outboxStore) missingOrConflict(ctx context.Context, id int64, why string) error {
	var n int
	if err := ob.s.q(ctx).QueryRowContext(ctx, `SELECT count(*) FROM outbox WHERE id = ?`, id).Scan(&n); err != nil {
		return fmt.Errorf("sqlite: outbox row %d: %w", id, err)
	}
	if n == 0 {
		return fmt.Errorf("sqlite: outbox row %d: %w", id, store.ErrNotFound)
	}
	return fmt.Errorf("sqlite: outbox row %d %s: %w", id, why, store.ErrConflict)
}

// ReleaseClaims releases every lease relayID holds (see store.OutboxStore).
func (ob *outboxStore) ReleaseClaims(ctx context.Context, relayID string) (int, error) {
	if relayID == "" {
		return 0, errors.New("sqlite: outbox release claims: relayID is empty")
	}
	var n int64
	err := ob.s.write(ctx, func(ctx context.Context, q querier) error {
		res, err := q.ExecContext(ctx, `UPDATE outbox
			SET claimed_by = NULL, claim_expires_at = NULL, updated_at = ?2
			WHERE claimed_by = ?1 AND status IN ('PENDING', 'RETRY')`, relayID, nanos(now()))
		if err != nil {
			return err
		}
		if n, err = res.RowsAffected(); err != nil {
			return err
		}
		if n > 0 {
			ob.s.AfterCommit(ctx, ob.s.wake)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("sqlite: outbox release claims of %s: %w", relayID, err)
	}
	return int(n), nil
}

// PruneFinished deletes old finished rows (see store.OutboxStore).
func (ob *outboxStore) PruneFinished(ctx context.Context, before time.Time, limit int, dryRun bool) (int, error) {
	if limit < 1 || limit > 10000 {
		return 0, fmt.Errorf("sqlite: outbox prune: limit %d out of range [1, 10000]", limit)
	}
	var n int64
	err := ob.s.write(ctx, func(ctx context.Context, q querier) error {
		if dryRun {
			return q.QueryRowContext(ctx, `SELECT count(*) FROM outbox
				WHERE status IN ('COMPLETED', 'CANCELLED') AND updated_at < ?1`, nanos(before)).Scan(&n)
		}
		res, err := q.ExecContext(ctx, `DELETE FROM outbox WHERE id IN (
			SELECT id FROM outbox WHERE status IN ('COMPLETED', 'CANCELLED') AND updated_at < ?1
			ORDER BY updated_at, id LIMIT ?2)`, nanos(before), limit)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("sqlite: outbox prune: %w", err)
	}
	return int(n), nil
}

// ReapExpired releases the leases that expired (the relay holding them died or stalled).
// The attempt the dead claim counted stays counted. Rows reaped are due again at once.
func (ob *outboxStore) ReapExpired(ctx context.Context) (int, error) {
	var n int64
	err := ob.s.write(ctx, func(ctx context.Context, q querier) error {
		t := nanos(now())
		res, err := q.ExecContext(ctx, `UPDATE outbox
			SET claimed_by = NULL, claim_expires_at = NULL, updated_at = ?1
			WHERE id IN (SELECT id FROM outbox INDEXED BY outbox_leased_idx
				WHERE claimed_by IS NOT NULL AND claim_expires_at < ?1)`, t)
		if err != nil {
			return err
		}
		if n, err = res.RowsAffected(); err != nil {
			return err
		}
		if n > 0 {
			ob.s.AfterCommit(ctx, ob.s.wake)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("sqlite: outbox reap: %w", err)
	}
	return int(n), nil
}

func (ob *outboxStore) Get(ctx context.Context, id int64) (*store.OutboxMessage, error) {
	m, err := scanOutbox(ob.s.q(ctx).QueryRowContext(ctx, `SELECT `+outboxColumns+` FROM outbox WHERE id = ?`, id))
	if noRows(err) {
		return nil, fmt.Errorf("sqlite: outbox row %d: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: outbox get %d: %w", id, err)
	}
	return m, nil
}

// ListByStatus returns up to limit rows in status, oldest id first (limit 0 means 100).
func (ob *outboxStore) ListByStatus(ctx context.Context, status store.OutboxStatus, limit int) ([]*store.OutboxMessage, error) {
	switch {
	case limit < 0 || limit > maxListLimit:
		return nil, fmt.Errorf("sqlite: outbox list: limit %d out of range [0, %d]", limit, maxListLimit)
	case limit == 0:
		limit = 100
	}
	rows, err := ob.s.q(ctx).QueryContext(ctx, `SELECT `+outboxColumns+` FROM outbox WHERE status = ?
		ORDER BY id LIMIT ?`, string(status), limit)
	if err != nil {
		return nil, fmt.Errorf("sqlite: outbox list %s: %w", status, err)
	}
	out, err := collectOutbox(rows)
	if err != nil {
		return nil, fmt.Errorf("sqlite: outbox list %s: %w", status, err)
	}
	return out, nil
}

// Requeue moves a DEAD_LETTER row back to PENDING, due now, with zero attempts; the last
// error is kept. ErrNotFound if the row does not exist, ErrConflict if it is not a dead
// letter.
func (ob *outboxStore) Requeue(ctx context.Context, id int64) error {
	var n int64
	err := ob.s.write(ctx, func(ctx context.Context, q querier) error {
		t := nanos(now())
		res, err := q.ExecContext(ctx, `UPDATE outbox
			SET status = 'PENDING', attempts = 0, scheduled_at = ?2,
			    claimed_by = NULL, claim_expires_at = NULL, updated_at = ?2
			WHERE id = ?1 AND status = 'DEAD_LETTER'`, id, t)
		if err != nil {
			return err
		}
		if n, err = res.RowsAffected(); err != nil {
			return err
		}
		if n > 0 {
			ob.s.AfterCommit(ctx, ob.s.wake)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlite: outbox requeue %d: %w", id, err)
	}
	if n == 0 {
		return ob.missingOrConflict(ctx, id, "is not DEAD_LETTER")
	}
	return nil
}

// CountByStatus returns the number of rows in each status (statuses with no rows are
// present with 0).
func (ob *outboxStore) CountByStatus(ctx context.Context) (map[store.OutboxStatus]int, error) {
	out := map[store.OutboxStatus]int{
		store.OutboxPending: 0, store.OutboxRetry: 0, store.OutboxCompleted: 0,
		store.OutboxDeadLetter: 0, store.OutboxCancelled: 0,
	}
	rows, err := ob.s.q(ctx).QueryContext(ctx, `SELECT status, count(*) FROM outbox GROUP BY status`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: outbox count: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			status string
			n      int
		)
		if err := rows.Scan(&status, &n); err != nil {
			return nil, fmt.Errorf("sqlite: outbox count: %w", err)
		}
		out[store.OutboxStatus(status)] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: outbox count: %w", err)
	}
	return out, nil
}

// Wakeups: see notify.go.
func (ob *outboxStore) Wakeups(ctx context.Context) <-chan struct{} { return ob.s.wakeups(ctx) }
