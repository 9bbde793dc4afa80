package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/hodei-jobs/hodei/command"
	"github.com/hodei-jobs/hodei/saga"
)

// Saga types and the signals they wait for.
const (
	SagaExecution    = "execution"
	SagaProvisioning = "provisioning"

	// SignalWorkerRegistered (provisioning saga): the worker redeemed its password.
	SignalWorkerRegistered = "worker.registered"
	// SignalWorkerReady (execution saga): the provisioning saga has a registered worker.
	SignalWorkerReady = "worker.ready"
	// SignalJobFinished (execution saga): the worker reported the job's result.
	SignalJobFinished = "job.finished"
	// SignalAborted (execution saga): the job ended before it got a worker (cancelled
	// while PENDING, or provisioning failed).
	SignalAborted = "job.aborted"
)

// ExecutionSagaID is the id of the execution saga of jobID.
func ExecutionSagaID(jobID string) string { return saga.IDFor(SagaExecution, jobID) }

// ProvisioningSagaID is the id of the provisioning saga of jobID's attempt.
func ProvisioningSagaID(jobID string, attempt int) string {
	return saga.IDFor(SagaProvisioning, jobID+"/"+strconv.Itoa(attempt))
}

type executionInput struct {
	JobID   string        `json:"job_id"`
	Timeout time.Duration `json:"timeout,omitempty"`
}

type provisioningInput struct {
	JobID               string        `json:"job_id"`
	WorkerID            string        `json:"worker_id"`
	Provider            string        `json:"provider"`
	Attempt             int           `json:"attempt"`
	RegistrationTimeout time.Duration `json:"registration_timeout"`
}

type workerSignal struct {
	WorkerID string `json:"worker_id"`
	// Failed (worker.registered only, exited.go): the worker's process ended before it
	// registered; the provisioning fails at once.
	Failed string `json:"failed,omitempty"`
	// Attempt (replacement.ready only): the job's attempt on that worker (a recovery
	// whose first replacement failed waits for a later one).
	Attempt int `json:"attempt,omitempty"`
}

type abortedSignal struct {
	Reason string `json:"reason,omitempty"`
}

// finishedSignal is the payload of SignalJobFinished and the output of await-result.
type finishedSignal struct {
	ExitCode  int    `json:"exit_code"`
	Error     string `json:"error,omitempty"`
	Cancelled bool   `json:"cancelled,omitempty"`
	TimedOut  bool   `json:"timed_out,omitempty"`
	// TimeoutSaga: the timeout saga took the job over (complete and release skip).
	TimeoutSaga bool `json:"timeout_saga,omitempty"`
}

// awaitWorkerOutput is the output of the execution saga's first step.
type awaitWorkerOutput struct {
	WorkerID string `json:"worker_id,omitempty"`
	Aborted  bool   `json:"aborted,omitempty"`
}

// RegisterSagas adds the provisioning and execution saga definitions to reg. The steps
// need nothing but the commands' handlers (registered on the bus by New) and their
// saga's input, so this can run before the engine and the Service exist.
func RegisterSagas(reg *saga.Registry) error {
	for _, d := range []saga.Definition{provisioningSaga(), cancellationSaga(), timeoutSaga(), recoverySaga() /* recovery.go */} {
		if err := reg.Register(d); err != nil {
			return err
		}
	}
	return reg.Register(executionSaga())
}

// dispatch sends cmd through the step's dispatcher.
func dispatch(ctx context.Context, sc *saga.StepContext, cmd command.Command) (Outcome, error) {
	return command.Dispatch[Outcome](ctx, sc, cmd)
}

