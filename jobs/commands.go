package jobs

import (
	"slices"
	"time"

	"github.com/hodei-jobs/hodei/command"
)

// Command types of the job path. Every command carries its idempotency key in Key (saga
// steps use StepContext.Key, optionally with a "/suffix"); handlers are also idempotent
// by the state machine, so an empty key is safe for the commands the API dispatches.
const (
	TypeCreateWorker        = "worker.create"
	TypeDestroyWorker       = "worker.destroy"
	TypeReleaseWorker       = "worker.release"
	TypeValidateReservation = "worker.validate_reservation"
	TypeAssignWorker        = "job.assign"
	TypeDispatchJob         = "job.dispatch"
	TypeDeliverRun          = "job.deliver_run"
	TypeCompleteJob         = "job.complete"
	TypeMarkJobFailed       = "job.mark_failed"
	TypeMarkJobRunning      = "job.mark_running"
	TypeNotifyWorkerReady   = "job.notify_worker_ready"
)

// CreateWorker starts the worker reserved by the scheduler through its provider, with a
// fresh one-time password (only its hash is stored), committed before the provider is
// called. Dispatched by an activity (outside any transaction).
type CreateWorker struct {
	Key      string `json:"key"`
	WorkerID string `json:"worker_id"`
	JobID    string `json:"job_id"`
	Provider string `json:"provider"`
}

// DestroyWorker ends the worker's infrastructure (provider.Destroy), revokes its
// credentials and marks it TERMINATED, which frees its capacity slot.
type DestroyWorker struct {
	Key      string `json:"key"`
	WorkerID string `json:"worker_id"`
	Reason   string `json:"reason,omitempty"`
}

// ReleaseWorker takes an ephemeral worker out of service after its job (TERMINATING).
type ReleaseWorker struct {
	Key      string `json:"key"`
	WorkerID string `json:"worker_id"`
}

// ValidateReservation checks that the capacity slot the scheduler reserved for JobID
// (worker WorkerID in CREATING) still stands.
type ValidateReservation struct {
	Key      string `json:"key"`
	JobID    string `json:"job_id"`
	WorkerID string `json:"worker_id"`
}

// AssignWorker binds the job to its registered worker: job ASSIGNED, worker BUSY.
type AssignWorker struct {
	Key      string `json:"key"`
	JobID    string `json:"job_id"`
	WorkerID string `json:"worker_id"`
}

// DispatchJob has RunJob delivered to the worker after commit, re-sent until acked.
type DispatchJob struct {
	Key      string `json:"key"`
	JobID    string `json:"job_id"`
	WorkerID string `json:"worker_id"`
}

// DeliverRun delivers RunJob to the worker and returns once the agent acknowledged it
// (the execution saga's dispatch activity; outside any transaction).
type DeliverRun struct {
	Key      string `json:"key"`
	JobID    string `json:"job_id"`
	WorkerID string `json:"worker_id"`
}

// CompleteJob records the job's end: state, exit code, error and the outbox events, in
// one transaction.
type CompleteJob struct {
	Key       string `json:"key"`
	JobID     string `json:"job_id"`
	WorkerID  string `json:"worker_id"`
	ExitCode  *int   `json:"exit_code,omitempty"`
	Error     string `json:"error,omitempty"`
	Cancelled bool   `json:"cancelled,omitempty"`
	TimedOut  bool   `json:"timed_out,omitempty"`
}

// MarkJobFailed ends a job that could not run (FAILED, CANCELLED when it was being
// cancelled, or MANUAL_INTERVENTION_REQUIRED) and tells its execution saga.
type MarkJobFailed struct {
	Key                  string `json:"key"`
	JobID                string `json:"job_id"`
	Reason               string `json:"reason"`
	RequiresManualReview bool   `json:"requires_manual_review,omitempty"`
}

// MarkJobRunning records that the worker started the job (ASSIGNED → RUNNING).
type MarkJobRunning struct {
	Key      string    `json:"key"`
	JobID    string    `json:"job_id"`
	WorkerID string    `json:"worker_id"`
	At       time.Time `json:"at,omitzero"`
}

// NotifyWorkerReady signals the job's execution saga that its worker registered.
type NotifyWorkerReady struct {
	Key      string `json:"key"`
	JobID    string `json:"job_id"`
	WorkerID string `json:"worker_id"`
}

func (CreateWorker) CommandType() string        { return TypeCreateWorker }
func (DestroyWorker) CommandType() string       { return TypeDestroyWorker }
func (ReleaseWorker) CommandType() string       { return TypeReleaseWorker }
func (ValidateReservation) CommandType() string { return TypeValidateReservation }
func (AssignWorker) CommandType() string        { return TypeAssignWorker }
func (DispatchJob) CommandType() string         { return TypeDispatchJob }
func (DeliverRun) CommandType() string          { return TypeDeliverRun }
func (CompleteJob) CommandType() string         { return TypeCompleteJob }
func (MarkJobFailed) CommandType() string       { return TypeMarkJobFailed }
func (MarkJobRunning) CommandType() string      { return TypeMarkJobRunning }
func (NotifyWorkerReady) CommandType() string   { return TypeNotifyWorkerReady }

func (c CreateWorker) IdempotencyKey() string        { return c.Key }
func (c DestroyWorker) IdempotencyKey() string       { return c.Key }
func (c ReleaseWorker) IdempotencyKey() string       { return c.Key }
func (c ValidateReservation) IdempotencyKey() string { return c.Key }
func (c AssignWorker) IdempotencyKey() string        { return c.Key }
func (c DispatchJob) IdempotencyKey() string         { return c.Key }
func (c DeliverRun) IdempotencyKey() string          { return c.Key }
func (c CompleteJob) IdempotencyKey() string         { return c.Key }
func (c MarkJobFailed) IdempotencyKey() string       { return c.Key }
func (c MarkJobRunning) IdempotencyKey() string      { return c.Key }
func (c NotifyWorkerReady) IdempotencyKey() string   { return c.Key }

// Commands returns a zero value of every command type of this package, those of the
// cancellation, timeout and recovery sagas included (for commandtest.CheckRegistered).
func Commands() []command.Command {
	return slices.Concat([]command.Command{
		CreateWorker{}, DestroyWorker{}, ReleaseWorker{}, ValidateReservation{}, AssignWorker{},
		DispatchJob{}, DeliverRun{}, CompleteJob{}, MarkJobFailed{}, MarkJobRunning{}, NotifyWorkerReady{},
		RetryProvisioning{},
	}, CancellationCommands(), RecoveryCommands())
}

// Outcome is the result of every job path command: the states after it ran, and
// whether it found nothing to do (Skipped, with the reason).
type Outcome struct {
	JobState    string `json:"job_state,omitempty"`
	WorkerState string `json:"worker_state,omitempty"`
	Skipped     bool   `json:"skipped,omitempty"`
	Reason      string `json:"reason,omitempty"`
	// Cancelled / Aborted tell the execution saga that the job is being cancelled, or
	// already ended, so the remaining steps only clean up.
	Cancelled bool `json:"cancelled,omitempty"`
	Aborted   bool `json:"aborted,omitempty"`
}
