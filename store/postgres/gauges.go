package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/hodei-jobs/hodei/store"
)

var _ store.GaugeReader = (*Store)(nil)

// Gauges implements store.GaugeReader with four aggregate queries (the PENDING and
// outbox ones use partial indexes).
func (s *Store) Gauges(ctx context.Context) (*store.Gauges, error) {
	q := s.q(ctx)
	g := &store.Gauges{PendingByPriority: map[int]int{}}
	rows, err := q.Query(ctx, `SELECT priority, count(*) FROM jobs WHERE state = 'PENDING' GROUP BY priority`)
	if err != nil {
		return nil, fmt.Errorf("postgres: gauges: pending jobs: %w", err)
	}
	var prio, n int64
	if _, err := pgx.ForEachRow(rows, []any{&prio, &n}, func() error {
		g.PendingByPriority[int(prio)] = int(n)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("postgres: gauges: pending jobs: %w", err)
	}
	if err := q.QueryRow(ctx, `SELECT count(*) FROM jobs WHERE state = 'MANUAL_INTERVENTION_REQUIRED'`).Scan(&n); err != nil {
		return nil, fmt.Errorf("postgres: gauges: manual intervention: %w", err)
	}
	g.ManualIntervention = int(n)
	rows, err = q.Query(ctx, `SELECT state, provider, count(*) FROM workers WHERE state <> 'TERMINATED' GROUP BY state, provider`)
	if err != nil {
		return nil, fmt.Errorf("postgres: gauges: workers: %w", err)
	}
	var wc store.WorkerCount
	if _, err := pgx.ForEachRow(rows, []any{&wc.State, &wc.Provider, &n}, func() error {
		wc.N = int(n)
		g.Workers = append(g.Workers, wc)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("postgres: gauges: workers: %w", err)
	}
	var oldest *time.Time
	if err := q.QueryRow(ctx, `SELECT min(created_at) FROM outbox WHERE status = 'PENDING'`).Scan(&oldest); err != nil {
		return nil, fmt.Errorf("postgres: gauges: outbox: %w", err)
	}
	if oldest != nil {
		g.OldestPendingOutbox = oldest.UTC()
	}
	return g, nil
}
