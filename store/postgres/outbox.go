package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

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

func scanOutbox(row pgx.Row) (*store.OutboxMessage, error) {
	var (
		m                                 store.OutboxMessage
		payload, trace                    []byte
		status                            string
		claimedBy                         *string
		expires                           pgtype.Timestamptz
		scheduledAt, createdAt, updatedAt time.Time
	)
	if err := row.Scan(&m.ID, &m.Kind, &m.Type, &m.IdempotencyKey, &payload, &status, &m.Attempts,
		&m.MaxAttempts, &scheduledAt, &m.LastError, &claimedBy, &expires, &trace, &createdAt, &updatedAt); err != nil {
		return nil, err
	}
	m.Payload = json.RawMessage(payload)
	m.Status = store.OutboxStatus(status)
	if claimedBy != nil {
		m.ClaimedBy = *claimedBy
	}
	m.ClaimExpiresAt = fromNullTime(expires)
	if len(trace) > 0 && string(trace) != "{}" {
		if err := json.Unmarshal(trace, &m.TraceContext); err != nil {
			return nil, fmt.Errorf("decode trace_context of outbox row %d: %w", m.ID, err)
		}
	}
	m.ScheduledAt, m.CreatedAt, m.UpdatedAt = scheduledAt.UTC(), createdAt.UTC(), updatedAt.UTC()
	return &m, nil
}

