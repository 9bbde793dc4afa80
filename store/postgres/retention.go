package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/hodei-jobs/hodei/store"
)

// Retention (issue 14, migration 0016_retention): every statement below walks one of
// that migration's partial indexes and touches at most limit rows.

// Retention returns the retention port.
func (s *Store) Retention() store.RetentionStore { return retentionStore{s} }

type retentionStore struct{ s *Store }

// The literal lists must stay those of migration 0016's index predicates, or the
// planner cannot use the indexes.
const (
	endedJobStates  = `('SUCCEEDED', 'FAILED', 'TIMED_OUT', 'CANCELLED')`
	endedSagaStates = `('COMPLETED', 'FAILED', 'COMPENSATED', 'COMPENSATION_FAILED', 'CANCELLED')`
	maxRetainLimit  = 10000
)

func checkRetainLimit(what string, limit int) error {
	if limit < 1 || limit > maxRetainLimit {
		return fmt.Errorf("postgres: %s: limit %d out of range [1, %d]", what, limit, maxRetainLimit)
	}
	return nil
}

func (rs retentionStore) EndedJobs(ctx context.Context, before, afterAt time.Time, afterID string, limit int) ([]store.PrunableJob, error) {
	if err := checkRetainLimit("ended jobs", limit); err != nil {
		return nil, err
	}
	rows, err := rs.s.q(ctx).Query(ctx, `SELECT id, attempt, finished_at FROM jobs
		WHERE state IN `+endedJobStates+` AND finished_at < $1 AND (finished_at, id) > ($2, $3)
		ORDER BY finished_at, id LIMIT $4`, before.UTC(), afterAt.UTC(), afterID, limit)
	if err != nil {
		return nil, fmt.Errorf("postgres: ended jobs: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.PrunableJob, error) {
		var j store.PrunableJob
		err := r.Scan(&j.ID, &j.Attempt, &j.FinishedAt)
		j.FinishedAt = j.FinishedAt.UTC()
		return j, err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: ended jobs: %w", err)
	}
	return out, nil
}

func (rs retentionStore) UnendedSagas(ctx context.Context, ids []string) ([]string, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	rows, err := rs.s.q(ctx).Query(ctx, `SELECT id FROM sagas
		WHERE id = ANY($1) AND state NOT IN `+endedSagaStates, ids)
	if err != nil {
		return nil, fmt.Errorf("postgres: unended sagas: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("postgres: unended sagas: %w", err)
	}
	return out, nil
}

// deleteEndedSagas deletes those of ids that have ended, with their histories
// (saga_events has no foreign key since 0015); snapshots and timers cascade.
func deleteEndedSagas(ctx context.Context, q querier, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	_, err := q.Exec(ctx, `WITH s AS (DELETE FROM sagas WHERE id = ANY($1) AND state IN `+endedSagaStates+` RETURNING id)
		DELETE FROM saga_events WHERE saga_id IN (SELECT id FROM s)`, ids)
	return err
}

func (rs retentionStore) DeleteJobs(ctx context.Context, jobIDs, sagaIDs []string) (int, error) {
	if len(jobIDs) > maxRetainLimit || len(sagaIDs) > 50*maxRetainLimit {
		return 0, fmt.Errorf("postgres: delete jobs: %d jobs, %d sagas: at most %d jobs", len(jobIDs), len(sagaIDs), maxRetainLimit)
	}
	var n int
	err := rs.s.InTx(ctx, func(ctx context.Context) error {
		q := rs.s.q(ctx)
		if len(jobIDs) > 0 {
			err := q.QueryRow(ctx, `WITH j AS (DELETE FROM jobs WHERE id = ANY($1) AND state IN `+endedJobStates+` RETURNING id),
				l AS (DELETE FROM job_logs WHERE job_id IN (SELECT id FROM j))
				SELECT count(*) FROM j`, jobIDs).Scan(&n)
			if err != nil {
				return err
			}
		}
		return deleteEndedSagas(ctx, q, sagaIDs)
	})
	if err != nil {
		return 0, fmt.Errorf("postgres: delete jobs: %w", err)
	}
	return n, nil
}

// workerFree: a TERMINATED worker whose current job (if any) has ended or is gone.
const workerFree = `w.state = 'TERMINATED' AND NOT EXISTS (SELECT 1 FROM jobs j
	WHERE j.id = w.job_id AND j.state NOT IN ` + endedJobStates + `)`

func (rs retentionStore) EndedWorkers(ctx context.Context, before, afterAt time.Time, afterID string, limit int) ([]store.PrunableWorker, error) {
	if err := checkRetainLimit("ended workers", limit); err != nil {
		return nil, err
	}
	rows, err := rs.s.q(ctx).Query(ctx, `SELECT w.id, w.updated_at FROM workers w
		WHERE `+workerFree+` AND w.updated_at < $1 AND (w.updated_at, w.id) > ($2, $3)
		ORDER BY w.updated_at, w.id LIMIT $4`, before.UTC(), afterAt.UTC(), afterID, limit)
	if err != nil {
		return nil, fmt.Errorf("postgres: ended workers: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.PrunableWorker, error) {
		var w store.PrunableWorker
		err := r.Scan(&w.ID, &w.UpdatedAt)
		w.UpdatedAt = w.UpdatedAt.UTC()
		return w, err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: ended workers: %w", err)
	}
	return out, nil
}

func (rs retentionStore) DeleteWorkers(ctx context.Context, ids []string) (int, error) {
	if len(ids) > maxRetainLimit {
		return 0, fmt.Errorf("postgres: delete workers: %d workers: at most %d", len(ids), maxRetainLimit)
	}
	if len(ids) == 0 {
		return 0, nil
	}
	var n int
	err := rs.s.q(ctx).QueryRow(ctx, `WITH d AS (DELETE FROM workers w WHERE w.id = ANY($1) AND `+workerFree+` RETURNING w.id),
		c AS (DELETE FROM worker_credentials WHERE worker_id IN (SELECT id FROM d))
		SELECT count(*) FROM d`, ids).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("postgres: delete workers: %w", err)
	}
	return n, nil
}

func (rs retentionStore) PruneSagas(ctx context.Context, before time.Time, exceptTypes []string, limit int, dryRun bool) (int, error) {
	if err := checkRetainLimit("saga prune", limit); err != nil {
		return 0, err
	}
	if exceptTypes == nil {
		exceptTypes = []string{}
	}
	var n int
	var err error
	if dryRun {
		err = rs.s.q(ctx).QueryRow(ctx, `SELECT count(*) FROM sagas
			WHERE state IN `+endedSagaStates+` AND updated_at < $1 AND type <> ALL($2)`, before.UTC(), exceptTypes).Scan(&n)
	} else {
		err = rs.s.q(ctx).QueryRow(ctx, `WITH s AS (DELETE FROM sagas WHERE id = ANY(ARRAY(
				SELECT id FROM sagas WHERE state IN `+endedSagaStates+` AND updated_at < $1 AND type <> ALL($3)
				ORDER BY updated_at, id LIMIT $2 FOR UPDATE SKIP LOCKED)) RETURNING id),
			e AS (DELETE FROM saga_events WHERE saga_id IN (SELECT id FROM s))
			SELECT count(*) FROM s`, before.UTC(), limit, exceptTypes).Scan(&n)
	}
	if err != nil {
		return 0, fmt.Errorf("postgres: saga prune: %w", err)
	}
	return n, nil
}

// logLineFree: a log line of a job that ended or no longer exists.
const logLineFree = `NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = l.job_id AND j.state NOT IN ` + endedJobStates + `)`

func (rs retentionStore) PruneLogs(ctx context.Context, before time.Time, limit int, dryRun bool) (int, error) {
	if err := checkRetainLimit("log prune", limit); err != nil {
		return 0, err
	}
	var n int
	var err error
	if dryRun {
		err = rs.s.q(ctx).QueryRow(ctx, `SELECT count(*) FROM job_logs l WHERE l.time < $1 AND `+logLineFree,
			before.UTC()).Scan(&n)
	} else {
		var tag interface{ RowsAffected() int64 }
		tag, err = rs.s.q(ctx).Exec(ctx, `DELETE FROM job_logs WHERE (job_id, seq) IN (
			SELECT l.job_id, l.seq FROM job_logs l WHERE l.time < $1 AND `+logLineFree+`
			ORDER BY l.time LIMIT $2)`, before.UTC(), limit)
		if err == nil {
			n = int(tag.RowsAffected())
		}
	}
	if err != nil {
		return 0, fmt.Errorf("postgres: log prune: %w", err)
	}
	return n, nil
}

// keyFree: an idempotency key no unfinished outbox row carries; for a job's result key
// (job.finished/<job>/<attempt>), whose job has ended or is gone; and for a saga step's
// key (<saga>/<step>/…), whose saga has ended or is gone.
const keyFree = `NOT EXISTS (SELECT 1 FROM outbox o WHERE o.idempotency_key = k.key
		AND o.status IN ('PENDING', 'RETRY', 'DEAD_LETTER'))
	AND NOT (k.key LIKE 'job.finished/%' AND EXISTS (SELECT 1 FROM jobs j
		WHERE j.id = split_part(k.key, '/', 2) AND j.state NOT IN ` + endedJobStates + `))
	AND NOT EXISTS (SELECT 1 FROM sagas s WHERE s.id = split_part(k.key, '/', 1)
		AND s.state NOT IN ` + endedSagaStates + `)`

func (rs retentionStore) PruneIdempotencyKeys(ctx context.Context, before time.Time, limit int, dryRun bool) (int, error) {
	if err := checkRetainLimit("idempotency key prune", limit); err != nil {
		return 0, err
	}
	var n int
	var err error
	if dryRun {
		err = rs.s.q(ctx).QueryRow(ctx, `SELECT count(*) FROM idempotency_keys k WHERE k.created_at < $1 AND `+keyFree,
			before.UTC()).Scan(&n)
	} else {
		var tag interface{ RowsAffected() int64 }
		tag, err = rs.s.q(ctx).Exec(ctx, `DELETE FROM idempotency_keys WHERE key = ANY(ARRAY(
			SELECT k.key FROM idempotency_keys k WHERE k.created_at < $1 AND `+keyFree+`
			ORDER BY k.created_at LIMIT $2 FOR UPDATE SKIP LOCKED))`, before.UTC(), limit)
		if err == nil {
			n = int(tag.RowsAffected())
		}
	}
	if err != nil {
		return 0, fmt.Errorf("postgres: idempotency key prune: %w", err)
	}
	return n, nil
}
