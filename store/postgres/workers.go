package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/store"
)

type workerStore struct{ s *Store }

const workerColumns = `id, provider, state, job_id, labels, last_heartbeat, created_at, updated_at, owner`

func scanWorker(row pgx.Row) (*domain.Worker, error) {
	var (
		w                  domain.Worker
		state              string
		labels             []byte
		hb                 pgtype.Timestamptz
		createdAt, updated time.Time
	)
	if err := row.Scan(&w.ID, &w.Provider, &state, &w.JobID, &labels, &hb, &createdAt, &updated, &w.Owner); err != nil {
		return nil, err
	}
	w.State = domain.WorkerState(state)
	if err := json.Unmarshal(labels, &w.Labels); err != nil {
		return nil, fmt.Errorf("decode labels of worker %s: %w", w.ID, err)
	}
	if len(w.Labels) == 0 {
		w.Labels = nil
	}
	w.LastHeartbeat = fromNullTime(hb)
	w.CreatedAt, w.UpdatedAt = createdAt.UTC(), updated.UTC()
	return &w, nil
}

func (ws *workerStore) Create(ctx context.Context, w *domain.Worker) error {
	if w == nil {
		return errors.New("postgres: create worker: worker is nil")
	}
	if w.ID == "" {
		id, err := uuid.NewV7()
		if err != nil {
			return fmt.Errorf("postgres: create worker: new id: %w", err)
		}
		w.ID = id.String()
	}
	if w.State == "" {
		w.State = domain.WorkerCreating
	}
	if !w.State.Valid() {
		return fmt.Errorf("postgres: create worker %s: state %q is not a worker state", w.ID, w.State)
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
		return fmt.Errorf("postgres: create worker %s: encode labels: %w", w.ID, err)
	}
	_, err = ws.s.q(ctx).Exec(ctx, `INSERT INTO workers (id, provider, state, job_id, labels,
		last_heartbeat, created_at, updated_at, owner) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
		w.ID, w.Provider, string(w.State), w.JobID, labels, nullTime(w.LastHeartbeat), w.CreatedAt, w.UpdatedAt, w.Owner)
	if isUniqueViolation(err) {
		return fmt.Errorf("postgres: create worker %s: %w", w.ID, store.ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("postgres: create worker %s: %w", w.ID, err)
	}
	return nil
}

func (ws *workerStore) Get(ctx context.Context, id string) (*domain.Worker, error) {
	w, err := scanWorker(ws.s.q(ctx).QueryRow(ctx, `SELECT `+workerColumns+` FROM workers WHERE id = $1`, id))
	if errNoRows(err) {
		return nil, fmt.Errorf("postgres: worker %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: get worker %s: %w", id, err)
	}
	return w, nil
}

// UpdateState is JobStore.UpdateState for workers: lock, let the domain move the worker
// (w.Transition), write.
func (ws *workerStore) UpdateState(ctx context.Context, id string, to domain.WorkerState, at time.Time, mutate func(*domain.Worker)) (*domain.Worker, error) {
	var out *domain.Worker
	err := ws.s.InTx(ctx, func(ctx context.Context) error {
		q := ws.s.q(ctx)
		w, err := scanWorker(q.QueryRow(ctx, `SELECT `+workerColumns+` FROM workers WHERE id = $1 FOR UPDATE`, id))
		if errNoRows(err) {
			return fmt.Errorf("postgres: worker %s: %w", id, store.ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("postgres: lock worker %s: %w", id, err)
		}
		if err := w.Transition(to, at, mutate); err != nil {
			return fmt.Errorf("postgres: worker %s: %w", id, err)
		}
		w.UpdatedAt, w.LastHeartbeat = normTime(w.UpdatedAt), normTime(w.LastHeartbeat)
		labels, err := labelsJSON(w.Labels)
		if err != nil {
			return fmt.Errorf("postgres: worker %s: encode labels: %w", id, err)
		}
		if _, err := q.Exec(ctx, `UPDATE workers SET provider = $2, state = $3, job_id = $4, labels = $5,
			last_heartbeat = $6, updated_at = $7, owner = $8 WHERE id = $1`,
			id, w.Provider, string(w.State), w.JobID, labels, nullTime(w.LastHeartbeat), w.UpdatedAt, w.Owner); err != nil {
			return fmt.Errorf("postgres: update worker %s: %w", id, err)
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
	tag, err := ws.s.q(ctx).Exec(ctx, `UPDATE workers
		SET last_heartbeat = GREATEST(COALESCE(last_heartbeat, '-infinity'::timestamptz), $2),
		    updated_at = now()
		WHERE id = $1`, id, normTime(at))
	if err != nil {
		return fmt.Errorf("postgres: heartbeat worker %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("postgres: worker %s: %w", id, store.ErrNotFound)
	}
	return nil
}

// List returns the workers in any of states (all workers when none), oldest first.
func (ws *workerStore) List(ctx context.Context, states ...domain.WorkerState) ([]*domain.Worker, error) {
	sql := `SELECT ` + workerColumns + ` FROM workers`
	var args []any
	if len(states) > 0 {
		ss := make([]string, len(states))
		for i, s := range states {
			ss[i] = string(s)
		}
		sql += ` WHERE state = ANY($1::text[])`
		args = append(args, ss)
	}
	sql += ` ORDER BY created_at, id`
	rows, err := ws.s.q(ctx).Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("postgres: list workers: %w", err)
	}
	defer rows.Close()
	var out []*domain.Worker
	for rows.Next() {
		w, err := scanWorker(rows)
		if err != nil {
			return nil, fmt.Errorf("postgres: list workers: %w", err)
		}
		out = append(out, w)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: list workers: %w", err)
	}
	return out, nil
}

// SetOwner records the node that owns the worker.
func (ws *workerStore) SetOwner(ctx context.Context, id, owner string) error {
	tag, err := ws.s.q(ctx).Exec(ctx, `UPDATE workers SET owner = $2, updated_at = now() WHERE id = $1`, id, owner)
	if err != nil {
		return fmt.Errorf("postgres: set owner of worker %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("postgres: worker %s: %w", id, store.ErrNotFound)
	}
	return nil
}
