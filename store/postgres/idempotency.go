package postgres

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/hodei-jobs/hodei/store"
)

type idempotencyStore struct{ s *Store }

// Get returns the result stored for key (nil if the command had none), or ErrNotFound.
func (is *idempotencyStore) Get(ctx context.Context, key string) (json.RawMessage, error) {
	var res []byte
	err := is.s.q(ctx).QueryRow(ctx, `SELECT result FROM idempotency_keys WHERE key = $1`, key).Scan(&res)
	if errNoRows(err) {
		return nil, fmt.Errorf("postgres: idempotency key %q: %w", key, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: get idempotency key %q: %w", key, err)
	}
	return json.RawMessage(res), nil
}

// Put records key in ctx's transaction. An existing key returns ErrConflict. It uses
// ON CONFLICT DO NOTHING rather than catching the unique violation, so the conflict does
// not abort the caller's transaction.
func (is *idempotencyStore) Put(ctx context.Context, key, commandType string, result json.RawMessage) error {
	if key == "" {
		return fmt.Errorf("postgres: put idempotency key: key is empty")
	}
	var res []byte
	if len(result) > 0 {
		res = result
	}
	tag, err := is.s.q(ctx).Exec(ctx, `INSERT INTO idempotency_keys (key, command_type, result)
		VALUES ($1, $2, $3) ON CONFLICT (key) DO NOTHING`, key, commandType, res)
	if err != nil {
		return fmt.Errorf("postgres: put idempotency key %q: %w", key, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("postgres: idempotency key %q exists: %w", key, store.ErrConflict)
	}
	return nil
}
