package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/hodei-jobs/hodei/command"
	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/saga"
	"github.com/hodei-jobs/hodei/store"
)

// Recovery of a job whose worker was lost (see "Recovery" in doc.go).
const (
	SagaRecovery = "recovery"

	// SignalReplacementReady (recovery saga): the replacement worker registered.
	SignalReplacementReady = "replacement.ready"
	// signalReassignedPrefix + attempt (execution saga): the job moved to another
	// worker for that attempt; the execution saga completes and releases that worker.
	signalReassignedPrefix = "worker.reassigned/"

	// EventJobReassigned is written to the outbox when a job moves to a replacement.
	EventJobReassigned = "job.reassigned"

	TypeStartRecovery      = "job.start_recovery"
	TypeReserveReplacement = "job.reserve_replacement"
	TypeTransferJob        = "job.transfer"
	TypeAbandonJob         = "job.abandon"

	// labelReplaces is the label of a replacement worker: the id of the lost worker.
	labelReplaces = "hodei.replaces"
	// labelRecovery is the label of a replacement worker: the recovery saga waiting for
	// it (signalled when it is ready).
	labelRecovery = "hodei.recovery"

	// replacementSlack is added to the registration timeout for the recovery saga's
	// wait: the provisioning saga of the replacement gives up (and fails the job) first.
	replacementSlack = 2 * time.Second
)

// RecoverySagaID is the id of the recovery saga of jobID's attempt (the attempt whose
// worker was lost): one recovery per attempt, however often the loss is detected.
func RecoverySagaID(jobID string, attempt int) string {
	return saga.IDFor(SagaRecovery, jobID+"/"+strconv.Itoa(attempt))
}

// StartRecovery starts the recovery saga of the job's current attempt if the job is
// ASSIGNED or RUNNING on WorkerID (otherwise it is skipped).
type StartRecovery struct {
	Key      string `json:"key"`
	JobID    string `json:"job_id"`
	WorkerID string `json:"worker_id"`
	Reason   string `json:"reason"`
}

// ReserveReplacement (recovery saga) takes the job off its lost worker: with attempts
// left, a CREATING worker row for the replacement, job → PENDING → PROVISIONING
// (attempt + 1) and the replacement's provisioning saga, in one transaction under the
// scheduler's lock; with none left, the job FAILED.
type ReserveReplacement struct {
	Key          string `json:"key"`
	JobID        string `json:"job_id"`
	LostWorkerID string `json:"lost_worker_id"`
	Attempt      int    `json:"attempt"`
	Reason       string `json:"reason"`
}

// TransferJob (recovery saga) assigns the job to its registered replacement, writes the
// JobReassigned event, tells the execution saga and sends RunJob (after commit).
type TransferJob struct {
	Key          string `json:"key"`
	JobID        string `json:"job_id"`
	FromWorkerID string `json:"from_worker_id"`
	ToWorkerID   string `json:"to_worker_id"`
	Attempt      int    `json:"attempt"`
}

// AbandonJob fails the job (CANCELLED if it was being cancelled) with Reason unless it
// already ended, and ends its execution saga (a job.finished signal carrying Reason).
type AbandonJob struct {
	Key    string `json:"key"`
	JobID  string `json:"job_id"`
	Reason string `json:"reason"`
}

func (StartRecovery) CommandType() string      { return TypeStartRecovery }
func (ReserveReplacement) CommandType() string { return TypeReserveReplacement }
func (TransferJob) CommandType() string        { return TypeTransferJob }
func (AbandonJob) CommandType() string         { return TypeAbandonJob }

func (c StartRecovery) IdempotencyKey() string      { return c.Key }
func (c ReserveReplacement) IdempotencyKey() string { return c.Key }
func (c TransferJob) IdempotencyKey() string        { return c.Key }
func (c AbandonJob) IdempotencyKey() string         { return c.Key }

// RecoveryCommands returns a zero value of every recovery command type.
func RecoveryCommands() []command.Command {
	return []command.Command{StartRecovery{}, ReserveReplacement{}, TransferJob{}, AbandonJob{}}
}

// RecoveryOutcome is the result of the recovery commands.
type RecoveryOutcome struct {
	SagaID    string `json:"saga_id,omitempty"`
	Started   bool   `json:"started,omitempty"`
	WorkerID  string `json:"worker_id,omitempty"` // the replacement
	Attempt   int    `json:"attempt,omitempty"`
	Exhausted bool   `json:"exhausted,omitempty"` // no attempt left: the job FAILED
	Skipped   bool   `json:"skipped,omitempty"`
	Aborted   bool   `json:"aborted,omitempty"` // the job ended or is being cancelled
	Reason    string `json:"reason,omitempty"`
}

