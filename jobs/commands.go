package jobs

import (
	"context"
	"errors"
	"slices"

	"go.opentelemetry.io/otel/trace"

	"github.com/hodei-jobs/hodei/command"
	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/store"
)

// Command types. Every command carries its idempotency key in Key (saga steps use
// StepContext.Key, optionally with a "/suffix"); handlers are also idempotent by the
// state machine, so an empty key is safe for the commands the API dispatches. Each
// saga's file holds its own commands; these two serve several sagas.
const (
	TypeDestroyWorker = "worker.destroy"
	TypeMarkJobFailed = "job.mark_failed"
)

// DestroyWorker ends the worker's infrastructure (provider.Destroy), revokes its
// credentials and marks it TERMINATED, which frees its capacity slot.
type DestroyWorker struct {
	Key      string `json:"key"`
	WorkerID string `json:"worker_id"`
	Reason   string `json:"reason,omitempty"`
}

// MarkJobFailed ends a job that could not run (FAILED, CANCELLED when it was being
// cancelled, or MANUAL_INTERVENTION_REQUIRED) and tells its execution saga.
type MarkJobFailed struct {
	Key                  string `json:"key"`
	JobID                string `json:"job_id"`
	Reason               string `json:"reason"`
	RequiresManualReview bool   `json:"requires_manual_review,omitempty"`
}

func (DestroyWorker) CommandType() string { return TypeDestroyWorker }
func (MarkJobFailed) CommandType() string { return TypeMarkJobFailed }

func (c DestroyWorker) IdempotencyKey() string { return c.Key }
func (c MarkJobFailed) IdempotencyKey() string { return c.Key }

