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
func (s *Service) WorkerExited(workerID, detail string) {
	select {
	case s.disconnects <- disconnectNotice{workerID: workerID, at: s.cfg.Now(), exited: true, detail: detail}:
	default:
		s.log.Debug("worker exit notice dropped (queue full); the heartbeat rule covers the worker", "worker", workerID)
	}
}

// checkExited is WorkerExited's check, run by RunCleanup's loop. Errors are logged, not
// retried (registration timeout and heartbeat rule cover the worker).
func (s *Service) checkExited(ctx context.Context, cfg CleanupConfig, n disconnectNotice) {
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
