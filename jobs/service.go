package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/hodei-jobs/hodei/command"
	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/outbox"
	"github.com/hodei-jobs/hodei/provider"
	"github.com/hodei-jobs/hodei/provider/routing"
	"github.com/hodei-jobs/hodei/saga"
	"github.com/hodei-jobs/hodei/store"
)

// Errors of the worker-facing methods. Test with errors.Is.
var (
	// ErrInvalidCredentials matches every credential failure below.
	ErrInvalidCredentials = errors.New("jobs: invalid worker credentials")
	// ErrOTPUnknown: no such worker, a wrong password, or one that was revoked.
	ErrOTPUnknown = fmt.Errorf("%w: unknown one-time password", ErrInvalidCredentials)
	// ErrOTPReused: the password was already used to register.
	ErrOTPReused = fmt.Errorf("%w: one-time password already used", ErrInvalidCredentials)
	// ErrOTPExpired: the password's lifetime (Config.OTPTTL) has passed.
	ErrOTPExpired = fmt.Errorf("%w: one-time password expired", ErrInvalidCredentials)
	// ErrSessionInvalid: an unknown or revoked session token, or a terminated worker.
	ErrSessionInvalid = fmt.Errorf("%w: invalid session token", ErrInvalidCredentials)

	// ErrNotAssigned: a worker reported on a job that is not assigned to it.
	ErrNotAssigned = errors.New("jobs: job is not assigned to this worker")
	// ErrInvalidInput: a malformed message from a worker (names the field).
	ErrInvalidInput = errors.New("jobs: invalid input")
)

// Limits on what workers send (domain's, defined once).
const (
	MaxIDLen        = domain.MaxIDBytes
	MaxSecretLen    = domain.MaxSecretBytes
	MaxBatchLines   = domain.MaxLogLinesPerBatch
	MaxLogLineBytes = domain.MaxLogLineBytes
	MaxErrorBytes   = domain.MaxResultErrorBytes
)

// WorkerChannel delivers messages to a connected worker, on whichever replica holds its
// stream (api.Hub over NATS). It owns the wire format and the message ids: a message
// about the same job, attempt and round always has the same id, so the agent drops a
// re-sent copy. Both methods return once the agent acknowledged the message, or an
// error (the worker is not connected, or no ack came in time): the caller re-sends.
type WorkerChannel interface {
	// RunJob hands job j (its current attempt) to workerID.
	RunJob(ctx context.Context, workerID string, j *domain.Job) error
	// CancelJob asks workerID to stop c.JobID.
	CancelJob(ctx context.Context, workerID string, c CancelRequest) error
}

// CancelRequest asks a worker to stop a job (domain.CancelRequest).
type CancelRequest = domain.CancelRequest

// WorkerOps runs provider operations on existing workers where they may run: on this
// node, or routed to the node that owns a worker of a node-local provider
// (provider/routing.Router). "Not mine" is an error, never "gone".
type WorkerOps interface {
	// Node is this node's id, recorded as the owner of the workers it creates.
	Node() string
	Destroy(ctx context.Context, t routing.Target) error
	Status(ctx context.Context, t routing.Target) (provider.Status, error)
}

