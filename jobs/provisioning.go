package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/saga"
	"github.com/hodei-jobs/hodei/store"
)

// SagaProvisioning is the provisioning saga's type.
const SagaProvisioning = "provisioning"

// SignalWorkerRegistered (provisioning saga): the worker redeemed its password.
const SignalWorkerRegistered = "worker.registered"

// ProvisioningSagaID is the id of the provisioning saga of jobID's attempt.
func ProvisioningSagaID(jobID string, attempt int) string {
	return saga.IDFor(SagaProvisioning, jobID+"/"+strconv.Itoa(attempt))
}

type provisioningInput struct {
	JobID               string        `json:"job_id"`
	WorkerID            string        `json:"worker_id"`
	Provider            string        `json:"provider"`
	Attempt             int           `json:"attempt"`
	RegistrationTimeout time.Duration `json:"registration_timeout"`
}

func provisioningSaga(version int) saga.Definition {
	return saga.Definition{Name: SagaProvisioning, Version: version, Steps: []saga.Step{
		{
			// The scheduler checked capacity and reserved the slot (a CREATING worker
			// row) under its advisory lock, in the transaction that started this saga;
			// this step confirms the reservation still stands. Its compensation is the
			// provisioning saga's last word when anything later fails for good: the
			// reserved worker is destroyed and the job failed (its execution saga told).
			Name: "validate-capacity",
			Do: withInput(func(ctx context.Context, sc *saga.StepContext, v provisioningInput) (any, error) {
				return dispatch(ctx, sc, ValidateReservation{Key: sc.Key(), JobID: v.JobID, WorkerID: v.WorkerID})
			}),
			Compensate: withInput(func(ctx context.Context, sc *saga.StepContext, v provisioningInput) (any, error) {
				if _, err := dispatch(ctx, sc, DestroyWorker{Key: sc.Key() + "/destroy", WorkerID: v.WorkerID,
					Reason: "provisioning failed"}); err != nil {
					return nil, err
				}
				return dispatch(ctx, sc, RetryProvisioning{Key: sc.Key() + "/fail", JobID: v.JobID,
					WorkerID: v.WorkerID, Reason: provisioningFailure(sc)})
			}),
		},
		// The worker row and its reservation committed with the saga's start; the
		// password is committed by CreateWorker before the provider is called, so the
		// worker can never register before it.
		createStep(version),
		{
			Name: "await-registration",
			Do: withInput(func(ctx context.Context, sc *saga.StepContext, v provisioningInput) (any, error) {
				return awaitRegistration(sc, "worker", v.WorkerID, v.RegistrationTimeout)
			}),
		},
		{
			Name: "notify-execution",
			Do: withInput(func(ctx context.Context, sc *saga.StepContext, v provisioningInput) (any, error) {
				return dispatch(ctx, sc, NotifyWorkerReady{Key: sc.Key(), JobID: v.JobID, WorkerID: v.WorkerID})
			}),
		},
	}}
}

// provisioningFailure is the reason a provisioning saga's compensation gives the job:
// "worker provisioning failed", with the failure its worker's registration signal
// carried (a provider's exit notice: the scheduler's message for an unschedulable pod,
// an exit code) when there is one.
func provisioningFailure(sc *saga.StepContext) string {
	const reason = "worker provisioning failed"
	p, ok := sc.Signal(SignalWorkerRegistered)
	if !ok {
		return reason
	}
	var w workerSignal
	if err := json.Unmarshal(p, &w); err != nil || w.Failed == "" {
		return reason
	}
	return reason + ": " + w.Failed
}

