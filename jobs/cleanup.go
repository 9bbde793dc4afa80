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
	// Service clock (their commands' keys); the leader runs them (see "Cleanup" in
	// doc.go).
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
	// DisconnectGrace: a worker whose stream closed (Service.WorkerDisconnected) and
	// that was not heard of again within this time is lost at once, without waiting
	// for LostAfter (default 2 heartbeat intervals, at most LostAfter: a worker whose
	// stream broke reconnects within a fraction of a second, and its next heartbeat
	// lands within one interval). See "Recovery" in doc.go.
	DisconnectGrace time.Duration
	// DryRun reports what a run would do without acting or writing anything.
	DryRun bool
}

// SetDefaults fills the zero fields with their defaults (as RunCleanup and Cleanup do),
// so that a caller can Validate a config up front.
func (c *CleanupConfig) SetDefaults() { c.setDefaults() }

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
	if c.DisconnectGrace == 0 {
		c.DisconnectGrace = min(2*c.HeartbeatInterval, c.LostAfter)
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
	case c.DisconnectGrace < 10*time.Millisecond:
		return fmt.Errorf("jobs: CleanupConfig.DisconnectGrace %s is below 10ms", c.DisconnectGrace)
	case c.DisconnectGrace > c.LostAfter:
		return fmt.Errorf("jobs: CleanupConfig.DisconnectGrace %s is above LostAfter %s", c.DisconnectGrace, c.LostAfter)
	}
	return nil
}

// CleanupReport is what one cleanup run found and did (the payload of the
// cleanup.completed event).
type CleanupReport struct {
	At     time.Time `json:"at"`
	Slot   int64     `json:"slot"`
	DryRun bool      `json:"dry_run,omitempty"`

	StaleWorkers  []string `json:"stale_workers,omitempty"`  // lost workers without a job on them
	StuckCreating []string `json:"stuck_creating,omitempty"` // CREATING past CreatingTimeout
	LostJobs      []string `json:"lost_jobs,omitempty"`      // ASSIGNED/RUNNING on a lost worker
	OrphanedJobs  []string `json:"orphaned_jobs,omitempty"`  // ASSIGNED/RUNNING on a gone worker

	Destroyed         int `json:"destroyed"`
	RecoveriesStarted int `json:"recoveries_started"`
}

// RunCleanup runs until ctx ends (then it returns nil). Run it on every replica. Every
// cfg.Interval the replica that leads (Config.Leader) runs Cleanup, and every replica
// asks its providers about the workers stuck in CREATING (checkCreatingStatus: a
// node-local provider knows only its own node's workers). The same loop checks the
// workers this replica saw disconnect (WorkerDisconnected) once cfg.DisconnectGrace has
// passed, and those whose exit its providers reported (WorkerExited), at once.
func (s *Service) RunCleanup(ctx context.Context, cfg CleanupConfig) error {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	t := time.NewTicker(cfg.Interval)
	defer t.Stop()
	pending := map[string]time.Time{} // worker → latest stream close
	due := time.NewTimer(time.Hour)
	due.Stop()
	defer due.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case n := <-s.disconnects:
			if n.exited {
				delete(pending, n.workerID)
				s.checkExited(ctx, cfg, n)
				break
			}
			if at, ok := pending[n.workerID]; !ok || n.at.After(at) {
				pending[n.workerID] = n.at
			}
		case <-due.C:
			now := s.cfg.Now()
			for w, at := range pending {
				if now.Sub(at) >= cfg.DisconnectGrace {
					delete(pending, w)
					s.checkDisconnected(ctx, cfg, w, at)
				}
			}
		case <-t.C:
			if !cfg.DryRun {
				// CREATING workers of this node that died before registering (exited.go).
				s.checkCreatingStatus(ctx, cfg, 2*cfg.HeartbeatInterval)
			}
			if !s.cfg.Leader.IsLeader() {
				break
			}
			r, err := s.Cleanup(ctx, cfg)
			switch {
			case err != nil && ctx.Err() == nil:
				s.log.Error("cleanup run failed; retrying at the next interval", "err", err)
			case err == nil && (r.Destroyed+r.RecoveriesStarted > 0 || r.DryRun):
				s.log.Info("cleanup run", "dry_run", r.DryRun, "stale_workers", len(r.StaleWorkers),
					"stuck_creating", len(r.StuckCreating), "lost_jobs", len(r.LostJobs),
					"orphaned_jobs", len(r.OrphanedJobs), "destroyed", r.Destroyed, "recoveries", r.RecoveriesStarted)
			}
		}
		s.armDisconnectTimer(due, pending, cfg.DisconnectGrace)
	}
}

