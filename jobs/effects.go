package jobs

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/hodei-jobs/hodei/command"
	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/internal/backoff"
	"github.com/hodei-jobs/hodei/provider"
	"github.com/hodei-jobs/hodei/provider/routing"
	"github.com/hodei-jobs/hodei/store"
)

// Effects on the outside world: provider calls and messages to workers. None of them
// runs inside a database transaction (see "Side effects" in doc.go). The saga steps
// that need one are activities (saga.Step.Activity); the others run after the commit of
// the transaction that recorded their intent.

// target is where w's provider operations run.
func target(w *domain.Worker) routing.Target {
	return routing.Target{WorkerID: w.ID, Provider: w.Provider, Owner: w.Owner}
}

// startWorker is the body of the provisioning saga's create-worker activity: the
// worker's one-time password and owner are committed before the provider starts it.
// The usual first run, on the node whose scheduler reserved the worker, takes the
// password that committed with the reservation (otpstash.go); any other run gives the
// worker a fresh password and this node as its owner in a transaction of its own
// (rotatePassword). A worker that registered meanwhile (a
// previous run of this activity started it and died before recording that) is left
// alone. A copy started by a previous run is destroyed first, on the node that owns
// it: its password is replaced here, so it could never register anyway.
func (s *Service) startWorker(ctx context.Context, workerID, jobID, providerName string) (Outcome, error) {
	w, err := s.st.Workers().Get(ctx, workerID)
	if err != nil {
		return Outcome{}, err
	}
	if w.State != domain.WorkerCreating {
		return skipped(nil, w, "worker is past CREATING"), nil
	}
	j, err := s.st.Jobs().Get(ctx, jobID)
	if err != nil {
		return Outcome{}, err
	}
	spec := provider.WorkerSpec{JobID: jobID, Resources: j.Spec.Resources, Labels: map[string]string{"hodei.job_id": jobID},
		Image: j.Spec.Image, Pull: j.Spec.Pull, Timeout: j.Spec.Timeout}
	return s.launchWorker(ctx, w, providerName, spec, func(cause error) error {
		// Trying again cannot help (an image that does not exist, a spec the
		// provider refuses): the job fails now with the provider's reason. The
		// error is not transient, so the saga compensates at once (destroys the
		// reserved worker; RetryProvisioning finds the job ended and does nothing).
		return s.failPermanently(ctx, jobID, workerID, providerName, cause)
	})
}

// launchWorker is the common part of startWorker and createWarmWorker (warm.go): the
// CREATING worker w gets a fresh one-time password and this node as its owner, both
// committed, then its provider starts it with spec (WorkerID, the password, the server
// URL, the owner and the CA bundle are filled in here). A provider.Permanent error of
// Create is handed to permanent, whose error is returned.
func (s *Service) launchWorker(ctx context.Context, w *domain.Worker, providerName string, spec provider.WorkerSpec, permanent func(error) error) (Outcome, error) {
	workerID := w.ID
	p, err := s.providers.Get(providerName)
	if err != nil {
		return Outcome{}, err
	}
	node := s.workers.Node()
	if w.Owner != "" && w.Owner != node && !p.Capabilities().Shared {
		// An earlier run on another node may have started it there.
		if err := s.workers.Destroy(ctx, target(w)); err != nil {
			s.log.Warn("could not destroy a copy of a worker started by another node; its password is replaced, so it cannot register",
				"worker", workerID, "owner", w.Owner, "err", err)
		}
	}
	otp, stashed := s.otps.take(workerID, s.cfg.Now())
	if !stashed || w.Owner != node {
		if otp, err = s.rotatePassword(ctx, w, node); errors.Is(err, store.ErrOTPUsed) {
			return skipped(nil, w, "worker already registered"), nil
		} else if err != nil {
			return Outcome{}, err
		}
	}
	// The password is committed: from here on the worker may register. A copy this
	// node started in an earlier run (running, or exited after its registration was
	// refused) is destroyed, so that Create (idempotent per worker id) starts a fresh one.
	if st, err := p.Status(ctx, workerID); err != nil {
		return Outcome{}, command.Transient(fmt.Errorf("jobs: status of worker %s: %w", workerID, err))
	} else if st == provider.StatusRunning || st == provider.StatusExited {
		s.log.Info("destroying a copy of the worker left by an earlier attempt", "worker", workerID, "status", st)
		if err := p.Destroy(ctx, workerID); err != nil {
			return Outcome{}, command.Transient(fmt.Errorf("jobs: destroy stale worker %s: %w", workerID, err))
		}
	}
	spec.WorkerID, spec.OneTimePassword, spec.ServerURL = workerID, otp, s.cfg.ServerURL
	spec.Owner = node
	if s.cfg.WorkerCACertPEM != nil {
		spec.CACertPEM = s.cfg.WorkerCACertPEM()
	}
	cctx, endSpan := providerSpan(ctx, "create", providerName, workerID) // telemetry.go
	spec.TraceParent = traceParent(cctx)
	err = p.Create(cctx, spec)
	endSpan(err)
	if err != nil {
		if provider.IsPermanent(err) {
			return Outcome{}, permanent(err)
		}
		return Outcome{}, command.Transient(fmt.Errorf("jobs: create worker %s with provider %s: %w", workerID, providerName, err))
	}
	return Outcome{WorkerState: string(domain.WorkerCreating)}, nil
}

