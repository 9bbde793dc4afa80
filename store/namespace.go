package store

import (
	"context"
	"time"
)

// NamespaceUsage is a namespace's limit and its jobs now.
type NamespaceUsage struct {
	Name string
	// MaxRunning is the most jobs of the namespace in PROVISIONING, ASSIGNED or RUNNING
	// at once; 0: no limit.
	MaxRunning int
	// Running counts its jobs in PROVISIONING, ASSIGNED or RUNNING, Pending in PENDING.
	Running, Pending int
}

// NamespaceStore keeps the namespaces' limits on running jobs (the scheduler reads
// them through SchedulingStore.NamespaceHeadroom). A job stored without a namespace is
// in domain.DefaultNamespace.
type NamespaceStore interface {
	// SetLimit stores maxRunning (> 0) for namespace name at time at; 0 removes its
	// limit.
	SetLimit(ctx context.Context, name string, maxRunning int, at time.Time) error
	// Usage returns, by name, every namespace with a limit or with jobs.
	Usage(ctx context.Context) ([]NamespaceUsage, error)
}
