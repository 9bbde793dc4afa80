package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/store"
)

type workerStore struct{ s *Store }

const workerColumns = `id, provider, state, job_id, labels, last_heartbeat, created_at, updated_at, owner`

func scanWorker(row scanner) (*domain.Worker, error) {
	var (
		w                  domain.Worker
		state, labels      string
		hb                 sql.NullInt64
		createdAt, updated int64
	)
	if err := row.Scan(&w.ID, &w.Provider, &state, &w.JobID, &labels, &hb, &createdAt, &updated, &w.Owner); err != nil {
		return nil, err
	}
	w.State = domain.WorkerState(state)
	if err := json.Unmarshal([]byte(labels), &w.Labels); err != nil {
		return nil, fmt.Errorf("decode labels of worker %s: %w", w.ID, err)
	}
	if len(w.Labels) == 0 {
		w.Labels = nil
	}
	w.LastHeartbeat = fromTS(hb)
	w.CreatedAt = fromTS(sql.NullInt64{Int64: createdAt, Valid: true})
	w.UpdatedAt = fromTS(sql.NullInt64{Int64: updated, Valid: true})
	return &w, nil
}

func (ws *workerStore) Create(ctx context.Context, w *domain.Worker) error {
	if w == nil {
		return errors.New("sqlite: create worker: worker is nil")
	}
	if w.ID == "" {
		id, err := uuid.NewV7()
		if err != nil {
			return fmt.Errorf("sqlite: create worker: new id: %w", err)
		}
		w.ID = id.String()
	}
	if w.State == "" {
		w.State = domain.WorkerCreating
	}
	if !w.State.Valid() {
		return fmt.Errorf("sqlite: create worker %s: state %q is not a worker state", w.ID, w.State)
	}
	if w.CreatedAt.IsZero() {
		w.CreatedAt = now() // the documented default of store.WorkerStore.Create
	}
	if w.UpdatedAt.IsZero() {
		w.UpdatedAt = w.CreatedAt
	}
	w.CreatedAt, w.UpdatedAt, w.LastHeartbeat = normTime(w.CreatedAt), normTime(w.UpdatedAt), normTime(w.LastHeartbeat)
	labels, err := labelsJSON(w.Labels)
	if err != nil {
		return fmt.Errorf("sqlite: create worker %s: encode labels: %w", w.ID, err)
	}
	err = ws.s.write(ctx, func(ctx context.Context, q querier) error {
		_, err := q.ExecContext(ctx, `INSERT INTO workers (id, provider, state, job_id, labels,
			last_heartbeat, created_at, updated_at, owner) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			w.ID, w.Provider, string(w.State), w.JobID, labels, ts(w.LastHeartbeat), nanos(w.CreatedAt), nanos(w.UpdatedAt), w.Owner)
		return err
	})
	if isUniqueViolation(err) {
		return fmt.Errorf("sqlite: create worker %s: %w", w.ID, store.ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("sqlite: create worker %s: %w", w.ID, err)
	}
	return nil
}

func (ws *workerStore) Get(ctx context.Context, id string) (*domain.Worker, error) {
	w, err := scanWorker(ws.s.q(ctx).QueryRowContext(ctx, `SELECT `+workerColumns+` FROM workers WHERE id = ?`, id))
	if noRows(err) {
		return nil, fmt.Errorf("sqlite: worker %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: get worker %s: %w", id, err)
	}
	return w, nil
}

// UpdateState is JobStore.UpdateState for workers: read on the writer, let the domain
// move the worker (w.Transition), write.
func (ws *workerStore) UpdateState(ctx context.Context, id string, to domain.WorkerState, at time.Time, mutate func(*domain.Worker)) (*domain.Worker, error) {
	var out *domain.Worker
	err := ws.s.write(ctx, func(ctx context.Context, q querier) error {
		w, err := scanWorker(q.QueryRowContext(ctx, `SELECT `+workerColumns+` FROM workers WHERE id = ?`, id))
		if noRows(err) {
			return fmt.Errorf("sqlite: worker %s: %w", id, store.ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("sqlite: read worker %s: %w", id, err)
		}
		if err := w.Transition(to, at, mutate); err != nil {
			return fmt.Errorf("sqlite: worker %s: %w", id, err)
		}
		w.UpdatedAt, w.LastHeartbeat = normTime(w.UpdatedAt), normTime(w.LastHeartbeat)
		labels, err := labelsJSON(w.Labels)
		if err != nil {
			return fmt.Errorf("sqlite: worker %s: encode labels: %w", id, err)
		}
		if _, err := q.ExecContext(ctx, `UPDATE workers SET provider = ?, state = ?, job_id = ?, labels = ?,
			last_heartbeat = ?, updated_at = ?, owner = ? WHERE id = ?`,
			w.Provider, string(w.State), w.JobID, labels, ts(w.LastHeartbeat), nanos(w.UpdatedAt), w.Owner, id); err != nil {
			return fmt.Errorf("sqlite: update worker %s: %w", id, err)
		}
		out = w
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Heartbeat records at as the worker's last heartbeat. The stored value never moves
// backwards: a late, older heartbeat is ignored (but the worker must exist).
func (ws *workerStore) Heartbeat(ctx context.Context, id string, at time.Time) error {
	var n int64
	err := ws.s.write(ctx, func(ctx context.Context, q querier) error {
		res, err := q.ExecContext(ctx, `UPDATE workers
			SET last_heartbeat = CASE WHEN last_heartbeat IS NULL OR last_heartbeat < ?1 THEN ?1 ELSE last_heartbeat END,
			    updated_at = ?2
			WHERE id = ?3`, ts(normTime(at)), nanos(now()), id)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite: heartbeat worker %s: %w", id, err)
	}
	if n == 0 {
		return fmt.Errorf("sqlite: worker %s: %w", id, store.ErrNotFound)
	}
	return nil
}

// List returns the workers in any of states (all workers when none), oldest first.
func (ws *workerStore) List(ctx context.Context, states ...domain.WorkerState) ([]*domain.Worker, error) {
	query := `SELECT ` + workerColumns + ` FROM workers`
	var args []any
	if len(states) > 0 {
		marks := make([]string, len(states))
		for i, s := range states {
			marks[i] = "?"
			args = append(args, string(s))
		}
		query += ` WHERE state IN (` + strings.Join(marks, ", ") + `)`
	}
	query += ` ORDER BY created_at, id`
	rows, err := ws.s.q(ctx).QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list workers: %w", err)
	}
	defer rows.Close()
	var out []*domain.Worker
	for rows.Next() {
		w, err := scanWorker(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite: list workers: %w", err)
		}
		out = append(out, w)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: list workers: %w", err)
	}
	return out, nil
}

// SetOwner records the node that owns the worker.
func (ws *workerStore) SetOwner(ctx context.Context, id, owner string) error {
	err := ws.s.write(ctx, func(ctx context.Context, q querier) error {
		res, err := q.ExecContext(ctx, `UPDATE workers SET owner = ?, updated_at = ? WHERE id = ?`, owner, nanos(now()), id)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return store.ErrNotFound
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlite: set owner of worker %s: %w", id, err)
	}
	return nil
}