// Config tunes a Service. Zero fields get defaults (setDefaults); Validate names the
// first bad field.
type Config struct {
	// ServerURL is the URL workers dial (required); providers pass it to the worker.
	ServerURL string
	// WorkerCACertPEM returns the PEM CA bundle workers verify the server with (an
	// https:// ServerURL; nil: none); called for every worker created, so that a
	// rotated bundle reaches the workers started afterwards. Providers hand it to the
	// worker (provider.WorkerSpec.CACertPEM).
	WorkerCACertPEM func() string
	// DefaultProvider names the provider new workers are created with (default: the
	// registry's default provider).
	DefaultProvider string
	// ProviderStrategy chooses among the providers that can run a job and have room:
	// StrategyFirstFit (default) or StrategyLeastLoaded (see selection.go).
	ProviderStrategy Strategy
	// Capacity is the most workers that are not TERMINATED at once, across replicas
	// (default: the default provider's Capabilities().MaxWorkers, else 8).
	Capacity int
	// OTPTTL is the lifetime of a worker's one-time password (default 5m).
	OTPTTL time.Duration
	// RegistrationTimeout is how long provisioning waits for the worker to register
	// before destroying it and failing the job (default 2m).
	RegistrationTimeout time.Duration
	// SchedulerPoll is RunScheduler's safety poll (default 500ms); wake-ups after a
	// submit or a worker release are the primary trigger.
	SchedulerPoll time.Duration
	// SweepInterval is how often RunScheduler looks for workers a provider still runs
	// although their database row is TERMINATED (a destroy lost in a crash); default 1m.
	// The sweep runs on every replica, leader or not (it asks this node's providers).
	SweepInterval time.Duration
	// DestroyTimeout bounds one provider Destroy run after commit (default 30s).
	DestroyTimeout time.Duration
	// CancelGrace is the grace period CancelJob gives a worker before SIGKILL (default 10s).
	CancelGrace time.Duration
	// SchedulerBatch bounds the jobs started by one scheduler transaction (default 64).
	SchedulerBatch int
	// TxDispatcher is used for the commands the Service dispatches inside its own
	// transactions (cleanup, the lost-worker checks); default command.InTxChain over
	// the bus and the store.
	TxDispatcher command.Dispatcher

	// Dispatcher is used for the commands the Service dispatches outside a transaction
	// (JobStarted, RecoverJob); default command.EdgeChain. Saga steps dispatch through
	// the engine's dispatcher.
	Dispatcher command.Dispatcher
	// Workers runs Destroy and Status on existing workers (default: a routing.Router of
	// node "local" without a message bus, for a single node).
	Workers WorkerOps
	// DeliveryTimeout bounds one delivery of a message to a worker, ack included
	// (default 5s); an unacknowledged message is sent again.
	DeliveryTimeout time.Duration
	// Pools are the warm pools (warm.go): idle workers kept registered per provider
	// (and image), reused by up to MaxJobsPerWorker jobs of one namespace. New applies
	// their defaults and refuses an invalid one, naming it (pools[i].field).
	Pools []PoolConfig
	// IdleStaleAfter: an idle pool worker not heard of (heartbeat or state change) for
	// longer is not given jobs (default 10s, twice the default heartbeat interval; the
	// server sets it from --heartbeat-interval). Its agent may be gone (a server that
	// stopped took its local workers with it); the cleanup's heartbeat rule destroys it.
	IdleStaleAfter time.Duration
	// Leader tells whether this replica leads: only the leader schedules and runs the
	// cleanup scan (default: always leads, for one replica and for tests).
	Leader Leadership
	Logger *slog.Logger
	// Now is the clock of credential expiry and of job and worker state changes
	// (UpdatedAt, StartedAt, FinishedAt; default time.Now).
	Now func() time.Time
	// Observer is told of job submissions, starts, ends and worker losses (metrics;
	// telemetry.Metrics implements it); nil: none.
	Observer Observer
}