// rotatePassword gives worker w a fresh password and makes node its owner, in a
// transaction of its own, and returns the plain password: for a create-worker activity
// that did not get the password the scheduler committed (otpstash.go). ErrOTPUsed: the
// worker registered already.
func (s *Service) rotatePassword(ctx context.Context, w *domain.Worker, node string) (string, error) {
	otp, hash, err := newSecret()
	if err != nil {
		return "", command.Transient(err)
	}
	err = s.st.InTx(ctx, func(ctx context.Context) error {
		if err := s.st.Credentials().RotateOTP(ctx, w.ID, hash, s.cfg.Now().Add(s.cfg.OTPTTL)); err != nil {
			return err
		}
		if w.Owner != node {
			return s.st.Workers().SetOwner(ctx, w.ID, node)
		}
		return nil
	})
	if errors.Is(err, store.ErrOTPUsed) {
		return "", err
	}
	if err != nil {
		return "", command.Transient(fmt.Errorf("jobs: prepare worker %s: %w", w.ID, err))
	}
	return otp, nil
}

// failPermanently ends the job FAILED with a provider's permanent Create error as its
// reason (one transaction), and returns the error for the saga.
func (s *Service) failPermanently(ctx context.Context, jobID, workerID, providerName string, cause error) error {
	reason := fmt.Sprintf("provider %s cannot start the job's worker: %v", providerName, cause)
	err := s.st.InTx(ctx, func(ctx context.Context) error {
		_, err := s.markJobFailed(ctx, MarkJobFailed{Key: "create-failed/" + workerID, JobID: jobID, Reason: reason})
		return err
	})
	if err != nil {
		return command.Transient(fmt.Errorf("jobs: fail job %s after a permanent provider error (%v): %w", jobID, cause, err))
	}
	return fmt.Errorf("jobs: create worker %s with provider %s: %w", workerID, providerName, cause)
}

// terminateWorker is the body of the timeout saga's terminate activity: the provider
// destroys the worker, on the node that owns it, and must then report it not running.
// Every failure (the owner does not answer, the worker still runs) is transient.
func (s *Service) terminateWorker(ctx context.Context, workerID string) (Outcome, error) {
	w, err := s.st.Workers().Get(ctx, workerID)
	if err != nil {
		return Outcome{}, err
	}
	t := target(w)
	if err := s.workers.Destroy(ctx, t); err != nil {
		return Outcome{}, command.Transient(fmt.Errorf("jobs: destroy worker %s: %w", workerID, err))
	}
	st, err := s.workers.Status(ctx, t)
	if err != nil {
		return Outcome{}, command.Transient(fmt.Errorf("jobs: status of worker %s: %w", workerID, err))
	}
	if st == provider.StatusRunning {
		return Outcome{}, command.Transient(fmt.Errorf("jobs: worker %s still running after destroy", workerID))
	}
	return Outcome{WorkerState: string(w.State)}, nil
}

