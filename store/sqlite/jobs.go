package sqlite

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/store"
)

// Page sizes of JobStore.List.
const (
	defaultPageSize = 50
	maxPageSize     = 1000
)

type jobStore struct{ s *Store }

const jobColumns = `id, spec, state, attempt, worker_id, exit_code, last_error, resolution,
	notes, created_at, updated_at, started_at, finished_at`

func labelsJSON(l map[string]string) (string, error) {
	if l == nil {
		return "{}", nil
	}
	b, err := json.Marshal(l)
	return string(b), err
}

func nullInt(p *int) any {
	if p == nil {
		return nil
	}
	return int64(*p)
}

func (js *jobStore) Create(ctx context.Context, j *domain.Job) error {
	if j == nil {
		return errors.New("sqlite: create job: job is nil")
	}
	if j.ID == "" {
		id, err := uuid.NewV7()
		if err != nil {
			return fmt.Errorf("sqlite: create job: new id: %w", err)
		}
		j.ID = id.String()
	}
	if j.State == "" {
		j.State = domain.JobPending
	}
	if !j.State.Valid() {
		return fmt.Errorf("sqlite: create job %s: state %q is not a job state", j.ID, j.State)
	}
	if j.CreatedAt.IsZero() {
		j.CreatedAt = now() // the documented default of store.JobStore.Create
	}
	if j.UpdatedAt.IsZero() {
		j.UpdatedAt = j.CreatedAt
	}
	j.CreatedAt, j.UpdatedAt = normTime(j.CreatedAt), normTime(j.UpdatedAt)
	j.StartedAt, j.FinishedAt = normTime(j.StartedAt), normTime(j.FinishedAt)
	spec, err := json.Marshal(j.Spec)
	if err != nil {
		return fmt.Errorf("sqlite: create job %s: encode spec: %w", j.ID, err)
	}
	labels, err := labelsJSON(j.Spec.Labels)
	if err != nil {
		return fmt.Errorf("sqlite: create job %s: encode labels: %w", j.ID, err)
	}
	err = js.s.write(ctx, func(ctx context.Context, q querier) error {
		_, err := q.ExecContext(ctx, `INSERT INTO jobs (id, spec, state, attempt, worker_id, exit_code,
			last_error, resolution, notes, priority, labels, created_at, updated_at, started_at, finished_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			j.ID, string(spec), string(j.State), j.Attempt, j.WorkerID, nullInt(j.ExitCode), j.LastError,
			j.Resolution, j.Notes, j.Spec.Priority, labels, nanos(j.CreatedAt), nanos(j.UpdatedAt),
			ts(j.StartedAt), ts(j.FinishedAt))
		return err
	})
	if isUniqueViolation(err) {
		return fmt.Errorf("sqlite: create job %s: %w", j.ID, store.ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("sqlite: create job %s: %w", j.ID, err)
	}
	return nil
}

func scanJob(row scanner) (*domain.Job, error) {
	var (
		j                  domain.Job
		spec, state        string
		exit               sql.NullInt64
		createdAt, updated int64
		started, finished  sql.NullInt64
	)
	if err := row.Scan(&j.ID, &spec, &state, &j.Attempt, &j.WorkerID, &exit, &j.LastError,
		&j.Resolution, &j.Notes, &createdAt, &updated, &started, &finished); err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(spec), &j.Spec); err != nil {
		return nil, fmt.Errorf("decode spec of job %s: %w", j.ID, err)
	}
	j.State = domain.JobState(state)
	if exit.Valid {
		v := int(exit.Int64)
		j.ExitCode = &v
	}
	j.CreatedAt = fromTS(sql.NullInt64{Int64: createdAt, Valid: true})
	j.UpdatedAt = fromTS(sql.NullInt64{Int64: updated, Valid: true})
	j.StartedAt, j.FinishedAt = fromTS(started), fromTS(finished)
	return &j, nil
}

func collectJobs(rows *sql.Rows) ([]*domain.Job, error) {
	defer rows.Close()
	var out []*domain.Job
	for rows.Next() {
		j, err := scanJob(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, j)
	}
	return out, rows.Err()
}

func (js *jobStore) Get(ctx context.Context, id string) (*domain.Job, error) {
	j, err := scanJob(js.s.q(ctx).QueryRowContext(ctx, `SELECT `+jobColumns+` FROM jobs WHERE id = ?`, id))
	if noRows(err) {
		return nil, fmt.Errorf("sqlite: job %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: get job %s: %w", id, err)
	}
	return j, nil
}

// UpdateState reads the row on the writer connection (no other write can interleave),
// lets the domain move the job (j.Transition: check, mutate, time stamps from at) and
// writes every mutable column. It decides nothing itself.
func (js *jobStore) UpdateState(ctx context.Context, id string, to domain.JobState, at time.Time, mutate func(*domain.Job)) (*domain.Job, error) {
	var out *domain.Job
	err := js.s.write(ctx, func(ctx context.Context, q querier) error {
		j, err := scanJob(q.QueryRowContext(ctx, `SELECT `+jobColumns+` FROM jobs WHERE id = ?`, id))
		if noRows(err) {
			return fmt.Errorf("sqlite: job %s: %w", id, store.ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("sqlite: read job %s: %w", id, err)
		}
		if err := j.Transition(to, at, mutate); err != nil {
			return fmt.Errorf("sqlite: job %s: %w", id, err)
		}
		j.UpdatedAt, j.StartedAt, j.FinishedAt = normTime(j.UpdatedAt), normTime(j.StartedAt), normTime(j.FinishedAt)
		spec, err := json.Marshal(j.Spec)
		if err != nil {
			return fmt.Errorf("sqlite: job %s: encode spec: %w", id, err)
		}
		labels, err := labelsJSON(j.Spec.Labels)
		if err != nil {
			return fmt.Errorf("sqlite: job %s: encode labels: %w", id, err)
		}
		if _, err := q.ExecContext(ctx, `UPDATE jobs SET spec = ?, state = ?, attempt = ?, worker_id = ?,
			exit_code = ?, last_error = ?, resolution = ?, notes = ?, priority = ?, labels = ?,
			updated_at = ?, started_at = ?, finished_at = ? WHERE id = ?`,
			string(spec), string(j.State), j.Attempt, j.WorkerID, nullInt(j.ExitCode), j.LastError,
			j.Resolution, j.Notes, j.Spec.Priority, labels, nanos(j.UpdatedAt), ts(j.StartedAt),
			ts(j.FinishedAt), id); err != nil {
			return fmt.Errorf("sqlite: update job %s: %w", id, err)
		}
		out = j
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// pageToken is the keyset position after the last row of a page.
type pageToken struct {
	CreatedAt int64  `json:"t"` // unix nanoseconds
	ID        string `json:"i"`
}

func encodeToken(t pageToken) string {
	b, _ := json.Marshal(t) // cannot fail: an int and a string
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeToken(s string) (pageToken, error) {
	var t pageToken
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err == nil {
		err = json.Unmarshal(b, &t)
	}
	if err != nil || t.ID == "" {
		return pageToken{}, fmt.Errorf("sqlite: list jobs: JobFilter.PageToken: %w", store.ErrInvalidPageToken)
	}
	return t, nil
}

// List returns jobs newest first (created_at, id descending), filtered by state (any of
// States) and labels (all of Labels), a page at a time (PageSize default 50, at most
// 1000). The returned token is empty on the last page.
func (js *jobStore) List(ctx context.Context, f store.JobFilter) ([]*domain.Job, string, error) {
	size := f.PageSize
	switch {
	case size < 0 || size > maxPageSize:
		return nil, "", fmt.Errorf("sqlite: list jobs: PageSize %d out of range [0, %d]", size, maxPageSize)
	case size == 0:
		size = defaultPageSize
	}
	var (
		where []string
		args  []any
	)
	if len(f.Namespaces) > 0 {
		marks := make([]string, len(f.Namespaces))
		for i, ns := range f.Namespaces {
			marks[i] = "?"
			args = append(args, ns)
		}
		where = append(where, "COALESCE(NULLIF(json_extract(spec, '$.namespace'), ''), 'default') IN ("+strings.Join(marks, ", ")+")")
	}
	if len(f.States) > 0 {
		marks := make([]string, len(f.States))
		for i, s := range f.States {
			marks[i] = "?"
			args = append(args, string(s))
		}
		where = append(where, "state IN ("+strings.Join(marks, ", ")+")")
	}
	for k, v := range f.Labels {
		where = append(where, "EXISTS (SELECT 1 FROM json_each(jobs.labels) WHERE key = ? AND value = ?)")
		args = append(args, k, v)
	}
	if f.PageToken != "" {
		t, err := decodeToken(f.PageToken)
		if err != nil {
			return nil, "", err
		}
		where = append(where, "(created_at, id) < (?, ?)")
		args = append(args, t.CreatedAt, t.ID)
	}
	query := `SELECT ` + jobColumns + ` FROM jobs`
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	query += " ORDER BY created_at DESC, id DESC LIMIT ?"
	args = append(args, size+1)
	rows, err := js.s.q(ctx).QueryContext(ctx, query, args...)
	if err != nil {
		return nil, "", fmt.Errorf("sqlite: list jobs: %w", err)
	}
	out, err := collectJobs(rows)
	if err != nil {
		return nil, "", fmt.Errorf("sqlite: list jobs: %w", err)
	}
	next := ""
	if len(out) > size {
		out = out[:size]
		last := out[size-1]
		next = encodeToken(pageToken{CreatedAt: nanos(last.CreatedAt), ID: last.ID})
	}
	return out, next, nil
}
