package saga

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/hodei-jobs/hodei/command"
	"github.com/hodei-jobs/hodei/store"
)

// Config tunes an Engine. Zero fields get defaults (setDefaults); Validate names the
// first bad field.
type Config struct {
	// RunnerID identifies this replica in claims (default host-pid-random).
	RunnerID string
	// ReleaseOnStart: Run first drops every claim RunnerID holds (store
	// SagaStore.ReleaseRunner), so that sagas a crashed earlier incarnation of this
	// runner held continue at once instead of when their leases expire. Set it only when
	// RunnerID is stable across restarts and no other live process can have it (the
	// server derives it from its locked data directory).
	ReleaseOnStart bool
	Clock          Clock     // default SystemClock
	Codec          Codec     // codec of new events; default JSONCodec
	Codecs         []Codec   // extra codecs old events may use (json and proto are built in)
	Waker          Waker     // default a LocalWaker
	Queue          TaskQueue // default PollQueue
	Logger         *slog.Logger
	// DrainTimeout: when Run's context ends (a graceful shutdown), the sagas already
	// running go on with their steps for at most this long before their context is
	// cancelled too; nothing new is claimed, and claimed sagas not started yet are
	// released at once. Zero: running sagas are cancelled with Run's context.
	DrainTimeout time.Duration
	// Lease is how long a claim on a saga (or timer) lasts; each recorded step extends it.
	Lease time.Duration // default 30s
	// PollInterval is the safety poll of Run (the database is the source of truth).
	PollInterval time.Duration // default 1s
	BatchSize    int           // sagas (or timers) claimed per poll; default 32
	Concurrency  int           // sagas run at once by RunOnce; default 4
	// SnapshotEvery writes a snapshot each time a saga's history crosses a multiple of it
	// (default 50 events); SnapshotKeep is how many are kept per saga (default 3).
	SnapshotEvery int
	SnapshotKeep  int
	// MaxTransitions bounds the work done on one claim before the saga is handed back
	// (default 1000).
	MaxTransitions int
	// MaxStepsPerTx is how many consecutive ready forward steps of a claimed saga run in
	// one transaction, recorded by one append (default 16; 1 gives one transaction per
	// step). A step that waits, fails or backs off ends the group; see doc.go.
	MaxStepsPerTx int
	// Rand is the jitter source of retry backoffs (nil: math/rand).
	Rand func() float64
	// ActivityDispatcher is what activities dispatch their commands through
	// (ActivityContext.Dispatch): a dispatcher for callers outside transactions, with
	// no middleware that opens one. Nil: activities cannot dispatch.
	ActivityDispatcher command.Dispatcher
	// NoHandoff turns the local hand-off off (handoff.go): every start, signal, cancel
	// and fired timer then wakes runners and the saga is claimed by whichever polls it.
	NoHandoff bool
	// Observer is told of every step run and every lost append (metrics); nil: none.
	Observer Observer
	// TracerProvider makes the step spans (default the global one, a no-op unless
	// installed); see telemetry.go.
	TracerProvider trace.TracerProvider
}

