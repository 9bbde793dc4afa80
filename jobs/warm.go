package jobs

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/provider"
	"github.com/hodei-jobs/hodei/saga"
	"github.com/hodei-jobs/hodei/store"
)

// Warm pools (see "Warm pools" in doc.go): idle workers registered ahead of jobs, and
// reused by up to MaxJobsPerWorker jobs of one namespace.

// PoolConfig is one warm pool: idle workers of one provider (and image, for a container
// provider) kept registered and ready. The yaml tags are the config file's pools
// section.
type PoolConfig struct {
	// Name identifies the pool (the workers' hodei.pool label); default the provider's
	// name, and "/" and the image when it has one.
	Name string `yaml:"name"`
	// Provider runs the pool's workers (required).
	Provider string `yaml:"provider"`
	// Image of the workers (container providers); a job matches with the same image.
	Image string `yaml:"image,omitempty"`
	// Pull policy of Image (default if-not-present).
	Pull domain.PullPolicy `yaml:"pull,omitempty"`
	// CPU and Memory of the workers ("0.5", "256Mi"; empty: none); a job matches with
	// the same resources.
	CPU    string `yaml:"cpu,omitempty"`
	Memory string `yaml:"memory,omitempty"`
	// Namespace, if set, restricts the pool to that namespace's jobs. Either way a
	// worker serves one namespace: the first job's.
	Namespace string `yaml:"namespace,omitempty"`
	// MinIdle idle workers (registered, or being created) are kept; the pool refills
	// in the background when a provider slot is free and no PENDING job needs it.
	MinIdle int `yaml:"min_idle"`
	// MaxIdle bounds the idle workers: a worker whose job ended returns to the pool only
	// below it (default MinIdle).
	MaxIdle int `yaml:"max_idle"`
	// IdleTTL retires a worker idle for longer, while the pool has more than MinIdle
	// idle workers (default 10m).
	IdleTTL time.Duration `yaml:"idle_ttl"`
	// MaxJobsPerWorker: jobs one worker runs before it is destroyed (default 1: each
	// warm worker runs one job; above 1 the agent cleans up between jobs).
	MaxJobsPerWorker int `yaml:"max_jobs_per_worker"`

	resources domain.Resources // parsed CPU and Memory
}

// Pool limits.
const (
	MaxPools       = 64
	maxPoolIdle    = 10_000
	maxJobsPerPool = 1_000_000
	// warmJobWait is how long a warm worker's agent waits for a job before it exits on
	// its own: the server retires idle workers itself (IdleTTL, the sweep, a revoked
	// session), so this is only the last resort of a worker the server forgot.
	warmJobWait = 24 * time.Hour
	// poolFailurePause: after a warm worker of a pool could not be created, the pool is
	// not refilled for this long (a missing image would otherwise be tried every pass).
	poolFailurePause = 30 * time.Second
)

// Worker labels of a pool's workers.
const (
	labelPool      = "hodei.pool"            // the pool's name
	labelPoolJobs  = "hodei.pool.jobs"       // jobs assigned to the worker so far
	labelIdleSince = "hodei.pool.idle_since" // RFC 3339: when it last became idle
	labelNamespace = "hodei.namespace"       // the namespace it serves (its first job's)
)

func (p *PoolConfig) setDefaults() {
	if p.Name == "" {
		p.Name = p.Provider
		if p.Image != "" {
			p.Name += "/" + p.Image
		}
	}
	if p.MaxIdle == 0 {
		p.MaxIdle = p.MinIdle
	}
	if p.IdleTTL == 0 {
		p.IdleTTL = 10 * time.Minute
	}
	if p.MaxJobsPerWorker == 0 {
		p.MaxJobsPerWorker = 1
	}
}

// Check reports the first invalid field of p as pools[i] (with its defaults applied),
// without the providers: what a command can check before the server starts.
func (p PoolConfig) Check(i int) error {
	p.setDefaults()
	return p.checkFields(i)
}

