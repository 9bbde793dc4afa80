package jobs

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/provider"
	"github.com/hodei-jobs/hodei/store"
)

// WakeScheduler nudges RunScheduler (non-blocking; wake-ups coalesce).
func (s *Service) WakeScheduler() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// RunScheduler starts PENDING jobs while capacity allows and this replica leads
// (Config.Leader), until ctx ends (then it returns nil). It runs on every wake-up
// (after a submit commits, after a worker is destroyed), when this replica becomes
// leader and every Config.SchedulerPoll; a replica that does not lead skips its passes.
// Run one per replica: the replica that leads schedules (see "Leader" in doc.go).
//
// It also runs the worker sweep (sweepWorkers) at start and every Config.SweepInterval,
// in a goroutine of its own, on every replica (the sweep asks this node's providers
// about the workers they run), and waits for it before returning.
func (s *Service) RunScheduler(ctx context.Context) error {
	var sweeper sync.WaitGroup
	sweeper.Go(func() { s.runSweeper(ctx) })
	defer sweeper.Wait()
	tick := time.NewTicker(s.cfg.SchedulerPoll)
	defer tick.Stop()
	for {
		changed := s.cfg.Leader.Changed()
		if s.cfg.Leader.IsLeader() {
			if _, err := s.Schedule(ctx); err != nil && ctx.Err() == nil {
				s.log.Error("scheduler pass failed; retrying at the next poll", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.wake:
		case <-tick.C:
		case <-changed:
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

// scheduleOnce is one transaction: under the scheduler's advisory lock (the fence
// against a second leader at a TTL boundary and against reserve-replacement, see
// "Leader" in doc.go) it counts the workers that are not TERMINATED, and for each free slot (at most SchedulerBatch) takes
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
		if free <= 0 && len(s.cfg.Pools) == 0 {
			return nil
		}
		free = max(free, 0)
		// Namespaces at their limit on running jobs are left out; the others' jobs
		// start up to their headroom (a batch may claim more of one namespace than it
		// may start: those stay PENDING, and the next round leaves the namespace out).
		headroom, err := sched.NamespaceHeadroom(ctx)
		if err != nil {
			return err
		}
		var full []string
		for ns, n := range headroom {
			if n <= 0 {
				full = append(full, ns)
			}
		}
		slices.Sort(full)
		// More than free are claimed so that a job waiting for a full provider does
		// not hold back later jobs that another provider has room for.
		limit := min(max(4*free, 16), 100)
		pending, err := sched.ClaimPendingExcept(ctx, limit, full)
		if err != nil {
			return err
		}
		// The workers are read after the claim: a worker that became idle before a
		// claimed job was submitted is seen (its commit came first).
		room, workers, err := s.providerRoom(ctx)
		if err != nil {
			return err
		}
		// Warm pools (warm.go): idle workers a job may take with no provisioning.
		wp := &warmPass{waiting: map[string]bool{}}
		now := s.cfg.Now()
		for _, w := range workers {
			if idleWarm(w) && now.Sub(workerSeen(w)) <= s.cfg.IdleStaleAfter {
				wp.idle = append(wp.idle, w)
			}
		}
		if free <= 0 && len(wp.idle) == 0 {
			return nil
		}
		capLeft := s.cfg.Capacity - active // free is also bounded by the batch
		reserved := 0
		wp.all = len(pending) == limit // more may wait unclaimed: the pools wait too
		for _, j := range pending {
			if started == s.cfg.SchedulerBatch {
				wp.all = true
				break
			}
			cands, err := s.candidates(j.Spec)
			if err != nil {
				// Submit refused such specs; this one was accepted by a replica (or an
				// earlier start) configured with other providers. Waiting cannot help.
				reason := fmt.Sprintf("no configured provider can run the job: %v", err)
				if _, err := s.markJobFailed(ctx, MarkJobFailed{Key: "unrunnable/" + j.ID, JobID: j.ID, Reason: reason}); err != nil {
					return fmt.Errorf("job %s: %w", j.ID, err)
				}
				continue
			}
			ns := j.NamespaceOf()
			if n, limited := headroom[ns]; limited && n <= 0 {
				continue
			}
			took := func() {
				if n, limited := headroom[ns]; limited {
					headroom[ns] = n - 1
				}
				started++
			}
			if w := s.takeMatch(wp, j, cands); w != nil {
				if err := s.assignWarm(ctx, j, w); err != nil {
					return fmt.Errorf("job %s on warm worker %s: %w", j.ID, w.ID, err)
				}
				took()
				continue
			}
			chosen := choose(s.cfg.ProviderStrategy, cands, room)
			if chosen == "" || reserved >= capLeft {
				// A slot held by an idle pool worker the job cannot use goes to the job.
				if w := s.takeEvictable(wp, cands); w != nil {
					if _, err := s.destroyWorker(ctx, DestroyWorker{WorkerID: w.ID,
						Reason: "its slot goes to PENDING job " + j.ID}); err != nil {
						return err
					}
					addRoom(room, w.Provider, 1)
					free++
					capLeft++
					chosen = w.Provider
				}
			}
			if chosen == "" || reserved >= free {
				for _, c := range cands {
					wp.waiting[c] = true
				}
				continue // its providers are full: it keeps its place in PENDING
			}
			if err := s.reserve(ctx, j, chosen); err != nil {
				return fmt.Errorf("job %s: %w", j.ID, err)
			}
			addRoom(room, chosen, -1)
			reserved++
			took()
		}
		if len(s.cfg.Pools) > 0 || len(wp.idle) > 0 {
			if _, err := s.tendPools(ctx, wp, workers, room, free-reserved); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("jobs: schedule: %w", err)
	}
	return started, nil
}

// providerRoom returns, per registered provider, its capacity (its
// Capabilities().MaxWorkers; 0: only the overall Config.Capacity bounds it) and how
// many more workers it may run: that less its workers that are not TERMINATED (which
// it returns too). Called under the scheduler lock.
func (s *Service) providerRoom(ctx context.Context) (map[string]slots, []*domain.Worker, error) {
	ws, err := s.st.Workers().List(ctx, domain.WorkerCreating, domain.WorkerReady, domain.WorkerBusy, domain.WorkerTerminating)
	if err != nil {
		return nil, nil, err
	}
	used := map[string]int{}
	for _, w := range ws {
		used[w.Provider]++
	}
	room := map[string]slots{}
	for _, n := range s.providers.Names() {
		p, err := s.providers.Get(n)
		if err != nil {
			continue
		}
		limit := p.Capabilities().MaxWorkers
		if limit <= 0 {
			limit = s.cfg.Capacity
		}
		room[n] = slots{room: max(limit-used[n], 0), limit: limit}
	}
	return room, ws, nil
}

func (s *Service) reserve(ctx context.Context, j *domain.Job, providerName string) error {
	wid, err := uuid.NewV7()
	if err != nil {
		return err
	}
	workerID := wid.String()
	now := s.cfg.Now()
	w := &domain.Worker{ID: workerID, Provider: providerName, State: domain.WorkerCreating, CreatedAt: now,
		JobID: j.ID, Labels: map[string]string{"hodei.job_id": j.ID}, Owner: s.workers.Node()}
	if err := s.st.Workers().Create(ctx, w); err != nil {
		return err
	}
	// The worker's password commits with its row; the create-worker activity that
	// follows on this node takes it from memory (otpstash.go) and needs no transaction
	// of its own. Elsewhere, or later, the activity rotates it (startWorker).
	otp, hash, err := newSecret()
	if err != nil {
		return err
	}
	expires := now.Add(s.cfg.OTPTTL)
	if err := s.st.Credentials().SetOTP(ctx, workerID, hash, expires); err != nil {
		return err
	}
	s.otps.put(workerID, otp, now, expires) // a rollback leaves an entry for an id never used: pruned
	moved, err := s.moveJob(ctx, j.ID, domain.JobProvisioning, "capacity granted on provider "+providerName, func(j *domain.Job) {
		j.Attempt++
		j.WorkerID = workerID
	})
	if err != nil {
		return err
	}
	in := provisioningInput{JobID: j.ID, WorkerID: workerID, Provider: providerName,
		Attempt: moved.Attempt, RegistrationTimeout: s.cfg.RegistrationTimeout}
	_, _, err = s.engine.Start(inJobTrace(ctx, moved), SagaProvisioning, ProvisioningSagaID(j.ID, moved.Attempt), in)
	return err
}

// sweepWorkers destroys every worker a provider still lists whose database row is
// TERMINATED or missing: a Destroy lost because the process died between the commit
// of DestroyWorker and the provider call (or after a failed destroyAfterCommit). It runs
// when RunScheduler starts and every Config.SweepInterval. A node-local provider lists
// only this node's workers, so every node sweeps its own.
func (s *Service) sweepWorkers(ctx context.Context) (int, error) {
	n := 0
	var errs []error
	for _, name := range s.providers.Names() {
		p, err := s.providers.Get(name)
		if err != nil {
			continue
		}
		l, ok := p.(provider.Lister)
		if !ok {
			continue
		}
		ids, err := l.List(ctx)
		if err != nil {
			errs = append(errs, fmt.Errorf("provider %s: %w", name, err))
			continue
		}
		for _, id := range ids {
			w, err := s.st.Workers().Get(ctx, id)
			switch {
			case errors.Is(err, store.ErrNotFound):
			case err != nil:
				errs = append(errs, fmt.Errorf("worker %s: %w", id, err))
				continue
			case !w.State.IsTerminal():
				continue
			}
			if err := p.Destroy(ctx, id); err != nil {
				errs = append(errs, fmt.Errorf("destroy worker %s with provider %s: %w", id, name, err))
				continue
			}
			s.log.Info("destroyed a worker left behind", "worker", id, "provider", name)
			n++
		}
	}
	if err := errors.Join(errs...); err != nil {
		return n, fmt.Errorf("jobs: sweep workers: %w", err)
	}
	return n, nil
}

// runSweeper runs sweepWorkers now and every Config.SweepInterval until ctx ends.
func (s *Service) runSweeper(ctx context.Context) {
	t := time.NewTicker(s.cfg.SweepInterval)
	defer t.Stop()
	for {
		if _, err := s.sweepWorkers(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("worker sweep incomplete", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
