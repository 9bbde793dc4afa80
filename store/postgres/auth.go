package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/hodei-jobs/hodei/store"
)

// API tokens and the audit trail (migration 0007_auth).

// Tokens returns the API token port.
func (s *Store) Tokens() store.TokenStore { return tokenStore{s} }

// Audit returns the audit trail port.
func (s *Store) Audit() store.AuditStore { return auditStore{s} }

type tokenStore struct{ s *Store }

const tokenColumns = `name, hash, role, namespaces, created_at, expires_at, revoked_at`

func scanToken(row pgx.Row) (*store.Token, error) {
	var (
		t                store.Token
		ns               []byte
		created          time.Time
		expires, revoked pgtype.Timestamptz
	)
	if err := row.Scan(&t.Name, &t.Hash, &t.Role, &ns, &created, &expires, &revoked); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(ns, &t.Namespaces); err != nil {
		return nil, fmt.Errorf("decode namespaces of token %s: %w", t.Name, err)
	}
	t.CreatedAt = created.UTC()
	t.ExpiresAt, t.RevokedAt = fromNullTime(expires), fromNullTime(revoked)
	return &t, nil
}

func (tk tokenStore) Create(ctx context.Context, t *store.Token) error {
	if t == nil || t.Name == "" || len(t.Hash) == 0 {
		return errors.New("postgres: create token: name and hash are required")
	}
	nss := t.Namespaces
	if nss == nil {
		nss = []string{}
	}
	ns, err := json.Marshal(nss)
	if err != nil {
		return fmt.Errorf("postgres: create token %s: %w", t.Name, err)
	}
	t.CreatedAt, t.ExpiresAt, t.RevokedAt = normTime(t.CreatedAt), normTime(t.ExpiresAt), normTime(t.RevokedAt)
	_, err = tk.s.q(ctx).Exec(ctx, `INSERT INTO api_tokens (`+tokenColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		t.Name, t.Hash, t.Role, ns, t.CreatedAt, nullTime(t.ExpiresAt), nullTime(t.RevokedAt))
	if isUniqueViolation(err) {
		return fmt.Errorf("postgres: create token %s: %w", t.Name, store.ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("postgres: create token %s: %w", t.Name, err)
	}
	return nil
}

func (tk tokenStore) ByHash(ctx context.Context, hash []byte) (*store.Token, error) {
	t, err := scanToken(tk.s.q(ctx).QueryRow(ctx, `SELECT `+tokenColumns+` FROM api_tokens WHERE hash = $1`, hash))
	if errNoRows(err) {
		return nil, fmt.Errorf("postgres: token: %w", store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: token by hash: %w", err)
	}
	return t, nil
}

func (tk tokenStore) List(ctx context.Context) ([]*store.Token, error) {
	rows, err := tk.s.q(ctx).Query(ctx, `SELECT `+tokenColumns+` FROM api_tokens ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("postgres: list tokens: %w", err)
	}
	defer rows.Close()
	var out []*store.Token
	for rows.Next() {
		t, err := scanToken(rows)
		if err != nil {
			return nil, fmt.Errorf("postgres: list tokens: %w", err)
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: list tokens: %w", err)
	}
	return out, nil
}

func (tk tokenStore) Revoke(ctx context.Context, name string, at time.Time) (*store.Token, error) {
	t, err := scanToken(tk.s.q(ctx).QueryRow(ctx, `UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, $2)
		WHERE name = $1 RETURNING `+tokenColumns, name, normTime(at)))
	if errNoRows(err) {
		return nil, fmt.Errorf("postgres: revoke token %s: %w", name, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: revoke token %s: %w", name, err)
	}
	return t, nil
}

type auditStore struct{ s *Store }

func (as auditStore) Append(ctx context.Context, r *store.AuditRecord) error {
	if r == nil || r.Action == "" || r.Outcome == "" || r.Time.IsZero() {
		return errors.New("postgres: append audit record: time, action and outcome are required")
	}
	r.Time = normTime(r.Time)
	err := as.s.q(ctx).QueryRow(ctx, `INSERT INTO audit_log (at, actor, action, procedure, target, namespace,
		outcome, remote, detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id`,
		r.Time, r.Actor, r.Action, r.Procedure, r.Target, r.Namespace, r.Outcome, r.Remote, r.Detail).Scan(&r.ID)
	if err != nil {
		return fmt.Errorf("postgres: append audit record: %w", err)
	}
	return nil
}

func (as auditStore) List(ctx context.Context, f store.AuditFilter) ([]*store.AuditRecord, error) {
	if f.Limit <= 0 {
		return nil, fmt.Errorf("postgres: list audit: AuditFilter.Limit %d must be positive", f.Limit)
	}
	query := `SELECT id, at, actor, action, procedure, target, namespace, outcome, remote, detail
		FROM audit_log WHERE ($1::timestamptz IS NULL OR at >= $1)`
	args := []any{nullTime(normTime(f.Since))}
	if f.Actor != "" {
		query += ` AND actor = $2`
		args = append(args, f.Actor)
	}
	query += fmt.Sprintf(` ORDER BY at, id LIMIT %d`, f.Limit)
	rows, err := as.s.q(ctx).Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("postgres: list audit: %w", err)
	}
	defer rows.Close()
	var out []*store.AuditRecord
	for rows.Next() {
		var (
			r  store.AuditRecord
			at time.Time
		)
		if err := rows.Scan(&r.ID, &at, &r.Actor, &r.Action, &r.Procedure, &r.Target, &r.Namespace,
			&r.Outcome, &r.Remote, &r.Detail); err != nil {
			return nil, fmt.Errorf("postgres: list audit: %w", err)
		}
		r.Time = at.UTC()
		out = append(out, &r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: list audit: %w", err)
	}
	return out, nil
}
