package jobs

import (
	"context"
	"errors"
	"fmt"

	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/store"
)

// TypeRetryProvisioning is the command the provisioning saga's compensation dispatches.
const TypeRetryProvisioning = "job.retry_provisioning"

// RetryProvisioning (provisioning saga compensation): the job's worker could not be
// provisioned (the provider refused it, it never registered, or its process died
// first). With attempts left the job goes back to PENDING, keeping its execution
// saga, and the scheduler starts it again on a new worker as the next attempt; with
// none left, or when the worker was a recovery's replacement, it FAILS (MarkJobFailed;
// CANCELLED if it was being cancelled). A job that is no longer on WorkerID (a recovery
// moved it to another worker) or that ended is left alone: the compensation is stale.
type RetryProvisioning struct {
	Key      string `json:"key"`
	JobID    string `json:"job_id"`
	WorkerID string `json:"worker_id"`
	Reason   string `json:"reason"`
}

func (RetryProvisioning) CommandType() string      { return TypeRetryProvisioning }
func (c RetryProvisioning) IdempotencyKey() string { return c.Key }

func (s *Service) retryProvisioning(ctx context.Context, c RetryProvisioning) (Outcome, error) {
	var out Outcome
	err := s.st.InTx(ctx, func(ctx context.Context) error {
		j, err := s.st.Jobs().Get(ctx, c.JobID)
		if err != nil {
			return err
		}
		if j.WorkerID != c.WorkerID || j.State.IsTerminal() || j.State.RequiresManualReview() {
			// A stale compensation: the job moved on to another worker (a recovery) or
			// ended; failing it now would be wrong.
			out = skipped(j, nil, fmt.Sprintf("job is %s on worker %q", j.State, j.WorkerID))
			return nil
		}
		// A replacement for a lost worker belongs to a recovery saga: the execution saga
		// waits for the job's result, not for a worker, so the next attempt is another
		// replacement reporting to the same recovery saga (its label); without one (or
		// attempts) the job fails and the recovery saga's compensation cleans up.
		var lost, recovery string
		if w, err := s.st.Workers().Get(ctx, c.WorkerID); err == nil {
			lost, recovery = w.Labels[labelReplaces], w.Labels[labelRecovery]
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		replacement := lost != ""
		if replacement && recovery != "" && j.State == domain.JobProvisioning && j.Attempt < j.Spec.MaxAttempts {
			if err := s.st.Scheduling().Lock(ctx); err != nil {
				return err
			}
			reason := fmt.Sprintf("replacement %s failed: %s (attempt %d of %d); another replacement",
				c.WorkerID, c.Reason, j.Attempt, j.Spec.MaxAttempts)
			if _, _, err := s.reserveReplacementWorker(ctx, j, lost, recovery, reason); err != nil {
				return err
			}
			out = Outcome{JobState: string(domain.JobProvisioning)}
			return nil
		}
		if j.State == domain.JobProvisioning && j.WorkerID == c.WorkerID && j.Attempt < j.Spec.MaxAttempts && !replacement {
			reason := fmt.Sprintf("%s (attempt %d of %d); trying again", c.Reason, j.Attempt, j.Spec.MaxAttempts)
			moved, err := s.moveJob(ctx, j.ID, domain.JobPending, reason, func(j *domain.Job) {
				j.LastError = reason
				j.WorkerID = ""
			})
			if err != nil {
				return err
			}
			s.afterCommit(ctx, s.WakeScheduler)
			out = Outcome{JobState: string(moved.State)}
			return nil
		}
		reason := c.Reason
		if j.State == domain.JobProvisioning && j.Attempt >= j.Spec.MaxAttempts {
			reason = fmt.Sprintf("%s; attempts exhausted (%d of %d)", c.Reason, j.Attempt, j.Spec.MaxAttempts)
		}
		out, err = s.markJobFailed(ctx, MarkJobFailed{Key: c.Key, JobID: c.JobID, Reason: reason})
		return err
	})
	if err != nil {
		return Outcome{}, fmt.Errorf("jobs: retry provisioning of job %s: %w", c.JobID, err)
	}
	return out, nil
}
