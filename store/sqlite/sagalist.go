package sqlite

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
	q := `SELECT ` + sagaColumns + ` FROM sagas WHERE (?1 = '' OR type = ?1) AND (?2 = '' OR state = ?2)
		AND (?3 IS NULL OR updated_at < ?3) ORDER BY updated_at, id LIMIT ?4`
	rows, err := ss.s.q(ctx).QueryContext(ctx, q, f.Type, f.State, ts(f.UpdatedBefore), f.Limit)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list sagas: %w", err)
	}
	out, err := scanSagas(rows)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list sagas: %w", err)
	}
	return out, nil
}
