package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"

	"github.com/hodei-jobs/hodei/store"
)

type idempotencyStore struct{ s *Store }

// Get returns the result stored for key (nil if the command had none), or ErrNotFound.
func (is *idempotencyStore) Get(ctx context.Context, key string) (json.RawMessage, error) {
	var res sql.NullString
	err := is.s.q(ctx).QueryRowContext(ctx, `SELECT result FROM idempotency_keys WHERE key = ?`, key).Scan(&res)
	if noRows(err) {
		return nil, fmt.Errorf("sqlite: idempotency key %q: %w", key, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: get idempotency key %q: %w", key, err)
	}
	if !res.Valid {
		return nil, nil
	}
	return json.RawMessage(res.String), nil
}

// Put records key in ctx's transaction. An existing key returns ErrConflict and writes
// nothing (ON CONFLICT DO NOTHING).
func (is *idempotencyStore) Put(ctx context.Context, key, commandType string, result json.RawMessage) error {
	if key == "" {
		return fmt.Errorf("sqlite: put idempotency key: key is empty")
	}
	var res any
	if len(result) > 0 {
		if !json.Valid(result) {
			return fmt.Errorf("sqlite: put idempotency key %q: result is not valid JSON", key)
		}
		res = string(result)
	}
	var n int64
	err := is.s.write(ctx, func(ctx context.Context, q querier) error {
		r, err := q.ExecContext(ctx, `INSERT INTO idempotency_keys (key, command_type, result, created_at)
			VALUES (?, ?, ?, ?) ON CONFLICT (key) DO NOTHING`, key, commandType, res, nanos(now()))
		if err != nil {
			return err
		}
		n, err = r.RowsAffected()
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite: put idempotency key %q: %w", key, err)
	}
	if n == 0 {
		return fmt.Errorf("sqlite: idempotency key %q exists: %w", key, store.ErrConflict)
	}
	return nil
}
