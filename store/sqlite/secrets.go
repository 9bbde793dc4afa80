package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/hodei-jobs/hodei/store"
)

// Job secrets (migration 0009_secrets): ciphertext only.

// Secrets returns the job secret port.
func (s *Store) Secrets() store.SecretStore { return secretStore{s} }

type secretStore struct{ s *Store }

const secretColumns = `namespace, name, key_id, ciphertext, created_at, updated_at`

func scanSecret(row scanner) (*store.Secret, error) {
	var (
		sc               store.Secret
		created, updated int64
	)
	if err := row.Scan(&sc.Namespace, &sc.Name, &sc.KeyID, &sc.Ciphertext, &created, &updated); err != nil {
		return nil, err
	}
	sc.CreatedAt, sc.UpdatedAt = fromTS(sql.NullInt64{Int64: created, Valid: true}), fromTS(sql.NullInt64{Int64: updated, Valid: true})
	return &sc, nil
}

func (ss secretStore) Put(ctx context.Context, sc *store.Secret) (*store.Secret, error) {
	if sc == nil || sc.Namespace == "" || sc.Name == "" || sc.KeyID == "" || len(sc.Ciphertext) == 0 {
		return nil, errors.New("sqlite: put secret: namespace, name, key id and ciphertext are required")
	}
	updated := sc.UpdatedAt
	if updated.IsZero() {
		updated = sc.CreatedAt
	}
	var out *store.Secret
	err := ss.s.write(ctx, func(ctx context.Context, q querier) error {
		var err error
		out, err = scanSecret(q.QueryRowContext(ctx, `INSERT INTO secrets (`+secretColumns+`)
			VALUES (?, ?, ?, ?, ?, ?)
			ON CONFLICT (namespace, name) DO UPDATE SET key_id = excluded.key_id,
				ciphertext = excluded.ciphertext, updated_at = excluded.updated_at
			RETURNING `+secretColumns, sc.Namespace, sc.Name, sc.KeyID, sc.Ciphertext, nanos(sc.CreatedAt), nanos(updated)))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: put secret %s/%s: %w", sc.Namespace, sc.Name, err)
	}
	return out, nil
}

func (ss secretStore) Get(ctx context.Context, namespace, name string) (*store.Secret, error) {
	sc, err := scanSecret(ss.s.q(ctx).QueryRowContext(ctx, `SELECT `+secretColumns+` FROM secrets
		WHERE namespace = ? AND name = ?`, namespace, name))
	if noRows(err) {
		return nil, fmt.Errorf("sqlite: secret %s/%s: %w", namespace, name, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: secret %s/%s: %w", namespace, name, err)
	}
	return sc, nil
}

func (ss secretStore) List(ctx context.Context, namespaces []string) ([]*store.Secret, error) {
	query := `SELECT ` + secretColumns + ` FROM secrets`
	var args []any
	if len(namespaces) > 0 {
		query += ` WHERE namespace IN (?` + strings.Repeat(", ?", len(namespaces)-1) + `)`
		for _, ns := range namespaces {
			args = append(args, ns)
		}
	}
	rows, err := ss.s.q(ctx).QueryContext(ctx, query+` ORDER BY namespace, name`, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list secrets: %w", err)
	}
	defer rows.Close()
	var out []*store.Secret
	for rows.Next() {
		sc, err := scanSecret(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite: list secrets: %w", err)
		}
		out = append(out, sc)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: list secrets: %w", err)
	}
	return out, nil
}

func (ss secretStore) Delete(ctx context.Context, namespace, name string) (*store.Secret, error) {
	var out *store.Secret
	err := ss.s.write(ctx, func(ctx context.Context, q querier) error {
		var err error
		out, err = scanSecret(q.QueryRowContext(ctx, `DELETE FROM secrets WHERE namespace = ? AND name = ?
			RETURNING `+secretColumns, namespace, name))
		return err
	})
	if noRows(err) {
		return nil, fmt.Errorf("sqlite: delete secret %s/%s: %w", namespace, name, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: delete secret %s/%s: %w", namespace, name, err)
	}
	return out, nil
}

func (ss secretStore) Reseal(ctx context.Context, sc *store.Secret, oldKeyID string, oldCiphertext []byte) error {
	if sc == nil || sc.KeyID == "" || len(sc.Ciphertext) == 0 {
		return errors.New("sqlite: reseal secret: key id and ciphertext are required")
	}
	var n int64
	err := ss.s.write(ctx, func(ctx context.Context, q querier) error {
		res, err := q.ExecContext(ctx, `UPDATE secrets SET key_id = ?, ciphertext = ?
			WHERE namespace = ? AND name = ? AND key_id = ? AND ciphertext = ?`,
			sc.KeyID, sc.Ciphertext, sc.Namespace, sc.Name, oldKeyID, oldCiphertext)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite: reseal secret %s/%s: %w", sc.Namespace, sc.Name, err)
	}
	if n == 1 {
		return nil
	}
	if _, err := ss.Get(ctx, sc.Namespace, sc.Name); err != nil {
		return fmt.Errorf("sqlite: reseal: %w", err)
	}
	return fmt.Errorf("sqlite: reseal secret %s/%s: changed since read: %w", sc.Namespace, sc.Name, store.ErrConflict)
}
