package saga_test

// Tests of the engine written on saga/sagatest, the fixture saga authors use: what they
// check is what the fixture lets an author check (user story 55.1).

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/hodei-jobs/hodei/command"
	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/saga"
	"github.com/hodei-jobs/hodei/saga/sagatest"
	"github.com/hodei-jobs/hodei/store"
)

// effect writes one job row labelled with the step's key, with a fresh id, so that a
// repeated effect would show as a second row.
type effect struct {
	Key  string `json:"key"`
	Saga string `json:"saga"`
	Step string `json:"step"`
}

func (effect) CommandType() string      { return "test.fixture-effect" }
func (c effect) IdempotencyKey() string { return c.Key }

func registerEffect(f *sagatest.Fixture) {
	command.Register(f.Bus(), command.HandlerFunc[effect, string](func(ctx context.Context, c effect) (string, error) {
		j := &domain.Job{ID: uuid.NewString(), Spec: domain.JobSpec{Name: "effect", Command: []string{"true"},
			Labels: map[string]string{"saga": c.Saga, "step": c.Step}}}
		return j.ID, f.Store().Jobs().Create(ctx, j)
	}))
}

// effects counts the committed effects of a saga's step.
func effects(t *testing.T, f *sagatest.Fixture, sagaID, step string) int {
	t.Helper()
	js, _, err := f.Store().Jobs().List(t.Context(), store.JobFilter{Labels: map[string]string{"saga": sagaID, "step": step}})
	if err != nil {
		t.Fatal(err)
	}
	return len(js)
}

func TestTransientFailureThenSuccess(t *testing.T) {
	f := sagatest.New(t)
	registerEffect(f)
	f.Register(saga.Definition{Name: "flaky", Version: 1, Steps: []saga.Step{{Name: "a",
		Do: func(ctx context.Context, sc *saga.StepContext) (any, error) {
			return command.Dispatch[string](ctx, sc, effect{Key: sc.Key(), Saga: sc.SagaID(), Step: "a"})
		},
		Retry: saga.RetryPolicy{MaxAttempts: 3, Initial: time.Second, Max: 10 * time.Second}}}})
	// Attempts 1 and 2 fail after the effect: it must roll back with the step.
	f.Inject(sagatest.Fault{Step: "a", Attempt: 1, AfterDo: true}, sagatest.Fault{Step: "a", Attempt: 2, AfterDo: true})
	t0 := f.Clock().Now()
	id := f.Start("flaky", "", nil)
	f.Run(id)
	r, err := f.Store().Sagas().Get(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	// Backoff after the first failure: Initial (1s), jitter centred by the fixture.
	if r.State != string(saga.StateRunning) || !r.RunnableAt.Equal(t0.Add(time.Second)) || r.ClaimedBy != "" {
		t.Fatalf("after first failure: %+v, want RUNNING, runnable at t0+1s, unclaimed", r)
	}
	if evs := f.Step(id); len(evs) != 0 || f.Runs("flaky", "a", false) != 1 {
		t.Fatalf("not due yet, yet a move (%d events) or another run (%d)", len(evs), f.Runs("flaky", "a", false))
	}
	f.Advance(time.Second)
	f.Run(id)
	if in := f.Info(id); !in.RunnableAt.Equal(t0.Add(3 * time.Second)) { // second delay 2s
		t.Fatalf("after second failure runnable at %s, want t0+3s", in.RunnableAt)
	}
	f.Advance(2 * time.Second)
	f.Run(id)
	f.RequireState(id, saga.StateCompleted)
	if n, runs := effects(t, f, id, "a"), f.Runs("flaky", "a", false); n != 1 || runs != 3 {
		t.Fatalf("%d effects over %d runs, want 1 over 3", n, runs)
	}
	f.RequireHistory(id, []string{"saga.started", "step.scheduled:a", "step.failed:a", "step.scheduled:a",
		"step.failed:a", "step.scheduled:a", "step.completed:a", "saga.completed"})
	h := f.History(id)
	if h[5].Attempt != 3 || h[6].Attempt != 3 || h[2].Data.Final {
		t.Fatalf("attempts/final flags wrong: %+v %+v %+v", h[2], h[5], h[6])
	}
}

func TestSignalTimeoutCancelsOrFiresTimer(t *testing.T) {
	f := sagatest.New(t)
	f.Register(saga.Definition{Name: "await", Version: 1, Steps: []saga.Step{{Name: "result",
		Do: func(ctx context.Context, sc *saga.StepContext) (any, error) {
			p, err := sc.AwaitSignalTimeout("done", time.Minute)
			if errors.Is(err, saga.ErrSignalTimeout) {
				return "timed out", nil
			}
			return p, err
		}}}})
	signalled, silent := f.Start("await", "", nil), f.Start("await", "", nil)
	for _, id := range []string{signalled, silent} {
		f.Run(id)
		f.RequireState(id, saga.StateWaiting)
	}

	// Signal first: the timer is cancelled.
	f.Signal(signalled, "done", "ok")
	f.Run(signalled)
	f.RequireState(signalled, saga.StateCompleted)
	ts, err := f.Store().Sagas().Timers(t.Context(), signalled)
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != 1 || ts[0].Status != store.TimerCancelled {
		t.Fatalf("timer of the signalled saga %+v, want CANCELLED", ts)
	}
	f.RequireHistory(signalled, []string{"timer.created:result", "timer.cancelled:result"}, saga.CategoryTimer)

	// No signal: the timer fires and the step sees the timeout.
	if n := f.Advance(time.Minute - time.Millisecond); n != 0 {
		t.Fatalf("%d timers fired early", n)
	}
	if n := f.Advance(time.Millisecond); n != 1 {
		t.Fatalf("%d timers fired at the deadline, want 1", n)
	}
	f.Run(silent)
	f.RequireState(silent, saga.StateCompleted)
	f.RequireEvents(silent, "timer.created:result", "step.waiting:result", "timer.fired", "step.completed:result")
	var out string
	for _, ev := range f.History(silent) {
		if ev.Type == saga.EventStepCompleted {
			if err := json.Unmarshal(ev.Data.Output, &out); err != nil {
				t.Fatal(err)
			}
		}
	}
	if out != "timed out" {
		t.Fatalf("output %q, want %q", out, "timed out")
	}
}
