package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/hodei-jobs/hodei/command"
	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/saga"
	"github.com/hodei-jobs/hodei/store"
)

// The cancellation saga (see the package doc, Cancellation).
const (
	SagaCancellation = "cancellation"

	TypeSendCancel         = "job.send_cancel"
	TypeFinishCancellation = "job.finish_cancellation"

	// cancelRounds is how many times the cancellation saga sends CancelJob (each round
	// waits Config.CancelGrace plus cancelSlack for the worker's result).
	cancelRounds = 3
	cancelSlack  = time.Second
)

// CancellationSagaID is the id of jobID's cancellation saga (at most one per job).
func CancellationSagaID(jobID string) string { return saga.IDFor(SagaCancellation, jobID) }

// ErrNotCancellable matches a *NotCancellableError.
var ErrNotCancellable = errors.New("jobs: job cannot be cancelled")

// NotCancellableError: Cancel of a job that already ended. It also matches
// domain.ErrIllegalTransition (the API maps it to FailedPrecondition).
type NotCancellableError struct {
	JobID string
	State domain.JobState
}

func (e *NotCancellableError) Error() string {
	return fmt.Sprintf("job %s already %s; nothing to cancel", e.JobID, e.State)
}

// Is makes errors.Is(err, ErrNotCancellable) and errors.Is(err, domain.ErrIllegalTransition) true.
func (e *NotCancellableError) Is(target error) bool {
	return target == ErrNotCancellable || target == domain.ErrIllegalTransition
}

// SendCancel sends CancelJob to the job's worker after commit (a no-op, Aborted, once the
// job is no longer CANCELLING on that worker).
type SendCancel struct {
	Key      string        `json:"key"`
	JobID    string        `json:"job_id"`
	WorkerID string        `json:"worker_id"`
	Reason   string        `json:"reason,omitempty"`
	Grace    time.Duration `json:"grace,omitempty"`
	Round    int           `json:"round"`
}

// FinishCancellation ends a CANCELLING job as CANCELLED (whether or not the worker
// confirmed) and hands its execution saga a cancelled result so that it ends too.
type FinishCancellation struct {
	Key       string `json:"key"`
	JobID     string `json:"job_id"`
	WorkerID  string `json:"worker_id"`
	Confirmed bool   `json:"confirmed,omitempty"`
	Error     string `json:"error,omitempty"`
}

func (SendCancel) CommandType() string              { return TypeSendCancel }
func (FinishCancellation) CommandType() string      { return TypeFinishCancellation }
func (c SendCancel) IdempotencyKey() string         { return c.Key }
func (c FinishCancellation) IdempotencyKey() string { return c.Key }

// CancellationCommands lists the command types of the cancellation and timeout sagas.
func CancellationCommands() []command.Command {
	return []command.Command{SendCancel{}, FinishCancellation{}, StartJobTimeout{}, TerminateWorker{}}
}

type cancellationInput struct {
	JobID    string        `json:"job_id"`
	WorkerID string        `json:"worker_id"`
	Reason   string        `json:"reason,omitempty"`
	Grace    time.Duration `json:"grace,omitempty"`
}

// cancelRound is the output of a send-cancel or await-cancel step.
type cancelRound struct {
	Done      bool   `json:"done,omitempty"`      // the job is no longer CANCELLING on its worker
	Confirmed bool   `json:"confirmed,omitempty"` // the worker's result arrived
	Error     string `json:"error,omitempty"`
}

