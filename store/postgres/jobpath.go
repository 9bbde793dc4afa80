package postgres

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/store"
)

// Job path ports: logs, worker credentials, scheduling (migration 0003_jobpath).

// schedulerLockKey is the pg_advisory_xact_lock key of the capacity scheduler
// ("hodeisch" in ASCII).
const schedulerLockKey int64 = 0x686f646569736368

// Limits of LogStore.List.
const (
	defaultLogLimit = 1000
	maxLogLimit     = 10000
)

// Logs returns the job output port.
func (s *Store) Logs() store.LogStore { return logStore{s} }

// Credentials returns the worker credential port.
func (s *Store) Credentials() store.CredentialStore { return credentialStore{s} }

// Scheduling returns the capacity scheduler's port.
func (s *Store) Scheduling() store.SchedulingStore { return schedulingStore{s} }

type logStore struct{ s *Store }

// Append inserts all lines with one statement (arrays unnested), skipping existing
// (job_id, seq) pairs.
func (ls logStore) Append(ctx context.Context, lines ...*store.LogLine) (int, error) {
	if len(lines) == 0 {
		return 0, nil
	}
	var (
		ids     = make([]string, len(lines))
		seqs    = make([]int64, len(lines))
		streams = make([]string, len(lines))
		texts   = make([]string, len(lines))
		times   = make([]time.Time, len(lines))
	)
	t := now()
	for i, l := range lines {
		if l == nil || l.JobID == "" || l.Seq < 1 {
			return 0, fmt.Errorf("postgres: append logs: line %d needs a JobID and Seq >= 1", i)
		}
		ids[i], seqs[i], streams[i], texts[i] = l.JobID, l.Seq, l.Stream, l.Line
		times[i] = normTime(l.Time)
		if times[i].IsZero() {
			times[i] = t
		}
	}
	tag, err := ls.s.q(ctx).Exec(ctx, `INSERT INTO job_logs (job_id, seq, stream, line, time)
		SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::timestamptz[])
		ON CONFLICT (job_id, seq) DO NOTHING`, ids, seqs, streams, texts, times)
	if err != nil {
		return 0, fmt.Errorf("postgres: append %d log lines: %w", len(lines), err)
	}
	return int(tag.RowsAffected()), nil
}

