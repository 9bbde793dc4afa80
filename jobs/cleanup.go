package jobs

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hodei-jobs/hodei/command"
	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/store"
)

// EventCleanupCompleted is the summary event of a cleanup run (outbox type
// "cleanup.completed").
const EventCleanupCompleted = "cleanup.completed"

// CleanupConfig tunes RunCleanup and Cleanup. Zero fields get defaults (setDefaults);
// Validate names the first bad field.
type CleanupConfig struct {
	// Interval between runs (default 15s). Runs are numbered by Interval slots of the
	// Service clock; one replica runs each slot (see "Cleanup" in doc.go).
	Interval time.Duration
	// HeartbeatInterval is the workers' heartbeat period (default 5s).
	HeartbeatInterval time.Duration
	// LostAfter: a worker not heard of for this long is lost (default 3 heartbeat
	// intervals). "Heard of" is its last heartbeat, or its last state change.
	LostAfter time.Duration
	// CreatingTimeout: a worker still CREATING after this long is destroyed (default
	// 5m; keep it above the Service's RegistrationTimeout, whose provisioning saga
	// then fails the job).
	CreatingTimeout time.Duration
	// DryRun reports what a run would do without acting or writing anything.
	DryRun bool
}

func (c *CleanupConfig) setDefaults() {
	if c.Interval == 0 {
		c.Interval = 15 * time.Second
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = 5 * time.Second
	}
	if c.LostAfter == 0 {
		c.LostAfter = 3 * c.HeartbeatInterval
	}
	if c.CreatingTimeout == 0 {
		c.CreatingTimeout = 5 * time.Minute
	}
}

// Validate reports the first invalid field.
func (c *CleanupConfig) Validate() error {
	switch {
	case c.Interval < 10*time.Millisecond || c.Interval > 24*time.Hour:
		return fmt.Errorf("jobs: CleanupConfig.Interval %s out of range [10ms, 24h]", c.Interval)
	case c.HeartbeatInterval < 10*time.Millisecond || c.HeartbeatInterval > time.Hour:
		return fmt.Errorf("jobs: CleanupConfig.HeartbeatInterval %s out of range [10ms, 1h]", c.HeartbeatInterval)
	case c.LostAfter < c.HeartbeatInterval:
		return fmt.Errorf("jobs: CleanupConfig.LostAfter %s is below HeartbeatInterval %s", c.LostAfter, c.HeartbeatInterval)
	case c.CreatingTimeout < 10*time.Millisecond || c.CreatingTimeout > 24*time.Hour:
		return fmt.Errorf("jobs: CleanupConfig.CreatingTimeout %s out of range [10ms, 24h]", c.CreatingTimeout)
	}
	return nil
}

// CleanupReport is what one cleanup run found and did (the payload of the
// cleanup.completed event).
type CleanupReport struct {
	At     time.Time `json:"at"`
	Slot   int64     `json:"slot"`
	DryRun bool      `json:"dry_run,omitempty"`
	// Skipped: another runner already ran this slot; nothing was looked at.
	Skipped bool `json:"skipped,omitempty"`

	StaleWorkers  []string `json:"stale_workers,omitempty"`  // lost workers without a job on them
	StuckCreating []string `json:"stuck_creating,omitempty"` // CREATING past CreatingTimeout
	LostJobs      []string `json:"lost_jobs,omitempty"`      // ASSIGNED/RUNNING on a lost worker
	OrphanedJobs  []string `json:"orphaned_jobs,omitempty"`  // ASSIGNED/RUNNING on a gone worker

	Destroyed         int `json:"destroyed"`
	RecoveriesStarted int `json:"recoveries_started"`
}

// errSlotTaken rolls back a run whose slot another runner holds.
var errSlotTaken = errors.New("jobs: cleanup slot already taken")

// RunCleanup runs Cleanup every cfg.Interval until ctx ends (then it returns nil). Run
// it on every replica: one of them acts per slot.
func (s *Service) RunCleanup(ctx context.Context, cfg CleanupConfig) error {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	t := time.NewTicker(cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		r, err := s.Cleanup(ctx, cfg)
		switch {
		case err != nil && ctx.Err() == nil:
			s.log.Error("cleanup run failed; retrying at the next interval", "err", err)
		case err == nil && !r.Skipped && (r.Destroyed+r.RecoveriesStarted > 0 || r.DryRun):
			s.log.Info("cleanup run", "dry_run", r.DryRun, "stale_workers", len(r.StaleWorkers),
				"stuck_creating", len(r.StuckCreating), "lost_jobs", len(r.LostJobs),
				"orphaned_jobs", len(r.OrphanedJobs), "destroyed", r.Destroyed, "recoveries", r.RecoveriesStarted)
		}
	}
}

