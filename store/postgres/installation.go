package postgres

import (
	"context"
	"fmt"

	"github.com/google/uuid"
)

// InstallationID returns the database's installation id (migration 0006), creating it
// on the first call.
func (s *Store) InstallationID(ctx context.Context) (string, error) {
	if _, err := s.q(ctx).Exec(ctx, `INSERT INTO installation (singleton, id) VALUES (true, $1)
		ON CONFLICT (singleton) DO NOTHING`, uuid.NewString()); err != nil {
		return "", fmt.Errorf("postgres: installation id: %w", err)
	}
	var id string
	if err := s.q(ctx).QueryRow(ctx, `SELECT id FROM installation`).Scan(&id); err != nil {
		return "", fmt.Errorf("postgres: installation id: %w", err)
	}
	return id, nil
}