func (ls logStore) List(ctx context.Context, jobID string, afterSeq int64, limit int) ([]*store.LogLine, error) {
	switch {
	case limit < 0 || limit > maxLogLimit:
		return nil, fmt.Errorf("postgres: list logs of job %s: limit %d out of range [0, %d]", jobID, limit, maxLogLimit)
	case limit == 0:
		limit = defaultLogLimit
	}
	rows, err := ls.s.q(ctx).Query(ctx, `SELECT job_id, seq, stream, line, time FROM job_logs
		WHERE job_id = $1 AND seq > $2 ORDER BY seq LIMIT $3`, jobID, afterSeq, limit)
	if err != nil {
		return nil, fmt.Errorf("postgres: list logs of job %s: %w", jobID, err)
	}
	defer rows.Close()
	var out []*store.LogLine
	for rows.Next() {
		var l store.LogLine
		if err := rows.Scan(&l.JobID, &l.Seq, &l.Stream, &l.Line, &l.Time); err != nil {
			return nil, fmt.Errorf("postgres: list logs of job %s: %w", jobID, err)
		}
		l.Time = l.Time.UTC()
		out = append(out, &l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: list logs of job %s: %w", jobID, err)
	}
	return out, nil
}

type credentialStore struct{ s *Store }

func (cs credentialStore) SetOTP(ctx context.Context, workerID string, otpHash []byte, expiresAt time.Time) error {
	if workerID == "" {
		return errors.New("postgres: set one-time password: workerID is empty")
	}
	_, err := cs.s.q(ctx).Exec(ctx, `INSERT INTO worker_credentials (worker_id, otp_hash, otp_expires_at)
		VALUES ($1, $2, $3)
		ON CONFLICT (worker_id) DO UPDATE SET otp_hash = EXCLUDED.otp_hash,
			otp_expires_at = EXCLUDED.otp_expires_at, otp_used_at = NULL, session_hash = NULL,
			updated_at = now()`, workerID, otpHash, nullTime(normTime(expiresAt)))
	if err != nil {
		return fmt.Errorf("postgres: set one-time password of worker %s: %w", workerID, err)
	}
	return nil
}

func (cs credentialStore) RotateOTP(ctx context.Context, workerID string, otpHash []byte, expiresAt time.Time) error {
	if len(otpHash) == 0 {
		return fmt.Errorf("postgres: rotate one-time password of worker %s: otpHash is empty", workerID)
	}
	var used bool
	err := cs.s.q(ctx).QueryRow(ctx, `WITH cur AS (
			SELECT worker_id, otp_used_at IS NOT NULL AS used FROM worker_credentials WHERE worker_id = $1 FOR UPDATE
		), upd AS (
			UPDATE worker_credentials c SET otp_hash = $2, otp_expires_at = $3, updated_at = now()
			FROM cur WHERE c.worker_id = cur.worker_id AND NOT cur.used
		)
		SELECT used FROM cur`, workerID, otpHash, nullTime(normTime(expiresAt))).Scan(&used)
	if errNoRows(err) {
		return fmt.Errorf("postgres: rotate one-time password of worker %s: %w", workerID, store.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("postgres: rotate one-time password of worker %s: %w", workerID, err)
	}
	if used {
		return fmt.Errorf("postgres: rotate one-time password of worker %s: %w", workerID, store.ErrOTPUsed)
	}
	return nil
}

func (cs credentialStore) RedeemOTP(ctx context.Context, workerID string, otpHash, sessionHash []byte, at time.Time) error {
	if len(sessionHash) == 0 {
		return fmt.Errorf("postgres: redeem one-time password of worker %s: sessionHash is empty", workerID)
	}
	return cs.s.InTx(ctx, func(ctx context.Context) error {
		q := cs.s.q(ctx)
		var (
			hash    []byte
			expires pgtype.Timestamptz
			used    pgtype.Timestamptz
		)
		err := q.QueryRow(ctx, `SELECT otp_hash, otp_expires_at, otp_used_at FROM worker_credentials
			WHERE worker_id = $1 FOR UPDATE`, workerID).Scan(&hash, &expires, &used)
		if errNoRows(err) {
			return fmt.Errorf("postgres: worker %s has no credentials: %w", workerID, store.ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("postgres: redeem one-time password of worker %s: %w", workerID, err)
		}
		if len(hash) == 0 || subtle.ConstantTimeCompare(hash, otpHash) != 1 {
			return fmt.Errorf("postgres: one-time password of worker %s does not match: %w", workerID, store.ErrNotFound)
		}
		if used.Valid {
			return fmt.Errorf("postgres: worker %s (used at %s): %w", workerID,
				used.Time.UTC().Format(time.RFC3339Nano), store.ErrOTPUsed)
		}
		if !expires.Valid || !at.Before(expires.Time) {
			return fmt.Errorf("postgres: worker %s (expired at %s): %w", workerID,
				fromNullTime(expires).Format(time.RFC3339Nano), store.ErrOTPExpired)
		}
		_, err = q.Exec(ctx, `UPDATE worker_credentials SET otp_used_at = $2, session_hash = $3,
			updated_at = now() WHERE worker_id = $1`, workerID, normTime(at), sessionHash)
		if isUniqueViolation(err) {
			return fmt.Errorf("postgres: session of worker %s: %w", workerID, store.ErrConflict)
		}
		if err != nil {
			return fmt.Errorf("postgres: redeem one-time password of worker %s: %w", workerID, err)
		}
		return nil
	})
}

func (cs credentialStore) WorkerForSession(ctx context.Context, sessionHash []byte) (string, error) {
	if len(sessionHash) == 0 {
		return "", fmt.Errorf("postgres: empty session hash: %w", store.ErrNotFound)
	}
	var id string
	err := cs.s.q(ctx).QueryRow(ctx, `SELECT worker_id FROM worker_credentials WHERE session_hash = $1`,
		sessionHash).Scan(&id)
	if errNoRows(err) {
		return "", fmt.Errorf("postgres: unknown session: %w", store.ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("postgres: look up session: %w", err)
	}
	return id, nil
}

func (cs credentialStore) Revoke(ctx context.Context, workerID string) error {
	if _, err := cs.s.q(ctx).Exec(ctx, `DELETE FROM worker_credentials WHERE worker_id = $1`, workerID); err != nil {
		return fmt.Errorf("postgres: revoke credentials of worker %s: %w", workerID, err)
	}
	return nil
}

type schedulingStore struct{ s *Store }

func (ss schedulingStore) needTx(ctx context.Context, op string) error {
	if ss.s.txFrom(ctx) == nil {
		return fmt.Errorf("postgres: scheduling %s needs a transaction in ctx (Store.InTx)", op)
	}
	return nil
}

func (ss schedulingStore) Lock(ctx context.Context) error {
	if err := ss.needTx(ctx, "Lock"); err != nil {
		return err
	}
	if _, err := ss.s.q(ctx).Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, schedulerLockKey); err != nil {
		return fmt.Errorf("postgres: take scheduler lock: %w", err)
	}
	return nil
}

func (ss schedulingStore) CountActiveWorkers(ctx context.Context) (int, error) {
	var n int
	if err := ss.s.q(ctx).QueryRow(ctx, `SELECT count(*) FROM workers WHERE state <> $1`,
		string(domain.WorkerTerminated)).Scan(&n); err != nil {
		return 0, fmt.Errorf("postgres: count active workers: %w", err)
	}
	return n, nil
}

func (ss schedulingStore) ClaimPending(ctx context.Context, limit int) ([]*domain.Job, error) {
	return ss.ClaimPendingExcept(ctx, limit, nil)
}

func (ss schedulingStore) ClaimPendingExcept(ctx context.Context, limit int, except []string) ([]*domain.Job, error) {
	if except == nil {
		except = []string{}
	}
	if err := ss.needTx(ctx, "ClaimPending"); err != nil {
		return nil, err
	}
	if limit < 1 || limit > maxPageSize {
		return nil, fmt.Errorf("postgres: claim pending jobs: limit %d out of range [1, %d]", limit, maxPageSize)
	}
	rows, err := ss.s.q(ctx).Query(ctx, `SELECT `+jobColumns+` FROM jobs WHERE state = $1
		AND NOT (`+jobNamespace("")+` = ANY($3))
		ORDER BY priority DESC, created_at, id LIMIT $2 FOR UPDATE SKIP LOCKED`, string(domain.JobPending), limit, except)
	if err != nil {
		return nil, fmt.Errorf("postgres: claim pending jobs: %w", err)
	}
	defer rows.Close()
	var out []*domain.Job
	for rows.Next() {
		j, err := scanJob(rows)
		if err != nil {
			return nil, fmt.Errorf("postgres: claim pending jobs: %w", err)
		}
		out = append(out, j)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: claim pending jobs: %w", err)
	}
	return out, nil
}
