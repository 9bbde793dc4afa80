package sqlite

import (
	"context"
	"fmt"

	"github.com/google/uuid"
)

// InstallationID returns the database's installation id (migration 0006), creating it
// on the first call.
func (s *Store) InstallationID(ctx context.Context) (string, error) {
	var id string
	err := s.write(ctx, func(ctx context.Context, q querier) error {
		if _, err := q.ExecContext(ctx, `INSERT INTO installation (singleton, id) VALUES (1, ?)
			ON CONFLICT (singleton) DO NOTHING`, uuid.NewString()); err != nil {
			return err
		}
		return q.QueryRowContext(ctx, `SELECT id FROM installation`).Scan(&id)
	})
	if err != nil {
		return "", fmt.Errorf("sqlite: installation id: %w", err)
	}
	return id, nil
}