func provisioningSaga() saga.Definition {
	in := func(sc *saga.StepContext) (provisioningInput, error) {
		var v provisioningInput
		err := sc.Input(&v)
		return v, err
	}
	return saga.Definition{Name: SagaProvisioning, Version: 1, Steps: []saga.Step{
		{
			// The scheduler checked capacity and reserved the slot (a CREATING worker
			// row) under its advisory lock, in the transaction that started this saga;
			// this step confirms the reservation still stands. Its compensation is the
			// provisioning saga's last word when anything later fails for good: the
			// reserved worker is destroyed and the job failed (its execution saga told).
			Name: "validate-capacity",
			Do: func(ctx context.Context, sc *saga.StepContext) (any, error) {
				v, err := in(sc)
				if err != nil {
					return nil, err
				}
				return dispatch(ctx, sc, ValidateReservation{Key: sc.Key(), JobID: v.JobID, WorkerID: v.WorkerID})
			},
			Compensate: func(ctx context.Context, sc *saga.StepContext) (any, error) {
				v, err := in(sc)
				if err != nil {
					return nil, err
				}
				if _, err := dispatch(ctx, sc, DestroyWorker{Key: sc.Key() + "/destroy", WorkerID: v.WorkerID,
					Reason: "provisioning failed"}); err != nil {
					return nil, err
				}
				return dispatch(ctx, sc, RetryProvisioning{Key: sc.Key() + "/fail", JobID: v.JobID,
					WorkerID: v.WorkerID, Reason: "worker provisioning failed"})
			},
		},
		{
			Name:  "create-worker",
			Retry: saga.RetryPolicy{MaxAttempts: 5, Initial: 200 * time.Millisecond, Max: 5 * time.Second},
			Do: func(ctx context.Context, sc *saga.StepContext) (any, error) {
				v, err := in(sc)
				if err != nil {
					return nil, err
				}
				return dispatch(ctx, sc, CreateWorker{Key: sc.Key(), WorkerID: v.WorkerID, JobID: v.JobID, Provider: v.Provider})
			},
			Compensate: func(ctx context.Context, sc *saga.StepContext) (any, error) {
				v, err := in(sc)
				if err != nil {
					return nil, err
				}
				return dispatch(ctx, sc, DestroyWorker{Key: sc.Key(), WorkerID: v.WorkerID, Reason: "provisioning failed"})
			},
		},
		{
			Name: "await-registration",
			Do: func(ctx context.Context, sc *saga.StepContext) (any, error) {
				v, err := in(sc)
				if err != nil {
					return nil, err
				}
				p, err := sc.AwaitSignalTimeout(SignalWorkerRegistered, v.RegistrationTimeout)
				if errors.Is(err, saga.ErrSignalTimeout) {
					return nil, fmt.Errorf("worker %s did not register within %s: %w", v.WorkerID, v.RegistrationTimeout, err)
				}
				if err != nil {
					return nil, err
				}
				var w workerSignal
				if err := json.Unmarshal(p, &w); err != nil {
					return nil, fmt.Errorf("decode %s signal: %w", SignalWorkerRegistered, err)
				}
				if w.Failed != "" {
					return nil, registrationFailed(v.WorkerID, w.Failed)
				}
				return p, nil
			},
		},
		{
			Name: "notify-execution",
			Do: func(ctx context.Context, sc *saga.StepContext) (any, error) {
				v, err := in(sc)
				if err != nil {
					return nil, err
				}
				return dispatch(ctx, sc, NotifyWorkerReady{Key: sc.Key(), JobID: v.JobID, WorkerID: v.WorkerID})
			},
		},
	}}
}

// execState is what the execution saga's steps know from the earlier steps' outputs.
type execState struct {
	in        executionInput
	workerID  string
	aborted   bool // the job ended without a worker of this saga to clean up
	cancelled bool // assign found the job being cancelled: skip to complete
}

func loadExec(sc *saga.StepContext) (execState, error) {
	var s execState
	if err := sc.Input(&s.in); err != nil {
		return s, err
	}
	var w awaitWorkerOutput
	if ok, err := sc.Output("await-worker", &w); err != nil {
		return s, err
	} else if ok {
		s.workerID, s.aborted = w.WorkerID, w.Aborted
	}
	var a Outcome
	if ok, err := sc.Output("assign", &a); err != nil {
		return s, err
	} else if ok {
		s.aborted = s.aborted || a.Aborted
		s.cancelled = a.Cancelled
	}
	if w, ok, err := reassignedWorker(sc); err != nil { // recovery.go: the job moved
		return s, err
	} else if ok {
		s.workerID = w
	}
	return s, nil
}

