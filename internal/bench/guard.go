package bench

import (
	"context"
	"errors"
	"fmt"

	"github.com/hodei-jobs/hodei/store"
)

// ErrDatabaseInUse: a benchmark that deletes rows was pointed at a database holding
// jobs or outbox rows (a real installation?) without OutboxConfig.AllowDataLoss /
// SagasConfig.AllowDataLoss (`--i-know-this-deletes-data`).
var ErrDatabaseInUse = errors.New("the database holds jobs or outbox rows, and this benchmark deletes rows: use a database of its own, or pass --i-know-this-deletes-data")

// dataStore is what guardData reads.
type dataStore interface {
	Jobs() store.JobStore
	Outbox() store.OutboxStore
}

// guardData refuses a database that holds any job or outbox row unless allow.
func guardData(ctx context.Context, st dataStore, allow bool, what string) error {
	if allow {
		return nil
	}
	jobs, _, err := st.Jobs().List(ctx, store.JobFilter{PageSize: 1})
	if err != nil {
		return fmt.Errorf("%s: check the database is not in use: %w", what, err)
	}
	counts, err := st.Outbox().CountByStatus(ctx)
	if err != nil {
		return fmt.Errorf("%s: check the database is not in use: %w", what, err)
	}
	rows := 0
	for _, n := range counts {
		rows += n
	}
	if len(jobs) > 0 || rows > 0 {
		return fmt.Errorf("%s: %w (found %d+ jobs, %d outbox rows)", what, ErrDatabaseInUse, len(jobs), rows)
	}
	return nil
}