type recoveryInput struct {
	JobID              string        `json:"job_id"`
	LostWorkerID       string        `json:"lost_worker_id"`
	Attempt            int           `json:"attempt"`
	Reason             string        `json:"reason"`
	ReplacementTimeout time.Duration `json:"replacement_timeout"`
}

func (s *Service) registerRecovery() {
	command.Register(s.bus, command.HandlerFunc[StartRecovery, RecoveryOutcome](s.startRecovery))
	command.Register(s.bus, command.HandlerFunc[ReserveReplacement, RecoveryOutcome](s.reserveReplacement))
	command.Register(s.bus, command.HandlerFunc[TransferJob, RecoveryOutcome](s.transferJob))
	command.Register(s.bus, command.HandlerFunc[AbandonJob, RecoveryOutcome](s.abandonJob))
}

// RecoverJob starts the recovery of jobID if it is ASSIGNED or RUNNING on workerID (a
// duplicate start finds the saga already there and starts nothing).
func (s *Service) RecoverJob(ctx context.Context, jobID, workerID, reason string) (RecoveryOutcome, error) {
	return command.Dispatch[RecoveryOutcome](ctx, s.d, StartRecovery{JobID: jobID, WorkerID: workerID, Reason: reason})
}

func (s *Service) startRecovery(ctx context.Context, c StartRecovery) (RecoveryOutcome, error) {
	var out RecoveryOutcome
	err := s.st.InTx(ctx, func(ctx context.Context) error {
		j, err := s.st.Jobs().Get(ctx, c.JobID)
		if err != nil {
			return err
		}
		if (j.State != domain.JobAssigned && j.State != domain.JobRunning) || j.WorkerID != c.WorkerID {
			out = RecoveryOutcome{Skipped: true, Reason: fmt.Sprintf("job is %s on worker %q", j.State, j.WorkerID)}
			return nil
		}
		if reported, err := s.resultRecorded(ctx, j.ID, j.Attempt); err != nil || reported {
			out = RecoveryOutcome{Skipped: true, Reason: resultRecordedReason(j.Attempt)}
			return err
		}
		// A job whose timeout saga runs is being ended: its worker's death may be that
		// saga's own doing (TerminateWorker), and the timeout wins anyway.
		if _, err := s.engine.Get(ctx, AttemptTimeoutSagaID(j.ID, j.Attempt)); err == nil {
			out = RecoveryOutcome{Skipped: true, Reason: "the job timed out; its timeout saga ends it"}
			return nil
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		id := RecoverySagaID(j.ID, j.Attempt)
		// A replacement that fails is followed by another while attempts remain
		// (RetryProvisioning), each bounded by the registration timeout.
		left := max(1, j.Spec.MaxAttempts-j.Attempt)
		in := recoveryInput{JobID: j.ID, LostWorkerID: c.WorkerID, Attempt: j.Attempt, Reason: c.Reason,
			ReplacementTimeout: time.Duration(left) * (s.cfg.RegistrationTimeout + replacementSlack)}
		_, created, err := s.engine.Start(ctx, SagaRecovery, id, in)
		if err != nil {
			return err
		}
		out = RecoveryOutcome{SagaID: id, Started: created, Attempt: j.Attempt}
		if created {
			s.log.Warn("worker lost; recovering its job", "job", j.ID, "worker", c.WorkerID,
				"attempt", j.Attempt, "reason", c.Reason)
		}
		return nil
	})
	if err != nil {
		return RecoveryOutcome{}, fmt.Errorf("jobs: start recovery of job %s: %w", c.JobID, err)
	}
	return out, nil
}

func (s *Service) reserveReplacement(ctx context.Context, c ReserveReplacement) (RecoveryOutcome, error) {
	var out RecoveryOutcome
	err := s.st.InTx(ctx, func(ctx context.Context) error {
		if err := s.st.Scheduling().Lock(ctx); err != nil {
			return err
		}
		j, err := s.st.Jobs().Get(ctx, c.JobID)
		if err != nil {
			return err
		}
		if (j.State != domain.JobAssigned && j.State != domain.JobRunning) || j.WorkerID != c.LostWorkerID || j.Attempt != c.Attempt {
			out = RecoveryOutcome{Skipped: true, Reason: fmt.Sprintf("job is %s on worker %q, attempt %d", j.State, j.WorkerID, j.Attempt)}
			return nil
		}
		if reported, err := s.resultRecorded(ctx, j.ID, j.Attempt); err != nil || reported {
			out = RecoveryOutcome{Skipped: true, Reason: resultRecordedReason(j.Attempt)}
			return err
		}
		if j.Attempt >= j.Spec.MaxAttempts {
			reason := fmt.Sprintf("worker %s lost (%s); attempts exhausted (%d of %d)",
				c.LostWorkerID, c.Reason, j.Attempt, j.Spec.MaxAttempts)
			if err := s.abandon(ctx, j.ID, reason); err != nil {
				return err
			}
			out = RecoveryOutcome{Exhausted: true, Reason: reason, Attempt: j.Attempt}
			return nil
		}
		reason := "worker " + c.LostWorkerID + " lost: " + c.Reason
		wid, attempt, err := s.reserveReplacementWorker(ctx, j, c.LostWorkerID, RecoverySagaID(j.ID, c.Attempt), reason)
		if err != nil {
			return err
		}
		out = RecoveryOutcome{WorkerID: wid, Attempt: attempt}
		return nil
	})
	if err != nil {
		return RecoveryOutcome{}, fmt.Errorf("jobs: reserve replacement for job %s: %w", c.JobID, err)
	}
	return out, nil
}

// reserveReplacementWorker takes job j (ASSIGNED/RUNNING on its lost worker, or
// PROVISIONING on a replacement that failed) to a new replacement worker, in ctx's
// transaction and under the scheduler lock the caller holds: a CREATING worker row
// labelled with the worker it replaces and the recovery saga it reports to, job →
// PENDING → PROVISIONING (attempt + 1, that worker), and the worker's provisioning saga.
func (s *Service) reserveReplacementWorker(ctx context.Context, j *domain.Job, lostWorkerID, recoverySaga, reason string) (string, int, error) {
	wid, err := uuid.NewV7()
	if err != nil {
		return "", 0, err
	}
	prov := s.cfg.DefaultProvider
	if lost, err := s.st.Workers().Get(ctx, lostWorkerID); err == nil && lost.Provider != "" {
		prov = lost.Provider // the replacement runs where the job could run
	} else if cands, err := s.candidates(j.Spec); err == nil {
		prov = cands[0]
	}
	w := &domain.Worker{ID: wid.String(), Provider: prov, State: domain.WorkerCreating, JobID: j.ID, CreatedAt: s.cfg.Now(),
		Labels: map[string]string{"hodei.job_id": j.ID, labelReplaces: lostWorkerID, labelRecovery: recoverySaga}}
	if err := s.st.Workers().Create(ctx, w); err != nil {
		return "", 0, err
	}
	if err := s.st.Credentials().SetOTP(ctx, w.ID, nil, time.Time{}); err != nil {
		return "", 0, err
	}
	if _, err := s.moveJob(ctx, j.ID, domain.JobPending, reason, nil); err != nil {
		return "", 0, err
	}
	moved, err := s.moveJob(ctx, j.ID, domain.JobProvisioning, "replacement worker "+w.ID, func(j *domain.Job) {
		j.Attempt++
		j.WorkerID = w.ID
		j.LastError = reason
	})
	if err != nil {
		return "", 0, err
	}
	in := provisioningInput{JobID: j.ID, WorkerID: w.ID, Provider: prov,
		Attempt: moved.Attempt, RegistrationTimeout: s.cfg.RegistrationTimeout}
	if _, _, err := s.engine.Start(ctx, SagaProvisioning, ProvisioningSagaID(j.ID, moved.Attempt), in); err != nil {
		return "", 0, err
	}
	return w.ID, moved.Attempt, nil
}

func (s *Service) transferJob(ctx context.Context, c TransferJob) (RecoveryOutcome, error) {
	var out RecoveryOutcome
	err := s.st.InTx(ctx, func(ctx context.Context) error {
		j, err := s.st.Jobs().Get(ctx, c.JobID)
		if err != nil {
			return err
		}
		switch {
		case j.State.IsTerminal() || j.State.RequiresManualReview():
			out = RecoveryOutcome{Aborted: true, Reason: "job already ended (" + string(j.State) + ")"}
			// the execution saga may still wait (a provisioning failure does not end it)
			return s.signalExecution(ctx, j.ID, SignalJobFinished, finishedSignal{Error: j.LastError})
		case j.State == domain.JobCancelling:
			out = RecoveryOutcome{Aborted: true, Reason: "job is being cancelled"}
			return s.signalExecution(ctx, j.ID, SignalJobFinished, finishedSignal{Cancelled: true, Error: j.LastError})
		case j.WorkerID != c.ToWorkerID || j.Attempt != c.Attempt:
			return fmt.Errorf("jobs: job %s is on worker %q attempt %d, not replacement %s attempt %d",
				j.ID, j.WorkerID, j.Attempt, c.ToWorkerID, c.Attempt)
		}
		if _, err := s.assignWorker(ctx, AssignWorker{JobID: c.JobID, WorkerID: c.ToWorkerID}); err != nil {
			return err
		}
		execID, err := s.executionSagaOf(ctx, c.JobID) // a job retried by an operator has a newer execution saga
		if err != nil {
			return err
		}
		if err := s.engine.Signal(ctx, execID, signalReassignedPrefix+strconv.Itoa(c.Attempt),
			workerSignal{WorkerID: c.ToWorkerID}); err != nil && !errors.Is(err, saga.ErrFinished) {
			return err
		}
		ev, err := domain.NewEvent(EventJobReassigned, c.JobID, map[string]any{
			"from_worker_id": c.FromWorkerID, "to_worker_id": c.ToWorkerID, "attempt": c.Attempt, "at": s.cfg.Now()})
		if err != nil {
			return err
		}
		if err := s.publish(ctx, ev, fmt.Sprintf("job/%s/%d/reassigned", c.JobID, c.Attempt)); err != nil {
			return err
		}
		if _, err := s.dispatchJob(ctx, DispatchJob{JobID: c.JobID, WorkerID: c.ToWorkerID}); err != nil {
			return err
		}
		// Best effort: should the lost worker still be alive, stop its copy of the job
		// before it is destroyed.
		cr := CancelRequest{JobID: c.JobID, Attempt: c.Attempt - 1, Round: reassignCancelRound, Reason: "job reassigned",
			Grace: s.cfg.CancelGrace}
		s.afterCommit(ctx, func() {
			go func() { // one try: the lost worker is most likely gone, and is destroyed anyway
				dctx, cancel := context.WithTimeout(context.Background(), s.cfg.DeliveryTimeout) // not the committed transaction's ctx
				defer cancel()
				_ = s.ch.CancelJob(dctx, c.FromWorkerID, cr)
			}()
		})
		out = RecoveryOutcome{WorkerID: c.ToWorkerID, Attempt: c.Attempt}
		return nil
	})
	if err != nil {
		return RecoveryOutcome{}, fmt.Errorf("jobs: transfer job %s to %s: %w", c.JobID, c.ToWorkerID, err)
	}
	return out, nil
}

func (s *Service) abandonJob(ctx context.Context, c AbandonJob) (RecoveryOutcome, error) {
	if err := s.st.InTx(ctx, func(ctx context.Context) error { return s.abandon(ctx, c.JobID, c.Reason) }); err != nil {
		return RecoveryOutcome{}, fmt.Errorf("jobs: abandon job %s: %w", c.JobID, err)
	}
	return RecoveryOutcome{Reason: c.Reason}, nil
}

// abandon ends the job with reason (FAILED; CANCELLED when it was being cancelled)
// unless it already ended, and sends its execution saga the job.finished signal so that
// the saga completes (a no-op on an ended job) and releases its worker.
func (s *Service) abandon(ctx context.Context, jobID, reason string) error {
	j, err := s.st.Jobs().Get(ctx, jobID)
	if err != nil {
		return err
	}
	// A replacement still being provisioned for the job goes with it (a later one than
	// the recovery saga knows of, when an earlier one failed).
	if j.WorkerID != "" {
		w, err := s.st.Workers().Get(ctx, j.WorkerID)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if err == nil && w.Labels[labelReplaces] != "" && w.State != domain.WorkerTerminated {
			if _, err := s.destroyWorker(ctx, DestroyWorker{Key: "abandon/" + jobID + "/" + w.ID, WorkerID: w.ID,
				Reason: "job abandoned: " + reason}); err != nil {
				return err
			}
		}
	}
	if !j.State.IsTerminal() && !j.State.RequiresManualReview() {
		to := domain.JobFailed
		if j.State == domain.JobCancelling {
			to = domain.JobCancelled
		}
		if _, err := s.moveJob(ctx, jobID, to, reason, func(j *domain.Job) { j.LastError = reason }); err != nil {
			return err
		}
	}
	return s.signalExecution(ctx, jobID, SignalJobFinished, finishedSignal{Error: reason})
}

// resultRecorded reports whether JobFinished recorded the result of the job's attempt
// (its key in the idempotency table): the worker reported before it vanished (say, an
// agent that exits right after its result was acked, before the execution saga's
// complete step), so the job must not run again; the execution saga completes it.
func (s *Service) resultRecorded(ctx context.Context, jobID string, attempt int) (bool, error) {
	_, err := s.st.Idempotency().Get(ctx, fmt.Sprintf("job.finished/%s/%d", jobID, attempt))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, store.ErrNotFound):
		return false, nil
	}
	return false, err
}