func (c *Config) setDefaults() {
	if c.RunnerID == "" {
		host, _ := os.Hostname()
		var b [4]byte
		_, _ = rand.Read(b[:])
		c.RunnerID = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
	}
	if c.Clock == nil {
		c.Clock = SystemClock{}
	}
	if c.Codec == nil {
		c.Codec = JSONCodec{}
	}
	if c.Waker == nil {
		c.Waker = NewLocalWaker()
	}
	if c.Queue == nil {
		c.Queue = PollQueue{}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Lease == 0 {
		c.Lease = 30 * time.Second
	}
	if c.PollInterval == 0 {
		c.PollInterval = time.Second
	}
	if c.BatchSize == 0 {
		c.BatchSize = 32
	}
	if c.Concurrency == 0 {
		c.Concurrency = 4
	}
	if c.SnapshotEvery == 0 {
		c.SnapshotEvery = 50
	}
	if c.SnapshotKeep == 0 {
		c.SnapshotKeep = 3
	}
	if c.MaxTransitions == 0 {
		c.MaxTransitions = 1000
	}
	if c.MaxStepsPerTx == 0 {
		c.MaxStepsPerTx = 16
	}
}

// Validate reports the first invalid field.
func (c *Config) Validate() error {
	switch {
	case len(c.RunnerID) > 200:
		return fmt.Errorf("saga: Config.RunnerID is %d bytes, max 200", len(c.RunnerID))
	case c.DrainTimeout < 0:
		return fmt.Errorf("saga: Config.DrainTimeout %s must not be negative", c.DrainTimeout)
	case c.Lease < 10*time.Millisecond:
		return fmt.Errorf("saga: Config.Lease %s below 10ms", c.Lease)
	case c.PollInterval < time.Millisecond:
		return fmt.Errorf("saga: Config.PollInterval %s below 1ms", c.PollInterval)
	case c.BatchSize < 1 || c.BatchSize > 10000:
		return fmt.Errorf("saga: Config.BatchSize %d out of range [1, 10000]", c.BatchSize)
	case c.Concurrency < 1 || c.Concurrency > 1024:
		return fmt.Errorf("saga: Config.Concurrency %d out of range [1, 1024]", c.Concurrency)
	case c.SnapshotEvery < 2:
		return fmt.Errorf("saga: Config.SnapshotEvery %d below 2", c.SnapshotEvery)
	case c.SnapshotKeep < 1 || c.SnapshotKeep > 100:
		return fmt.Errorf("saga: Config.SnapshotKeep %d out of range [1, 100]", c.SnapshotKeep)
	case c.MaxTransitions < 1:
		return fmt.Errorf("saga: Config.MaxTransitions %d below 1", c.MaxTransitions)
	case c.MaxStepsPerTx < 1 || c.MaxStepsPerTx > 1000:
		return fmt.Errorf("saga: Config.MaxStepsPerTx %d out of range [1, 1000]", c.MaxStepsPerTx)
	}
	return nil
}

// Engine starts, signals and runs sagas. One Engine per process; several processes
// (replicas) share the database safely. Safe for concurrent use.
type Engine struct {
	st     store.Store
	sagas  store.SagaStore
	reg    *Registry
	d      command.Dispatcher
	cfg    Config
	codecs codecSet
	log    *slog.Logger
	hand   handoff
	parked parkedStates
	taken  takenClaims
	tracer trace.Tracer
}

// New returns an engine over st running the definitions of reg; steps dispatch through d
// (usually the bus wrapped in the idempotency middleware).
func New(st store.Store, reg *Registry, d command.Dispatcher, cfg Config) (*Engine, error) {
	if st == nil || reg == nil || d == nil {
		return nil, errors.New("saga: New needs a store, a registry and a dispatcher")
	}
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := checkActivities(reg, cfg.Lease); err != nil {
		return nil, err
	}
	return &Engine{st: st, sagas: st.Sagas(), reg: reg, d: d, cfg: cfg, tracer: newTracer(cfg.TracerProvider),
		codecs: newCodecSet(append(cfg.Codecs, cfg.Codec)...),
		log:    cfg.Logger.With("component", "saga", "runner", cfg.RunnerID)}, nil
}

// RunnerID is the id this engine claims with.
func (e *Engine) RunnerID() string { return e.cfg.RunnerID }

// Info describes a saga (its row).
type Info struct {
	ID          string
	Type        string
	Version     int
	State       State
	CurrentStep int
	// CurrentStepName is the name of step CurrentStep in the saga's definition (Get
	// fills it when this engine has that definition).
	CurrentStepName string
	LastSeq         int64
	Error           string
	RunnableAt      time.Time
	CreatedAt       time.Time
	UpdatedAt       time.Time
}

func infoOf(r *store.SagaRecord) *Info {
	return &Info{ID: r.ID, Type: r.Type, Version: r.Version, State: State(r.State), CurrentStep: r.CurrentStep,
		LastSeq: r.LastSeq, Error: r.Error, RunnableAt: r.RunnableAt, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt}
}

// afterCommit runs fn after ctx's transaction commits (now when there is none).
func (e *Engine) afterCommit(ctx context.Context, fn func()) {
	e.st.AfterCommit(ctx, fn)
}

// announce wakes runners and enqueues a task for id after ctx's transaction commits.
func (e *Engine) announce(ctx context.Context, id string) {
	e.afterCommit(ctx, func() {
		bg := context.WithoutCancel(ctx)
		if err := e.cfg.Waker.Wake(bg, id); err != nil {
			e.log.Warn("saga wake-up failed; the poll will find it", "saga", id, "err", err)
		}
		if err := e.cfg.Queue.Enqueue(bg, id); err != nil {
			e.log.Warn("saga enqueue failed; the poll will find it", "saga", id, "err", err)
		}
	})
}

func (e *Engine) encode(typ, step string, attempt int, d *EventData) (*store.SagaEvent, error) {
	b, err := e.cfg.Codec.Marshal(d)
	if err != nil {
		return nil, fmt.Errorf("saga: encode %s event: %w", typ, err)
	}
	return &store.SagaEvent{Type: typ, Step: step, Attempt: attempt, Codec: e.cfg.Codec.Name(),
		Payload: b, CreatedAt: e.cfg.Clock.Now()}, nil
}

func toJSON(v any) ([]byte, error) {
	switch x := v.(type) {
	case nil:
		return nil, nil
	case json.RawMessage:
		return x, nil
	case []byte:
		if json.Valid(x) {
			return x, nil
		}
	}
	return json.Marshal(v)
}

// Start starts a saga of type name (its latest registered version) with id sagaID and
// input (JSON-encoded). It joins the transaction in ctx, so the saga commits with the
// caller's change. Starting an existing id writes nothing and returns the existing saga
// with created=false. Use IDFor for sagas about a subject.
func (e *Engine) Start(ctx context.Context, name, sagaID string, input any) (info *Info, created bool, err error) {
	if sagaID == "" {
		return nil, false, errors.New("saga: Start: sagaID is empty")
	}
	def, err := e.reg.Latest(name)
	if err != nil {
		return nil, false, err
	}
	in, err := toJSON(input)
	if err != nil {
		return nil, false, fmt.Errorf("saga: Start %s: encode input: %w", name, err)
	}
	now := e.cfg.Clock.Now()
	started, err := e.encode(EventStarted, "", 0, &EventData{})
	if err != nil {
		return nil, false, err
	}
	sched, err := e.encode(EventStepScheduled, def.Steps[0].Name, 1, &EventData{Index: 0})
	if err != nil {
		return nil, false, err
	}
	started.TraceContext = traceContext(ctx) // the trace the saga continues (telemetry.go)
	rec := &store.SagaRecord{ID: sagaID, Type: def.Name, Version: def.Version, State: string(StateRunning),
		Input: in, RunnableAt: now, CreatedAt: now}
	var upd store.SagaUpdate
	if e.takeFor(rec, &upd, now) {
		rec.ClaimedBy, rec.ClaimExpiresAt = upd.Take, upd.ClaimUntil
	}
	saved, created, err := e.sagas.Create(ctx, rec, started, sched)
	if err != nil {
		e.taken.done(sagaID)
		return nil, false, fmt.Errorf("saga: Start %s %s: %w", name, sagaID, err)
	}
	if !created && rec.ClaimedBy != "" {
		e.taken.done(sagaID) // nothing written: the claim was not taken
	}
	if created && rec.ClaimedBy != "" {
		cp := *saved
		e.afterCommit(ctx, func() { e.handOff(context.Background(), handed{rec: &cp}) })
	} else if created {
		e.announce(ctx, sagaID)
	}
	return infoOf(saved), created, nil
}

// Get returns the saga's row.
func (e *Engine) Get(ctx context.Context, id string) (*Info, error) {
	r, err := e.sagas.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	in := infoOf(r)
	if d, err := e.reg.Lookup(r.Type, r.Version); err == nil && in.CurrentStep >= 0 && in.CurrentStep < len(d.Steps) {
		in.CurrentStepName = d.Steps[in.CurrentStep].Name
	}
	return in, nil
}

// List returns the sagas f selects (least recently changed first), with their current
// step's name; it needs a store whose saga port is a store.SagaLister.
func (e *Engine) List(ctx context.Context, f store.SagaFilter) ([]*Info, error) {
	sl, ok := e.sagas.(store.SagaLister)
	if !ok {
		return nil, fmt.Errorf("saga: the store (%T) does not list sagas", e.sagas)
	}
	recs, err := sl.ListSagas(ctx, f)
	if err != nil {
		return nil, err
	}
	out := make([]*Info, len(recs))
	for i, r := range recs {
		out[i] = infoOf(r)
		if d, err := e.reg.Lookup(r.Type, r.Version); err == nil && r.CurrentStep >= 0 && r.CurrentStep < len(d.Steps) {
			out[i].CurrentStepName = d.Steps[r.CurrentStep].Name
		}
	}
	return out, nil
}

// History returns the saga's decoded events in order.
func (e *Engine) History(ctx context.Context, id string) ([]*Event, error) {
	evs, err := e.sagas.Events(ctx, id, 0)
	if err != nil {
		return nil, err
	}
	return decodeEvents(e.codecs, evs)
}

// ErrFinished: the saga is in a terminal state and takes no more signals or cancels.
var ErrFinished = errors.New("saga: saga is finished")

// maxAppendRetries bounds optimistic-lock retries of Signal, Cancel and timer firing.
const maxAppendRetries = 50

// appendExternal appends one event from outside the runner (signal, cancel, timer),
// retrying on conflict, and makes the saga runnable.
func (e *Engine) appendExternal(ctx context.Context, id string, ev func(rec *store.SagaRecord) (*store.SagaEvent, store.SagaUpdate, error)) error {
	for range maxAppendRetries {
		rec, err := e.sagas.Get(ctx, id)
		if err != nil {
			return err
		}
		if State(rec.State).Terminal() {
			return fmt.Errorf("%w: %s is %s", ErrFinished, id, rec.State)
		}
		event, upd, err := ev(rec)
		if err != nil {
			return err
		}
		if event.TraceContext == nil {
			event.TraceContext = traceContext(ctx)
		}
		e.takeFor(rec, &upd, e.cfg.Clock.Now())
		err = e.sagas.Append(ctx, id, rec.LastSeq, upd, event)
		if err != nil && upd.Take != "" {
			e.taken.done(id) // nothing written: the claim was not taken
		}
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			return err
		}
		e.woken(ctx, rec, upd, event)
		return nil
	}
	return fmt.Errorf("saga %s: gave up after %d conflicting appends: %w", id, maxAppendRetries, store.ErrConflict)
}