// Commands returns a zero value of every command type of this package, those of the
// cancellation, timeout and recovery sagas included (for commandtest.CheckRegistered).
func Commands() []command.Command {
	return slices.Concat([]command.Command{
		CreateWorker{}, DestroyWorker{}, ReleaseWorker{}, ValidateReservation{}, AssignWorker{},
		DispatchJob{}, DeliverRun{}, CompleteJob{}, MarkJobFailed{}, MarkJobRunning{}, NotifyWorkerReady{},
		RetryProvisioning{}, CreateWarmWorker{},
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
	// Recycled (ReleaseWorker): the worker went back to its warm pool, not away.
	Recycled bool `json:"recycled,omitempty"`
}

// Command handlers. Each writes through the transaction ctx carries (the saga step's,
// or the idempotency middleware's) and is idempotent twice over: by its key (the
// middleware) and by the state machine (a repeated command finds the state it set and
// reports Skipped). External effects — provider calls, messages to workers — run in the
// handlers of the commands activities dispatch outside any transaction (CreateWorker,
// TerminateWorker, DeliverRun; effects.go), idempotent per worker id, or after commit.

func (s *Service) register() {
	command.Register(s.bus, command.HandlerFunc[ValidateReservation, Outcome](s.validateReservation))
	command.Register(s.bus, command.HandlerFunc[CreateWorker, Outcome](s.createWorker))
	command.Register(s.bus, command.HandlerFunc[DestroyWorker, Outcome](s.destroyWorker))
	command.Register(s.bus, command.HandlerFunc[ReleaseWorker, Outcome](s.releaseWorker))
	command.Register(s.bus, command.HandlerFunc[AssignWorker, Outcome](s.assignWorker))
	command.Register(s.bus, command.HandlerFunc[DispatchJob, Outcome](s.dispatchJob))
	command.Register(s.bus, command.HandlerFunc[DeliverRun, Outcome](s.deliverRunJob))
	command.Register(s.bus, command.HandlerFunc[CompleteJob, Outcome](s.completeJob))
	command.Register(s.bus, command.HandlerFunc[MarkJobFailed, Outcome](s.markJobFailed))
	command.Register(s.bus, command.HandlerFunc[MarkJobRunning, Outcome](s.markJobRunning))
	command.Register(s.bus, command.HandlerFunc[RetryProvisioning, Outcome](s.retryProvisioning))
	command.Register(s.bus, command.HandlerFunc[NotifyWorkerReady, Outcome](s.notifyWorkerReady))
	command.Register(s.bus, command.HandlerFunc[CreateWarmWorker, Outcome](s.createWarmWorker))     // warm.go
	command.Register(s.bus, command.HandlerFunc[SendCancel, Outcome](s.sendCancel))                 // cancel.go
	command.Register(s.bus, command.HandlerFunc[FinishCancellation, Outcome](s.finishCancellation)) // cancel.go
	command.Register(s.bus, command.HandlerFunc[StartJobTimeout, Outcome](s.startJobTimeout))       // timeout.go
	command.Register(s.bus, command.HandlerFunc[TerminateWorker, Outcome](s.terminateWorkerCmd))    // timeout.go
	s.registerRecovery()                                                                            // recovery.go
}

func skipped(j *domain.Job, w *domain.Worker, reason string) Outcome {
	o := Outcome{Skipped: true, Reason: reason}
	if j != nil {
		o.JobState = string(j.State)
	}
	if w != nil {
		o.WorkerState = string(w.State)
	}
	return o
}

// destroyWorker revokes the worker's credentials and marks it TERMINATED, which frees
// its capacity slot; the provider's Destroy runs after the commit, off the transaction
// (destroyAfterCommit). If the process dies before that, the worker sweep destroys what
// the provider still runs for a TERMINATED (or unknown) worker (sweepWorkers).
func (s *Service) destroyWorker(ctx context.Context, c DestroyWorker) (Outcome, error) {
	w, err := s.st.Workers().Get(ctx, c.WorkerID)
	if errors.Is(err, store.ErrNotFound) {
		return Outcome{Skipped: true, Reason: "no such worker"}, nil
	}
	if err != nil {
		return Outcome{}, err
	}
	if err := s.st.Credentials().Revoke(ctx, c.WorkerID); err != nil {
		return Outcome{}, err
	}
	if w.State.IsTerminal() {
		return skipped(nil, w, "worker already terminated"), nil
	}
	if _, err := s.providers.Get(w.Provider); err != nil {
		return Outcome{}, err
	}
	w, err = s.st.Workers().UpdateState(ctx, c.WorkerID, domain.WorkerTerminated, s.cfg.Now(), nil)
	if err != nil {
		return Outcome{}, err
	}
	// The slot is free from the commit on; the scheduler is woken once the provider's
	// Destroy returned, so that the processes alive rarely exceed the capacity either.
	t := target(w)
	sc := trace.SpanContextFromContext(ctx) // the destroy joins the caller's trace
	s.afterCommit(ctx, func() { s.destroyAfterCommit(sc, t, c.Reason) })
	return Outcome{WorkerState: string(w.State)}, nil
}

func (s *Service) markJobFailed(ctx context.Context, c MarkJobFailed) (Outcome, error) {
	j, err := s.st.Jobs().Get(ctx, c.JobID)
	if err != nil {
		return Outcome{}, err
	}
	if j.State.IsTerminal() {
		return skipped(j, nil, "job already ended"), nil
	}
	to := domain.JobFailed
	switch {
	case c.RequiresManualReview && j.State != domain.JobPending:
		to = domain.JobManualInterventionRequired
	case j.State == domain.JobCancelling:
		to = domain.JobCancelled
	}
	if j.State == to {
		return skipped(j, nil, "job already "+string(to)), nil
	}
	j, err = s.moveJob(ctx, c.JobID, to, c.Reason, func(j *domain.Job) { j.LastError = c.Reason })
	if err != nil {
		return Outcome{}, err
	}
	if err := s.signalExecution(ctx, c.JobID, SignalAborted, abortedSignal{Reason: c.Reason}); err != nil {
		return Outcome{}, err
	}
	return Outcome{JobState: string(j.State)}, nil
}
