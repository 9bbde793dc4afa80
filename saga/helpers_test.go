package saga

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/hodei-jobs/hodei/command"
	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/internal/pgtest"
	"github.com/hodei-jobs/hodei/store/postgres"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// effectCmd is the test command: its effect is one job row labelled with saga and step,
// created with a random id so that a repeated effect would show as a second row.
type effectCmd struct {
	Key  string `json:"key"`
	Saga string `json:"saga"`
	Step string `json:"step"`
}

func (effectCmd) CommandType() string      { return "test.effect" }
func (c effectCmd) IdempotencyKey() string { return c.Key }

type effectResult struct {
	JobID string `json:"job_id"`
}

// env is one test's database, bus and clock.
type env struct {
	t     *testing.T
	st    *postgres.Store
	bus   *command.Bus
	d     command.Dispatcher
	reg   *Registry
	clock *ManualClock
	// afterEffect, if set, runs in the handler after the effect was written.
	afterEffect atomic.Pointer[func(ctx context.Context, c effectCmd)]
	mu          sync.Mutex
	calls       map[string]int // Do/Compensate runs per step name
}

var t0 = time.Date(2031, 5, 6, 7, 0, 0, 0, time.UTC)

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, st: pgtest.NewStore(t), bus: command.NewBus(), reg: NewRegistry(),
		clock: NewManualClock(t0), calls: map[string]int{}}
	command.Register(e.bus, command.HandlerFunc[effectCmd, effectResult](func(ctx context.Context, c effectCmd) (effectResult, error) {
		id := uuid.NewString()
		j := &domain.Job{ID: id, Spec: domain.JobSpec{Name: "effect", Command: []string{"true"},
			Labels: map[string]string{"saga": c.Saga, "step": c.Step}}}
		if err := e.st.Jobs().Create(ctx, j); err != nil {
			return effectResult{}, err
		}
		if f := e.afterEffect.Load(); f != nil {
			(*f)(ctx, c)
		}
		return effectResult{JobID: id}, nil
	}))
	e.d = command.InTxChain(e.bus, command.ChainConfig{Idempotency: command.StoreDeps(e.st),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	return e
}

func (e *env) engine(id string, mut func(*Config)) *Engine {
	e.t.Helper()
	cfg := Config{RunnerID: id, Clock: e.clock, Lease: 10 * time.Second, PollInterval: 20 * time.Millisecond,
		Rand: func() float64 { return 0.5 }}
	if mut != nil {
		mut(&cfg)
	}
	eng, err := New(e.st, e.reg, e.d, cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	return eng
}

func (e *env) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	e.t.Cleanup(cancel)
	return ctx
}

func (e *env) count(step string) {
	e.mu.Lock()
	e.calls[step]++
	e.mu.Unlock()
}

func (e *env) callsOf(step string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.calls[step]
}

// effects counts committed effects of a saga's step (compensations use step+"/undo").
func (e *env) effects(sagaID, step string) int {
	e.t.Helper()
	var n int
	if err := e.st.Pool().QueryRow(context.Background(), `SELECT count(*) FROM jobs
		WHERE spec->'labels'->>'saga' = $1 AND spec->'labels'->>'step' = $2`, sagaID, step).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

// effectStep is a step whose Do dispatches one effect, then calls then (if set).
func (e *env) effectStep(name string, then func(sc *StepContext) error) Step {
	return Step{
		Name: name,
		Do: func(ctx context.Context, sc *StepContext) (any, error) {
			e.count(name)
			r, err := command.Dispatch[effectResult](ctx, sc, effectCmd{Key: sc.Key(), Saga: sc.SagaID(), Step: name})
			if err != nil {
				return nil, err
			}
			if then != nil {
				if err := then(sc); err != nil {
					return nil, err
				}
			}
			return r, nil
		},
		Compensate: func(ctx context.Context, sc *StepContext) (any, error) {
			e.count(name + "/undo")
			return command.Dispatch[effectResult](ctx, sc, effectCmd{Key: sc.Key(), Saga: sc.SagaID(), Step: name + "/undo"})
		},
		Retry: RetryPolicy{MaxAttempts: 3, Initial: time.Second, Max: 10 * time.Second},
	}
}

func (e *env) history(eng *Engine, id string) []*Event {
	e.t.Helper()
	h, err := eng.History(context.Background(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	return h
}

// kinds lists "type:step" of a history.
func kinds(h []*Event, types ...string) []string {
	want := map[string]bool{}
	for _, t := range types {
		want[t] = true
	}
	var out []string
	for _, ev := range h {
		if len(types) == 0 || want[ev.Type] {
			out = append(out, ev.Type+":"+ev.Step)
		}
	}
	return out
}

func (e *env) state(eng *Engine, id string) *Info {
	e.t.Helper()
	in, err := eng.Get(context.Background(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	return in
}

// drain runs RunOnce until nothing is claimable at the current clock.
func (e *env) drain(eng *Engine) {
	e.t.Helper()
	for range 100 {
		n, err := eng.RunOnce(e.ctx())
		if err != nil {
			e.t.Fatal(err)
		}
		if n == 0 {
			return
		}
	}
	e.t.Fatal("RunOnce kept finding work")
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

var errBoom = errors.New("boom")