// RecordIncident appends an "incident.recorded" event (EventData.Name = kind,
// EventData.Error = detail) to the saga's history: something around the saga went wrong
// that an operator should see, e.g. its task reached the queue's delivery limit. It
// changes nothing else: the state fold ignores the event, the row keeps its state,
// runnable time and claim, and a waiting step is not woken (a runner busy with the saga
// sees a newer seq, reloads and carries on). Finished sagas take incidents too. It joins
// ctx's transaction and retries on conflicting appends.
func (e *Engine) RecordIncident(ctx context.Context, sagaID, kind, detail string) error {
	if kind == "" {
		return errors.New("saga: RecordIncident: kind is empty")
	}
	ev, err := e.encode(EventIncidentRecorded, "", 0, &EventData{Name: kind, Error: detail})
	if err != nil {
		return err
	}
	for range maxAppendRetries {
		rec, err := e.sagas.Get(ctx, sagaID)
		if err != nil {
			return err
		}
		upd := store.SagaUpdate{State: rec.State, CurrentStep: rec.CurrentStep, RunnableAt: rec.RunnableAt, Error: rec.Error}
		err = e.sagas.Append(ctx, sagaID, rec.LastSeq, upd, ev)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			return fmt.Errorf("saga %s: record incident %s: %w", sagaID, kind, err)
		}
		return nil
	}
	return fmt.Errorf("saga %s: record incident %s: gave up after %d conflicting appends: %w", sagaID, kind,
		maxAppendRetries, store.ErrConflict)
}

