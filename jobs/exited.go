package jobs

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/provider"
	"github.com/hodei-jobs/hodei/saga"
	"github.com/hodei-jobs/hodei/store"
)

// WorkerExited tells the Service that the process (or container) of workerID ended,
// as its provider saw it (local.Config.OnExit); detail is the exit status. It never
// blocks: RunCleanup's loop acts on the notice at once, without a grace period — the
// worker is gone for sure (see "Recovery" in doc.go):
//
//   - still CREATING (it never registered): its provisioning saga gets a failed
//     registration, so the job is retried on a new worker now instead of after
//     Config.RegistrationTimeout;
//   - an ASSIGNED or RUNNING job on it whose result is not recorded: the job's recovery
//     starts (as for a lost worker);
//   - anything else (TERMINATED by a destroy, a job that reported its result, a READY
//     worker without a job): nothing; the heartbeat rule covers what remains.
func (s *Service) WorkerExited(workerID, detail string) { s.workerExited(workerID, detail, exitKind{}) }

// exitKind says what repeating cannot fix about an exit a provider reported.
type exitKind struct {
	// oom: the provider killed the worker for its memory limit (provider.ErrOOMKilled):
	// the job fails with exit code 137 and the provider's reason instead of being
	// recovered (failOOM).
	oom bool
	// permanent: the worker can never start (provider.Permanent, e.g. an image that
	// cannot be pulled, seen after Create returned): a job still provisioning on it
	// fails at once with the provider's reason (failProvisioning), as a permanent
	// Create error does.
	permanent bool
}

// workerExited is WorkerExited with what the provider said of the exit.
func (s *Service) workerExited(workerID, detail string, kind exitKind) {
	select {
	case s.disconnects <- disconnectNotice{workerID: workerID, at: s.cfg.Now(), exited: true, detail: detail, oom: kind.oom,
		permanent: kind.permanent}:
	default:
		s.log.Debug("worker exit notice dropped (queue full); the heartbeat rule covers the worker", "worker", workerID)
	}
}

// checkExited is WorkerExited's check, run by RunCleanup's loop. Errors are logged, not
// retried (registration timeout and heartbeat rule cover the worker).
func (s *Service) checkExited(ctx context.Context, cfg CleanupConfig, n disconnectNotice) {
	if n.oom && !cfg.DryRun {
		if done, err := s.failOOM(ctx, n); err != nil && ctx.Err() == nil {
			s.log.Warn("could not fail the job of an OOM-killed worker; it is recovered instead", "worker", n.workerID, "err", err)
		} else if done {
			return
		}
	}
	if n.permanent && !n.oom && !cfg.DryRun {
		if done, err := s.failUnstartable(ctx, n); err != nil && ctx.Err() == nil {
			s.log.Warn("could not fail the job of a worker that cannot start; its provisioning fails instead", "worker", n.workerID, "err", err)
		} else if done {
			return
		}
	}
	reason := "worker process exited"
	if n.detail != "" {
		reason += " (" + n.detail + ")"
	}
	var (
		jobID, action string
		out           RecoveryOutcome
	)
	err := s.st.InTx(ctx, func(ctx context.Context) error {
		w, j, err := s.workerAndJob(ctx, n.workerID)
		if err == nil && j == nil && w != nil && w.JobID == "" && w.Labels[labelPool] != "" && !w.State.IsTerminal() {
			action = "idle pool worker destroyed" // warm.go: the pool refills
			if cfg.DryRun {
				return nil
			}
			return s.warmExited(ctx, w, reason)
		}
		if err != nil || j == nil || w.State == domain.WorkerTerminating || w.State == domain.WorkerTerminated {
			return err
		}
		jobID = j.ID
		switch {
		case w.State == domain.WorkerCreating && j.State == domain.JobProvisioning:
			action = "provisioning failed"
			if cfg.DryRun {
				return nil
			}
			err := s.engine.Signal(ctx, ProvisioningSagaID(j.ID, j.Attempt), SignalWorkerRegistered,
				workerSignal{WorkerID: w.ID, Failed: reason + " before registering"})
			if errors.Is(err, saga.ErrFinished) || errors.Is(err, store.ErrNotFound) {
				return nil
			}
			return err
		case j.State == domain.JobAssigned || j.State == domain.JobRunning:
			action = "recovery"
			if cfg.DryRun {
				return nil
			}
			out, err = s.recoverLostJob(ctx, fmt.Sprintf("exited/%s", w.ID), j, reason)
			return err
		}
		return nil
	})
	switch {
	case err != nil && ctx.Err() == nil:
		s.log.Warn("worker exit check failed; the heartbeat rule covers the worker", "worker", n.workerID, "job", jobID, "err", err)
	case err == nil && action != "":
		s.log.Info("worker exited", "worker", n.workerID, "job", jobID, "action", action, "dry_run", cfg.DryRun,
			"reason", reason, "recovery_started", out.Started, "skip_reason", out.Reason)
	}
}