// Cleanup is one run: in one transaction it claims the current slot (a key in the
// idempotency table, so a second runner of the slot gets Skipped), finds lost and stuck
// workers and orphaned jobs, acts through commands (DestroyWorker, StartRecovery) and
// writes the cleanup.completed event. With DryRun it only reads.
func (s *Service) Cleanup(ctx context.Context, cfg CleanupConfig) (*CleanupReport, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	now := s.cfg.Now()
	slot := now.UnixNano() / int64(cfg.Interval)
	var r *CleanupReport
	err := s.st.InTx(ctx, func(ctx context.Context) error {
		r = &CleanupReport{At: now, Slot: slot, DryRun: cfg.DryRun}
		key := fmt.Sprintf("cleanup/%d/%d", int64(cfg.Interval), slot)
		if !cfg.DryRun {
			if err := s.st.Idempotency().Put(ctx, key, EventCleanupCompleted, nil); errors.Is(err, store.ErrConflict) {
				return errSlotTaken
			} else if err != nil {
				return err
			}
		}
		if err := s.cleanupScan(ctx, cfg, now, key, r); err != nil {
			return err
		}
		if cfg.DryRun {
			return nil
		}
		ev, err := domain.NewEvent(EventCleanupCompleted, key, r)
		if err != nil {
			return err
		}
		return s.publish(ctx, ev, key)
	})
	if errors.Is(err, errSlotTaken) {
		return &CleanupReport{At: now, Slot: slot, Skipped: true}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("jobs: cleanup: %w", err)
	}
	return r, nil
}

func (s *Service) cleanupScan(ctx context.Context, cfg CleanupConfig, now time.Time, key string, r *CleanupReport) error {
	workers, err := s.st.Workers().List(ctx, domain.WorkerCreating, domain.WorkerReady, domain.WorkerBusy, domain.WorkerTerminating)
	if err != nil {
		return err
	}
	live := make(map[string]*domain.Worker, len(workers))
	for _, w := range workers {
		live[w.ID] = w
	}
	lost := func(w *domain.Worker) bool {
		seen := w.LastHeartbeat
		if w.UpdatedAt.After(seen) {
			seen = w.UpdatedAt
		}
		return now.Sub(seen) > cfg.LostAfter
	}
	// Jobs on a worker: lost or gone → recovery.
	onJob := map[string]bool{}
	var jobs []*domain.Job
	for page := ""; ; {
		js, next, err := s.st.Jobs().List(ctx, store.JobFilter{States: []domain.JobState{domain.JobAssigned, domain.JobRunning},
			PageSize: 500, PageToken: page})
		if err != nil {
			return err
		}
		jobs = append(jobs, js...)
		if next == "" || len(js) == 0 {
			break
		}
		page = next
	}
	for _, j := range jobs {
		w, ok := live[j.WorkerID]
		var reason string
		switch {
		case !ok:
			r.OrphanedJobs = append(r.OrphanedJobs, j.ID)
			reason = "worker " + j.WorkerID + " is gone"
		case w.State != domain.WorkerCreating && lost(w):
			onJob[w.ID] = true
			r.LostJobs = append(r.LostJobs, j.ID)
			reason = fmt.Sprintf("no heartbeat for more than %s", cfg.LostAfter)
		default:
			onJob[w.ID] = true
			continue
		}
		if cfg.DryRun {
			continue
		}
		out, err := command.Dispatch[RecoveryOutcome](ctx, s.d, StartRecovery{Key: key + "/recover/" + j.ID,
			JobID: j.ID, WorkerID: j.WorkerID, Reason: reason})
		if err != nil {
			return err
		}
		if out.Started {
			r.RecoveriesStarted++
		}
		// For other consumers (and the orchestrator's route, which then starts nothing new).
		ev, err := domain.NewEvent(EventJobWorkerLost, j.ID, workerLostData{WorkerID: j.WorkerID, Attempt: j.Attempt, Reason: reason})
		if err != nil {
			return err
		}
		if err := s.publish(ctx, ev, fmt.Sprintf("job/%s/%d/worker_lost", j.ID, j.Attempt)); err != nil {
			return err
		}
	}
	// Workers without a running job: lost or stuck in CREATING → destroy.
	for _, w := range workers {
		if onJob[w.ID] {
			continue
		}
		var reason string
		switch {
		case w.State == domain.WorkerCreating:
			if now.Sub(w.CreatedAt) <= cfg.CreatingTimeout {
				continue
			}
			r.StuckCreating = append(r.StuckCreating, w.ID)
			reason = fmt.Sprintf("stuck in CREATING for more than %s", cfg.CreatingTimeout)
		case lost(w):
			r.StaleWorkers = append(r.StaleWorkers, w.ID)
			reason = fmt.Sprintf("no heartbeat for more than %s", cfg.LostAfter)
		default:
			continue
		}
		if cfg.DryRun {
			continue
		}
		out, err := command.Dispatch[Outcome](ctx, s.d, DestroyWorker{Key: key + "/destroy/" + w.ID, WorkerID: w.ID, Reason: reason})
		if err != nil {
			return err
		}
		if !out.Skipped {
			r.Destroyed++
		}
	}
	return nil
}
