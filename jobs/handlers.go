package jobs

import (
	"context"
	"errors"
	"fmt"

	"github.com/hodei-jobs/hodei/command"
	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/store"
)

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
	command.Register(s.bus, command.HandlerFunc[RetryProvisioning, Outcome](s.retryProvisioning)) // provisioning_retry.go
	command.Register(s.bus, command.HandlerFunc[NotifyWorkerReady, Outcome](s.notifyWorkerReady))
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

func (s *Service) validateReservation(ctx context.Context, c ValidateReservation) (Outcome, error) {
	w, err := s.st.Workers().Get(ctx, c.WorkerID)
	if err != nil {
		return Outcome{}, err
	}
	j, err := s.st.Jobs().Get(ctx, c.JobID)
	if err != nil {
		return Outcome{}, err
	}
	if w.JobID != c.JobID || w.State.IsTerminal() {
		return Outcome{}, fmt.Errorf("jobs: worker %s (%s, job %q) is not a live reservation for job %s",
			c.WorkerID, w.State, w.JobID, c.JobID)
	}
	if j.State != domain.JobProvisioning && j.State != domain.JobCancelling {
		return Outcome{}, fmt.Errorf("jobs: job %s is %s, not PROVISIONING", c.JobID, j.State)
	}
	return Outcome{JobState: string(j.State), WorkerState: string(w.State)}, nil
}

// createWorker starts the worker reserved by the scheduler (startWorker, effects.go).
// The v2 provisioning saga dispatches it from an activity, outside any transaction;
// a v1 saga dispatches it inside its step's transaction, as that version always did.
func (s *Service) createWorker(ctx context.Context, c CreateWorker) (Outcome, error) {
	return s.startWorker(ctx, c.WorkerID, c.JobID, c.Provider)
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
	s.afterCommit(ctx, func() { s.destroyAfterCommit(t, c.Reason) })
	return Outcome{WorkerState: string(w.State)}, nil
}

func (s *Service) releaseWorker(ctx context.Context, c ReleaseWorker) (Outcome, error) {
	w, err := s.st.Workers().Get(ctx, c.WorkerID)
	if err != nil {
		return Outcome{}, err
	}
	if w.State == domain.WorkerTerminating || w.State.IsTerminal() {
		return skipped(nil, w, "worker already released"), nil
	}
	w, err = s.st.Workers().UpdateState(ctx, c.WorkerID, domain.WorkerTerminating, s.cfg.Now(), nil)
	if err != nil {
		return Outcome{}, err
	}
	return Outcome{WorkerState: string(w.State)}, nil
}

func (s *Service) assignWorker(ctx context.Context, c AssignWorker) (Outcome, error) {
	j, err := s.st.Jobs().Get(ctx, c.JobID)
	if err != nil {
		return Outcome{}, err
	}
	switch {
	case j.State.IsTerminal() || j.State.RequiresManualReview():
		o := skipped(j, nil, "job already ended")
		o.Aborted = true
		return o, nil
	case j.State == domain.JobCancelling:
		o := skipped(j, nil, "job is being cancelled")
		o.Cancelled = true
		return o, nil
	case (j.State == domain.JobAssigned || j.State == domain.JobRunning) && j.WorkerID == c.WorkerID:
		return skipped(j, nil, "job already assigned"), nil
	}
	w, err := s.st.Workers().Get(ctx, c.WorkerID)
	if err != nil {
		return Outcome{}, err
	}
	if w.JobID != c.JobID {
		return Outcome{}, fmt.Errorf("jobs: worker %s was reserved for job %q, not %s", c.WorkerID, w.JobID, c.JobID)
	}
	gone := w.State == domain.WorkerTerminating || w.State == domain.WorkerTerminated
	if w.State != domain.WorkerBusy && !gone {
		if w, err = s.st.Workers().UpdateState(ctx, c.WorkerID, domain.WorkerBusy, s.cfg.Now(), nil); err != nil {
			return Outcome{}, err
		}
	}
	j, err = s.moveJob(ctx, c.JobID, domain.JobAssigned, "worker "+c.WorkerID, func(j *domain.Job) { j.WorkerID = c.WorkerID })
	if err != nil {
		return Outcome{}, err
	}
	if gone {
		// The worker died (or was destroyed as lost) between its registration and this
		// assignment. The job is assigned all the same, and its recovery starts in this
		// transaction: a replacement takes it, as for any worker lost mid-job.
		reason := "worker " + c.WorkerID + " was " + string(w.State) + " before the job was assigned to it"
		if _, err := s.recoverLostJob(ctx, fmt.Sprintf("assign/%s/%d/lost", j.ID, j.Attempt), j, reason); err != nil {
			return Outcome{}, err
		}
	}
	return Outcome{JobState: string(j.State), WorkerState: string(w.State)}, nil
}

// dispatchJob has RunJob delivered to the worker after the commit, re-sent until the
// agent acknowledges it (v1 execution sagas, and a job transferred to a replacement;
// the v2 execution saga delivers it in its dispatch activity instead).
func (s *Service) deliverRunJob(ctx context.Context, c DeliverRun) (Outcome, error) {
	return s.deliverRun(ctx, c.JobID, c.WorkerID)
}