// validate names the first invalid field of pools[i] (after setDefaults), and parses
// its resources.
func (p *PoolConfig) validate(i int, providers *provider.Registry) error {
	if err := p.checkFields(i); err != nil {
		return err
	}
	prov, err := providers.Get(p.Provider)
	if err != nil {
		return fmt.Errorf("jobs: pools[%d].provider: %w", i, err)
	}
	if why := unfit(domain.JobSpec{Image: p.Image}, prov.Capabilities()); why != "" {
		return fmt.Errorf("jobs: pools[%d].image: provider %s cannot run the pool's workers: %s", i, p.Provider, why)
	}
	return nil
}

// checkFields is validate without the providers.
func (p *PoolConfig) checkFields(i int) error {
	field := func(f string) string { return fmt.Sprintf("pools[%d].%s", i, f) }
	switch {
	case p.Provider == "":
		return fmt.Errorf("jobs: %s is empty", field("provider"))
	case p.MinIdle < 0 || p.MinIdle > maxPoolIdle:
		return fmt.Errorf("jobs: %s %d out of range [0, %d]", field("min_idle"), p.MinIdle, maxPoolIdle)
	case p.MaxIdle < p.MinIdle || p.MaxIdle > maxPoolIdle:
		return fmt.Errorf("jobs: %s %d out of range [min_idle %d, %d]", field("max_idle"), p.MaxIdle, p.MinIdle, maxPoolIdle)
	case p.IdleTTL < time.Second || p.IdleTTL > 7*24*time.Hour:
		return fmt.Errorf("jobs: %s %s out of range [1s, 168h]", field("idle_ttl"), p.IdleTTL)
	case p.MaxJobsPerWorker < 1 || p.MaxJobsPerWorker > maxJobsPerPool:
		return fmt.Errorf("jobs: %s %d out of range [1, %d]", field("max_jobs_per_worker"), p.MaxJobsPerWorker, maxJobsPerPool)
	case p.Pull != "" && p.Pull != domain.PullNever && p.Pull != domain.PullIfNotPresent && p.Pull != domain.PullAlways:
		return fmt.Errorf("jobs: %s %q is not never, if-not-present or always", field("pull"), p.Pull)
	}
	if p.Namespace != "" {
		if err := domain.ValidateNamespace(p.Namespace); err != nil {
			return fmt.Errorf("jobs: %s: %w", field("namespace"), err)
		}
	}
	if p.CPU != "" {
		m, err := domain.ParseCPU(p.CPU)
		if err != nil {
			return fmt.Errorf("jobs: %s: %w", field("cpu"), err)
		}
		p.resources.CPUMillis = m
	}
	if p.Memory != "" {
		b, err := domain.ParseMemory(p.Memory)
		if err != nil {
			return fmt.Errorf("jobs: %s: %w", field("memory"), err)
		}
		p.resources.MemoryBytes = b
	}
	return nil
}

// validatePools applies the pools' defaults and checks them (New).
func validatePools(pools []PoolConfig, providers *provider.Registry) error {
	if len(pools) > MaxPools {
		return fmt.Errorf("jobs: %d pools, limit %d", len(pools), MaxPools)
	}
	names := map[string]bool{}
	for i := range pools {
		p := &pools[i]
		p.setDefaults()
		if err := p.validate(i, providers); err != nil {
			return err
		}
		if names[p.Name] {
			return fmt.Errorf("jobs: pools[%d].name %q is used twice", i, p.Name)
		}
		names[p.Name] = true
	}
	return nil
}

// pool returns the configured pool named name, or nil.
func (s *Service) pool(name string) *PoolConfig {
	if name == "" {
		return nil
	}
	for i := range s.cfg.Pools {
		if s.cfg.Pools[i].Name == name {
			return &s.cfg.Pools[i]
		}
	}
	return nil
}

// poolBackoff remembers, per pool, until when it is not refilled after a failure.
type poolBackoff struct {
	mu    sync.Mutex
	until map[string]time.Time
}

