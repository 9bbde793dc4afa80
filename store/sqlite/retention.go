package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"github.com/hodei-jobs/hodei/store"
)

// Retention (issue 14, migration 0016_retention): every statement below walks one of
// that migration's partial indexes and touches at most limit rows.

// Retention returns the retention port.
func (s *Store) Retention() store.RetentionStore { return retentionStore{s} }

type retentionStore struct{ s *Store }

// The literal lists must stay those of migration 0016's index predicates.
const (
	endedJobStates  = `('SUCCEEDED', 'FAILED', 'TIMED_OUT', 'CANCELLED')`
	endedSagaStates = `('COMPLETED', 'FAILED', 'COMPENSATED', 'COMPENSATION_FAILED', 'CANCELLED')`
	maxRetainLimit  = 10000
)

func checkRetainLimit(what string, limit int) error {
	if limit < 1 || limit > maxRetainLimit {
		return fmt.Errorf("sqlite: %s: limit %d out of range [1, %d]", what, limit, maxRetainLimit)
	}
	return nil
}

func stringsJSON(ids []string) string {
	if ids == nil {
		ids = []string{}
	}
	b, _ := json.Marshal(ids) // cannot fail
	return string(b)
}

// afterNanos is the keyset start of a zero time: before every stored one.
func afterNanos(t time.Time) int64 {
	if t.IsZero() {
		return -1 << 63
	}
	return nanos(t)
}

func (rs retentionStore) EndedJobs(ctx context.Context, before, afterAt time.Time, afterID string, limit int) ([]store.PrunableJob, error) {
	if err := checkRetainLimit("ended jobs", limit); err != nil {
		return nil, err
	}
	rows, err := rs.s.q(ctx).QueryContext(ctx, `SELECT id, attempt, finished_at FROM jobs
		WHERE state IN `+endedJobStates+` AND finished_at < ?1 AND (finished_at, id) > (?2, ?3)
		ORDER BY finished_at, id LIMIT ?4`, nanos(before), afterNanos(afterAt), afterID, limit)
	if err != nil {
		return nil, fmt.Errorf("sqlite: ended jobs: %w", err)
	}
	defer rows.Close()
	var out []store.PrunableJob
	for rows.Next() {
		var j store.PrunableJob
		var fin sql.NullInt64
		if err := rows.Scan(&j.ID, &j.Attempt, &fin); err != nil {
			return nil, fmt.Errorf("sqlite: ended jobs: %w", err)
		}
		j.FinishedAt = fromTS(fin)
		out = append(out, j)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: ended jobs: %w", err)
	}
	return out, nil
}