// Signal records signal name with payload (JSON-encoded) in the saga's history and wakes
// the saga. It joins ctx's transaction. The first signal of a name is the one steps see.
func (e *Engine) Signal(ctx context.Context, sagaID, name string, payload any) error {
	if name == "" {
		return errors.New("saga: Signal: name is empty")
	}
	p, err := toJSON(payload)
	if err != nil {
		return fmt.Errorf("saga: Signal %s: encode payload: %w", name, err)
	}
	return e.appendExternal(ctx, sagaID, func(rec *store.SagaRecord) (*store.SagaEvent, store.SagaUpdate, error) {
		ev, err := e.encode(EventSignalReceived, "", 0, &EventData{Name: name, Output: p})
		return ev, wakeUpdate(rec, e.cfg.Clock.Now()), err
	})
}

// Cancel asks the saga to stop: completed steps are compensated in reverse order and the
// saga ends CANCELLED. A saga already compensating is not affected.
func (e *Engine) Cancel(ctx context.Context, sagaID, reason string) error {
	return e.appendExternal(ctx, sagaID, func(rec *store.SagaRecord) (*store.SagaEvent, store.SagaUpdate, error) {
		ev, err := e.encode(EventCancelRequested, "", 0, &EventData{Error: reason})
		upd := wakeUpdate(rec, e.cfg.Clock.Now())
		if rec.State == string(StateRunning) || rec.State == string(StateWaiting) {
			upd.State = string(StateCompensating)
		}
		return ev, upd, err
	})
}

// wakeUpdate keeps a saga row's projection and makes it runnable now.
func wakeUpdate(rec *store.SagaRecord, now time.Time) store.SagaUpdate {
	state := rec.State
	if state == string(StateWaiting) {
		state = string(StateRunning)
	}
	at := now
	if !rec.RunnableAt.IsZero() && rec.RunnableAt.Before(now) {
		at = rec.RunnableAt
	}
	return store.SagaUpdate{State: state, CurrentStep: rec.CurrentStep, RunnableAt: at, Error: rec.Error}
}