// deliverRun is the body of the execution saga's dispatch activity: RunJob goes to the
// worker until the agent acknowledges it. A job no longer waiting on this worker
// (started already, moved, ended) needs nothing.
func (s *Service) deliverRun(ctx context.Context, jobID, workerID string) (Outcome, error) {
	j, err := s.st.Jobs().Get(ctx, jobID)
	if err != nil {
		return Outcome{}, err
	}
	if j.State != domain.JobAssigned || j.WorkerID != workerID {
		return skipped(j, nil, "job is not waiting for its worker to start"), nil
	}
	dctx, cancel := context.WithTimeout(ctx, s.cfg.DeliveryTimeout)
	defer cancel()
	if err := s.ch.RunJob(dctx, workerID, j); err != nil {
		return Outcome{}, command.Transient(fmt.Errorf("jobs: deliver job %s to worker %s: %w", jobID, workerID, err))
	}
	return Outcome{JobState: string(j.State)}, nil
}

// deliverAfterCommit has send deliver a message to workerID once ctx's transaction
// commits, re-sending until the agent acknowledges it, the worker is terminated, or
// Config.DeliveryTimeout × 20 has passed (the worker is then lost, or gets the message
// when it reconnects: PendingRun, PendingCancel). what names the message in logs.
func (s *Service) deliverAfterCommit(ctx context.Context, workerID, what string, send func(ctx context.Context) error) {
	s.afterCommit(ctx, func() {
		go func() {
			// Not derived from ctx: it carries the transaction, committed by now, and a
			// query on it fails (the worker's state below could never be read).
			ctx, cancel := context.WithTimeout(context.Background(), 20*s.cfg.DeliveryTimeout)
			defer cancel()
			pace := backoff.Pacer{Base: 100 * time.Millisecond, Max: 2 * time.Second}
			for {
				dctx, dcancel := context.WithTimeout(ctx, s.cfg.DeliveryTimeout)
				err := send(dctx)
				dcancel()
				if err == nil {
					return
				}
				if w, gerr := s.st.Workers().Get(ctx, workerID); gerr == nil && w.State.IsTerminal() {
					return
				}
				delay := pace.Next()
				select {
				case <-ctx.Done():
					s.log.Warn("message to worker not acknowledged; it is sent again when the worker reconnects",
						"worker", workerID, "message", what, "err", err)
					return
				case <-time.After(delay):
				}
			}
		}()
	})
}

// destroyAfterCommit has the provider destroy a worker whose TERMINATED state has
// committed, on the node that owns it, in its own goroutine (the caller is an
// after-commit callback). A failure is retried a few times, then left to the owner's
// next sweep. The scheduler is woken when it ends (the worker's slot is free).
func (s *Service) destroyAfterCommit(sc trace.SpanContext, t routing.Target, reason string) {
	go func() {
		defer s.WakeScheduler()
		ctx, cancel := context.WithTimeout(trace.ContextWithSpanContext(context.Background(), sc), s.cfg.DestroyTimeout)
		defer cancel()
		pace := backoff.Pacer{Base: 100 * time.Millisecond, Max: time.Second}
		for attempt := 0; ; attempt++ {
			err := s.workers.Destroy(ctx, t)
			if err == nil {
				s.log.Debug("worker destroyed", "worker", t.WorkerID, "reason", reason)
				return
			}
			if attempt == 2 || ctx.Err() != nil {
				s.log.Warn("destroy of a terminated worker failed; the worker sweep retries it",
					"worker", t.WorkerID, "owner", t.Owner, "err", err, "sweep_interval", s.cfg.SweepInterval)
				return
			}
			select {
			case <-ctx.Done():
			case <-time.After(pace.Next()):
			}
		}
	}()
}