// Cleanup is one run: in one transaction it finds lost and stuck workers and orphaned
// jobs, acts through commands (DestroyWorker, StartRecovery, keyed by the run)
// and writes the cleanup.completed event. With DryRun it only reads. Two runs at once
// (two replicas that both believe they lead, at a TTL boundary) act once between them:
// the keys, the state machine and the deterministic saga ids make the second a no-op,
// or fail it with a conflict (store.ErrConflict) that the next interval retries.
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
		// The run's own key: its commands are idempotent by the state machine and the
		// deterministic saga ids, which is what makes overlapping runs act once. A key
		// shared by runs would replay the first run's outcomes (say, "recovery started")
		// in a later run's report.
		key := fmt.Sprintf("cleanup/%d", now.UnixNano())
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
	lost := func(w *domain.Worker) bool { return now.Sub(workerSeen(w)) > cfg.LostAfter }
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
		out, err := s.recoverLostJob(ctx, key+"/recover/"+j.ID, j, reason)
		if err != nil {
			return err
		}
		if out.Started {
			r.RecoveriesStarted++
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
		out, err := command.Dispatch[Outcome](ctx, s.dtx, DestroyWorker{Key: key + "/destroy/" + w.ID, WorkerID: w.ID, Reason: reason})
		if err != nil {
			return err
		}
		if !out.Skipped {
			r.Destroyed++
		}
	}
	return nil
}

// workerSeen is when the worker was last heard of: its last heartbeat, or its last
// state change if later (the liveness rule of cleanup and of the disconnect check).
func workerSeen(w *domain.Worker) time.Time {
	if w.UpdatedAt.After(w.LastHeartbeat) {
		return w.UpdatedAt
	}
	return w.LastHeartbeat
}

// recoverLostJob dispatches StartRecovery (key) for j, ASSIGNED or RUNNING on its lost
// worker, and, unless the recovery was skipped, writes the job.worker_lost event (for
// other consumers; the orchestrator's route then starts nothing new). The event's key
// is per job attempt, so cleanup and the disconnect check publish it once between them.
func (s *Service) recoverLostJob(ctx context.Context, key string, j *domain.Job, reason string) (RecoveryOutcome, error) {
	out, err := command.Dispatch[RecoveryOutcome](ctx, s.dtx, StartRecovery{Key: key, JobID: j.ID, WorkerID: j.WorkerID, Reason: reason})
	if err != nil {
		return RecoveryOutcome{}, err
	}
	if out.Skipped {
		return out, nil
	}
	s.observeLoss(ctx, key) // telemetry.go
	ev, err := domain.NewEvent(EventJobWorkerLost, j.ID, workerLostData{WorkerID: j.WorkerID, Attempt: j.Attempt, Reason: reason})
	if err != nil {
		return RecoveryOutcome{}, err
	}
	if err := s.publish(ctx, ev, fmt.Sprintf("job/%s/%d/worker_lost", j.ID, j.Attempt)); err != nil {
		return RecoveryOutcome{}, err
	}
	return out, nil
}

// disconnectBuffer bounds the WorkerDisconnected notices waiting for RunCleanup.
const disconnectBuffer = 1024

type disconnectNotice struct {
	workerID string
	at       time.Time
	exited   bool   // WorkerExited: the process is gone, act now (exited.go)
	detail   string // WorkerExited: the exit status
	oom      bool   // the provider killed the worker for its memory limit (provider.ErrOOMKilled)
	// permanent: the provider says the worker can never start (provider.Permanent: an
	// image that cannot be pulled); a job still provisioning on it fails at once.
	permanent bool
}

