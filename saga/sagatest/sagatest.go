package sagatest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/hodei-jobs/hodei/command"
	"github.com/hodei-jobs/hodei/saga"
	"github.com/hodei-jobs/hodei/store"
	"github.com/hodei-jobs/hodei/store/sqlite"
)

// defaultStart is where a fixture's clock starts unless Options.Start says otherwise.
var defaultStart = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

// ErrInjected is the error of a Fault without its own Err.
var ErrInjected = errors.New("sagatest: injected failure")

// maxMoves bounds Run and RunAll: a saga that keeps recording moves this long is a bug
// in the definition (or the engine), not something to wait for.
const maxMoves = 10000

// TB is the part of testing.TB the fixture uses; *testing.T and *testing.B satisfy
// it. The fixture calls Fatalf on unexpected errors and failed requirements, Log for the
// engine's warnings, and Context for its calls; Cleanup closes the SQLite store it
// opened in TempDir.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
	Log(args ...any)
	Cleanup(func())
	TempDir() string
	Context() context.Context
}

// Options tunes New. The zero value is a fresh SQLite database in t.TempDir().
type Options struct {
	// Start is the ManualClock's initial time (default 2030-01-01T00:00:00Z).
	Start time.Time
	// Store, when set, is used instead of a fresh SQLite database (e.g. a PostgreSQL
	// store of the test); the fixture does not close it.
	Store store.Store
	// Config is the engine's configuration. The fixture sets Clock, RunnerID and
	// MaxTransitions (1: every Step is one recorded move), and, when zero,
	// MaxStepsPerTx = 1 (one step per transaction; the history is the same with
	// groups), Rand (0.5: backoffs without jitter) and Logger (warnings to t.Log).
	Config saga.Config
}

// Fault is a failure injected into a step (or its compensation) of the definitions
// registered with Fixture.Register.
type Fault struct {
	// Saga limits the fault to one saga type; empty: any type with a step named Step.
	Saga string
	// Step is the step's name (required).
	Step string
	// Attempt is the attempt that fails (from 1); 0: every attempt.
	Attempt int
	// Compensation: fail the step's compensation instead of its Do.
	Compensation bool
	// Permanent: the error is final (the saga compensates at once); otherwise it is
	// transient (command.Transient) and the step's RetryPolicy applies.
	Permanent bool
	// AfterDo: run the step (or compensation) first, then fail: whatever it wrote in
	// its transaction is rolled back, as when a process dies before the commit.
	AfterDo bool
	// Err is the error returned (default ErrInjected).
	Err error
}

func (f *Fault) matches(sagaType, step string, attempt int, comp bool) bool {
	return (f.Saga == "" || f.Saga == sagaType) && f.Step == step && comp == f.Compensation &&
		(f.Attempt == 0 || f.Attempt == attempt)
}

func (f *Fault) err(sc *saga.StepContext) error {
	err := f.Err
	if err == nil {
		err = ErrInjected
	}
	err = fmt.Errorf("%w (step %s attempt %d)", err, sc.Step(), sc.Attempt())
	if f.Permanent {
		return err
	}
	return command.Transient(err)
}

// Fixture runs saga definitions on a real store with a saga.ManualClock, one recorded
// move at a time when asked. Create it with New; it is bound to the test that created
// it and fails that test on unexpected errors. Its methods are safe for concurrent use
// (the StepFuncs the fixture wraps run inside them).
type Fixture struct {
	t      TB
	tctx   context.Context
	st     store.Store
	clock  *saga.ManualClock
	bus    *command.Bus
	reg    *saga.Registry
	engine *saga.Engine

	mu     sync.Mutex
	faults []Fault
	runs   map[string]int // "type/step" or "type/step/compensate" → runs, faulted ones included
}

