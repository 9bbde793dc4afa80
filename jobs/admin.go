package jobs

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"

	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/saga"
	"github.com/hodei-jobs/hodei/store"
)

// Resolutions an operator gives a job in MANUAL_INTERVENTION_REQUIRED (ResumeJob).
const (
	// ResolutionRetry: back to PENDING; the scheduler starts a new attempt, run by a
	// fresh execution saga (RetryExecutionSagaID).
	ResolutionRetry = "retry"
	// ResolutionManuallyFixed: FAILED, with the resolution and notes on the job (a
	// human handled it outside Hodei).
	ResolutionManuallyFixed = "manually_fixed"
	// ResolutionCancelled: CANCELLED.
	ResolutionCancelled = "cancelled"
)

// EventJobResumed is the outbox event of ResumeJob.
const EventJobResumed = "job.resumed"

// MaxNotesBytes bounds the notes of ResumeJob.
const MaxNotesBytes = 4 << 10

// ErrNotAwaitingIntervention: ResumeJob on a job that is not in
// MANUAL_INTERVENTION_REQUIRED. It matches domain.ErrIllegalTransition too (the API
// answers FailedPrecondition / HTTP 409).
var ErrNotAwaitingIntervention = fmt.Errorf("job is not in %s: %w", domain.JobManualInterventionRequired,
	domain.ErrIllegalTransition)

// RetryExecutionSagaID is the id of the execution saga that runs attempt of jobID after
// an operator resumed it with ResolutionRetry. The first run's saga keeps
// ExecutionSagaID; attempt is always 2 or more here.
func RetryExecutionSagaID(jobID string, attempt int) string {
	return saga.IDFor(SagaExecution, jobID+"/"+strconv.Itoa(attempt))
}

// ResumeJob applies an operator's resolution to a job in MANUAL_INTERVENTION_REQUIRED,
// in one transaction with the job.resumed event (and, for retry, the new execution
// saga). An unknown resolution or too long notes: a *domain.ValidationError naming the
// field. Another state: an error matching ErrNotAwaitingIntervention.
func (s *Service) ResumeJob(ctx context.Context, jobID, resolution, notes string) (*domain.Job, error) {
	var to domain.JobState
	switch resolution {
	case ResolutionRetry:
		to = domain.JobPending
	case ResolutionManuallyFixed:
		to = domain.JobFailed
	case ResolutionCancelled:
		to = domain.JobCancelled
	default:
		return nil, &domain.ValidationError{Field: "resolution",
			Msg: fmt.Sprintf("%q is not one of %s, %s, %s", resolution, ResolutionRetry, ResolutionManuallyFixed, ResolutionCancelled)}
	}
	if len(notes) > MaxNotesBytes {
		return nil, &domain.ValidationError{Field: "notes", Msg: fmt.Sprintf("%d bytes exceed the limit of %d", len(notes), MaxNotesBytes)}
	}
	var out *domain.Job
	err := s.st.InTx(ctx, func(ctx context.Context) error {
		j, err := s.st.Jobs().Get(ctx, jobID)
		if err != nil {
			return err
		}
		if j.State != domain.JobManualInterventionRequired {
			return fmt.Errorf("job %s is %s: %w", jobID, j.State, ErrNotAwaitingIntervention)
		}
		prevAttempt := j.Attempt
		out, err = s.moveJob(ctx, jobID, to, "resumed by operator: "+resolution, func(j *domain.Job) {
			j.Resolution, j.Notes = resolution, notes
			if to == domain.JobPending {
				j.WorkerID, j.ExitCode = "", nil
			}
		})
		if err != nil {
			return err
		}
		if to == domain.JobPending {
			// The scheduler increments the attempt when it grants capacity.
			in := executionInput{JobID: jobID, Timeout: j.Spec.Timeout}
			if _, _, err := s.engine.Start(ctx, SagaExecution, RetryExecutionSagaID(jobID, prevAttempt+1), in); err != nil {
				return err
			}
			s.afterCommit(ctx, s.WakeScheduler)
		}
		ev, err := domain.NewEvent(EventJobResumed, jobID, map[string]any{
			"resolution": resolution, "notes": notes, "attempt": prevAttempt, "to": to, "at": out.UpdatedAt})
		if err != nil {
			return err
		}
		return s.publish(ctx, ev, fmt.Sprintf("job/%s/%d/resumed", jobID, prevAttempt))
	})
	if err != nil {
		return nil, fmt.Errorf("jobs: resume %s: %w", jobID, err)
	}
	return out, nil
}

// executionSagaOf returns the id of the execution saga that runs jobID's current
// attempt: ExecutionSagaID unless an operator retried the job, then the newest
// RetryExecutionSagaID that exists.
func (s *Service) executionSagaOf(ctx context.Context, jobID string) (string, error) {
	j, err := s.st.Jobs().Get(ctx, jobID)
	if errors.Is(err, store.ErrNotFound) {
		return ExecutionSagaID(jobID), nil
	}
	if err != nil {
		return "", err
	}
	if j.Resolution != ResolutionRetry {
		return ExecutionSagaID(jobID), nil
	}
	for n := j.Attempt + 1; n >= 2; n-- {
		id := RetryExecutionSagaID(jobID, n)
		if _, err := s.engine.Get(ctx, id); err == nil {
			return id, nil
		} else if !errors.Is(err, store.ErrNotFound) {
			return "", err
		}
	}
	return ExecutionSagaID(jobID), nil
}

// JobSagaIDs returns the ids every saga of a job whose latest attempt is attempt may
// have (most do not exist): its execution saga and those of operator retries, the
// provisioning and recovery saga of each attempt, its timeout sagas (one per run) and
// its cancellation saga.
func JobSagaIDs(jobID string, attempt int) []string {
	ids := []string{ExecutionSagaID(jobID)}
	for n := 2; n <= attempt+1; n++ {
		ids = append(ids, RetryExecutionSagaID(jobID, n))
	}
	for n := 1; n <= attempt; n++ {
		ids = append(ids, ProvisioningSagaID(jobID, n), RecoverySagaID(jobID, n))
	}
	ids = append(ids, TimeoutSagaID(jobID))
	for n := 2; n <= attempt; n++ {
		ids = append(ids, AttemptTimeoutSagaID(jobID, n))
	}
	return append(ids, CancellationSagaID(jobID))
}

// JobSagaTypes are the types of the sagas a job owns (JobSagaIDs): retention deletes
// them with their job, never before it (a live job's code looks some of them up).
func JobSagaTypes() []string {
	return []string{SagaExecution, SagaProvisioning, SagaRecovery, SagaTimeout, SagaCancellation}
}

// JobSagas returns the sagas of a job, oldest first (JobSagaIDs that exist). An unknown job: store.ErrNotFound.
func (s *Service) JobSagas(ctx context.Context, jobID string) ([]*saga.Info, error) {
	j, err := s.st.Jobs().Get(ctx, jobID)
	if err != nil {
		return nil, fmt.Errorf("jobs: sagas of %s: %w", jobID, err)
	}
	ids := JobSagaIDs(jobID, j.Attempt)
	var out []*saga.Info
	for _, id := range ids {
		info, err := s.engine.Get(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("jobs: sagas of %s: saga %s: %w", jobID, id, err)
		}
		out = append(out, info)
	}
	sort.SliceStable(out, func(a, b int) bool { return out[a].CreatedAt.Before(out[b].CreatedAt) })
	return out, nil
}
