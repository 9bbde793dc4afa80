package sqlite

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/hodei-jobs/hodei/store"
)

var _ store.GaugeReader = (*Store)(nil)

// Gauges implements store.GaugeReader with four aggregate queries.
func (s *Store) Gauges(ctx context.Context) (*store.Gauges, error) {
	q := s.q(ctx)
	g := &store.Gauges{PendingByPriority: map[int]int{}}
	rows, err := q.QueryContext(ctx, `SELECT priority, count(*) FROM jobs WHERE state = 'PENDING' GROUP BY priority`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: gauges: pending jobs: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var prio, n int
		if err := rows.Scan(&prio, &n); err != nil {
			return nil, fmt.Errorf("sqlite: gauges: pending jobs: %w", err)
		}
		g.PendingByPriority[prio] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: gauges: pending jobs: %w", err)
	}
	if err := q.QueryRowContext(ctx, `SELECT count(*) FROM jobs WHERE state = 'MANUAL_INTERVENTION_REQUIRED'`).Scan(&g.ManualIntervention); err != nil {
		return nil, fmt.Errorf("sqlite: gauges: manual intervention: %w", err)
	}
	wrows, err := q.QueryContext(ctx, `SELECT state, provider, count(*) FROM workers WHERE state <> 'TERMINATED' GROUP BY state, provider`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: gauges: workers: %w", err)
	}
	defer wrows.Close()
	for wrows.Next() {
		var wc store.WorkerCount
		if err := wrows.Scan(&wc.State, &wc.Provider, &wc.N); err != nil {
			return nil, fmt.Errorf("sqlite: gauges: workers: %w", err)
		}
		g.Workers = append(g.Workers, wc)
	}
	if err := wrows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: gauges: workers: %w", err)
	}
	var oldest sql.NullInt64
	if err := q.QueryRowContext(ctx, `SELECT min(created_at) FROM outbox WHERE status = 'PENDING'`).Scan(&oldest); err != nil {
		return nil, fmt.Errorf("sqlite: gauges: outbox: %w", err)
	}
	g.OldestPendingOutbox = fromTS(oldest)
	return g, nil
}
