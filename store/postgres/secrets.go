package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/hodei-jobs/hodei/store"
)

// Job secrets (migration 0009_secrets): ciphertext only.

// Secrets returns the job secret port.
func (s *Store) Secrets() store.SecretStore { return secretStore{s} }

type secretStore struct{ s *Store }

const secretColumns = `namespace, name, key_id, ciphertext, created_at, updated_at`

func scanSecret(row pgx.Row) (*store.Secret, error) {
	var (
		sc               store.Secret
		created, updated time.Time
	)
	if err := row.Scan(&sc.Namespace, &sc.Name, &sc.KeyID, &sc.Ciphertext, &created, &updated); err != nil {
		return nil, err
	}
	sc.CreatedAt, sc.UpdatedAt = created.UTC(), updated.UTC()
	return &sc, nil
}

func (ss secretStore) Put(ctx context.Context, sc *store.Secret) (*store.Secret, error) {
	if sc == nil || sc.Namespace == "" || sc.Name == "" || sc.KeyID == "" || len(sc.Ciphertext) == 0 {
		return nil, errors.New("postgres: put secret: namespace, name, key id and ciphertext are required")
	}
	created, updated := normTime(sc.CreatedAt), normTime(sc.UpdatedAt)
	if updated.IsZero() {
		updated = created
	}
	out, err := scanSecret(ss.s.q(ctx).QueryRow(ctx, `INSERT INTO secrets (`+secretColumns+`)
		VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (namespace, name) DO UPDATE SET key_id = EXCLUDED.key_id,
			ciphertext = EXCLUDED.ciphertext, updated_at = EXCLUDED.updated_at
		RETURNING `+secretColumns, sc.Namespace, sc.Name, sc.KeyID, sc.Ciphertext, created, updated))
	if err != nil {
		return nil, fmt.Errorf("postgres: put secret %s/%s: %w", sc.Namespace, sc.Name, err)
	}
	return out, nil
}

func (ss secretStore) Get(ctx context.Context, namespace, name string) (*store.Secret, error) {
	sc, err := scanSecret(ss.s.q(ctx).QueryRow(ctx, `SELECT `+secretColumns+` FROM secrets
		WHERE namespace = $1 AND name = $2`, namespace, name))
	if errNoRows(err) {
		return nil, fmt.Errorf("postgres: secret %s/%s: %w", namespace, name, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: secret %s/%s: %w", namespace, name, err)
	}
	return sc, nil
}

func (ss secretStore) List(ctx context.Context, namespaces []string) ([]*store.Secret, error) {
	query := `SELECT ` + secretColumns + ` FROM secrets`
	var args []any
	if len(namespaces) > 0 {
		query += ` WHERE namespace = ANY($1)`
		args = append(args, namespaces)
	}
	rows, err := ss.s.q(ctx).Query(ctx, query+` ORDER BY namespace, name`, args...)
	if err != nil {
		return nil, fmt.Errorf("postgres: list secrets: %w", err)
	}
	defer rows.Close()
	var out []*store.Secret
	for rows.Next() {
		sc, err := scanSecret(rows)
		if err != nil {
			return nil, fmt.Errorf("postgres: list secrets: %w", err)
		}
		out = append(out, sc)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: list secrets: %w", err)
	}
	return out, nil
}

func (ss secretStore) Delete(ctx context.Context, namespace, name string) (*store.Secret, error) {
	sc, err := scanSecret(ss.s.q(ctx).QueryRow(ctx, `DELETE FROM secrets WHERE namespace = $1 AND name = $2
		RETURNING `+secretColumns, namespace, name))
	if errNoRows(err) {
		return nil, fmt.Errorf("postgres: delete secret %s/%s: %w", namespace, name, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: delete secret %s/%s: %w", namespace, name, err)
	}
	return sc, nil
}

func (ss secretStore) Reseal(ctx context.Context, sc *store.Secret, oldKeyID string, oldCiphertext []byte) error {
	if sc == nil || sc.KeyID == "" || len(sc.Ciphertext) == 0 {
		return errors.New("postgres: reseal secret: key id and ciphertext are required")
	}
	tag, err := ss.s.q(ctx).Exec(ctx, `UPDATE secrets SET key_id = $3, ciphertext = $4
		WHERE namespace = $1 AND name = $2 AND key_id = $5 AND ciphertext = $6`,
		sc.Namespace, sc.Name, sc.KeyID, sc.Ciphertext, oldKeyID, oldCiphertext)
	if err == nil && tag.RowsAffected() == 1 {
		return nil
	}
	if err != nil {
		return fmt.Errorf("postgres: reseal secret %s/%s: %w", sc.Namespace, sc.Name, err)
	}
	if _, err := ss.Get(ctx, sc.Namespace, sc.Name); err != nil {
		return fmt.Errorf("postgres: reseal: %w", err)
	}
	return fmt.Errorf("postgres: reseal secret %s/%s: changed since read: %w", sc.Namespace, sc.Name, store.ErrConflict)
}