func (b *poolBackoff) pause(pool string, until time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.until == nil {
		b.until = map[string]time.Time{}
	}
	b.until[pool] = until
}

func (b *poolBackoff) paused(pool string, now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return now.Before(b.until[pool])
}

// idleWarm reports whether w is an idle worker of a pool: registered, no job.
func idleWarm(w *domain.Worker) bool {
	return w.State == domain.WorkerReady && w.JobID == "" && w.Labels[labelPool] != ""
}

// warmMatches reports whether job j may run on the idle worker w of pool p: its
// provider is one of the job's candidates (provider, selector, image capability), and
// image, resources and namespace are the same.
func warmMatches(j *domain.Job, cands []string, w *domain.Worker, p *PoolConfig) bool {
	ns := j.NamespaceOf()
	switch {
	case p == nil || w.Provider != p.Provider:
		return false
	case j.Spec.Image != p.Image || j.Spec.Resources != p.resources:
		return false
	case p.Namespace != "" && p.Namespace != ns:
		return false
	case w.Labels[labelNamespace] != "" && w.Labels[labelNamespace] != ns:
		return false
	}
	for _, c := range cands {
		if c == p.Provider {
			return true
		}
	}
	return false
}

// warmPass is a scheduler transaction's view of the pools: the idle workers not yet
// taken in this pass, and which providers a PENDING job waited for.
type warmPass struct {
	idle    []*domain.Worker
	waiting map[string]bool // provider → a job waited for a slot on it
	all     bool            // a job could not be looked at (the batch was full): refill nothing
}

// takeMatch removes and returns the first idle worker job j matches, or nil.
func (s *Service) takeMatch(wp *warmPass, j *domain.Job, cands []string) *domain.Worker {
	for i, w := range wp.idle {
		if warmMatches(j, cands, w, s.pool(w.Labels[labelPool])) {
			wp.idle = append(wp.idle[:i], wp.idle[i+1:]...)
			return w
		}
	}
	return nil
}

// takeEvictable removes and returns an idle worker on one of the providers in cands
// (a slot that a PENDING job needs more than the pool), or nil.
func (s *Service) takeEvictable(wp *warmPass, cands []string) *domain.Worker {
	for i, w := range wp.idle {
		for _, c := range cands {
			if w.Provider == c {
				wp.idle = append(wp.idle[:i], wp.idle[i+1:]...)
				return w
			}
		}
	}
	return nil
}

// assignWarm gives job j the idle worker w in the scheduler's transaction: the worker
// BUSY on the job (bound to its namespace), the job PROVISIONING (attempt + 1) on it,
// and the job's execution saga signalled worker.ready: the next commit is the
// assignment, with no provisioning at all. A crash after this commit loses nothing:
// the execution saga's history holds the signal.
func (s *Service) assignWarm(ctx context.Context, j *domain.Job, w *domain.Worker) error {
	n, _ := strconv.Atoi(w.Labels[labelPoolJobs])
	if _, err := s.st.Workers().UpdateState(ctx, w.ID, domain.WorkerBusy, s.cfg.Now(), func(w *domain.Worker) {
		w.JobID = j.ID
		w.Labels = maps.Clone(w.Labels)
		if w.Labels == nil {
			w.Labels = map[string]string{}
		}
		w.Labels[labelNamespace] = j.NamespaceOf()
		w.Labels[labelPoolJobs] = strconv.Itoa(n + 1)
		delete(w.Labels, labelIdleSince)
	}); err != nil {
		return err
	}
	if _, err := s.moveJob(ctx, j.ID, domain.JobProvisioning, "warm worker "+w.ID+" of pool "+w.Labels[labelPool], func(j *domain.Job) {
		j.Attempt++
		j.WorkerID = w.ID
	}); err != nil {
		return err
	}
	return s.signalExecution(ctx, j.ID, SignalWorkerReady, workerSignal{WorkerID: w.ID})
}