func executionSaga() saga.Definition {
	return saga.Definition{Name: SagaExecution, Version: 1, Steps: []saga.Step{
		{
			// Waits (parked, no goroutine) until the scheduler granted capacity and the
			// provisioning saga has a registered worker, or the job was aborted.
			Name: "await-worker",
			Do: func(ctx context.Context, sc *saga.StepContext) (any, error) {
				if _, ok := sc.Signal(SignalAborted); ok {
					return awaitWorkerOutput{Aborted: true}, nil
				}
				p, err := sc.AwaitSignal(SignalWorkerReady)
				if err != nil {
					return nil, err
				}
				var w workerSignal
				if err := json.Unmarshal(p, &w); err != nil {
					return nil, fmt.Errorf("decode %s signal: %w", SignalWorkerReady, err)
				}
				return awaitWorkerOutput{WorkerID: w.WorkerID}, nil
			},
		},
		{
			Name: "assign",
			Do: func(ctx context.Context, sc *saga.StepContext) (any, error) {
				s, err := loadExec(sc)
				if err != nil || s.aborted {
					return nil, err
				}
				return dispatch(ctx, sc, AssignWorker{Key: sc.Key(), JobID: s.in.JobID, WorkerID: s.workerID})
			},
			// A later step failing for good: the worker goes and the job fails (a job
			// that already ended stays as it is).
			Compensate: func(ctx context.Context, sc *saga.StepContext) (any, error) {
				s, err := loadExec(sc)
				if err != nil || s.workerID == "" {
					return nil, err
				}
				if _, err := dispatch(ctx, sc, DestroyWorker{Key: sc.Key() + "/destroy", WorkerID: s.workerID,
					Reason: "execution failed"}); err != nil {
					return nil, err
				}
				return dispatch(ctx, sc, MarkJobFailed{Key: sc.Key() + "/fail", JobID: s.in.JobID,
					Reason: "execution saga failed"})
			},
		},
		{
			Name: "dispatch",
			Do: func(ctx context.Context, sc *saga.StepContext) (any, error) {
				s, err := loadExec(sc)
				if err != nil || s.aborted || s.cancelled {
					return nil, err
				}
				return dispatch(ctx, sc, DispatchJob{Key: sc.Key(), JobID: s.in.JobID, WorkerID: s.workerID})
			},
		},
		{
			// Waits for the worker's result; bounded by the job's timeout if it has one.
			Name: "await-result",
			Do: func(ctx context.Context, sc *saga.StepContext) (any, error) {
				s, err := loadExec(sc)
				if err != nil || s.aborted || s.cancelled {
					return nil, err
				}
				var p json.RawMessage
				if s.in.Timeout > 0 {
					p, err = sc.AwaitSignalTimeout(SignalJobFinished, s.in.Timeout)
					if errors.Is(err, saga.ErrSignalTimeout) {
						o, err := dispatch(ctx, sc, StartJobTimeout{Key: sc.Key() + "/timeout", JobID: s.in.JobID,
							WorkerID: s.workerID, Timeout: s.in.Timeout})
						if err != nil {
							return nil, err
						}
						return finishedSignal{TimedOut: true, Error: "timed out after " + s.in.Timeout.String(),
							TimeoutSaga: !o.Skipped}, nil
					}
				} else {
					p, err = sc.AwaitSignal(SignalJobFinished)
				}
				if err != nil {
					return nil, err
				}
				var r finishedSignal
				if err := json.Unmarshal(p, &r); err != nil {
					return nil, fmt.Errorf("decode %s signal: %w", SignalJobFinished, err)
				}
				return r, nil
			},
		},
		{
			Name: "complete",
			Do: func(ctx context.Context, sc *saga.StepContext) (any, error) {
				s, err := loadExec(sc)
				if err != nil || s.aborted {
					return nil, err
				}
				c := CompleteJob{Key: sc.Key(), JobID: s.in.JobID, WorkerID: s.workerID, Cancelled: s.cancelled}
				var r finishedSignal
				if ok, err := sc.Output("await-result", &r); err != nil || r.TimeoutSaga {
					return nil, err
				} else if ok && !s.cancelled {
					c.Error, c.Cancelled, c.TimedOut = r.Error, r.Cancelled, r.TimedOut
					if !r.TimedOut && (r.Error == "" || r.ExitCode != 0) {
						code := r.ExitCode
						c.ExitCode = &code
					}
				}
				return dispatch(ctx, sc, c)
			},
		},
		{
			// One ephemeral worker per job: release it and destroy it. Its slot frees
			// when the destroy commits, and the scheduler is woken.
			Name:  "release",
			Retry: saga.RetryPolicy{MaxAttempts: 5, Initial: 200 * time.Millisecond, Max: 5 * time.Second},
			Do: func(ctx context.Context, sc *saga.StepContext) (any, error) {
				s, err := loadExec(sc)
				if err != nil || s.workerID == "" { // DestroyWorker is idempotent: also when aborted
					return nil, err
				}
				var r finishedSignal
				if _, err := sc.Output("await-result", &r); err != nil || r.TimeoutSaga {
					return nil, err
				}
				if _, err := dispatch(ctx, sc, ReleaseWorker{Key: sc.Key() + "/release", WorkerID: s.workerID}); err != nil {
					return nil, err
				}
				return dispatch(ctx, sc, DestroyWorker{Key: sc.Key() + "/destroy", WorkerID: s.workerID, Reason: "job finished"})
			},
		},
	}}
}