func (c *Config) setDefaults(providers *provider.Registry) {
	if c.DefaultProvider == "" && providers != nil {
		if p := providers.Default(); p != nil {
			c.DefaultProvider = p.Name() // must also be its registered name (New checks)
		}
	}
	if c.Capacity == 0 {
		c.Capacity = 8
		if providers != nil {
			// The sum of the providers' capacities; each provider's own MaxWorkers
			// bounds its share (scheduleOnce).
			sum := 0
			for _, n := range providers.Names() {
				if p, err := providers.Get(n); err == nil {
					sum += p.Capabilities().MaxWorkers
				}
			}
			if sum > 0 {
				c.Capacity = min(sum, 100_000)
			}
		}
	}
	if c.ProviderStrategy == "" {
		c.ProviderStrategy = StrategyFirstFit
	}
	if c.OTPTTL == 0 {
		c.OTPTTL = 5 * time.Minute
	}
	if c.RegistrationTimeout == 0 {
		c.RegistrationTimeout = 2 * time.Minute
	}
	if c.SchedulerPoll == 0 {
		c.SchedulerPoll = 500 * time.Millisecond
	}
	if c.SchedulerBatch == 0 {
		c.SchedulerBatch = 64
	}
	if c.SweepInterval == 0 {
		c.SweepInterval = time.Minute
	}
	if c.DestroyTimeout == 0 {
		c.DestroyTimeout = 30 * time.Second
	}
	if c.CancelGrace == 0 {
		c.CancelGrace = 10 * time.Second
	}
	if c.IdleStaleAfter == 0 {
		c.IdleStaleAfter = 10 * time.Second
	}
	if c.DeliveryTimeout == 0 {
		c.DeliveryTimeout = 5 * time.Second
	}
	if c.Leader == nil {
		c.Leader = alwaysLeader{}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Validate reports the first invalid field.
func (c *Config) Validate() error {
	switch {
	case c.ServerURL == "":
		return errors.New("jobs: Config.ServerURL is empty")
	case c.DefaultProvider == "":
		return errors.New("jobs: Config.DefaultProvider is empty and no provider is registered")
	case c.ProviderStrategy != StrategyFirstFit && c.ProviderStrategy != StrategyLeastLoaded:
		return fmt.Errorf("jobs: Config.ProviderStrategy %q: want %s or %s", c.ProviderStrategy, StrategyFirstFit, StrategyLeastLoaded)
	case c.Capacity < 1 || c.Capacity > 100_000:
		return fmt.Errorf("jobs: Config.Capacity %d out of range [1, 100000]", c.Capacity)
	case c.OTPTTL < time.Second || c.OTPTTL > 24*time.Hour:
		return fmt.Errorf("jobs: Config.OTPTTL %s out of range [1s, 24h]", c.OTPTTL)
	case c.RegistrationTimeout < 10*time.Millisecond || c.RegistrationTimeout > 24*time.Hour:
		return fmt.Errorf("jobs: Config.RegistrationTimeout %s out of range [10ms, 24h]", c.RegistrationTimeout)
	case c.SchedulerPoll < time.Millisecond || c.SchedulerPoll > time.Minute:
		return fmt.Errorf("jobs: Config.SchedulerPoll %s out of range [1ms, 1m]", c.SchedulerPoll)
	case c.SchedulerBatch < 1 || c.SchedulerBatch > 1000:
		return fmt.Errorf("jobs: Config.SchedulerBatch %d out of range [1, 1000]", c.SchedulerBatch)
	case c.SweepInterval < 10*time.Millisecond || c.SweepInterval > 24*time.Hour:
		return fmt.Errorf("jobs: Config.SweepInterval %s out of range [10ms, 24h]", c.SweepInterval)
	case c.DestroyTimeout < 10*time.Millisecond || c.DestroyTimeout > time.Hour:
		return fmt.Errorf("jobs: Config.DestroyTimeout %s out of range [10ms, 1h]", c.DestroyTimeout)
	case c.CancelGrace < 10*time.Millisecond || c.CancelGrace > time.Hour:
		return fmt.Errorf("jobs: Config.CancelGrace %s out of range [10ms, 1h]", c.CancelGrace)
	case c.DeliveryTimeout < 10*time.Millisecond || c.DeliveryTimeout > time.Minute:
		return fmt.Errorf("jobs: Config.DeliveryTimeout %s out of range [10ms, 1m]", c.DeliveryTimeout)
	}
	return nil
}

// Service is the job path's logic: what the API calls, the command handlers the sagas
// dispatch to, and the capacity scheduler. Safe for concurrent use.
type Service struct {
	st        store.Store
	bus       *command.Bus
	d         command.Dispatcher // outside transactions (Config.Dispatcher)
	dtx       command.Dispatcher // inside transactions (Config.TxDispatcher)
	engine    *saga.Engine
	providers *provider.Registry
	workers   WorkerOps
	ch        WorkerChannel
	cfg       Config
	log       *slog.Logger
	wake      chan struct{}
	// disconnects carries WorkerDisconnected notices to RunCleanup's loop.
	disconnects chan disconnectNotice
	// otps hands passwords from the scheduler to the create-worker activity (otpstash.go).
	otps otpStash
	// warmPaused: pools not refilled for a while after a failed create (warm.go).
	warmPaused poolBackoff
}

// New builds the Service and registers the handlers of Commands() on bus. The engine
// must run the definitions RegisterSagas added to its registry. The Service subscribes
// to the exits of every provider that reports them (provider.ExitNotifier).
func New(st store.Store, bus *command.Bus, engine *saga.Engine, providers *provider.Registry, ch WorkerChannel, cfg Config) (*Service, error) {
	if st == nil || bus == nil || engine == nil || providers == nil || ch == nil {
		return nil, errors.New("jobs: New needs a store, a bus, a saga engine, a provider registry and a worker channel")
	}
	cfg.setDefaults(providers)
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if _, err := providers.Get(cfg.DefaultProvider); err != nil {
		return nil, fmt.Errorf("jobs: Config.DefaultProvider: %w", err)
	}
	cfg.Pools = slices.Clone(cfg.Pools)
	if err := validatePools(cfg.Pools, providers); err != nil {
		return nil, err
	}
	if cfg.Workers == nil {
		r, err := routing.New(nil, "local", providers, routing.Config{Logger: cfg.Logger})
		if err != nil {
			return nil, err
		}
		cfg.Workers = r
	}
	s := &Service{st: st, bus: bus, d: cfg.Dispatcher, dtx: cfg.TxDispatcher, engine: engine, providers: providers, workers: cfg.Workers,
		ch: ch, cfg: cfg, log: cfg.Logger.With("component", "jobs"), wake: make(chan struct{}, 1),
		disconnects: make(chan disconnectNotice, disconnectBuffer)}
	chain := command.ChainConfig{Idempotency: command.StoreDeps(st), Logger: cfg.Logger}
	if s.d == nil {
		s.d = command.EdgeChain(bus, chain)
	}
	if s.dtx == nil {
		s.dtx = command.InTxChain(bus, chain)
	}
	for _, name := range providers.Names() {
		p, _ := providers.Get(name)
		if n, ok := p.(provider.ExitNotifier); ok {
			n.OnExit(func(workerID string, exitErr error) {
				detail := "exit status 0"
				if exitErr != nil {
					detail = exitErr.Error()
				}
				s.workerExited(workerID, detail, exitKind{oom: errors.Is(exitErr, provider.ErrOOMKilled),
					permanent: provider.IsPermanent(exitErr)})
			})
		}
	}
	s.register()
	return s, nil
}

// Capacity returns the configured worker capacity.
func (s *Service) Capacity() int { return s.cfg.Capacity }

// afterCommit runs fn after ctx's transaction commits (now when there is none).
func (s *Service) afterCommit(ctx context.Context, fn func()) {
	s.st.AfterCommit(ctx, fn)
}

// Submit validates spec (domain.ValidationErrors; nothing is written) and, in one
// transaction, creates the job in PENDING, starts its execution saga and writes the
// job.queued event. The scheduler is woken after the commit.
func (s *Service) Submit(ctx context.Context, spec domain.JobSpec) (*domain.Job, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	if _, err := s.candidates(spec); err != nil {
		return nil, domain.ValidationErrors{err.(*domain.ValidationError)}
	}
	id, err := uuid.NewV7()
	if err != nil {
		return nil, fmt.Errorf("jobs: submit: new id: %w", err)
	}
	now := s.cfg.Now()
	j := &domain.Job{ID: id.String(), Spec: spec.WithDefaults(), State: domain.JobPending, CreatedAt: now, UpdatedAt: now}
	j.Spec.TraceParent = traceParent(ctx) // telemetry.go
	err = s.st.InTx(ctx, func(ctx context.Context) error {
		if err := s.st.Jobs().Create(ctx, j); err != nil {
			return err
		}
		in := executionInput{JobID: j.ID, Timeout: j.Spec.Timeout}
		if _, _, err := s.engine.Start(ctx, SagaExecution, ExecutionSagaID(j.ID), in); err != nil {
			return err
		}
		ev, err := domain.NewEvent(domain.EventJobQueued, j.ID, map[string]any{
			"priority": j.Spec.Priority, "labels": j.Spec.Labels, "at": j.CreatedAt})
		if err != nil {
			return err
		}
		if err := s.publish(ctx, ev, "job/"+j.ID+"/queued"); err != nil {
			return err
		}
		s.afterCommit(ctx, s.WakeScheduler)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("jobs: submit: %w", err)
	}
	if s.cfg.Observer != nil {
		s.cfg.Observer.JobSubmitted()
	}
	return j, nil
}

// publish writes ev to the outbox (type "<entity>.<type>") with key.
func (s *Service) publish(ctx context.Context, ev domain.Event, key string) error {
	entity, typ, _ := strings.Cut(ev.Type, ".")
	_, err := outbox.PublishEvent(ctx, s.st.Outbox(), entity, typ, key, ev)
	return err
}

// moveJob changes a job's state through the domain's transition table and writes the
// events the transition causes (job.state_changed, job.completed, job.needs_review) in
// ctx's transaction.
func (s *Service) moveJob(ctx context.Context, id string, to domain.JobState, reason string, mutate func(*domain.Job)) (*domain.Job, error) {
	var from domain.JobState
	j, err := s.st.Jobs().UpdateState(ctx, id, to, s.cfg.Now(), func(j *domain.Job) {
		from = j.State
		if mutate != nil {
			mutate(j)
		}
	})
	if err != nil {
		return nil, err
	}
	s.observeMove(ctx, j) // telemetry.go
	evs, err := domain.JobStateEvents(id, domain.JobStateChanged{From: from, To: to, Attempt: j.Attempt,
		Reason: reason, At: j.UpdatedAt})
	if err != nil {
		return nil, err
	}
	for _, ev := range evs {
		key := fmt.Sprintf("job/%s/%d/%s-%s/%s", id, j.Attempt, from, to, ev.Type)
		if err := s.publish(ctx, ev, key); err != nil {
			return nil, err
		}
	}
	return j, nil
}

// signalExecution signals the job's execution saga; a finished saga ignores it.
func (s *Service) signalExecution(ctx context.Context, jobID, name string, payload any) error {
	id, err := s.executionSagaOf(ctx, jobID) // admin.go: a retried job has a new saga
	if err != nil {
		return err
	}
	err = s.engine.Signal(ctx, id, name, payload)
	if errors.Is(err, saga.ErrFinished) || errors.Is(err, store.ErrNotFound) {
		s.log.Debug("execution saga takes no signal", "job", jobID, "signal", name, "err", err)
		return nil
	}
	return err
}
