package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hodei-jobs/hodei/command"
	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/saga"
)

// The execution saga's type and the signals it waits for.
const (
	SagaExecution = "execution"
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

type executionInput struct {
	JobID   string        `json:"job_id"`
	Timeout time.Duration `json:"timeout,omitempty"`
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
				if o, err := dispatch(ctx, sc, ReleaseWorker{Key: sc.Key() + "/release", WorkerID: s.workerID}); err != nil || o.Recycled {
					return o, err // a pool's worker may go back to its pool (warm.go)
				}
				return dispatch(ctx, sc, DestroyWorker{Key: sc.Key() + "/destroy", WorkerID: s.workerID, Reason: "job finished"})
			},
		},
	}}
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
		Retry: deliverRetry,
		Activity: func(ctx context.Context, ac *saga.ActivityContext) (any, error) {
			s, err := loadExecFrom(ac)
			if err != nil || s.aborted || s.cancelled {
				return nil, err
			}
			return deliverActivity(ctx, ac, s.in.JobID, s.workerID, false)
		},
	}
}

// deliverRetry is the retry policy of the activities that deliver RunJob.
var deliverRetry = saga.RetryPolicy{MaxAttempts: deliverAttempts, Initial: 100 * time.Millisecond, Max: 5 * time.Second}

// deliverActivity is the body of an activity that delivers RunJob (DeliverRun) to
// workerID: a transient failure on the last of deliverAttempts is recorded as
// NotDelivered and the saga goes on. With retryAll every failure counts as transient
// (the recovery saga's deliver: a failed delivery must never compensate it).
func deliverActivity(ctx context.Context, ac *saga.ActivityContext, jobID, workerID string, retryAll bool) (dispatchOutput, error) {
	o, err := dispatch(ctx, ac, DeliverRun{Key: ac.Key(), JobID: jobID, WorkerID: workerID})
	if err != nil && retryAll && !command.IsTransient(err) {
		err = command.Transient(err)
	}
	if err != nil && command.IsTransient(err) && ac.Attempt() >= deliverAttempts {
		return dispatchOutput{NotDelivered: err.Error()}, nil
	}
	return dispatchOutput{Outcome: o}, err
}

// Command types of the execution saga.
const (
	TypeReleaseWorker  = "worker.release"
	TypeAssignWorker   = "job.assign"
	TypeDispatchJob    = "job.dispatch"
	TypeDeliverRun     = "job.deliver_run"
	TypeCompleteJob    = "job.complete"
	TypeMarkJobRunning = "job.mark_running"
)

// ReleaseWorker takes an ephemeral worker out of service after its job (TERMINATING).
type ReleaseWorker struct {
	Key      string `json:"key"`
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

// MarkJobRunning records that the worker started the job (ASSIGNED → RUNNING).
type MarkJobRunning struct {
	Key      string    `json:"key"`
	JobID    string    `json:"job_id"`
	WorkerID string    `json:"worker_id"`
	At       time.Time `json:"at,omitzero"`
}

func (ReleaseWorker) CommandType() string { return TypeReleaseWorker }

func (AssignWorker) CommandType() string { return TypeAssignWorker }

func (DispatchJob) CommandType() string { return TypeDispatchJob }

func (DeliverRun) CommandType() string { return TypeDeliverRun }

func (CompleteJob) CommandType() string { return TypeCompleteJob }

func (MarkJobRunning) CommandType() string { return TypeMarkJobRunning }

func (c ReleaseWorker) IdempotencyKey() string { return c.Key }

func (c AssignWorker) IdempotencyKey() string { return c.Key }

func (c DispatchJob) IdempotencyKey() string { return c.Key }

func (c DeliverRun) IdempotencyKey() string { return c.Key }

func (c CompleteJob) IdempotencyKey() string { return c.Key }

func (c MarkJobRunning) IdempotencyKey() string { return c.Key }

func (s *Service) releaseWorker(ctx context.Context, c ReleaseWorker) (Outcome, error) {
	w, err := s.st.Workers().Get(ctx, c.WorkerID)
	if err != nil {
		return Outcome{}, err
	}
	if w.State == domain.WorkerTerminating || w.State.IsTerminal() {
		return skipped(nil, w, "worker already released"), nil
	}
	if ok, err := s.recycleWorker(ctx, w); err != nil { // warm.go
		return Outcome{}, err
	} else if ok {
		return Outcome{WorkerState: string(domain.WorkerReady), Recycled: true}, nil
	}
	moved, err := s.st.Workers().UpdateState(ctx, c.WorkerID, domain.WorkerTerminating, s.cfg.Now(), nil)
	if errors.Is(err, domain.ErrIllegalTransition) {
		// Read unlocked above: a concurrent DestroyWorker (a recovery's terminate-old,
		// the cleanup) terminated it meanwhile; UpdateState read it locked.
		if now, gerr := s.st.Workers().Get(ctx, c.WorkerID); gerr == nil && (now.State == domain.WorkerTerminating || now.State.IsTerminal()) {
			return skipped(nil, now, "worker already released"), nil
		}
	}
	if err != nil {
		return Outcome{}, err
	}
	return Outcome{WorkerState: string(moved.State)}, nil
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