// tendPools runs at the end of a scheduler transaction, under its lock: it retires
// idle workers past their pool's IdleTTL (above MinIdle) and those of pools no longer
// configured, and refills each pool to MinIdle idle-or-creating workers, on providers
// with room that no PENDING job of this pass waited for. free is the overall capacity
// left; it returns how many workers it reserved.
func (s *Service) tendPools(ctx context.Context, wp *warmPass, all []*domain.Worker, room map[string]slots, free int) (int, error) {
	now := s.cfg.Now()
	idle := map[string]int{}
	have := map[string]int{}
	for _, w := range all { // being created
		if name := w.Labels[labelPool]; name != "" && w.JobID == "" && w.State == domain.WorkerCreating {
			have[name]++
		}
	}
	for _, w := range wp.idle { // idle, not taken by a job in this pass
		idle[w.Labels[labelPool]]++
		have[w.Labels[labelPool]]++
	}
	for _, w := range wp.idle {
		name := w.Labels[labelPool]
		p := s.pool(name)
		reason := ""
		switch {
		case p == nil:
			reason = "pool " + name + " is not configured"
		case idle[name] > p.MinIdle:
			since, err := time.Parse(time.RFC3339Nano, w.Labels[labelIdleSince])
			if err != nil {
				since = w.UpdatedAt
			}
			if now.Sub(since) > p.IdleTTL {
				reason = fmt.Sprintf("idle for more than %s (pool %s)", p.IdleTTL, name)
			}
		}
		if reason == "" {
			continue
		}
		if _, err := s.destroyWorker(ctx, DestroyWorker{WorkerID: w.ID, Reason: reason}); err != nil {
			return 0, err
		}
		idle[name]--
		have[name]--
		addRoom(room, w.Provider, 1)
		free++
	}
	if wp.all {
		return 0, nil
	}
	reserved := 0
	for i := range s.cfg.Pools {
		p := &s.cfg.Pools[i]
		if wp.waiting[p.Provider] || s.warmPaused.paused(p.Name, now) {
			continue
		}
		for have[p.Name] < p.MinIdle && room[p.Provider].room > 0 && free > 0 {
			if err := s.reserveWarm(ctx, p); err != nil {
				return reserved, fmt.Errorf("pool %s: %w", p.Name, err)
			}
			have[p.Name]++
			addRoom(room, p.Provider, -1)
			free--
			reserved++
		}
	}
	return reserved, nil
}

// reserveWarm reserves a worker of pool p (a CREATING row with the pool's label, which
// counts against capacity from this commit on) and starts its warm-worker saga.
func (s *Service) reserveWarm(ctx context.Context, p *PoolConfig) error {
	wid, err := uuid.NewV7()
	if err != nil {
		return err
	}
	w := &domain.Worker{ID: wid.String(), Provider: p.Provider, State: domain.WorkerCreating, CreatedAt: s.cfg.Now(),
		Labels: map[string]string{labelPool: p.Name, labelPoolJobs: "0"}}
	if p.Namespace != "" {
		w.Labels[labelNamespace] = p.Namespace
	}
	if err := s.st.Workers().Create(ctx, w); err != nil {
		return err
	}
	if err := s.st.Credentials().SetOTP(ctx, w.ID, nil, time.Time{}); err != nil {
		return err
	}
	in := warmInput{WorkerID: w.ID, Pool: p.Name, Provider: p.Provider, RegistrationTimeout: s.cfg.RegistrationTimeout}
	_, _, err = s.engine.Start(ctx, SagaWarmWorker, WarmSagaID(w.ID), in)
	return err
}

// SagaWarmWorker is the type of the saga that provisions one warm worker.
const SagaWarmWorker = "warm-worker"

// WarmSagaID is the id of the warm-worker saga of workerID.
func WarmSagaID(workerID string) string { return saga.IDFor(SagaWarmWorker, workerID) }

