package sqlite

import (
	"context"
	"crypto/subtle"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/store"
)

// Job path ports: logs, worker credentials, scheduling (migration 0003_jobpath).

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

// Append inserts the lines on the writer connection, skipping existing (job_id, seq)
// pairs, all or none.
func (ls logStore) Append(ctx context.Context, lines ...*store.LogLine) (int, error) {
	if len(lines) == 0 {
		return 0, nil
	}
	t := now()
	for i, l := range lines {
		if l == nil || l.JobID == "" || l.Seq < 1 {
			return 0, fmt.Errorf("sqlite: append logs: line %d needs a JobID and Seq >= 1", i)
		}
	}
	var inserted int64
	write := ls.s.write
	if len(lines) > 1 {
		write = ls.s.writeAtomic
	}
	err := write(ctx, func(ctx context.Context, q querier) error {
		inserted = 0
		insert, done, err := batchExec(ctx, q, `INSERT INTO job_logs (job_id, seq, stream, line, time)
			VALUES (?, ?, ?, ?, ?) ON CONFLICT (job_id, seq) DO NOTHING`, len(lines))
		if err != nil {
			return err
		}
		defer done()
		for _, l := range lines {
			at := normTime(l.Time)
			if at.IsZero() {
				at = t
			}
			res, err := insert(ctx, l.JobID, l.Seq, l.Stream, l.Line, nanos(at))
			if err != nil {
				return err
			}
			n, err := res.RowsAffected()
			if err != nil {
				return err
			}
			inserted += n
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("sqlite: append %d log lines: %w", len(lines), err)
	}
	return int(inserted), nil
}

func (ls logStore) List(ctx context.Context, jobID string, afterSeq int64, limit int) ([]*store.LogLine, error) {
	switch {
	case limit < 0 || limit > maxLogLimit:
		return nil, fmt.Errorf("sqlite: list logs of job %s: limit %d out of range [0, %d]", jobID, limit, maxLogLimit)
	case limit == 0:
		limit = defaultLogLimit
	}
	rows, err := ls.s.q(ctx).QueryContext(ctx, `SELECT job_id, seq, stream, line, time FROM job_logs
		WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?`, jobID, afterSeq, limit)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list logs of job %s: %w", jobID, err)
	}
	defer rows.Close()
	var out []*store.LogLine
	for rows.Next() {
		var (
			l  store.LogLine
			at int64
		)
		if err := rows.Scan(&l.JobID, &l.Seq, &l.Stream, &l.Line, &at); err != nil {
			return nil, fmt.Errorf("sqlite: list logs of job %s: %w", jobID, err)
		}
		l.Time = fromTS(sql.NullInt64{Int64: at, Valid: true})
		out = append(out, &l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: list logs of job %s: %w", jobID, err)
	}
	return out, nil
}

type credentialStore struct{ s *Store }

// blob binds b, or NULL when it is empty.
func blob(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return b
}

func (cs credentialStore) SetOTP(ctx context.Context, workerID string, otpHash []byte, expiresAt time.Time) error {
	if workerID == "" {
		return errors.New("sqlite: set one-time password: workerID is empty")
	}
	err := cs.s.write(ctx, func(ctx context.Context, q querier) error {
		t := nanos(now())
		_, err := q.ExecContext(ctx, `INSERT INTO worker_credentials (worker_id, otp_hash, otp_expires_at,
			created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4)
			ON CONFLICT (worker_id) DO UPDATE SET otp_hash = excluded.otp_hash,
				otp_expires_at = excluded.otp_expires_at, otp_used_at = NULL, session_hash = NULL,
				updated_at = excluded.updated_at`, workerID, blob(otpHash), ts(normTime(expiresAt)), t)
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite: set one-time password of worker %s: %w", workerID, err)
	}
	return nil
}

// RedeemOTP reads and updates the row on the writer connection, so concurrent redeems
// run one after the other and exactly one can succeed.
func (cs credentialStore) RotateOTP(ctx context.Context, workerID string, otpHash []byte, expiresAt time.Time) error {
	if len(otpHash) == 0 {
		return fmt.Errorf("sqlite: rotate one-time password of worker %s: otpHash is empty", workerID)
	}
	err := cs.s.write(ctx, func(ctx context.Context, q querier) error {
		var used sql.NullInt64
		err := q.QueryRowContext(ctx, `SELECT otp_used_at FROM worker_credentials WHERE worker_id = ?`, workerID).Scan(&used)
		if noRows(err) {
			return store.ErrNotFound
		}
		if err != nil {
			return err
		}
		if used.Valid {
			return store.ErrOTPUsed
		}
		_, err = q.ExecContext(ctx, `UPDATE worker_credentials SET otp_hash = ?, otp_expires_at = ?, updated_at = ?
			WHERE worker_id = ?`, blob(otpHash), ts(normTime(expiresAt)), nanos(now()), workerID)
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite: rotate one-time password of worker %s: %w", workerID, err)
	}
	return nil
}

func (cs credentialStore) RedeemOTP(ctx context.Context, workerID string, otpHash, sessionHash []byte, at time.Time) error {
	if len(sessionHash) == 0 {
		return fmt.Errorf("sqlite: redeem one-time password of worker %s: sessionHash is empty", workerID)
	}
	return cs.s.write(ctx, func(ctx context.Context, q querier) error {
		var (
			hash          []byte
			expires, used sql.NullInt64
		)
		err := q.QueryRowContext(ctx, `SELECT otp_hash, otp_expires_at, otp_used_at FROM worker_credentials
			WHERE worker_id = ?`, workerID).Scan(&hash, &expires, &used)
		if noRows(err) {
			return fmt.Errorf("sqlite: worker %s has no credentials: %w", workerID, store.ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("sqlite: redeem one-time password of worker %s: %w", workerID, err)
		}
		if len(hash) == 0 || subtle.ConstantTimeCompare(hash, otpHash) != 1 {
			return fmt.Errorf("sqlite: one-time password of worker %s does not match: %w", workerID, store.ErrNotFound)
		}
		if used.Valid {
			return fmt.Errorf("sqlite: worker %s (used at %s): %w", workerID,
				fromTS(used).Format(time.RFC3339Nano), store.ErrOTPUsed)
		}
		if !expires.Valid || !at.Before(fromTS(expires)) {
			return fmt.Errorf("sqlite: worker %s (expired at %s): %w", workerID,
				fromTS(expires).Format(time.RFC3339Nano), store.ErrOTPExpired)
		}
		_, err = q.ExecContext(ctx, `UPDATE worker_credentials SET otp_used_at = ?, session_hash = ?,
			updated_at = ? WHERE worker_id = ?`, nanos(at), sessionHash, nanos(now()), workerID)
		if isUniqueViolation(err) {
			return fmt.Errorf("sqlite: session of worker %s: %w", workerID, store.ErrConflict)
		}
		if err != nil {
			return fmt.Errorf("sqlite: redeem one-time password of worker %s: %w", workerID, err)
		}
		return nil
	})
}

func (cs credentialStore) WorkerForSession(ctx context.Context, sessionHash []byte) (string, error) {
	if len(sessionHash) == 0 {
		return "", fmt.Errorf("sqlite: empty session hash: %w", store.ErrNotFound)
	}
	var id string
	err := cs.s.q(ctx).QueryRowContext(ctx, `SELECT worker_id FROM worker_credentials WHERE session_hash = ?`,
		sessionHash).Scan(&id)
	if noRows(err) {
		return "", fmt.Errorf("sqlite: unknown session: %w", store.ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("sqlite: look up session: %w", err)
	}
	return id, nil
}

func (cs credentialStore) Revoke(ctx context.Context, workerID string) error {
	err := cs.s.write(ctx, func(ctx context.Context, q querier) error {
		_, err := q.ExecContext(ctx, `DELETE FROM worker_credentials WHERE worker_id = ?`, workerID)
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite: revoke credentials of worker %s: %w", workerID, err)
	}
	return nil
}

type schedulingStore struct{ s *Store }

func (ss schedulingStore) tx(ctx context.Context, op string) (*txState, error) {
	st := ss.s.txFrom(ctx)
	if st == nil {
		return nil, fmt.Errorf("sqlite: scheduling %s needs a transaction in ctx (Store.InTx)", op)
	}
	return st, nil
}

// Lock takes the writer connection for ctx's transaction (waiting for it): the single
// writer is the scheduler's lock, held until the transaction ends.
func (ss schedulingStore) Lock(ctx context.Context) error {
	st, err := ss.tx(ctx, "Lock")
	if err != nil {
		return err
	}
	if _, err := st.writer(ctx); err != nil {
		return fmt.Errorf("sqlite: take scheduler lock: %w", err)
	}
	return nil
}

func (ss schedulingStore) CountActiveWorkers(ctx context.Context) (int, error) {
	var n int
	if err := ss.s.q(ctx).QueryRowContext(ctx, `SELECT count(*) FROM workers WHERE state <> ?`,
		string(domain.WorkerTerminated)).Scan(&n); err != nil {
		return 0, fmt.Errorf("sqlite: count active workers: %w", err)
	}
	return n, nil
}

// ClaimPending returns up to limit PENDING jobs, highest priority first, then oldest,
// skipping jobs claimed by other open transactions of this Store, and marks the jobs
// it returns as claimed by ctx's transaction until it ends (SKIP LOCKED, in process).
// It does not take the writer: a claim of another transaction does not wait for it.
func (ss schedulingStore) ClaimPending(ctx context.Context, limit int) ([]*domain.Job, error) {
	return ss.ClaimPendingExcept(ctx, limit, nil)
}

func (ss schedulingStore) ClaimPendingExcept(ctx context.Context, limit int, except []string) ([]*domain.Job, error) {
	st, err := ss.tx(ctx, "ClaimPending")
	if err != nil {
		return nil, err
	}
	if limit < 1 || limit > maxPageSize {
		return nil, fmt.Errorf("sqlite: claim pending jobs: limit %d out of range [1, %d]", limit, maxPageSize)
	}
	s := ss.s
	s.heldMu.Lock()
	defer s.heldMu.Unlock()
	others := []string{}
	for id, holder := range s.held {
		if holder != st {
			others = append(others, id)
		}
	}
	skip, _ := json.Marshal(others) // cannot fail
	if except == nil {
		except = []string{}
	}
	skipNS, _ := json.Marshal(except) // cannot fail
	rows, err := s.q(ctx).QueryContext(ctx, `SELECT `+jobColumns+` FROM jobs INDEXED BY jobs_pending_sched_idx
		WHERE state = 'PENDING' AND id NOT IN (SELECT value FROM json_each(?))
		AND `+jobNamespace("")+` NOT IN (SELECT value FROM json_each(?))
		ORDER BY priority DESC, created_at, id LIMIT ?`, string(skip), string(skipNS), limit)
	if err != nil {
		return nil, fmt.Errorf("sqlite: claim pending jobs: %w", err)
	}
	out, err := collectJobs(rows)
	if err != nil {
		return nil, fmt.Errorf("sqlite: claim pending jobs: %w", err)
	}
	st.mu.Lock()
	for _, j := range out {
		if s.held[j.ID] != st {
			s.held[j.ID] = st
			st.held = append(st.held, j.ID)
		}
	}
	st.mu.Unlock()
	return out, nil
}
