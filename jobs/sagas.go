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
//
// Version 2 of the provisioning, execution and timeout sagas runs their provider calls
// and worker messages as activities (outside any transaction); version 1, whose steps
// made them inside the step's transaction, stays registered so that sagas started on
// it finish on its steps (new sagas start on the latest version).
func RegisterSagas(reg *saga.Registry) error {
	defs := []saga.Definition{cancellationSaga(), recoverySaga() /* recovery.go */}
	for _, v := range []int{1, 2} {
		defs = append(defs, provisioningSaga(v), executionSaga(v), timeoutSaga(v) /* timeout.go */)
	}
	for _, d := range defs {
		if err := reg.Register(d); err != nil {
			return err
		}
	}
	return nil
}

// dispatch sends cmd through the step's (or activity's) dispatcher.
func dispatch(ctx context.Context, sc command.Dispatcher, cmd command.Command) (Outcome, error) {
	return command.Dispatch[Outcome](ctx, sc, cmd)
}

// inputOf decodes a saga's input (a StepContext or an ActivityContext).
func inputOf[T any](c interface{ Input(any) error }) (T, error) {
	var v T
	err := c.Input(&v)
	return v, err
}

func provisioningSaga(version int) saga.Definition {
	in := inputOf[provisioningInput]
	return saga.Definition{Name: SagaProvisioning, Version: version, Steps: []saga.Step{
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
		// The worker row and its reservation committed with the saga's start; the
		// password is committed by CreateWorker before the provider is called, so the
		// worker can never register before it.
		createStep(version, func(c interface{ Input(any) error }) (provisioningInput, error) { return in(c) }),
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

// stepReader is what loadExec reads: a StepContext or an ActivityContext.
type stepReader interface {
	Input(v any) error
	Output(step string, v any) (bool, error)
	Signal(name string) (json.RawMessage, bool)
}

func loadExec(sc *saga.StepContext) (execState, error) { return loadExecFrom(sc) }

func loadExecFrom(sc stepReader) (execState, error) {
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

func executionSaga(version int) saga.Definition {
	return saga.Definition{Name: SagaExecution, Version: version, Steps: []saga.Step{
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
		dispatchStep(version),
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

// createStep is the provisioning saga's create-worker step: an activity from v2 on.
func createStep(version int, in func(interface{ Input(any) error }) (provisioningInput, error)) saga.Step {
	st := saga.Step{
		Name:  "create-worker",
		Retry: saga.RetryPolicy{MaxAttempts: 5, Initial: 200 * time.Millisecond, Max: 5 * time.Second},
		Compensate: func(ctx context.Context, sc *saga.StepContext) (any, error) {
			v, err := in(sc)
			if err != nil {
				return nil, err
			}
			return dispatch(ctx, sc, DestroyWorker{Key: sc.Key(), WorkerID: v.WorkerID, Reason: "provisioning failed"})
		},
	}
	if version >= 2 {
		st.Activity = func(ctx context.Context, ac *saga.ActivityContext) (any, error) {
			v, err := in(ac)
			if err != nil {
				return nil, err
			}
			return dispatch(ctx, ac, CreateWorker{Key: ac.Key(), WorkerID: v.WorkerID, JobID: v.JobID, Provider: v.Provider})
		}
		return st
	}
	st.Do = func(ctx context.Context, sc *saga.StepContext) (any, error) {
		v, err := in(sc)
		if err != nil {
			return nil, err
		}
		return dispatch(ctx, sc, CreateWorker{Key: sc.Key(), WorkerID: v.WorkerID, JobID: v.JobID, Provider: v.Provider})
	}
	return st
}

// deliverAttempts bounds the dispatch activity's deliveries of RunJob (≈ 20 s with its
// backoff); past them the saga goes on waiting for the result: a worker that is gone
// is found lost (and its job recovered), one that reconnects gets the job then.
const deliverAttempts = 8

// dispatchOutput is the output of the v2 execution saga's dispatch step.
type dispatchOutput struct {
	Outcome
	NotDelivered string `json:"not_delivered,omitempty"`
}

// dispatchStep is the execution saga's dispatch step. From v2 on it is an activity that
// delivers RunJob and returns once the agent acknowledged it, re-sent with backoff.
func dispatchStep(version int) saga.Step {
	if version < 2 {
		return saga.Step{
			Name: "dispatch",
			Do: func(ctx context.Context, sc *saga.StepContext) (any, error) {
				s, err := loadExec(sc)
				if err != nil || s.aborted || s.cancelled {
					return nil, err
				}
				return dispatch(ctx, sc, DispatchJob{Key: sc.Key(), JobID: s.in.JobID, WorkerID: s.workerID})
			},
		}
	}
	return saga.Step{
		Name:  "dispatch",
		Retry: saga.RetryPolicy{MaxAttempts: deliverAttempts, Initial: 100 * time.Millisecond, Max: 5 * time.Second},
		Activity: func(ctx context.Context, ac *saga.ActivityContext) (any, error) {
			s, err := loadExecFrom(ac)
			if err != nil || s.aborted || s.cancelled {
				return nil, err
			}
			o, err := dispatch(ctx, ac, DeliverRun{Key: ac.Key(), JobID: s.in.JobID, WorkerID: s.workerID})
			if err != nil && command.IsTransient(err) && ac.Attempt() >= deliverAttempts {
				return dispatchOutput{NotDelivered: err.Error()}, nil
			}
			return dispatchOutput{Outcome: o}, err
		},
	}
}