func collectOutbox(rows pgx.Rows) ([]*store.OutboxMessage, error) {
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

// Insert writes msgs with one multi-row INSERT … ON CONFLICT (idempotency_key) DO
// NOTHING (arrays unnested server side), then looks up the ids of keys that already
// existed. On success each message's ID is set and the ids are returned in input order.
// A zero ScheduledAt means now, a zero MaxAttempts means 5. Status, Attempts and the
// lease fields of the input are ignored: new rows start PENDING.
//
// Relays are woken after the transaction in ctx commits (immediately without one): the
// in-process Wakeups subscribers directly, other processes by one coalesced NOTIFY.
func (ob *outboxStore) Insert(ctx context.Context, msgs ...*store.OutboxMessage) ([]int64, error) {
	if len(msgs) == 0 {
		return nil, nil
	}
	n := len(msgs)
	var (
		kinds    = make([]string, n)
		types    = make([]string, n)
		keys     = make([]string, n)
		payloads = make([]string, n)
		maxAtt   = make([]int32, n)
		sched    = make([]pgtype.Timestamptz, n)
		traces   = make([]string, n)
	)
	for i, m := range msgs {
		if m == nil {
			return nil, fmt.Errorf("postgres: outbox insert: message %d is nil", i)
		}
		if m.Kind != store.KindCommand && m.Kind != store.KindEvent {
			return nil, fmt.Errorf("postgres: outbox insert: message %d: Kind %q is not %q or %q",
				i, m.Kind, store.KindCommand, store.KindEvent)
		}
		if m.Type == "" {
			return nil, fmt.Errorf("postgres: outbox insert: message %d: Type is empty", i)
		}
		if m.IdempotencyKey == "" {
			return nil, fmt.Errorf("postgres: outbox insert: message %d: IdempotencyKey is empty", i)
		}
		if m.MaxAttempts < 0 {
			return nil, fmt.Errorf("postgres: outbox insert: message %d: MaxAttempts %d is negative", i, m.MaxAttempts)
		}
		kinds[i], types[i], keys[i] = m.Kind, m.Type, m.IdempotencyKey
		payloads[i] = "null"
		if len(m.Payload) > 0 {
			if !json.Valid(m.Payload) {
				return nil, fmt.Errorf("postgres: outbox insert: message %d (key %q): Payload is not valid JSON", i, m.IdempotencyKey)
			}
			payloads[i] = string(m.Payload)
		}
		maxAtt[i] = int32(m.MaxAttempts)
		if m.MaxAttempts == 0 {
			maxAtt[i] = defaultMaxAttempts
		}
		sched[i] = nullTime(normTime(m.ScheduledAt))
		traces[i] = "{}"
		if len(m.TraceContext) > 0 {
			b, err := json.Marshal(m.TraceContext)
			if err != nil {
				return nil, fmt.Errorf("postgres: outbox insert: message %d: encode TraceContext: %w", i, err)
			}
			traces[i] = string(b)
		}
	}
	q := ob.s.q(ctx)
	rows, err := q.Query(ctx, `INSERT INTO outbox (kind, type, idempotency_key, payload, max_attempts,
			scheduled_at, trace_context)
		SELECT k, t, key, p::jsonb, m, COALESCE(s, now()), tc::jsonb
		FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[], $6::timestamptz[], $7::text[])
			AS u(k, t, key, p, m, s, tc)
		ON CONFLICT (idempotency_key) DO NOTHING
		RETURNING id, idempotency_key`,
		kinds, types, keys, payloads, maxAtt, sched, traces)
	if err != nil {
		return nil, fmt.Errorf("postgres: outbox insert: %w", err)
	}
	byKey := make(map[string]int64, n)
	var (
		id  int64
		key string
	)
	_, err = pgx.ForEachRow(rows, []any{&id, &key}, func() error { byKey[key] = id; return nil })
	if err != nil {
		return nil, fmt.Errorf("postgres: outbox insert: %w", err)
	}
	inserted := len(byKey)
	var missing []string
	for _, k := range keys {
		if _, ok := byKey[k]; !ok {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		rows, err := q.Query(ctx, `SELECT id, idempotency_key FROM outbox WHERE idempotency_key = ANY($1::text[])`, missing)
		if err != nil {
			return nil, fmt.Errorf("postgres: outbox insert: look up existing keys: %w", err)
		}
		_, err = pgx.ForEachRow(rows, []any{&id, &key}, func() error { byKey[key] = id; return nil })
		if err != nil {
			return nil, fmt.Errorf("postgres: outbox insert: look up existing keys: %w", err)
		}
	}
	ids := make([]int64, n)
	for i, k := range keys {
		v, ok := byKey[k]
		if !ok {
			// Only possible if the row was deleted between the two statements.
			return nil, fmt.Errorf("postgres: outbox insert: key %q neither inserted nor found", k)
		}
		ids[i] = v
		msgs[i].ID = v
	}
	if inserted > 0 {
		ob.s.AfterCommit(ctx, ob.s.wake)
	}
	return ids, nil
}

// Claim leases due rows in ONE statement: the inner SELECT … FOR UPDATE SKIP LOCKED and
// the UPDATE run in the same statement (and so the same transaction), so a row locked
// by a concurrent claim is skipped and a row this claim updates has claimed_by set
// before any other claim can lock it. Rows are returned ordered by (scheduled_at, id).
func (ob *outboxStore) Claim(ctx context.Context, relayID string, limit int, lease time.Duration) ([]*store.OutboxMessage, error) {
	if relayID == "" {
		return nil, errors.New("postgres: outbox claim: relayID is empty")
	}
	if limit < 1 || limit > maxClaimLimit {
		return nil, fmt.Errorf("postgres: outbox claim: limit %d out of range [1, %d]", limit, maxClaimLimit)
	}
	if lease <= 0 {
		return nil, fmt.Errorf("postgres: outbox claim: lease %s must be positive", lease)
	}
	rows, err := ob.s.q(ctx).Query(ctx, `UPDATE outbox
		SET claimed_by = $1,
		    claim_expires_at = now() + $3::float8 * interval '1 second',
		    attempts = attempts + 1,
		    updated_at = now()
		WHERE id = ANY(ARRAY(
			SELECT id FROM outbox
			WHERE status IN ('PENDING', 'RETRY') AND claimed_by IS NULL AND scheduled_at <= now()
			ORDER BY scheduled_at, id
			LIMIT $2
			FOR UPDATE SKIP LOCKED))
		RETURNING `+outboxColumns, relayID, limit, lease.Seconds())
	if err != nil {
		return nil, fmt.Errorf("postgres: outbox claim: %w", err)
	}
	out, err := collectOutbox(rows)
	if err != nil {
		return nil, fmt.Errorf("postgres: outbox claim: %w", err)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].ScheduledAt.Equal(out[j].ScheduledAt) {
			return out[i].ScheduledAt.Before(out[j].ScheduledAt)
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// Complete marks the rows still leased by relayID COMPLETED and releases the lease.
func (ob *outboxStore) Complete(ctx context.Context, relayID string, ids ...int64) (int, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	tag, err := ob.s.q(ctx).Exec(ctx, `UPDATE outbox
		SET status = 'COMPLETED', claimed_by = NULL, claim_expires_at = NULL, updated_at = now()
		WHERE id = ANY($2::bigint[]) AND claimed_by = $1 AND status IN ('PENDING', 'RETRY')`, relayID, ids)
	if err != nil {
		return 0, fmt.Errorf("postgres: outbox complete: %w", err)
	}
	return int(tag.RowsAffected()), nil
}

// Fail records errMsg on a row leased by relayID and releases the lease: the row goes to
// RETRY at retryAt, or to DEAD_LETTER when dead. ErrNotFound if the row does not exist;
// ErrConflict if relayID no longer holds its lease (reaped and claimed elsewhere, or
// already finished): nothing is written then.
func (ob *outboxStore) Fail(ctx context.Context, relayID string, id int64, errMsg string, retryAt time.Time, dead bool) error {
	if !dead && retryAt.IsZero() {
		return fmt.Errorf("postgres: outbox fail %d: retryAt is zero for a retry", id)
	}
	q := ob.s.q(ctx)
	tag, err := q.Exec(ctx, `UPDATE outbox
		SET status = CASE WHEN $5 THEN 'DEAD_LETTER' ELSE 'RETRY' END,
		    scheduled_at = CASE WHEN $5 THEN scheduled_at ELSE $4 END,
		    last_error = $3, claimed_by = NULL, claim_expires_at = NULL, updated_at = now()
		WHERE id = $2 AND claimed_by = $1 AND status IN ('PENDING', 'RETRY')`,
		relayID, id, errMsg, nullTime(normTime(retryAt)), dead)
	if err != nil {
		return fmt.Errorf("postgres: outbox fail %d: %w", id, err)
	}
	if tag.RowsAffected() == 1 {
		return nil
	}
	return ob.missingOrConflict(ctx, id, fmt.Sprintf("not leased by %q", relayID))
}

func (ob *outboxStore) missingOrConflict(ctx context.Context, id int64, why string) error {
	var exists bool
	if err := ob.s.q(ctx).QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM outbox WHERE id = $1)`, id).Scan(&exists); err != nil {
		return fmt.Errorf("postgres: outbox row %d: %w", id, err)
	}
	if !exists {
		return fmt.Errorf("postgres: outbox row %d: %w", id, store.ErrNotFound)
	}
	return fmt.Errorf("postgres: outbox row %d %s: %w", id, why, store.ErrConflict)
}

// ReapExpired releases the leases that expired (the relay holding them died or stalled).
// The attempt the dead claim counted stays counted. Rows reaped are due again at once.
func (ob *outboxStore) ReapExpired(ctx context.Context) (int, error) {
	tag, err := ob.s.q(ctx).Exec(ctx, `UPDATE outbox
		SET claimed_by = NULL, claim_expires_at = NULL, updated_at = now()
		WHERE claimed_by IS NOT NULL AND claim_expires_at < now()`)
	if err != nil {
		return 0, fmt.Errorf("postgres: outbox reap: %w", err)
	}
	n := int(tag.RowsAffected())
	if n > 0 {
		ob.s.AfterCommit(ctx, ob.s.wake)
	}
	return n, nil
}

// ReleaseClaims releases every lease relayID holds (see store.OutboxStore).
func (ob *outboxStore) ReleaseClaims(ctx context.Context, relayID string) (int, error) {
	if relayID == "" {
		return 0, errors.New("postgres: outbox release claims: relayID is empty")
	}
	tag, err := ob.s.q(ctx).Exec(ctx, `UPDATE outbox
		SET claimed_by = NULL, claim_expires_at = NULL, updated_at = now()
		WHERE claimed_by = $1 AND status IN ('PENDING', 'RETRY')`, relayID)
	if err != nil {
		return 0, fmt.Errorf("postgres: outbox release claims of %s: %w", relayID, err)
	}
	n := int(tag.RowsAffected())
	if n > 0 {
		ob.s.AfterCommit(ctx, ob.s.wake)
	}
	return n, nil
}

// PruneFinished deletes old finished rows (see store.OutboxStore).
func (ob *outboxStore) PruneFinished(ctx context.Context, before time.Time, limit int, dryRun bool) (int, error) {
	if limit < 1 || limit > maxClaimLimit {
		return 0, fmt.Errorf("postgres: outbox prune: limit %d out of range [1, %d]", limit, maxClaimLimit)
	}
	if dryRun {
		var n int
		err := ob.s.q(ctx).QueryRow(ctx, `SELECT count(*) FROM outbox
			WHERE status IN ('COMPLETED', 'CANCELLED') AND updated_at < $1`, before).Scan(&n)
		if err != nil {
			return 0, fmt.Errorf("postgres: outbox prune (dry run): %w", err)
		}
		return n, nil
	}
	tag, err := ob.s.q(ctx).Exec(ctx, `DELETE FROM outbox WHERE id = ANY(ARRAY(
		SELECT id FROM outbox
		WHERE status IN ('COMPLETED', 'CANCELLED') AND updated_at < $1
		ORDER BY updated_at, id LIMIT $2
		FOR UPDATE SKIP LOCKED))`, before, limit)
	if err != nil {
		return 0, fmt.Errorf("postgres: outbox prune: %w", err)
	}
	return int(tag.RowsAffected()), nil
}

func (ob *outboxStore) Get(ctx context.Context, id int64) (*store.OutboxMessage, error) {
	m, err := scanOutbox(ob.s.q(ctx).QueryRow(ctx, `SELECT `+outboxColumns+` FROM outbox WHERE id = $1`, id))
	if errNoRows(err) {
		return nil, fmt.Errorf("postgres: outbox row %d: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: outbox get %d: %w", id, err)
	}
	return m, nil
}

// ListByStatus returns up to limit rows in status, oldest id first (limit 0 means 100).
func (ob *outboxStore) ListByStatus(ctx context.Context, status store.OutboxStatus, limit int) ([]*store.OutboxMessage, error) {
	switch {
	case limit < 0 || limit > maxListLimit:
		return nil, fmt.Errorf("postgres: outbox list: limit %d out of range [0, %d]", limit, maxListLimit)
	case limit == 0:
		limit = 100
	}
	rows, err := ob.s.q(ctx).Query(ctx, `SELECT `+outboxColumns+` FROM outbox WHERE status = $1
		ORDER BY id LIMIT $2`, string(status), limit)
	if err != nil {
		return nil, fmt.Errorf("postgres: outbox list %s: %w", status, err)
	}
	out, err := collectOutbox(rows)
	if err != nil {
		return nil, fmt.Errorf("postgres: outbox list %s: %w", status, err)
	}
	return out, nil
}

// Requeue moves a DEAD_LETTER row back to PENDING, due now, with zero attempts. The last
// error is kept so an operator still sees why it died until the next attempt overwrites
// it. ErrNotFound if the row does not exist, ErrConflict if it is not a dead letter.
func (ob *outboxStore) Requeue(ctx context.Context, id int64) error {
	tag, err := ob.s.q(ctx).Exec(ctx, `UPDATE outbox
		SET status = 'PENDING', attempts = 0, scheduled_at = now(),
		    claimed_by = NULL, claim_expires_at = NULL, updated_at = now()
		WHERE id = $1 AND status = 'DEAD_LETTER'`, id)
	if err != nil {
		return fmt.Errorf("postgres: outbox requeue %d: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return ob.missingOrConflict(ctx, id, "is not DEAD_LETTER")
	}
	ob.s.AfterCommit(ctx, ob.s.wake)
	return nil
}

// CountByStatus returns the number of rows in each status (statuses with no rows are
// present with 0).
func (ob *outboxStore) CountByStatus(ctx context.Context) (map[store.OutboxStatus]int, error) {
	out := map[store.OutboxStatus]int{
		store.OutboxPending: 0, store.OutboxRetry: 0, store.OutboxCompleted: 0,
		store.OutboxDeadLetter: 0, store.OutboxCancelled: 0,
	}
	rows, err := ob.s.q(ctx).Query(ctx, `SELECT status, count(*) FROM outbox GROUP BY status`)
	if err != nil {
		return nil, fmt.Errorf("postgres: outbox count: %w", err)
	}
	var (
		status string
		n      int64
	)
	if _, err := pgx.ForEachRow(rows, []any{&status, &n}, func() error {
		out[store.OutboxStatus(status)] = int(n)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("postgres: outbox count: %w", err)
	}
	return out, nil
}

// Wakeups: see notify.go.
func (ob *outboxStore) Wakeups(ctx context.Context) <-chan struct{} { return ob.s.wakeups(ctx) }