func (rs retentionStore) UnendedSagas(ctx context.Context, ids []string) ([]string, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	rows, err := rs.s.q(ctx).QueryContext(ctx, `SELECT id FROM sagas
		WHERE id IN (SELECT value FROM json_each(?1)) AND state NOT IN `+endedSagaStates, stringsJSON(ids))
	if err != nil {
		return nil, fmt.Errorf("sqlite: unended sagas: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("sqlite: unended sagas: %w", err)
		}
		out = append(out, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: unended sagas: %w", err)
	}
	return out, nil
}

// deleteEndedSagas deletes those of ids (a JSON array) that have ended, with their
// histories, snapshots and timers.
func deleteEndedSagas(ctx context.Context, q querier, idsJSON string) (int64, error) {
	sel := `SELECT id FROM sagas WHERE id IN (SELECT value FROM json_each(?1)) AND state IN ` + endedSagaStates
	for _, child := range []string{"saga_events", "saga_snapshots", "saga_timers"} {
		if _, err := q.ExecContext(ctx, `DELETE FROM `+child+` WHERE saga_id IN (`+sel+`)`, idsJSON); err != nil {
			return 0, err
		}
	}
	res, err := q.ExecContext(ctx, `DELETE FROM sagas WHERE id IN (`+sel+`)`, idsJSON)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (rs retentionStore) DeleteJobs(ctx context.Context, jobIDs, sagaIDs []string) (int, error) {
	if len(jobIDs) > maxRetainLimit || len(sagaIDs) > 50*maxRetainLimit {
		return 0, fmt.Errorf("sqlite: delete jobs: %d jobs, %d sagas: at most %d jobs", len(jobIDs), len(sagaIDs), maxRetainLimit)
	}
	var n int64
	err := rs.s.writeAtomic(ctx, func(ctx context.Context, q querier) error {
		if len(jobIDs) > 0 {
			ids := stringsJSON(jobIDs)
			sel := `SELECT id FROM jobs WHERE id IN (SELECT value FROM json_each(?1)) AND state IN ` + endedJobStates
			if _, err := q.ExecContext(ctx, `DELETE FROM job_logs WHERE job_id IN (`+sel+`)`, ids); err != nil {
				return err
			}
			res, err := q.ExecContext(ctx, `DELETE FROM jobs WHERE id IN (`+sel+`)`, ids)
			if err != nil {
				return err
			}
			if n, err = res.RowsAffected(); err != nil {
				return err
			}
		}
		if len(sagaIDs) == 0 {
			return nil
		}
		_, err := deleteEndedSagas(ctx, q, stringsJSON(sagaIDs))
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("sqlite: delete jobs: %w", err)
	}
	return int(n), nil
}

// workerFree: a TERMINATED worker whose current job (if any) has ended or is gone.
const workerFree = `w.state = 'TERMINATED' AND NOT EXISTS (SELECT 1 FROM jobs j
	WHERE j.id = w.job_id AND j.state NOT IN ` + endedJobStates + `)`

func (rs retentionStore) EndedWorkers(ctx context.Context, before, afterAt time.Time, afterID string, limit int) ([]store.PrunableWorker, error) {
	if err := checkRetainLimit("ended workers", limit); err != nil {
		return nil, err
	}
	rows, err := rs.s.q(ctx).QueryContext(ctx, `SELECT w.id, w.updated_at FROM workers w
		WHERE `+workerFree+` AND w.updated_at < ?1 AND (w.updated_at, w.id) > (?2, ?3)
		ORDER BY w.updated_at, w.id LIMIT ?4`, nanos(before), afterNanos(afterAt), afterID, limit)
	if err != nil {
		return nil, fmt.Errorf("sqlite: ended workers: %w", err)
	}
	defer rows.Close()
	var out []store.PrunableWorker
	for rows.Next() {
		var w store.PrunableWorker
		var at int64
		if err := rows.Scan(&w.ID, &at); err != nil {
			return nil, fmt.Errorf("sqlite: ended workers: %w", err)
		}
		w.UpdatedAt = time.Unix(0, at).UTC()
		out = append(out, w)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: ended workers: %w", err)
	}
	return out, nil
}

func (rs retentionStore) DeleteWorkers(ctx context.Context, ids []string) (int, error) {
	if len(ids) > maxRetainLimit {
		return 0, fmt.Errorf("sqlite: delete workers: %d workers: at most %d", len(ids), maxRetainLimit)
	}
	if len(ids) == 0 {
		return 0, nil
	}
	var n int64
	err := rs.s.writeAtomic(ctx, func(ctx context.Context, q querier) error {
		js := stringsJSON(ids)
		sel := `SELECT w.id FROM workers w WHERE w.id IN (SELECT value FROM json_each(?1)) AND ` + workerFree
		if _, err := q.ExecContext(ctx, `DELETE FROM worker_credentials WHERE worker_id IN (`+sel+`)`, js); err != nil {
			return err
		}
		res, err := q.ExecContext(ctx, `DELETE FROM workers WHERE id IN (`+sel+`)`, js)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("sqlite: delete workers: %w", err)
	}
	return int(n), nil
}

func (rs retentionStore) PruneSagas(ctx context.Context, before time.Time, exceptTypes []string, limit int, dryRun bool) (int, error) {
	if err := checkRetainLimit("saga prune", limit); err != nil {
		return 0, err
	}
	var n int64
	var err error
	if dryRun {
		err = rs.s.q(ctx).QueryRowContext(ctx, `SELECT count(*) FROM sagas
			WHERE state IN `+endedSagaStates+` AND updated_at < ?1
			AND type NOT IN (SELECT value FROM json_each(?2))`, nanos(before), stringsJSON(exceptTypes)).Scan(&n)
	} else {
		err = rs.s.writeAtomic(ctx, func(ctx context.Context, q querier) error {
			var ids string
			err := q.QueryRowContext(ctx, `SELECT coalesce(json_group_array(id), '[]') FROM (SELECT id FROM sagas
				WHERE state IN `+endedSagaStates+` AND updated_at < ?1 AND type NOT IN (SELECT value FROM json_each(?3))
				ORDER BY updated_at, id LIMIT ?2)`, nanos(before), limit, stringsJSON(exceptTypes)).Scan(&ids)
			if err != nil {
				return err
			}
			n, err = deleteEndedSagas(ctx, q, ids)
			return err
		})
	}
	if err != nil {
		return 0, fmt.Errorf("sqlite: saga prune: %w", err)
	}
	return int(n), nil
}

// logLineFree: a log line of a job that ended or no longer exists.
const logLineFree = `NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = l.job_id AND j.state NOT IN ` + endedJobStates + `)`

func (rs retentionStore) PruneLogs(ctx context.Context, before time.Time, limit int, dryRun bool) (int, error) {
	if err := checkRetainLimit("log prune", limit); err != nil {
		return 0, err
	}
	var n int64
	var err error
	if dryRun {
		err = rs.s.q(ctx).QueryRowContext(ctx, `SELECT count(*) FROM job_logs l WHERE l.time < ?1 AND `+logLineFree,
			nanos(before)).Scan(&n)
	} else {
		err = rs.s.write(ctx, func(ctx context.Context, q querier) error {
			res, err := q.ExecContext(ctx, `DELETE FROM job_logs WHERE (job_id, seq) IN (
				SELECT l.job_id, l.seq FROM job_logs l WHERE l.time < ?1 AND `+logLineFree+`
				ORDER BY l.time LIMIT ?2)`, nanos(before), limit)
			if err != nil {
				return err
			}
			n, err = res.RowsAffected()
			return err
		})
	}
	if err != nil {
		return 0, fmt.Errorf("sqlite: log prune: %w", err)
	}
	return int(n), nil
}

// keyFree: an idempotency key no unfinished outbox row carries; for a job's result key
// (job.finished/<job>/<attempt>), whose job has ended or is gone; and for a saga step's
// key (<saga>/<step>/…), whose saga has ended or is gone.
const keyFree = `NOT EXISTS (SELECT 1 FROM outbox o WHERE o.idempotency_key = k.key
		AND o.status IN ('PENDING', 'RETRY', 'DEAD_LETTER'))
	AND NOT (k.key LIKE 'job.finished/%' AND EXISTS (SELECT 1 FROM jobs j
		WHERE j.id = substr(k.key, 14, instr(substr(k.key, 14), '/') - 1) AND j.state NOT IN ` + endedJobStates + `))
	AND NOT EXISTS (SELECT 1 FROM sagas s WHERE s.id = substr(k.key, 1, instr(k.key, '/') - 1)
		AND s.state NOT IN ` + endedSagaStates + `)`

func (rs retentionStore) PruneIdempotencyKeys(ctx context.Context, before time.Time, limit int, dryRun bool) (int, error) {
	if err := checkRetainLimit("idempotency key prune", limit); err != nil {
		return 0, err
	}
	var n int64
	var err error
	if dryRun {
		err = rs.s.q(ctx).QueryRowContext(ctx, `SELECT count(*) FROM idempotency_keys k WHERE k.created_at < ?1 AND `+keyFree,
			nanos(before)).Scan(&n)
	} else {
		err = rs.s.write(ctx, func(ctx context.Context, q querier) error {
			res, err := q.ExecContext(ctx, `DELETE FROM idempotency_keys WHERE key IN (
				SELECT k.key FROM idempotency_keys k WHERE k.created_at < ?1 AND `+keyFree+`
				ORDER BY k.created_at LIMIT ?2)`, nanos(before), limit)
			if err != nil {
				return err
			}
			n, err = res.RowsAffected()
			return err
		})
	}
	if err != nil {
		return 0, fmt.Errorf("sqlite: idempotency key prune: %w", err)
	}
	return int(n), nil
}
