package postgres

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

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

// now returns the current time at PostgreSQL's precision, in UTC.
func now() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

func normTime(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	return t.UTC().Truncate(time.Microsecond)
}

// nullTime maps the zero time to SQL NULL.
func nullTime(t time.Time) pgtype.Timestamptz {
	if t.IsZero() {
		return pgtype.Timestamptz{}
	}
	return pgtype.Timestamptz{Time: t, Valid: true}
}

func fromNullTime(t pgtype.Timestamptz) time.Time {
	if !t.Valid {
		return time.Time{}
	}
	return t.Time.UTC()
}

func labelsJSON(l map[string]string) ([]byte, error) {
	if l == nil {
		return []byte("{}"), nil
	}
	return json.Marshal(l)
}

func (js *jobStore) Create(ctx context.Context, j *domain.Job) error {
	if j == nil {
		return errors.New("postgres: create job: job is nil")
	}
	if j.ID == "" {
		id, err := uuid.NewV7()
		if err != nil {
			return fmt.Errorf("postgres: create job: new id: %w", err)
		}
		j.ID = id.String()
	}
	if j.State == "" {
		j.State = domain.JobPending
	}
	if !j.State.Valid() {
		return fmt.Errorf("postgres: create job %s: state %q is not a job state", j.ID, j.State)
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
		return fmt.Errorf("postgres: create job %s: encode spec: %w", j.ID, err)
	}
	labels, err := labelsJSON(j.Spec.Labels)
	if err != nil {
		return fmt.Errorf("postgres: create job %s: encode labels: %w", j.ID, err)
	}
	_, err = js.s.q(ctx).Exec(ctx, `INSERT INTO jobs (id, spec, state, attempt, worker_id, exit_code,
		last_error, resolution, notes, priority, labels, created_at, updated_at, started_at, finished_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)`,
		j.ID, spec, string(j.State), j.Attempt, j.WorkerID, j.ExitCode, j.LastError, j.Resolution,
		j.Notes, j.Spec.Priority, labels, j.CreatedAt, j.UpdatedAt, nullTime(j.StartedAt), nullTime(j.FinishedAt))
	if isUniqueViolation(err) {
		return fmt.Errorf("postgres: create job %s: %w", j.ID, store.ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("postgres: create job %s: %w", j.ID, err)
	}
	return nil
}

func scanJob(row pgx.Row) (*domain.Job, error) {
	var (
		j                  domain.Job
		spec               []byte
		state              string
		exit               *int32
		started, finished  pgtype.Timestamptz
		createdAt, updated time.Time
	)
	if err := row.Scan(&j.ID, &spec, &state, &j.Attempt, &j.WorkerID, &exit, &j.LastError,
		&j.Resolution, &j.Notes, &createdAt, &updated, &started, &finished); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(spec, &j.Spec); err != nil {
		return nil, fmt.Errorf("decode spec of job %s: %w", j.ID, err)
	}
	j.State = domain.JobState(state)
	if exit != nil {
		v := int(*exit)
		j.ExitCode = &v
	}
	j.CreatedAt, j.UpdatedAt = createdAt.UTC(), updated.UTC()
	j.StartedAt, j.FinishedAt = fromNullTime(started), fromNullTime(finished)
	return &j, nil
}

func (js *jobStore) Get(ctx context.Context, id string) (*domain.Job, error) {
	j, err := scanJob(js.s.q(ctx).QueryRow(ctx, `SELECT `+jobColumns+` FROM jobs WHERE id = $1`, id))
	if errNoRows(err) {
		return nil, fmt.Errorf("postgres: job %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: get job %s: %w", id, err)
	}
	return j, nil
}

// UpdateState locks the row (SELECT … FOR UPDATE), lets the domain move the job
// (j.Transition: check, mutate, time stamps from at) and writes every mutable column,
// all in one transaction (ctx's or its own). It decides nothing itself.
func (js *jobStore) UpdateState(ctx context.Context, id string, to domain.JobState, at time.Time, mutate func(*domain.Job)) (*domain.Job, error) {
	var out *domain.Job
	err := js.s.InTx(ctx, func(ctx context.Context) error {
		q := js.s.q(ctx)
		j, err := scanJob(q.QueryRow(ctx, `SELECT `+jobColumns+` FROM jobs WHERE id = $1 FOR UPDATE`, id))
		if errNoRows(err) {
			return fmt.Errorf("postgres: job %s: %w", id, store.ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("postgres: lock job %s: %w", id, err)
		}
		if err := j.Transition(to, at, mutate); err != nil {
			return fmt.Errorf("postgres: job %s: %w", id, err)
		}
		j.UpdatedAt, j.StartedAt, j.FinishedAt = normTime(j.UpdatedAt), normTime(j.StartedAt), normTime(j.FinishedAt)
		spec, err := json.Marshal(j.Spec)
		if err != nil {
			return fmt.Errorf("postgres: job %s: encode spec: %w", id, err)
		}
		labels, err := labelsJSON(j.Spec.Labels)
		if err != nil {
			return fmt.Errorf("postgres: job %s: encode labels: %w", id, err)
		}
		if _, err := q.Exec(ctx, `UPDATE jobs SET spec = $2, state = $3, attempt = $4, worker_id = $5,
			exit_code = $6, last_error = $7, resolution = $8, notes = $9, priority = $10, labels = $11,
			updated_at = $12, started_at = $13, finished_at = $14 WHERE id = $1`,
			id, spec, string(j.State), j.Attempt, j.WorkerID, j.ExitCode, j.LastError, j.Resolution,
			j.Notes, j.Spec.Priority, labels, j.UpdatedAt, nullTime(j.StartedAt), nullTime(j.FinishedAt)); err != nil {
			return fmt.Errorf("postgres: update job %s: %w", id, err)
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
	CreatedAt time.Time `json:"t"`
	ID        string    `json:"i"`
}

func encodeToken(t pageToken) string {
	b, _ := json.Marshal(t) // cannot fail: a time and a string
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeToken(s string) (pageToken, error) {
	var t pageToken
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err == nil {
		err = json.Unmarshal(b, &t)
	}
	if err != nil || t.ID == "" {
		return pageToken{}, fmt.Errorf("postgres: list jobs: JobFilter.PageToken: %w", store.ErrInvalidPageToken)
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
		return nil, "", fmt.Errorf("postgres: list jobs: PageSize %d out of range [0, %d]", size, maxPageSize)
	case size == 0:
		size = defaultPageSize
	}
	var (
		where []string
		args  []any
	)
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	if len(f.Namespaces) > 0 {
		where = append(where, "COALESCE(NULLIF(spec->>'namespace', ''), 'default') = ANY("+arg(f.Namespaces)+"::text[])")
	}
	if len(f.States) > 0 {
		states := make([]string, len(f.States))
		for i, s := range f.States {
			states[i] = string(s)
		}
		where = append(where, "state = ANY("+arg(states)+"::text[])")
	}
	if len(f.Labels) > 0 {
		l, err := json.Marshal(f.Labels)
		if err != nil {
			return nil, "", fmt.Errorf("postgres: list jobs: encode Labels: %w", err)
		}
		where = append(where, "labels @> "+arg(l)+"::jsonb")
	}
	if f.PageToken != "" {
		t, err := decodeToken(f.PageToken)
		if err != nil {
			return nil, "", err
		}
		where = append(where, "(created_at, id) < ("+arg(t.CreatedAt)+"::timestamptz, "+arg(t.ID)+"::text)")
	}
	sql := `SELECT ` + jobColumns + ` FROM jobs`
	if len(where) > 0 {
		sql += " WHERE " + strings.Join(where, " AND ")
	}
	sql += " ORDER BY created_at DESC, id DESC LIMIT " + arg(size+1)
	rows, err := js.s.q(ctx).Query(ctx, sql, args...)
	if err != nil {
		return nil, "", fmt.Errorf("postgres: list jobs: %w", err)
	}
	defer rows.Close()
	var out []*domain.Job
	for rows.Next() {
		j, err := scanJob(rows)
		if err != nil {
			return nil, "", fmt.Errorf("postgres: list jobs: %w", err)
		}
		out = append(out, j)
	}
	if err := rows.Err(); err != nil {
		return nil, "", fmt.Errorf("postgres: list jobs: %w", err)
	}
	next := ""
	if len(out) > size {
		out = out[:size]
		last := out[size-1]
		next = encodeToken(pageToken{CreatedAt: last.CreatedAt, ID: last.ID})
	}
	return out, next, nil
}
