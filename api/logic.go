package api

import (
	"context"
	"time"

	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/store"
)

// The API's dependencies are small interfaces defined here, where they are used.
// jobs.Service satisfies JobLogic and WorkerLogic; store.JobStore satisfies JobReader.

// JobLogic is what JobService needs beyond reading: the writes, which go through the
// job logic (validation, one transaction with the saga start and the outbox event).
type JobLogic interface {
	// Submit validates spec (domain.ValidationErrors, nothing written) and creates the
	// job in PENDING.
	Submit(ctx context.Context, spec domain.JobSpec) (*domain.Job, error)
	// Cancel asks for job jobID to be cancelled.
	Cancel(ctx context.Context, jobID, reason string) (*domain.Job, error)
}

// JobReader reads jobs; store.JobStore satisfies it.
type JobReader interface {
	Get(ctx context.Context, id string) (*domain.Job, error)
	List(ctx context.Context, f store.JobFilter) ([]*domain.Job, string, error)
}

// LogReader reads the stored output lines of a job in seq order: at most limit lines
// with seq > afterSeq. An unknown job has no lines (no error).
type LogReader interface {
	ReadLogs(ctx context.Context, jobID string, afterSeq int64, limit int) ([]*store.LogLine, error)
}

// LogReaderFunc adapts a function to LogReader.
type LogReaderFunc func(ctx context.Context, jobID string, afterSeq int64, limit int) ([]*store.LogLine, error)

// ReadLogs calls f.
func (f LogReaderFunc) ReadLogs(ctx context.Context, jobID string, afterSeq int64, limit int) ([]*store.LogLine, error) {
	return f(ctx, jobID, afterSeq, limit)
}

// WorkerLogic is what WorkerAgentService needs: credentials and the worker-side events
// of a job. Every method must be idempotent where the worker may repeat itself (results
// and log batches are re-sent after a reconnect).
type WorkerLogic interface {
	// RegisterWorker exchanges a one-time password for a session token.
	RegisterWorker(ctx context.Context, workerID, otp string) (sessionToken string, err error)
	// AuthenticateSession returns the worker a session token belongs to.
	AuthenticateSession(ctx context.Context, token string) (workerID string, err error)
	Heartbeat(ctx context.Context, workerID string, at time.Time) error
	JobStarted(ctx context.Context, workerID, jobID string, at time.Time) error
	// JobFinished records r durably; when it returns nil the result is acknowledged.
	JobFinished(ctx context.Context, workerID string, r domain.JobResult) error
	// AppendLogs stores a batch of jobID's lines (idempotent on (job_id, seq)).
	AppendLogs(ctx context.Context, workerID, jobID string, lines []*store.LogLine) error
	// PendingRun returns the job whose RunJob to (re)send when workerID connects, or nil.
	PendingRun(ctx context.Context, workerID string) (*domain.Job, error)
	// PendingCancel returns the CancelJob to (re)send when workerID connects, or nil.
	PendingCancel(ctx context.Context, workerID string) (*domain.CancelRequest, error)
	// WorkerDisconnected is told when a worker's stream ends for another reason than
	// this server shutting down (the job logic recovers the worker's job if the worker
	// is not back within a grace period). It must not block.
	WorkerDisconnected(workerID string, at time.Time)
}