// Cancel asks for a job to end:
//
//   - PENDING: CANCELLED at once (its execution saga is told; it has no worker);
//   - PROVISIONING: CANCELLED at once; the reserved worker is destroyed and the
//     provisioning saga cancelled;
//   - ASSIGNED or RUNNING: CANCELLING and, in the same transaction, the cancellation
//     saga starts (it tells the worker, waits, and ends the job CANCELLED);
//   - CANCELLING: nothing to do, the job is returned;
//   - ended: a *NotCancellableError.
func (s *Service) Cancel(ctx context.Context, jobID, reason string) (*domain.Job, error) {
	if reason == "" {
		reason = "cancelled by user"
	}
	var (
		out *domain.Job
		err error
	)
	// The job is read unlocked, and the path taken depends on its state: when it moves
	// meanwhile (the scheduler takes a PENDING job, a recovery puts a RUNNING one back to
	// PENDING), the transaction is rolled back and run again on the new state. Before,
	// such a cancel was refused as "illegal transition PROVISIONING → CANCELLED"
	// (FailedPrecondition, as if the job had ended) and the job ran on.
	var nc *NotCancellableError
	for try := 1; ; try++ {
		out, err = s.cancelOnce(ctx, jobID, reason)
		if errors.As(err, &nc) {
			return nil, nc
		}
		if errors.Is(err, domain.ErrIllegalTransition) { // a worker or job moved under us
			err = fmt.Errorf("%w (%v)", errJobMoved, err) // not %w: it would read as FailedPrecondition
		}
		if !errors.Is(err, errJobMoved) || try == 5 {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("jobs: cancel %s: %w", jobID, err)
	}
	return out, nil
}

// errJobMoved: the job's state changed between Cancel's read and its move; Cancel runs
// again (a conflict, Aborted in the API, once it gives up).
var errJobMoved = fmt.Errorf("job changed state while being cancelled: %w", store.ErrConflict)

// cancelOnce is one try of Cancel, in one transaction.
func (s *Service) cancelOnce(ctx context.Context, jobID, reason string) (*domain.Job, error) {
	var out *domain.Job
	err := s.st.InTx(ctx, func(ctx context.Context) error {
		j, err := s.st.Jobs().Get(ctx, jobID)
		if err != nil {
			return err
		}
		move := func(to domain.JobState) (*domain.Job, error) { return s.moveFrom(ctx, j, to, reason) }
		switch j.State {
		case domain.JobCancelling:
			out = j
			return nil
		case domain.JobPending:
			if out, err = move(domain.JobCancelled); err != nil {
				return err
			}
			return s.signalExecution(ctx, jobID, SignalAborted, abortedSignal{Reason: reason})
		case domain.JobProvisioning:
			if _, err := move(domain.JobCancelling); err != nil {
				return err
			}
			return s.cancelProvisioning(ctx, j, reason, &out)
		case domain.JobAssigned, domain.JobRunning:
			if out, err = move(domain.JobCancelling); err != nil {
				return err
			}
			in := cancellationInput{JobID: jobID, WorkerID: j.WorkerID, Reason: reason, Grace: s.cfg.CancelGrace}
			_, _, err = s.engine.Start(ctx, SagaCancellation, CancellationSagaID(jobID), in)
			return err
		default:
			return &NotCancellableError{JobID: jobID, State: j.State}
		}
	})
	return out, err
}

// moveFrom moves job read to state to, with reason as its last error, if once locked it
// is still in read's state, attempt and worker; errJobMoved (rolling the transaction
// back) if it is not.
func (s *Service) moveFrom(ctx context.Context, read *domain.Job, to domain.JobState, reason string) (*domain.Job, error) {
	moved := false
	j, err := s.moveJob(ctx, read.ID, to, reason, func(j *domain.Job) {
		moved = j.State != read.State || j.Attempt != read.Attempt || j.WorkerID != read.WorkerID
		j.LastError = reason
	})
	if err == nil && moved {
		return nil, errJobMoved
	}
	return j, err
}

// cancelProvisioning ends a job that has a reserved worker but no assignment yet (and
// that the caller moved to CANCELLING).
func (s *Service) cancelProvisioning(ctx context.Context, j *domain.Job, reason string, out **domain.Job) error {
	setReason := func(j *domain.Job) { j.LastError = reason }
	var err error
	if *out, err = s.moveJob(ctx, j.ID, domain.JobCancelled, reason, setReason); err != nil {
		return err
	}
	workers, err := s.st.Workers().List(ctx)
	if err != nil {
		return err
	}
	for _, w := range workers {
		if w.JobID != j.ID || w.State.IsTerminal() {
			continue
		}
		if _, err := s.destroyWorker(ctx, DestroyWorker{WorkerID: w.ID, Reason: reason}); err != nil {
			return err
		}
	}
	if err := s.engine.Cancel(ctx, ProvisioningSagaID(j.ID, j.Attempt), reason); err != nil &&
		!errors.Is(err, saga.ErrFinished) && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	return s.signalExecution(ctx, j.ID, SignalAborted, abortedSignal{Reason: reason})
}

// signalCancellation passes a signal to jobID's cancellation saga if it runs.
func (s *Service) signalCancellation(ctx context.Context, jobID, name string, payload any) error {
	err := s.engine.Signal(ctx, CancellationSagaID(jobID), name, payload)
	if errors.Is(err, saga.ErrFinished) || errors.Is(err, store.ErrNotFound) {
		return nil
	}
	return err
}

// Rounds of CancelJob messages outside the cancellation saga's own (which count from 1).
const (
	pendingCancelRound  = 0  // re-sent to a worker that (re)connects while its job is CANCELLING
	timedOutCancelRound = -1 // a timed-out job stopped before its worker is destroyed
	reassignCancelRound = -2 // the lost worker's copy of a job that moved to a replacement
)

func (s *Service) sendCancel(ctx context.Context, c SendCancel) (Outcome, error) {
	j, err := s.st.Jobs().Get(ctx, c.JobID)
	if err != nil {
		return Outcome{}, err
	}
	if j.State != domain.JobCancelling || j.WorkerID != c.WorkerID || c.WorkerID == "" {
		o := skipped(j, nil, "job is not being cancelled on this worker")
		o.Aborted = true
		return o, nil
	}
	cr := CancelRequest{JobID: c.JobID, Attempt: j.Attempt, Round: c.Round, Reason: c.Reason, Grace: c.Grace}
	s.deliverAfterCommit(ctx, c.WorkerID, fmt.Sprintf("CancelJob %s round %d", c.JobID, c.Round), func(ctx context.Context) error {
		return s.ch.CancelJob(ctx, c.WorkerID, cr)
	})
	return Outcome{JobState: string(j.State)}, nil
}

func (s *Service) finishCancellation(ctx context.Context, c FinishCancellation) (Outcome, error) {
	j, err := s.st.Jobs().Get(ctx, c.JobID)
	if err != nil {
		return Outcome{}, err
	}
	if j.State != domain.JobCancelling {
		return skipped(j, nil, "job is not CANCELLING"), nil
	}
	reason := j.LastError
	if !c.Confirmed {
		reason += " (the worker did not confirm; it is destroyed)"
	}
	o, err := s.completeJob(ctx, CompleteJob{JobID: c.JobID, WorkerID: c.WorkerID, Cancelled: true, Error: reason})
	if err != nil {
		return Outcome{}, err
	}
	// The execution saga waits for a result: the first one it gets wins, so if the
	// worker's own result came first this is ignored.
	if err := s.signalExecution(ctx, c.JobID, SignalJobFinished, finishedSignal{Cancelled: true, Error: reason}); err != nil {
		return Outcome{}, err
	}
	return o, nil
}

// cancellationSaga: cancelRounds × (send-cancel-N ▶ await-cancel-N) ▶ finish ▶ release.
// A round whose predecessor saw the result (or found the job no longer cancelling on
// its worker) does nothing, so the worker is re-sent CancelJob only while it is silent.
func cancellationSaga() saga.Definition {
	// settled reports whether an earlier round ended the waiting, and how.
	settled := func(sc *saga.StepContext, upTo int) (cancelRound, error) {
		for i := 1; i <= upTo; i++ {
			for _, name := range []string{"send-cancel-" + strconv.Itoa(i), "await-cancel-" + strconv.Itoa(i)} {
				var r cancelRound
				if ok, err := sc.Output(name, &r); err != nil {
					return r, err
				} else if ok && r.Done {
					return r, nil
				}
			}
		}
		return cancelRound{}, nil
	}
	var steps []saga.Step
	for i := 1; i <= cancelRounds; i++ {
		steps = append(steps, saga.Step{
			Name: "send-cancel-" + strconv.Itoa(i),
			Do: withInput(func(ctx context.Context, sc *saga.StepContext, v cancellationInput) (any, error) {
				if r, err := settled(sc, i-1); err != nil || r.Done {
					return nil, err
				}
				o, err := dispatch(ctx, sc, SendCancel{Key: sc.Key(), JobID: v.JobID, WorkerID: v.WorkerID,
					Reason: v.Reason, Grace: v.Grace, Round: i})
				if err != nil {
					return nil, err
				}
				return cancelRound{Done: o.Aborted}, nil
			}),
		}, saga.Step{
			Name: "await-cancel-" + strconv.Itoa(i),
			Do: withInput(func(ctx context.Context, sc *saga.StepContext, v cancellationInput) (any, error) {
				if r, err := settled(sc, i); err != nil || r.Done {
					return nil, err
				}
				p, err := sc.AwaitSignalTimeout(SignalJobFinished, v.Grace+cancelSlack)
				if errors.Is(err, saga.ErrSignalTimeout) {
					return cancelRound{}, nil
				}
				if err != nil {
					return nil, err
				}
				var f finishedSignal
				if err := json.Unmarshal(p, &f); err != nil {
					return nil, fmt.Errorf("decode %s signal: %w", SignalJobFinished, err)
				}
				return cancelRound{Done: true, Confirmed: true, Error: f.Error}, nil
			}),
		})
	}
	steps = append(steps, saga.Step{
		Name: "finish",
		Do: withInput(func(ctx context.Context, sc *saga.StepContext, v cancellationInput) (any, error) {
			r, err := settled(sc, cancelRounds)
			if err != nil {
				return nil, err
			}
			return dispatch(ctx, sc, FinishCancellation{Key: sc.Key(), JobID: v.JobID, WorkerID: v.WorkerID,
				Confirmed: r.Confirmed || r.Done, Error: r.Error})
		}),
	}, saga.Step{
		Name:  "release",
		Retry: saga.RetryPolicy{MaxAttempts: 5, Initial: 200 * time.Millisecond, Max: 5 * time.Second},
		Do: withInput(func(ctx context.Context, sc *saga.StepContext, v cancellationInput) (any, error) {
			if v.WorkerID == "" {
				return nil, nil
			}
			if _, err := dispatch(ctx, sc, ReleaseWorker{Key: sc.Key() + "/release", WorkerID: v.WorkerID}); err != nil {
				return nil, err
			}
			return dispatch(ctx, sc, DestroyWorker{Key: sc.Key() + "/destroy", WorkerID: v.WorkerID, Reason: "job cancelled"})
		}),
	})
	return saga.Definition{Name: SagaCancellation, Version: 1, Steps: steps}
}

// PendingCancel returns the CancelJob to (re)send when workerID connects: its job if
// that is CANCELLING on it, else nil (the API re-sends it on every connect, so a
// CancelJob lost while the worker was between streams still arrives). The agent
// ignores a CancelJob for a job it no longer runs.
func (s *Service) PendingCancel(ctx context.Context, workerID string) (*CancelRequest, error) {
	w, err := s.st.Workers().Get(ctx, workerID)
	if err != nil {
		return nil, fmt.Errorf("jobs: pending cancel: %w", err)
	}
	if w.JobID == "" || w.State.IsTerminal() {
		return nil, nil
	}
	j, err := s.st.Jobs().Get(ctx, w.JobID)
	if err != nil {
		return nil, fmt.Errorf("jobs: pending cancel: %w", err)
	}
	if j.State != domain.JobCancelling || j.WorkerID != workerID {
		return nil, nil
	}
	return &CancelRequest{JobID: j.ID, Attempt: j.Attempt, Round: pendingCancelRound, Reason: j.LastError, Grace: s.cfg.CancelGrace}, nil
}