func resultRecordedReason(attempt int) string {
	return fmt.Sprintf("the result of attempt %d is already recorded; the job completes without recovery", attempt)
}

// signalRecovery tells the recovery saga that replaced the job's previous attempt that
// the replacement registered (called by NotifyWorkerReady; no recovery, no-op).
func (s *Service) signalRecovery(ctx context.Context, jobID, workerID string) error {
	j, err := s.st.Jobs().Get(ctx, jobID)
	if err != nil {
		return err
	}
	if j.Attempt < 2 || j.WorkerID != workerID {
		return nil
	}
	id := RecoverySagaID(jobID, j.Attempt-1) // workers reserved before labelRecovery existed
	w, err := s.st.Workers().Get(ctx, workerID)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	if err == nil && w.Labels[labelRecovery] != "" {
		id = w.Labels[labelRecovery]
	}
	err = s.engine.Signal(ctx, id, SignalReplacementReady, workerSignal{WorkerID: workerID, Attempt: j.Attempt})
	if errors.Is(err, saga.ErrFinished) || errors.Is(err, store.ErrNotFound) {
		return nil
	}
	return err
}

// reassignedWorker returns the worker of the latest reassignment signalled to an
// execution saga, if any.
func reassignedWorker(sc interface {
	Signal(string) (json.RawMessage, bool)
}) (string, bool, error) {
	for n := domain.MaxMaxAttempts; n > 1; n-- {
		p, ok := sc.Signal(signalReassignedPrefix + strconv.Itoa(n))
		if !ok {
			continue
		}
		var w workerSignal
		if err := json.Unmarshal(p, &w); err != nil {
			return "", false, fmt.Errorf("decode %s%d signal: %w", signalReassignedPrefix, n, err)
		}
		return w.WorkerID, true, nil
	}
	return "", false, nil
}