type warmInput struct {
	WorkerID            string        `json:"worker_id"`
	Pool                string        `json:"pool"`
	Provider            string        `json:"provider"`
	RegistrationTimeout time.Duration `json:"registration_timeout"`
}

// warmWorkerSaga provisions a pool's worker: create-worker (an activity: password
// committed, then provider.Create) ▶ await-registration. When it fails for good, the
// compensation destroys the worker; the pool refills at a later pass.
func warmWorkerSaga() saga.Definition {
	return saga.Definition{Name: SagaWarmWorker, Version: 1, Steps: []saga.Step{
		{
			Name:  "create-worker",
			Retry: saga.RetryPolicy{MaxAttempts: 5, Initial: 200 * time.Millisecond, Max: 5 * time.Second},
			Activity: activityWithInput(func(ctx context.Context, ac *saga.ActivityContext, v warmInput) (any, error) {
				return dispatch(ctx, ac, CreateWarmWorker{Key: ac.Key(), WorkerID: v.WorkerID, Pool: v.Pool})
			}),
			Compensate: withInput(func(ctx context.Context, sc *saga.StepContext, v warmInput) (any, error) {
				return dispatch(ctx, sc, DestroyWorker{Key: sc.Key(), WorkerID: v.WorkerID, Reason: "warm worker provisioning failed"})
			}),
		},
		{
			Name: "await-registration",
			Do: withInput(func(ctx context.Context, sc *saga.StepContext, v warmInput) (any, error) {
				return awaitRegistration(sc, "warm worker", v.WorkerID, v.RegistrationTimeout)
			}),
		},
	}}
}

// TypeCreateWarmWorker is CreateWarmWorker's type.
const TypeCreateWarmWorker = "worker.create_warm"

// CreateWarmWorker starts a pool's reserved worker through its provider (the
// warm-worker saga's activity), like CreateWorker for a job's.
type CreateWarmWorker struct {
	Key      string `json:"key"`
	WorkerID string `json:"worker_id"`
	Pool     string `json:"pool"`
}

func (CreateWarmWorker) CommandType() string { return TypeCreateWarmWorker }

func (c CreateWarmWorker) IdempotencyKey() string { return c.Key }

func (s *Service) createWarmWorker(ctx context.Context, c CreateWarmWorker) (Outcome, error) {
	w, err := s.st.Workers().Get(ctx, c.WorkerID)
	if err != nil {
		return Outcome{}, err
	}
	if w.State != domain.WorkerCreating {
		return skipped(nil, w, "worker is past CREATING"), nil
	}
	p := s.pool(c.Pool)
	if p == nil {
		return Outcome{}, fmt.Errorf("jobs: pool %q of worker %s is not configured", c.Pool, c.WorkerID)
	}
	spec := provider.WorkerSpec{Resources: p.resources, Image: p.Image, Pull: p.Pull,
		Labels: map[string]string{labelPool: p.Name}, MaxJobs: p.MaxJobsPerWorker, JobWait: warmJobWait}
	o, err := s.launchWorker(ctx, w, p.Provider, spec, func(cause error) error {
		return fmt.Errorf("jobs: create warm worker %s of pool %s: %w", w.ID, p.Name, cause)
	})
	if err != nil {
		s.warmPaused.pause(p.Name, s.cfg.Now().Add(poolFailurePause))
		s.log.Warn("warm worker could not be created; the pool pauses", "pool", p.Name, "worker", w.ID,
			"pause", poolFailurePause, "err", err)
	}
	return o, err
}