// New returns a fixture over a fresh SQLite database (or opts.Store), with an empty
// command bus behind the idempotency middleware, as the server wires the saga engine's
// dispatcher. Register definitions with Register and command handlers on Bus before
// starting sagas.
func New(t TB, opts ...Options) *Fixture {
	t.Helper()
	var o Options
	if len(opts) > 1 {
		t.Fatalf("sagatest.New: at most one Options, got %d", len(opts))
	}
	if len(opts) == 1 {
		o = opts[0]
	}
	if o.Start.IsZero() {
		o.Start = defaultStart
	}
	st := o.Store
	if st == nil {
		s, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "saga.db"))
		if err != nil {
			t.Fatalf("sagatest: open SQLite: %v", err)
		}
		t.Cleanup(s.Close)
		st = s
	}
	f := &Fixture{t: t, tctx: t.Context(), st: st, clock: saga.NewManualClock(o.Start), bus: command.NewBus(),
		reg: saga.NewRegistry(), runs: map[string]int{}}
	d := command.Chain(f.bus, command.Idempotency(command.IdempotencyDeps{Tx: st, Keys: st.Idempotency()}, f.bus))
	cfg := o.Config
	cfg.Clock = f.clock
	cfg.RunnerID = "sagatest"
	cfg.MaxTransitions = 1
	if cfg.MaxStepsPerTx == 0 {
		cfg.MaxStepsPerTx = 1
	}
	if cfg.Rand == nil {
		cfg.Rand = func() float64 { return 0.5 }
	}
	if cfg.ActivityDispatcher == nil { // activities dispatch outside any transaction
		cfg.ActivityDispatcher = f.bus
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	eng, err := saga.New(st, f.reg, d, cfg)
	if err != nil {
		t.Fatalf("sagatest: %v", err)
	}
	f.engine = eng
	return f
}

