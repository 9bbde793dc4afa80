package jobs

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/hodei-jobs/hodei/command"
	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/saga"
)

// The timeout saga (see the package doc, Timeouts).
const (
	SagaTimeout = "timeout"

	TypeStartJobTimeout = "job.start_timeout"
	TypeTerminateWorker = "worker.terminate"

	// terminateAttempts bounds the terminate step (provider Destroy, then Status).
	terminateAttempts = 3
)

// TimeoutSagaID is the id of the timeout saga of jobID's first run (at most one per
// run; see AttemptTimeoutSagaID).
func TimeoutSagaID(jobID string) string { return saga.IDFor(SagaTimeout, jobID) }

// AttemptTimeoutSagaID is the id of the timeout saga of attempt of jobID: TimeoutSagaID
// up to attempt 1, its own id for the attempts an operator's retry (ResumeJob) starts,
// so that a retried job is timed out again.
func AttemptTimeoutSagaID(jobID string, attempt int) string {
	if attempt <= 1 {
		return TimeoutSagaID(jobID)
	}
	return saga.IDFor(SagaTimeout, jobID+"/"+strconv.Itoa(attempt))
}

// StartJobTimeout starts the job's timeout saga if the job is still ASSIGNED or RUNNING
// on WorkerID; otherwise it is Skipped (a cancelled or ended job is not timed out).
type StartJobTimeout struct {
	Key      string        `json:"key"`
	JobID    string        `json:"job_id"`
	WorkerID string        `json:"worker_id"`
	Timeout  time.Duration `json:"timeout"`
}

// TerminateWorker destroys the worker's infrastructure now (provider Destroy, on the
// node that owns the worker) and fails, transiently, unless the provider then reports
// it no longer running. Dispatched by an activity (outside any transaction).
type TerminateWorker struct {
	Key      string `json:"key"`
	WorkerID string `json:"worker_id"`
}

func (StartJobTimeout) CommandType() string      { return TypeStartJobTimeout }
func (TerminateWorker) CommandType() string      { return TypeTerminateWorker }
func (c StartJobTimeout) IdempotencyKey() string { return c.Key }
func (c TerminateWorker) IdempotencyKey() string { return c.Key }

type timeoutInput struct {
	JobID    string        `json:"job_id"`
	WorkerID string        `json:"worker_id"`
	Timeout  time.Duration `json:"timeout"`
}

// terminateOutput is the output of the timeout saga's terminate step.
type terminateOutput struct {
	Confirmed bool   `json:"confirmed,omitempty"`
	Error     string `json:"error,omitempty"`
}

func (s *Service) startJobTimeout(ctx context.Context, c StartJobTimeout) (Outcome, error) {
	j, err := s.st.Jobs().Get(ctx, c.JobID)
	if err != nil {
		return Outcome{}, err
	}
	if (j.State != domain.JobAssigned && j.State != domain.JobRunning) || j.WorkerID != c.WorkerID {
		return skipped(j, nil, "job is not running on this worker"), nil
	}
	in := timeoutInput{JobID: c.JobID, WorkerID: c.WorkerID, Timeout: c.Timeout}
	if _, _, err := s.engine.Start(ctx, SagaTimeout, AttemptTimeoutSagaID(c.JobID, j.Attempt), in); err != nil {
		return Outcome{}, err
	}
	return Outcome{JobState: string(j.State)}, nil
}

func (s *Service) terminateWorkerCmd(ctx context.Context, c TerminateWorker) (Outcome, error) {
	pctx, cancel := context.WithTimeout(ctx, s.cfg.DestroyTimeout)
	defer cancel()
	return s.terminateWorker(pctx, c.WorkerID)
}

// timeoutSaga: terminate (provider Destroy + Status, retried) ▶ record (TIMED_OUT and
// the worker released, or MANUAL_INTERVENTION_REQUIRED when the termination could not
// be confirmed: the worker is then left as it is for an operator).
func timeoutSaga(version int) saga.Definition {
	terminate := func(ctx context.Context, d command.Dispatcher, key string, attempt int, v timeoutInput) (any, error) {
		_, err := dispatch(ctx, d, TerminateWorker{Key: key, WorkerID: v.WorkerID})
		switch {
		case err == nil:
			return terminateOutput{Confirmed: true}, nil
		case command.IsTransient(err) && attempt < terminateAttempts:
			return nil, err
		}
		return terminateOutput{Error: err.Error()}, nil
	}
	term := saga.Step{
		Name:  "terminate",
		Retry: saga.RetryPolicy{MaxAttempts: terminateAttempts, Initial: 200 * time.Millisecond, Max: 2 * time.Second},
	}
	if version >= 2 { // an activity: the provider call (on the worker's owner) holds no transaction
		term.Activity = activityWithInput(func(ctx context.Context, ac *saga.ActivityContext, v timeoutInput) (any, error) {
			return terminate(ctx, ac, ac.Key(), ac.Attempt(), v)
		})
	} else {
		term.Do = withInput(func(ctx context.Context, sc *saga.StepContext, v timeoutInput) (any, error) {
			return terminate(ctx, sc, sc.Key(), sc.Attempt(), v)
		})
	}
	return saga.Definition{Name: SagaTimeout, Version: version, Steps: []saga.Step{
		term,
		{
			Name:  "record",
			Retry: saga.RetryPolicy{MaxAttempts: 5, Initial: 200 * time.Millisecond, Max: 5 * time.Second},
			Do: withInput(func(ctx context.Context, sc *saga.StepContext, v timeoutInput) (any, error) {
				var t terminateOutput
				if _, err := sc.Output("terminate", &t); err != nil {
					return nil, err
				}
				msg := "timed out after " + v.Timeout.String()
				if !t.Confirmed {
					return dispatch(ctx, sc, MarkJobFailed{Key: sc.Key() + "/review", JobID: v.JobID, RequiresManualReview: true,
						Reason: fmt.Sprintf("%s; worker %s could not be confirmed terminated after %d attempts: %s",
							msg, v.WorkerID, terminateAttempts, t.Error)})
				}
				o, err := dispatch(ctx, sc, CompleteJob{Key: sc.Key() + "/complete", JobID: v.JobID, WorkerID: v.WorkerID,
					TimedOut: true, Error: msg})
				if err != nil {
					return nil, err
				}
				if _, err := dispatch(ctx, sc, ReleaseWorker{Key: sc.Key() + "/release", WorkerID: v.WorkerID}); err != nil {
					return nil, err
				}
				if _, err := dispatch(ctx, sc, DestroyWorker{Key: sc.Key() + "/destroy", WorkerID: v.WorkerID, Reason: "job timed out"}); err != nil {
					return nil, err
				}
				return o, nil
			}),
		},
	}}
}
