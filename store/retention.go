package store

import (
	"context"
	"time"
)

// SagaEndedStates are the saga states no runner ever leaves (saga.State.Terminal; the
// saga package's test keeps the two in step). Retention deletes only sagas in one of
// them: the store otherwise does not interpret a saga's state.
var SagaEndedStates = []string{"COMPLETED", "FAILED", "COMPENSATED", "COMPENSATION_FAILED", "CANCELLED"}

// PrunableJob is a job in an end state (SUCCEEDED, FAILED, TIMED_OUT, CANCELLED) that
// retention may delete, with what identifies its sagas.
type PrunableJob struct {
	ID         string
	Attempt    int
	FinishedAt time.Time
}

// PrunableWorker is a TERMINATED worker that retention may delete.
type PrunableWorker struct {
	ID        string
	UpdatedAt time.Time
}

// RetentionStore deletes what ended long ago (issue 14: "running for months"). Every
// method is one short statement (or a few in one short transaction) over at most limit
// rows found through an index, so no lock is held for long; the caller loops. With
// dryRun a Prune method deletes nothing and counts all that would go (limit ignored).
// Nothing here touches a job that has not ended (MANUAL_INTERVENTION_REQUIRED is not an
// end), a saga that has not ended, or the audit trail (append-only by trigger).
type RetentionStore interface {
	// EndedJobs returns up to limit jobs in an end state finished before before, in
	// (FinishedAt, ID) order, starting after the job (afterAt, afterID) (zero afterAt:
	// from the oldest). The caller decides which of them may go (their sagas).
	EndedJobs(ctx context.Context, before, afterAt time.Time, afterID string, limit int) ([]PrunableJob, error)
	// UnendedSagas returns those of ids whose saga exists and has not ended
	// (SagaEndedStates).
	UnendedSagas(ctx context.Context, ids []string) ([]string, error)
	// DeleteJobs deletes, in one transaction, those of jobIDs still in an end state,
	// with their log lines, and those of sagaIDs that have ended, with their histories,
	// snapshots and timers. It returns the jobs deleted.
	DeleteJobs(ctx context.Context, jobIDs, sagaIDs []string) (int, error)
	// EndedWorkers returns up to limit TERMINATED workers last changed before before
	// whose current job (if any) has ended, in (UpdatedAt, ID) order after (afterAt,
	// afterID), like EndedJobs.
	EndedWorkers(ctx context.Context, before, afterAt time.Time, afterID string, limit int) ([]PrunableWorker, error)
	// DeleteWorkers deletes those of ids still TERMINATED whose current job (if any)
	// has ended, with their credentials; it returns the workers deleted.
	DeleteWorkers(ctx context.Context, ids []string) (int, error)
	// PruneSagas deletes up to limit of the oldest ended sagas last changed before
	// before, with their histories, snapshots and timers, except sagas of exceptTypes
	// (those a job owns: they go with their job, see DeleteJobs); it returns the sagas
	// deleted.
	PruneSagas(ctx context.Context, before time.Time, exceptTypes []string, limit int, dryRun bool) (int, error)
	// PruneLogs deletes up to limit of the oldest log lines written before before of
	// jobs that ended or no longer exist; lines of a job not ended stay.
	PruneLogs(ctx context.Context, before time.Time, limit int, dryRun bool) (int, error)
	// PruneIdempotencyKeys deletes up to limit of the oldest idempotency keys recorded
	// before before, except a key an outbox row not finished (PENDING, RETRY,
	// DEAD_LETTER) still carries, which may yet be dispatched, a job.finished/<job>/…
	// key of a job that has not ended, which recovery and warm reuse read, and a saga
	// step's key (<saga>/<step>/…) of a saga that has not ended.
	PruneIdempotencyKeys(ctx context.Context, before time.Time, limit int, dryRun bool) (int, error)
}