// testWriter sends the engine's log lines to t.Log.
type testWriter struct{ t TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// Store is the fixture's store: the steps' command handlers write to it, tests read it.
func (f *Fixture) Store() store.Store { return f.st }

// Bus is the command bus the steps dispatch to: register the handlers they need.
func (f *Fixture) Bus() *command.Bus { return f.bus }

// Clock is the engine's clock. Move it with Advance, which also fires due timers.
func (f *Fixture) Clock() *saga.ManualClock { return f.clock }

// Engine is the engine under test, for what the fixture does not wrap.
func (f *Fixture) Engine() *saga.Engine { return f.engine }

// ctx is the context of the fixture's calls: the test's, which ends with it.
func (f *Fixture) ctx() context.Context { return f.tctx }

// Register registers def with every Do and Compensate wrapped so that Inject's faults
// apply and Runs counts them.
func (f *Fixture) Register(def saga.Definition) {
	f.t.Helper()
	steps := make([]saga.Step, len(def.Steps))
	for i, s := range def.Steps {
		s.Do = f.wrap(def.Name, s.Name, s.Do, false)
		s.Compensate = f.wrap(def.Name, s.Name, s.Compensate, true)
		steps[i] = s
	}
	def.Steps = steps
	if err := f.reg.Register(def); err != nil {
		f.t.Fatalf("sagatest: %v", err)
	}
}

func (f *Fixture) wrap(sagaType, step string, fn saga.StepFunc, comp bool) saga.StepFunc {
	if fn == nil {
		return nil
	}
	key := sagaType + "/" + step
	if comp {
		key += "/compensate"
	}
	return func(ctx context.Context, sc *saga.StepContext) (any, error) {
		f.mu.Lock()
		f.runs[key]++
		var fault *Fault
		if i := slices.IndexFunc(f.faults, func(ft Fault) bool { return ft.matches(sagaType, step, sc.Attempt(), comp) }); i >= 0 {
			ft := f.faults[i]
			fault = &ft
		}
		f.mu.Unlock()
		if fault == nil {
			return fn(ctx, sc)
		}
		if fault.AfterDo {
			if _, err := fn(ctx, sc); err != nil {
				return nil, err
			}
		}
		return nil, fault.err(sc)
	}
}

// Inject adds faults; the first matching fault (in the order added) applies to a run.
func (f *Fixture) Inject(faults ...Fault) {
	f.t.Helper()
	for _, ft := range faults {
		if ft.Step == "" || ft.Attempt < 0 {
			f.t.Fatalf("sagatest: Fault needs a Step and an Attempt >= 0: %+v", ft)
		}
	}
	f.mu.Lock()
	f.faults = append(f.faults, faults...)
	f.mu.Unlock()
}

// FailTransient makes the listed attempts of step fail with a transient error (every
// attempt if none is listed): the step is retried by its RetryPolicy.
func (f *Fixture) FailTransient(step string, attempts ...int) {
	f.t.Helper()
	if len(attempts) == 0 {
		attempts = []int{0}
	}
	for _, a := range attempts {
		f.Inject(Fault{Step: step, Attempt: a})
	}
}

// FailPermanent makes attempt of step (every attempt if 0) fail for good: the saga
// compensates.
func (f *Fixture) FailPermanent(step string, attempt int) {
	f.t.Helper()
	f.Inject(Fault{Step: step, Attempt: attempt, Permanent: true})
}

// ClearFaults removes every injected fault.
func (f *Fixture) ClearFaults() {
	f.mu.Lock()
	f.faults = nil
	f.mu.Unlock()
}

// Runs is how many times step of sagaType ran (its Do, or its compensation when
// compensation is true), injected failures included.
func (f *Fixture) Runs(sagaType, step string, compensation bool) int {
	key := sagaType + "/" + step
	if compensation {
		key += "/compensate"
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.runs[key]
}

// Start starts a saga of type sagaType (its latest registered version) with input and
// returns its id. An empty id gets a fresh one.
func (f *Fixture) Start(sagaType, id string, input any) string {
	f.t.Helper()
	if id == "" {
		id = saga.IDFor(sagaType, uuid.NewString())
	}
	if _, _, err := f.engine.Start(f.ctx(), sagaType, id, input); err != nil {
		f.t.Fatalf("sagatest: start %s: %v", sagaType, err)
	}
	return id
}

// Step makes one recorded move of saga id, if it is runnable at the clock's time: one
// step run and its outcome (completed and the next step scheduled, failed and its retry
// scheduled, or waiting), a compensation, or the saga's end. It returns the events the
// move appended (none when the saga was not runnable: waiting, backing off, finished).
func (f *Fixture) Step(id string) []*saga.Event {
	f.t.Helper()
	before := f.Info(id).LastSeq
	if _, err := f.engine.RunSaga(f.ctx(), id); err != nil {
		f.t.Fatalf("sagatest: run saga %s: %v", id, err)
	}
	return f.historyAfter(id, before)
}

// Run moves saga id until it parks (waits for a signal or a timer), backs off or ends,
// and returns the events it appended.
func (f *Fixture) Run(id string) []*saga.Event {
	f.t.Helper()
	before := f.Info(id).LastSeq
	for range maxMoves {
		if len(f.Step(id)) == 0 {
			return f.historyAfter(id, before)
		}
	}
	f.t.Fatalf("sagatest: saga %s still moving after %d moves", id, maxMoves)
	return nil
}

// RunAll moves every runnable saga of the store (those started by other sagas' steps
// included) until none is runnable at the clock's time, and returns how many moves it
// made.
func (f *Fixture) RunAll() int {
	f.t.Helper()
	moves := 0
	for range maxMoves {
		n, err := f.engine.RunOnce(f.ctx())
		if err != nil {
			f.t.Fatalf("sagatest: run sagas: %v", err)
		}
		if n == 0 {
			return moves
		}
		moves += n
	}
	f.t.Fatalf("sagatest: sagas still runnable after %d moves", maxMoves)
	return moves
}

// Advance moves the clock forward by d and fires the timers now due (their sagas
// become runnable: Run them). It returns how many timers fired.
func (f *Fixture) Advance(d time.Duration) int {
	f.t.Helper()
	f.clock.Advance(d)
	fired := 0
	for {
		n, err := f.engine.FireDueTimers(f.ctx())
		if err != nil {
			f.t.Fatalf("sagatest: fire timers: %v", err)
		}
		if n == 0 {
			return fired
		}
		fired += n
	}
}

// Signal records signal name with payload on saga id (it becomes runnable: Run it).
func (f *Fixture) Signal(id, name string, payload any) {
	f.t.Helper()
	if err := f.engine.Signal(f.ctx(), id, name, payload); err != nil {
		f.t.Fatalf("sagatest: signal %s to %s: %v", name, id, err)
	}
}

// Cancel asks saga id to stop (it compensates: Run it).
func (f *Fixture) Cancel(id, reason string) {
	f.t.Helper()
	if err := f.engine.Cancel(f.ctx(), id, reason); err != nil {
		f.t.Fatalf("sagatest: cancel %s: %v", id, err)
	}
}

// Info is saga id's row.
func (f *Fixture) Info(id string) *saga.Info {
	f.t.Helper()
	in, err := f.engine.Get(f.ctx(), id)
	if err != nil {
		f.t.Fatalf("sagatest: saga %s: %v", id, err)
	}
	return in
}

// History is saga id's decoded history, oldest first.
func (f *Fixture) History(id string) []*saga.Event {
	f.t.Helper()
	h, err := f.engine.History(f.ctx(), id)
	if err != nil {
		f.t.Fatalf("sagatest: history of %s: %v", id, err)
	}
	return h
}

func (f *Fixture) historyAfter(id string, seq int64) []*saga.Event {
	f.t.Helper()
	h := f.History(id)
	i := slices.IndexFunc(h, func(e *saga.Event) bool { return e.Seq > seq })
	if i < 0 {
		return nil
	}
	return h[i:]
}

// Kind is how the fixture names an event: "type:step" ("step.completed:validate"), or
// the type alone for events without a step ("saga.completed").
func Kind(e *saga.Event) string {
	if e.Step == "" {
		return e.Type
	}
	return e.Type + ":" + e.Step
}

// Kinds names the events of saga id's history (Kind), only those of the given
// categories if any are given.
func (f *Fixture) Kinds(id string, categories ...saga.EventCategory) []string {
	f.t.Helper()
	return kinds(f.History(id), categories...)
}

func kinds(h []*saga.Event, categories ...saga.EventCategory) []string {
	out := []string{}
	for _, e := range h {
		if len(categories) == 0 || slices.Contains(categories, e.Category()) {
			out = append(out, Kind(e))
		}
	}
	return out
}

// RequireEvents fails the test unless saga id's history contains the events named in
// want (Kind names), in that order; other events may come between them.
func (f *Fixture) RequireEvents(id string, want ...string) {
	f.t.Helper()
	got := f.Kinds(id)
	i := 0
	for _, k := range got {
		if i < len(want) && k == want[i] {
			i++
		}
	}
	if i < len(want) {
		f.t.Fatalf("saga %s: history lacks %q (after %q)\nhistory: %s", id, want[i], want[:i], strings.Join(got, " "))
	}
}

// RequireHistory fails the test unless the events of saga id's history in the given
// categories (all if none) are exactly want (Kind names).
func (f *Fixture) RequireHistory(id string, want []string, categories ...saga.EventCategory) {
	f.t.Helper()
	if got := f.Kinds(id, categories...); !slices.Equal(got, want) {
		f.t.Fatalf("saga %s: history %v\n got %s\nwant %s", id, categories, strings.Join(got, " "), strings.Join(want, " "))
	}
}

// RequireState fails the test unless saga id is in state want.
func (f *Fixture) RequireState(id string, want saga.State) *saga.Info {
	f.t.Helper()
	in := f.Info(id)
	if in.State != want {
		f.t.Fatalf("saga %s is %s (error %q), want %s\nhistory: %s", id, in.State, in.Error, want,
			strings.Join(f.Kinds(id), " "))
	}
	return in
}
