package jobs

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/hodei-jobs/hodei/domain"
)

// WakeScheduler nudges RunScheduler (non-blocking; wake-ups coalesce).
func (s *Service) WakeScheduler() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// RunScheduler starts PENDING jobs while capacity allows, until ctx ends (then it
// returns nil). It runs on every wake-up (after a submit commits, after a worker is
// destroyed) and every Config.SchedulerPoll. Run one per replica: the advisory lock makes
// their passes take turns.
func (s *Service) RunScheduler(ctx context.Context) error {
	tick := time.NewTicker(s.cfg.SchedulerPoll)
	defer tick.Stop()
	for {
		if _, err := s.Schedule(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("scheduler pass failed; retrying at the next poll", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.wake:
		case <-tick.C:
		}
	}
}

// Schedule runs scheduler passes until no PENDING job can start, and returns how many
// jobs it started.
func (s *Service) Schedule(ctx context.Context) (int, error) {
	total := 0
	for ctx.Err() == nil {
		n, err := s.scheduleOnce(ctx)
		total += n
		if err != nil || n == 0 {
			return total, err
		}
	}
	return total, nil
}

// scheduleOnce is one transaction: under the scheduler's advisory lock it counts the
// workers that are not TERMINATED, and for each free slot (at most SchedulerBatch) takes
// the next PENDING job (highest priority, then oldest; SKIP LOCKED), reserves a worker
// for it (a CREATING row, which counts against capacity from this commit on), moves the
// job to PROVISIONING (attempt + 1) and starts its provisioning saga.
func (s *Service) scheduleOnce(ctx context.Context) (int, error) {
	started := 0
	err := s.st.InTx(ctx, func(ctx context.Context) error {
		started = 0
		sched := s.st.Scheduling()
		if err := sched.Lock(ctx); err != nil {
			return err
		}
		active, err := sched.CountActiveWorkers(ctx)
		if err != nil {
			return err
		}
		free := min(s.cfg.Capacity-active, s.cfg.SchedulerBatch)
		if free <= 0 {
			return nil
		}
		pending, err := sched.ClaimPending(ctx, free)
		if err != nil {
			return err
		}
		for _, j := range pending {
			if err := s.reserve(ctx, j); err != nil {
				return fmt.Errorf("job %s: %w", j.ID, err)
			}
			started++
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("jobs: schedule: %w", err)
	}
	return started, nil
}

func (s *Service) reserve(ctx context.Context, j *domain.Job) error {
	wid, err := uuid.NewV7()
	if err != nil {
		return err
	}
	workerID := wid.String()
	w := &domain.Worker{ID: workerID, Provider: s.cfg.DefaultProvider, State: domain.WorkerCreating,
		JobID: j.ID, Labels: map[string]string{"hodei.job_id": j.ID}}
	if err := s.st.Workers().Create(ctx, w); err != nil {
		return err
	}
	// The credential row exists (without a password) from now on, so that the password
	// set by CreateWorker is a row update a registering worker waits for.
	if err := s.st.Credentials().SetOTP(ctx, workerID, nil, time.Time{}); err != nil {
		return err
	}
	moved, err := s.moveJob(ctx, j.ID, domain.JobProvisioning, "capacity granted", func(j *domain.Job) {
		j.Attempt++
		j.WorkerID = workerID
	})
	if err != nil {
		return err
	}
	in := provisioningInput{JobID: j.ID, WorkerID: workerID, Provider: s.cfg.DefaultProvider,
		Attempt: moved.Attempt, RegistrationTimeout: s.cfg.RegistrationTimeout}
	_, _, err = s.engine.Start(ctx, SagaProvisioning, ProvisioningSagaID(j.ID, moved.Attempt), in)
	return err
}