// awaitRegistration is the step body that parks until worker workerID registered (the
// SignalWorkerRegistered signal), failing after timeout or when the signal carries a
// failure; what names the worker in the timeout's error ("worker", "warm worker").
func awaitRegistration(sc *saga.StepContext, what, workerID string, timeout time.Duration) (any, error) {
	p, err := sc.AwaitSignalTimeout(SignalWorkerRegistered, timeout)
	if errors.Is(err, saga.ErrSignalTimeout) {
		return nil, fmt.Errorf("%s %s did not register within %s: %w", what, workerID, timeout, err)
	}
	if err != nil {
		return nil, err
	}
	var w workerSignal
	if err := json.Unmarshal(p, &w); err != nil {
		return nil, fmt.Errorf("decode %s signal: %w", SignalWorkerRegistered, err)
	}
	if w.Failed != "" {
		return nil, registrationFailed(workerID, w.Failed)
	}
	return p, nil
}

// createStep is the provisioning saga's create-worker step: an activity from v2 on.
func createStep(version int) saga.Step {
	st := saga.Step{
		Name:  "create-worker",
		Retry: saga.RetryPolicy{MaxAttempts: 5, Initial: 200 * time.Millisecond, Max: 5 * time.Second},
		Compensate: withInput(func(ctx context.Context, sc *saga.StepContext, v provisioningInput) (any, error) {
			return dispatch(ctx, sc, DestroyWorker{Key: sc.Key(), WorkerID: v.WorkerID, Reason: "provisioning failed"})
		}),
	}
	if version >= 2 {
		st.Activity = activityWithInput(func(ctx context.Context, ac *saga.ActivityContext, v provisioningInput) (any, error) {
			return dispatch(ctx, ac, CreateWorker{Key: ac.Key(), WorkerID: v.WorkerID, JobID: v.JobID, Provider: v.Provider})
		})
		return st
	}
	st.Do = withInput(func(ctx context.Context, sc *saga.StepContext, v provisioningInput) (any, error) {
		return dispatch(ctx, sc, CreateWorker{Key: sc.Key(), WorkerID: v.WorkerID, JobID: v.JobID, Provider: v.Provider})
	})
	return st
}

// TypeCreateWorker is CreateWorker's type.
const TypeCreateWorker = "worker.create"

// TypeValidateReservation is ValidateReservation's type.
const TypeValidateReservation = "worker.validate_reservation"

// TypeNotifyWorkerReady is NotifyWorkerReady's type.
const TypeNotifyWorkerReady = "job.notify_worker_ready"

// CreateWorker starts the worker reserved by the scheduler through its provider, with a
// fresh one-time password (only its hash is stored), committed before the provider is
// called. Dispatched by an activity (outside any transaction).
type CreateWorker struct {
	Key      string `json:"key"`
	WorkerID string `json:"worker_id"`
	JobID    string `json:"job_id"`
	Provider string `json:"provider"`
}

// ValidateReservation checks that the capacity slot the scheduler reserved for JobID
// (worker WorkerID in CREATING) still stands.
type ValidateReservation struct {
	Key      string `json:"key"`
	JobID    string `json:"job_id"`
	WorkerID string `json:"worker_id"`
}

// NotifyWorkerReady signals the job's execution saga that its worker registered.
type NotifyWorkerReady struct {
	Key      string `json:"key"`
	JobID    string `json:"job_id"`
	WorkerID string `json:"worker_id"`
}

func (CreateWorker) CommandType() string { return TypeCreateWorker }

func (ValidateReservation) CommandType() string { return TypeValidateReservation }

func (NotifyWorkerReady) CommandType() string { return TypeNotifyWorkerReady }

func (c CreateWorker) IdempotencyKey() string { return c.Key }

func (c ValidateReservation) IdempotencyKey() string { return c.Key }

func (c NotifyWorkerReady) IdempotencyKey() string { return c.Key }

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

func (s *Service) notifyWorkerReady(ctx context.Context, c NotifyWorkerReady) (Outcome, error) {
	if err := s.signalExecution(ctx, c.JobID, SignalWorkerReady, workerSignal{WorkerID: c.WorkerID}); err != nil {
		return Outcome{}, err
	}
	if err := s.signalRecovery(ctx, c.JobID, c.WorkerID); err != nil { // recovery.go: a replacement
		return Outcome{}, err
	}
	return Outcome{}, nil
}

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

func (RetryProvisioning) CommandType() string { return TypeRetryProvisioning }

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