// WorkerDisconnected tells the Service that workerID's stream closed at at (for a
// reason other than this server shutting down). It never blocks: RunCleanup's loop
// picks the notice up and, once CleanupConfig.DisconnectGrace has passed, recovers the
// worker's job unless the worker was heard of after at (see "Recovery" in doc.go).
// When the queue is full (or no RunCleanup runs) the notice is dropped: the heartbeat
// rule (LostAfter) still finds the worker.
func (s *Service) WorkerDisconnected(workerID string, at time.Time) {
	if at.IsZero() {
		at = s.cfg.Now()
	}
	select {
	case s.disconnects <- disconnectNotice{workerID: workerID, at: at}:
	default:
		s.log.Debug("disconnect notice dropped (queue full); the heartbeat rule covers the worker", "worker", workerID)
	}
}

// armDisconnectTimer sets due to fire when the oldest pending notice is grace old.
func (s *Service) armDisconnectTimer(due *time.Timer, pending map[string]time.Time, grace time.Duration) {
	if len(pending) == 0 {
		due.Stop()
		return
	}
	var oldest time.Time
	for _, at := range pending {
		if oldest.IsZero() || at.Before(oldest) {
			oldest = at
		}
	}
	due.Reset(max(grace-s.cfg.Now().Sub(oldest), 0))
}

// workerAndJob returns the worker and the job it is on (nil, nil when the worker is
// unknown; a nil job when it has none, or when that job is on another worker now).
func (s *Service) workerAndJob(ctx context.Context, workerID string) (*domain.Worker, *domain.Job, error) {
	w, err := s.st.Workers().Get(ctx, workerID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil, nil
	}
	if err != nil || w.JobID == "" {
		return w, nil, err
	}
	j, err := s.st.Jobs().Get(ctx, w.JobID)
	if errors.Is(err, store.ErrNotFound) || (err == nil && j.WorkerID != w.ID) {
		return w, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	return w, j, nil
}

// checkDisconnected is the one check of a worker whose stream closed at closedAt, run
// when the grace has passed: if the worker still exists, was not heard of since and
// has an ASSIGNED or RUNNING job, the job's recovery starts (with the job.worker_lost
// event). Errors are logged, not retried: the heartbeat rule covers the worker.
func (s *Service) checkDisconnected(ctx context.Context, cfg CleanupConfig, workerID string, closedAt time.Time) {
	reason := fmt.Sprintf("stream closed at %s and not back within %s", closedAt.UTC().Format(time.RFC3339), cfg.DisconnectGrace)
	var (
		jobID string
		out   RecoveryOutcome
	)
	err := s.st.InTx(ctx, func(ctx context.Context) error {
		w, j, err := s.workerAndJob(ctx, workerID)
		if err != nil || j == nil || w.State == domain.WorkerTerminated || workerSeen(w).After(closedAt) {
			return err // gone, back, or without a job (the heartbeat rule destroys it)
		}
		if j.State != domain.JobAssigned && j.State != domain.JobRunning {
			return nil
		}
		jobID = j.ID
		if cfg.DryRun {
			s.log.Info("dry run: would recover the job of a disconnected worker", "job", j.ID, "worker", workerID, "reason", reason)
			return nil
		}
		out, err = s.recoverLostJob(ctx, fmt.Sprintf("disconnect/%s/%d", workerID, closedAt.UnixNano()), j, reason)
		return err
	})
	switch {
	case err != nil && ctx.Err() == nil:
		s.log.Warn("disconnect check failed; the heartbeat rule covers the worker", "worker", workerID, "job", jobID, "err", err)
	case err == nil && jobID != "" && !cfg.DryRun:
		s.log.Info("disconnect check", "worker", workerID, "job", jobID, "reason", reason,
			"recovery_started", out.Started, "skipped", out.Skipped, "skip_reason", out.Reason)
	}
}
