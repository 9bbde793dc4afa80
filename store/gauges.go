package store

import (
	"context"
	"time"
)

// GaugeReader is implemented by drivers that answer the gauges of a server's /metrics
// (queue depth, jobs waiting for a human, workers, outbox lag) with a few aggregate
// queries at scrape time. Both drivers implement it.
type GaugeReader interface {
	// Gauges returns the current counts (one read per scrape; not in ctx's transaction
	// unless there is one).
	Gauges(ctx context.Context) (*Gauges, error)
}

// Gauges are counts read from the database for /metrics.
type Gauges struct {
	// PendingByPriority counts PENDING jobs by priority.
	PendingByPriority map[int]int
	// ManualIntervention counts jobs in MANUAL_INTERVENTION_REQUIRED.
	ManualIntervention int
	// Workers counts workers that are not TERMINATED by state and provider.
	Workers []WorkerCount
	// OldestPendingOutbox is when the oldest outbox row still PENDING was written (zero:
	// none is pending).
	OldestPendingOutbox time.Time
}

// WorkerCount is the number of workers in one state of one provider.
type WorkerCount struct {
	State, Provider string
	N               int
}
