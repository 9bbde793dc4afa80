package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hodei-jobs/hodei/store"
)

// API tokens and the audit trail (migration 0007_auth).

// Tokens returns the API token port.
func (s *Store) Tokens() store.TokenStore { return tokenStore{s} }

// Audit returns the audit trail port.
func (s *Store) Audit() store.AuditStore { return auditStore{s} }

type tokenStore struct{ s *Store }

const tokenColumns = `name, hash, role, namespaces, created_at, expires_at, revoked_at`

func scanToken(row scanner) (*store.Token, error) {
	var (
		t                store.Token
		ns               string
		created          int64
		expires, revoked sql.NullInt64
	)
	if err := row.Scan(&t.Name, &t.Hash, &t.Role, &ns, &created, &expires, &revoked); err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(ns), &t.Namespaces); err != nil {
		return nil, fmt.Errorf("decode namespaces of token %s: %w", t.Name, err)
	}
	t.CreatedAt = fromTS(sql.NullInt64{Int64: created, Valid: true})
	t.ExpiresAt, t.RevokedAt = fromTS(expires), fromTS(revoked)
	return &t, nil
}

func (tk tokenStore) Create(ctx context.Context, t *store.Token) error {
	if t == nil || t.Name == "" || len(t.Hash) == 0 {
		return errors.New("sqlite: create token: name and hash are required")
	}
	ns, err := json.Marshal(nonNil(t.Namespaces))
	if err != nil {
		return fmt.Errorf("sqlite: create token %s: %w", t.Name, err)
	}
	t.CreatedAt, t.ExpiresAt, t.RevokedAt = normTime(t.CreatedAt), normTime(t.ExpiresAt), normTime(t.RevokedAt)
	err = tk.s.write(ctx, func(ctx context.Context, q querier) error {
		_, err := q.ExecContext(ctx, `INSERT INTO api_tokens (`+tokenColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?)`,
			t.Name, t.Hash, t.Role, string(ns), nanos(t.CreatedAt), ts(t.ExpiresAt), ts(t.RevokedAt))
		return err
	})
	if isUniqueViolation(err) {
		return fmt.Errorf("sqlite: create token %s: %w", t.Name, store.ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("sqlite: create token %s: %w", t.Name, err)
	}
	return nil
}

func (tk tokenStore) ByHash(ctx context.Context, hash []byte) (*store.Token, error) {
	t, err := scanToken(tk.s.q(ctx).QueryRowContext(ctx, `SELECT `+tokenColumns+` FROM api_tokens WHERE hash = ?`, hash))
	if noRows(err) {
		return nil, fmt.Errorf("sqlite: token: %w", store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: token by hash: %w", err)
	}
	return t, nil
}

func (tk tokenStore) List(ctx context.Context) ([]*store.Token, error) {
	rows, err := tk.s.q(ctx).QueryContext(ctx, `SELECT `+tokenColumns+` FROM api_tokens ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list tokens: %w", err)
	}
	defer rows.Close()
	var out []*store.Token
	for rows.Next() {
		t, err := scanToken(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite: list tokens: %w", err)
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: list tokens: %w", err)
	}
	return out, nil
}

func (tk tokenStore) Revoke(ctx context.Context, name string, at time.Time) (*store.Token, error) {
	var t *store.Token
	err := tk.s.write(ctx, func(ctx context.Context, q querier) error {
		var err error
		t, err = scanToken(q.QueryRowContext(ctx, `UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, ?)
			WHERE name = ? RETURNING `+tokenColumns, nanos(at), name))
		return err
	})
	if noRows(err) {
		return nil, fmt.Errorf("sqlite: revoke token %s: %w", name, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: revoke token %s: %w", name, err)
	}
	return t, nil
}

type auditStore struct{ s *Store }

func (as auditStore) Append(ctx context.Context, r *store.AuditRecord) error {
	if r == nil || r.Action == "" || r.Outcome == "" || r.Time.IsZero() {
		return errors.New("sqlite: append audit record: time, action and outcome are required")
	}
	r.Time = normTime(r.Time)
	err := as.s.write(ctx, func(ctx context.Context, q querier) error {
		return q.QueryRowContext(ctx, `INSERT INTO audit_log (at, actor, action, procedure, target, namespace,
			outcome, remote, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`,
			nanos(r.Time), r.Actor, r.Action, r.Procedure, r.Target, r.Namespace, r.Outcome, r.Remote, r.Detail).Scan(&r.ID)
	})
	if err != nil {
		return fmt.Errorf("sqlite: append audit record: %w", err)
	}
	return nil
}

func (as auditStore) List(ctx context.Context, f store.AuditFilter) ([]*store.AuditRecord, error) {
	if f.Limit <= 0 {
		return nil, fmt.Errorf("sqlite: list audit: AuditFilter.Limit %d must be positive", f.Limit)
	}
	query := `SELECT id, at, actor, action, procedure, target, namespace, outcome, remote, detail
		FROM audit_log WHERE at >= ?`
	args := []any{nanos(f.Since)}
	if f.Since.IsZero() {
		args[0] = int64(-1 << 63)
	}
	if f.Actor != "" {
		query += ` AND actor = ?`
		args = append(args, f.Actor)
	}
	query += ` ORDER BY at, id LIMIT ?`
	args = append(args, f.Limit)
	rows, err := as.s.q(ctx).QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list audit: %w", err)
	}
	defer rows.Close()
	var out []*store.AuditRecord
	for rows.Next() {
		var (
			r  store.AuditRecord
			at int64
		)
		if err := rows.Scan(&r.ID, &at, &r.Actor, &r.Action, &r.Procedure, &r.Target, &r.Namespace,
			&r.Outcome, &r.Remote, &r.Detail); err != nil {
			return nil, fmt.Errorf("sqlite: list audit: %w", err)
		}
		r.Time = fromTS(sql.NullInt64{Int64: at, Valid: true})
		out = append(out, &r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: list audit: %w", err)
	}
	return out, nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