// recycleWorker returns the pool worker w to its pool after its job, when the pool
// reuses workers (MaxJobsPerWorker > 1), the worker has jobs left, it reported the
// job's result itself (so its agent has finished and cleaned up), and the pool has
// fewer than MaxIdle idle workers: BUSY → READY, no job, still bound to the job's
// namespace. It reports whether it did.
func (s *Service) recycleWorker(ctx context.Context, w *domain.Worker) (bool, error) {
	p := s.pool(w.Labels[labelPool])
	n, _ := strconv.Atoi(w.Labels[labelPoolJobs])
	if p == nil || p.MaxJobsPerWorker <= 1 || n >= p.MaxJobsPerWorker || w.State != domain.WorkerBusy || w.JobID == "" {
		return false, nil
	}
	j, err := s.st.Jobs().Get(ctx, w.JobID)
	if err != nil {
		return false, err
	}
	if (j.State != domain.JobSucceeded && j.State != domain.JobFailed) || j.WorkerID != w.ID {
		return false, nil
	}
	if _, err := s.st.Idempotency().Get(ctx, fmt.Sprintf("job.finished/%s/%d", j.ID, j.Attempt)); err != nil {
		return false, nil // not reported by the worker: its agent may still be busy with it
	}
	ready, err := s.st.Workers().List(ctx, domain.WorkerReady)
	if err != nil {
		return false, err
	}
	idle := 0
	for _, o := range ready {
		if idleWarm(o) && o.Labels[labelPool] == p.Name {
			idle++
		}
	}
	if idle >= p.MaxIdle {
		return false, nil
	}
	now := s.cfg.Now()
	if _, err := s.st.Workers().UpdateState(ctx, w.ID, domain.WorkerReady, now, func(w *domain.Worker) {
		w.JobID = ""
		w.Labels = maps.Clone(w.Labels)
		w.Labels[labelIdleSince] = now.UTC().Format(time.RFC3339Nano)
	}); err != nil {
		return false, err
	}
	s.afterCommit(ctx, s.WakeScheduler) // a PENDING job may match it
	return true, nil
}

// warmRegistered is RegisterWorker's part for a pool's worker (it has no job; its row
// is READY with labelIdleSince set, registeredMutate): its warm-worker saga is
// signalled, and the scheduler woken (a PENDING job may match it).
func (s *Service) warmRegistered(ctx context.Context, w *domain.Worker, now time.Time) error {
	if err := s.engine.Signal(ctx, WarmSagaID(w.ID), SignalWorkerRegistered, workerSignal{WorkerID: w.ID}); err != nil {
		return fmt.Errorf("signal warm-worker saga of worker %s: %w", w.ID, err)
	}
	ev, err := domain.NewEvent(domain.EventWorkerRegistered, w.ID, map[string]any{"pool": w.Labels[labelPool], "at": now.UTC()})
	if err != nil {
		return err
	}
	s.afterCommit(ctx, s.WakeScheduler)
	return s.publish(ctx, ev, "worker/"+w.ID+"/registered")
}

// registeredMutate is RegisterWorker's change to the worker it moves to READY: a pool's
// worker without a job becomes idle now.
func registeredMutate(now time.Time) func(*domain.Worker) {
	return func(w *domain.Worker) {
		if w.JobID == "" && w.Labels[labelPool] != "" {
			w.Labels = maps.Clone(w.Labels)
			w.Labels[labelIdleSince] = now.UTC().Format(time.RFC3339Nano)
		}
	}
}

// warmExited handles the exit of a pool's worker that has no job (checkExited): one
// still CREATING fails its warm-worker saga now (whose compensation destroys it), an
// idle one is destroyed, so that no job is assigned to it; the pool refills.
func (s *Service) warmExited(ctx context.Context, w *domain.Worker, reason string) error {
	if w.State == domain.WorkerCreating {
		err := s.engine.Signal(ctx, WarmSagaID(w.ID), SignalWorkerRegistered,
			workerSignal{WorkerID: w.ID, Failed: reason + " before registering"})
		if err == nil || !errors.Is(err, saga.ErrFinished) && !errors.Is(err, store.ErrNotFound) {
			return err
		}
	}
	_, err := s.destroyWorker(ctx, DestroyWorker{WorkerID: w.ID, Reason: reason})
	return err
}

// addRoom adds d free slots to provider name's room.
func addRoom(room map[string]slots, name string, d int) {
	sl := room[name]
	sl.room += d
	room[name] = sl
}
