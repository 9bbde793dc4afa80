package postgres

import (
	"context"
	"fmt"

	"github.com/hodei-jobs/hodei/store"
)

var _ store.SagaLister = sagaStore{}

// ListSagas implements store.SagaLister.
func (ss sagaStore) ListSagas(ctx context.Context, f store.SagaFilter) ([]*store.SagaRecord, error) {
	if f.Limit <= 0 {
		f.Limit = 100
	}
	q := `SELECT ` + sagaColumns + ` FROM sagas WHERE ($1 = '' OR type = $1) AND ($2 = '' OR state = $2)
		AND ($3::timestamptz IS NULL OR updated_at < $3) ORDER BY updated_at, id LIMIT $4`
	var before any
	if !f.UpdatedBefore.IsZero() {
		before = f.UpdatedBefore
	}
	rows, err := ss.s.q(ctx).Query(ctx, q, f.Type, f.State, before, f.Limit)
	if err != nil {
		return nil, fmt.Errorf("postgres: list sagas: %w", err)
	}
	out, err := scanSagas(rows)
	if err != nil {
		return nil, fmt.Errorf("postgres: list sagas: %w", err)
	}
	return out, nil
}