// failOOM ends the job of a worker its provider killed for exceeding the memory limit:
// a running job gets the result exit code 137 with the provider's reason (JobFinished,
// as if the agent had reported it: the execution saga completes it FAILED); a job whose
// worker died before registering (the limit is too small for the agent itself) is
// failed, and its provisioning saga told. It reports whether it acted.
func (s *Service) failOOM(ctx context.Context, n disconnectNotice) (bool, error) {
	w, j, err := s.workerAndJob(ctx, n.workerID)
	if err != nil || j == nil || j.WorkerID != w.ID || w.State == domain.WorkerTerminating || w.State == domain.WorkerTerminated {
		return false, err
	}
	switch {
	case j.State == domain.JobAssigned || j.State == domain.JobRunning:
		err := s.JobFinished(ctx, w.ID, JobResult{JobID: j.ID, ExitCode: 137, Error: n.detail})
		if err != nil {
			return false, err
		}
		s.log.Info("worker OOM-killed: job failed with exit code 137", "worker", w.ID, "job", j.ID, "reason", n.detail)
		return true, nil
	case j.State == domain.JobProvisioning && w.State == domain.WorkerCreating:
		reason := "worker " + n.detail + " before registering (the job's memory limit is too small for the agent)"
		return s.failProvisioning(ctx, "oom/", w, j, reason)
	}
	return false, nil
}

// failUnstartable fails the job provisioning on a worker whose provider reported that
// it can never start (a permanent exit: an image that cannot be pulled, seen after
// Create returned), with the provider's reason, and tells its provisioning saga. It
// reports whether it acted: a worker past CREATING is left to the usual exit rules.
func (s *Service) failUnstartable(ctx context.Context, n disconnectNotice) (bool, error) {
	w, j, err := s.workerAndJob(ctx, n.workerID)
	if err != nil || j == nil || j.WorkerID != w.ID || w.State != domain.WorkerCreating || j.State != domain.JobProvisioning {
		return false, err
	}
	reason := fmt.Sprintf("provider %s cannot start the job's worker: %s", w.Provider, n.detail)
	done, err := s.failProvisioning(ctx, "unstartable/", w, j, reason)
	if done {
		s.log.Info("worker cannot start: job failed", "worker", w.ID, "job", j.ID, "reason", n.detail)
	}
	return done, err
}

// failProvisioning fails job j, provisioning on CREATING worker w, with reason, and
// signals its provisioning saga that the worker will not register (its compensation
// destroys the worker and finds the job ended), in one transaction.
func (s *Service) failProvisioning(ctx context.Context, keyPrefix string, w *domain.Worker, j *domain.Job, reason string) (bool, error) {
	err := s.st.InTx(ctx, func(ctx context.Context) error {
		if _, err := s.markJobFailed(ctx, MarkJobFailed{Key: keyPrefix + w.ID, JobID: j.ID, Reason: reason}); err != nil {
			return err
		}
		err := s.engine.Signal(ctx, ProvisioningSagaID(j.ID, j.Attempt), SignalWorkerRegistered,
			workerSignal{WorkerID: w.ID, Failed: reason})
		if errors.Is(err, saga.ErrFinished) || errors.Is(err, store.ErrNotFound) {
			return nil
		}
		return err
	})
	return err == nil, err
}

// registrationFailed is the error of await-registration when the worker's registered
// signal says that it failed instead (WorkerExited).
func registrationFailed(workerID, failed string) error {
	return fmt.Errorf("worker %s did not register: %s", workerID, failed)
}

// checkCreatingStatus asks the providers about workers CREATING for longer than
// minAge and treats one whose process is reported exited as WorkerExited would. It
// covers what OnExit cannot: a worker started by an earlier server process (a restart)
// that died before registering is found within a cleanup interval, not after
// Config.RegistrationTimeout. Provider calls run outside any transaction; errors are
// logged (the registration timeout still covers the worker).
func (s *Service) checkCreatingStatus(ctx context.Context, cfg CleanupConfig, minAge time.Duration) {
	ws, err := s.st.Workers().List(ctx, domain.WorkerCreating)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("listing CREATING workers failed", "err", err)
		}
		return
	}
	now := s.cfg.Now()
	for _, w := range ws {
		if now.Sub(w.CreatedAt) < minAge {
			continue
		}
		p, err := s.providers.Get(w.Provider)
		if err != nil {
			continue
		}
		st, err := p.Status(ctx, w.ID)
		if err != nil {
			s.log.Debug("provider status of a CREATING worker failed", "worker", w.ID, "err", err)
			continue
		}
		if st == provider.StatusExited {
			s.checkExited(ctx, cfg, disconnectNotice{workerID: w.ID, at: now, exited: true,
				detail: "its process is not running (provider status " + string(st) + ")"})
		}
	}
}