func recoveryDispatch(ctx context.Context, sc *saga.StepContext, cmd command.Command) (RecoveryOutcome, error) {
	return command.Dispatch[RecoveryOutcome](ctx, sc, cmd)
}

// recoverySaga is the recovery saga at version v. Version 2 adds the deliver activity
// (last, after terminate-old): the transfer's own after-commit delivery of RunJob is
// lost when its transaction's commit answer is (the commit happened, the callbacks did
// not run, and the step's retry finds the transfer done), and a replacement that
// connected before the transfer would then wait for its job forever. Version 1 stays
// registered for the sagas that started on it.
func recoverySaga(version int) saga.Definition {
	type state struct {
		in      recoveryInput
		reserve RecoveryOutcome
		ready   workerSignal // the replacement that registered (a later one if the first failed)
		xfer    RecoveryOutcome
	}
	// replacement is the worker and attempt the job goes to.
	replacement := func(st state) (string, int) {
		if st.ready.WorkerID != "" && st.ready.Attempt > 0 {
			return st.ready.WorkerID, st.ready.Attempt
		}
		return st.reserve.WorkerID, st.reserve.Attempt
	}
	load := func(sc stepReader) (state, error) {
		var st state
		if err := sc.Input(&st.in); err != nil {
			return st, err
		}
		if _, err := sc.Output("reserve-replacement", &st.reserve); err != nil {
			return st, err
		}
		if _, err := sc.Output("transfer", &st.xfer); err != nil {
			return st, err
		}
		if _, err := sc.Output("await-replacement", &st.ready); err != nil {
			return st, err
		}
		return st, nil
	}
	done := func(st state) bool { return st.reserve.Skipped || st.reserve.Exhausted }
	steps := []saga.Step{
		{
			Name: "reserve-replacement",
			Do: func(ctx context.Context, sc *saga.StepContext) (any, error) {
				st, err := load(sc)
				if err != nil {
					return nil, err
				}
				return recoveryDispatch(ctx, sc, ReserveReplacement{Key: sc.Key(), JobID: st.in.JobID,
					LostWorkerID: st.in.LostWorkerID, Attempt: st.in.Attempt, Reason: st.in.Reason})
			},
			// A later step failing for good: the replacement and the lost worker go, the
			// job FAILS and its execution saga ends.
			Compensate: func(ctx context.Context, sc *saga.StepContext) (any, error) {
				st, err := load(sc)
				if err != nil || done(st) {
					return nil, err
				}
				for i, w := range []string{st.reserve.WorkerID, st.in.LostWorkerID, st.ready.WorkerID} {
					if w == "" {
						continue
					}
					if _, err := dispatch(ctx, sc, DestroyWorker{Key: sc.Key() + "/destroy/" + strconv.Itoa(i),
						WorkerID: w, Reason: "recovery failed"}); err != nil {
						return nil, err
					}
				}
				return recoveryDispatch(ctx, sc, AbandonJob{Key: sc.Key() + "/abandon", JobID: st.in.JobID,
					Reason: fmt.Sprintf("worker %s lost (%s); recovery failed", st.in.LostWorkerID, st.in.Reason)})
			},
		},
		{
			Name: "await-replacement",
			Do: func(ctx context.Context, sc *saga.StepContext) (any, error) {
				st, err := load(sc)
				if err != nil || done(st) {
					return nil, err
				}
				p, err := sc.AwaitSignalTimeout(SignalReplacementReady, st.in.ReplacementTimeout)
				if errors.Is(err, saga.ErrSignalTimeout) {
					return nil, fmt.Errorf("replacement %s not ready within %s: %w", st.reserve.WorkerID, st.in.ReplacementTimeout, err)
				}
				if err != nil {
					return nil, err
				}
				return p, nil
			},
		},
		{
			Name: "transfer",
			Do: func(ctx context.Context, sc *saga.StepContext) (any, error) {
				st, err := load(sc)
				if err != nil || done(st) {
					return nil, err
				}
				to, attempt := replacement(st)
				return recoveryDispatch(ctx, sc, TransferJob{Key: sc.Key(), JobID: st.in.JobID,
					FromWorkerID: st.in.LostWorkerID, ToWorkerID: to, Attempt: attempt})
			},
		},
		{
			// The lost worker (and with it its job's processes: provider.Destroy ends
			// the process group) goes; so does the replacement if the job ended meanwhile.
			Name:  "terminate-old",
			Retry: saga.RetryPolicy{MaxAttempts: 5, Initial: 200 * time.Millisecond, Max: 5 * time.Second},
			Do: func(ctx context.Context, sc *saga.StepContext) (any, error) {
				st, err := load(sc)
				if err != nil {
					return nil, err
				}
				if st.reserve.Skipped {
					return nil, nil // the job moved on; the lost worker is the execution saga's
				}
				if to, _ := replacement(st); st.xfer.Aborted && to != "" {
					if _, err := dispatch(ctx, sc, DestroyWorker{Key: sc.Key() + "/replacement", WorkerID: to,
						Reason: "job ended during recovery"}); err != nil {
						return nil, err
					}
				}
				return dispatch(ctx, sc, DestroyWorker{Key: sc.Key(), WorkerID: st.in.LostWorkerID, Reason: "worker lost"})
			},
		},
	}
	if version >= 2 {
		// RunJob reaches the replacement, acknowledged, whatever became of the
		// transfer's after-commit delivery (the agent drops the second copy: same
		// message id). Past deliverAttempts the saga goes on: a replacement that is gone
		// is found lost, one that reconnects gets its job then (PendingRun).
		deliver := saga.Step{
			Name:  "deliver",
			Retry: deliverRetry,
			Activity: func(ctx context.Context, ac *saga.ActivityContext) (any, error) {
				st, err := load(ac)
				if err != nil || done(st) || st.xfer.Aborted || st.xfer.WorkerID == "" {
					return nil, err
				}
				// A failed delivery never fails the recovery (its compensation would fail
				// the job): every error is retried, and the last one recorded.
				return deliverActivity(ctx, ac, st.in.JobID, st.xfer.WorkerID, true)
			},
		}
		steps = append(steps, deliver) // after terminate-old: that step's timing is v1's
	}
	return saga.Definition{Name: SagaRecovery, Version: version, Steps: steps}
}