func (s *Service) dispatchJob(ctx context.Context, c DispatchJob) (Outcome, error) {
	j, err := s.st.Jobs().Get(ctx, c.JobID)
	if err != nil {
		return Outcome{}, err
	}
	if j.State != domain.JobAssigned || j.WorkerID != c.WorkerID {
		return skipped(j, nil, "job is not waiting for its worker to start"), nil
	}
	s.deliverAfterCommit(ctx, c.WorkerID, fmt.Sprintf("RunJob %s/%d", j.ID, j.Attempt), func(ctx context.Context) error {
		return s.ch.RunJob(ctx, c.WorkerID, j)
	})
	return Outcome{JobState: string(j.State)}, nil
}

// completeJob moves the job to its end state. A job that never reported starting goes
// through RUNNING first (ASSIGNED → SUCCEEDED is not a transition); a cancelled result
// goes through CANCELLING.
func (s *Service) completeJob(ctx context.Context, c CompleteJob) (Outcome, error) {
	j, err := s.st.Jobs().Get(ctx, c.JobID)
	if err != nil {
		return Outcome{}, err
	}
	if j.State.IsTerminal() {
		return skipped(j, nil, "job already ended"), nil
	}
	var to domain.JobState
	reason := c.Error
	switch {
	case c.Cancelled || j.State == domain.JobCancelling && (c.TimedOut || c.Error == "" && (c.ExitCode == nil || *c.ExitCode == 0)):
		to = domain.JobCancelled
		if reason == "" {
			reason = j.LastError
		}
	case c.TimedOut:
		to = domain.JobTimedOut
	case c.ExitCode != nil && *c.ExitCode == 0 && c.Error == "":
		to = domain.JobSucceeded
	default:
		to = domain.JobFailed
		if reason == "" && c.ExitCode != nil {
			reason = fmt.Sprintf("exit code %d", *c.ExitCode)
		}
	}
	// Intermediate hops the transition table needs.
	var hops []domain.JobState
	switch {
	case to == domain.JobCancelled && j.State != domain.JobCancelling:
		hops = append(hops, domain.JobCancelling)
	case (to == domain.JobSucceeded || to == domain.JobFailed) && j.State == domain.JobAssigned:
		hops = append(hops, domain.JobRunning)
	}
	for _, h := range hops {
		if _, err := s.moveJob(ctx, c.JobID, h, reason, nil); err != nil {
			return Outcome{}, err
		}
	}
	j, err = s.moveJob(ctx, c.JobID, to, reason, func(j *domain.Job) {
		if c.ExitCode != nil {
			code := *c.ExitCode
			j.ExitCode = &code
		}
		if to != domain.JobSucceeded {
			j.LastError = reason
		}
	})
	if errors.Is(err, domain.ErrIllegalTransition) { // ended concurrently (cancel.go): the retry skips
		err = command.Transient(err)
	}
	if err != nil {
		return Outcome{}, err
	}
	if c.TimedOut && c.WorkerID != "" { // stop the job before its worker is destroyed
		cr := CancelRequest{JobID: c.JobID, Attempt: j.Attempt, Round: timedOutCancelRound, Reason: reason, Grace: s.cfg.CancelGrace}
		s.deliverAfterCommit(ctx, c.WorkerID, "CancelJob "+c.JobID+" (timed out)", func(ctx context.Context) error {
			return s.ch.CancelJob(ctx, c.WorkerID, cr)
		})
	}
	return Outcome{JobState: string(j.State)}, nil
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

func (s *Service) markJobRunning(ctx context.Context, c MarkJobRunning) (Outcome, error) {
	j, err := s.st.Jobs().Get(ctx, c.JobID)
	if err != nil {
		return Outcome{}, err
	}
	if j.WorkerID != c.WorkerID {
		return Outcome{}, fmt.Errorf("%w: job %s, worker %s", ErrNotAssigned, c.JobID, c.WorkerID)
	}
	if j.State != domain.JobAssigned {
		return skipped(j, nil, "job is not ASSIGNED"), nil
	}
	j, err = s.moveJob(ctx, c.JobID, domain.JobRunning, "started on worker "+c.WorkerID, func(j *domain.Job) {
		if !c.At.IsZero() {
			j.StartedAt = c.At
		}
	})
	if err != nil {
		return Outcome{}, err
	}
	return Outcome{JobState: string(j.State)}, nil
}

func (s *Service) notifyWorkerReady(ctx context.Context, c NotifyWorkerReady) (Outcome, error) {
	if err := s.signalExecution(ctx, c.JobID, SignalWorkerReady, workerSignal{WorkerID: c.WorkerID}); err != nil {
		return Outcome{}, err
	}
	if err := s.signalRecovery(ctx, c.JobID, c.WorkerID); err != nil { // recovery.go: a replacement
		return Outcome{}, err
	}
	return Outcome{}, nil
}
