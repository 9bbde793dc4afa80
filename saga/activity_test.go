package saga

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/command"
)

// openTxs counts this database's sessions that are inside a transaction but idle: a
// transaction held open across an outside call shows up here.
func (e *env) openTxs() int {
	e.t.Helper()
	var n int
	if err := e.st.Pool().QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
		WHERE datname = current_database() AND state LIKE 'idle in transaction%'`).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

// An activity step runs after the group before it has committed, outside any
// transaction; its output is recorded by the next transaction, together with the ready
// steps after it.
func TestActivityRunsOutsideTransactions(t *testing.T) {
	e := newEnv(t)
	var runs atomic.Int32
	var openDuring atomic.Int32
	act := Step{Name: "act", Activity: func(ctx context.Context, ac *ActivityContext) (any, error) {
		runs.Add(1)
		var prev effectResult
		if ok, err := ac.Output("a", &prev); err != nil || !ok {
			return nil, errors.New("output of a not visible to the activity")
		}
		// Step a's effect is committed before the activity runs.
		if got := e.effects(ac.SagaID(), "a"); got != 1 {
			return nil, errors.New("step a's effect is not committed")
		}
		openDuring.Store(int32(e.openTxs()))
		return map[string]string{"key": ac.Key()}, nil
	}}
	must(t, e.reg.Register(Definition{Name: "act", Version: 1,
		Steps: []Step{e.effectStep("a", nil), act, e.effectStep("b", nil)}}))
	eng := e.engine("r1", nil)
	id := IDFor("act", "1")
	_, _, err := eng.Start(e.ctx(), "act", id, nil)
	must(t, err)
	e.drain(eng)
	want := []string{"saga.started:", "step.scheduled:a", "step.completed:a", "step.scheduled:act",
		"step.completed:act", "step.scheduled:b", "step.completed:b", "saga.completed:"}
	if got := kinds(e.history(eng, id)); !slices.Equal(got, want) {
		t.Fatalf("history\n got %v\nwant %v", got, want)
	}
	if runs.Load() != 1 {
		t.Fatalf("activity ran %d times, want 1", runs.Load())
	}
	if n := openDuring.Load(); n != 0 {
		t.Fatalf("%d transactions were open while the activity ran", n)
	}
	// Start; a + act scheduled; act completed + b + saga completed.
	if n := e.txsOf(id); n != 3 {
		t.Fatalf("events written by %d transactions, want 3", n)
	}
	var out map[string]string
	for _, ev := range e.history(eng, id) {
		if ev.Type == EventStepCompleted && ev.Step == "act" {
			must(t, json.Unmarshal(ev.Data.Output, &out))
		}
	}
	if out["key"] != id+"/act/1" {
		t.Fatalf("activity output %v, want its key %s/act/1", out, id)
	}
}

// A transient activity error is retried with the step's backoff; a permanent one fails
// the step and compensates the steps before it.
func TestActivityRetriesAndFails(t *testing.T) {
	e := newEnv(t)
	var attempts []int
	flaky := Step{Name: "flaky", Retry: RetryPolicy{MaxAttempts: 3, Initial: time.Second, Max: time.Second},
		Activity: func(ctx context.Context, ac *ActivityContext) (any, error) {
			attempts = append(attempts, ac.Attempt())
			if ac.Attempt() < 3 {
				return nil, command.Transient(errBoom)
			}
			return "ok", nil
		}}
	broken := Step{Name: "broken", Activity: func(ctx context.Context, ac *ActivityContext) (any, error) {
		return nil, errBoom
	}}
	must(t, e.reg.Register(Definition{Name: "flaky", Version: 1, Steps: []Step{flaky}}))
	must(t, e.reg.Register(Definition{Name: "broken", Version: 1, Steps: []Step{e.effectStep("a", nil), broken}}))
	eng := e.engine("r1", nil)
	id := IDFor("flaky", "1")
	_, _, err := eng.Start(e.ctx(), "flaky", id, nil)
	must(t, err)
	for range 3 {
		e.drain(eng)
		e.clock.Advance(2 * time.Second)
	}
	if !slices.Equal(attempts, []int{1, 2, 3}) {
		t.Fatalf("attempts %v, want [1 2 3]", attempts)
	}
	if s := e.state(eng, id).State; s != StateCompleted {
		t.Fatalf("flaky saga %s, want COMPLETED", s)
	}
	id2 := IDFor("broken", "1")
	_, _, err = eng.Start(e.ctx(), "broken", id2, nil)
	must(t, err)
	e.drain(eng)
	if s := e.state(eng, id2).State; s != StateCompensated {
		t.Fatalf("broken saga %s, want COMPENSATED", s)
	}
	if e.effects(id2, "a/undo") != 1 {
		t.Fatal("step a was not compensated")
	}
}

// A signal appended while the activity runs makes the outcome's append conflict: the
// runner reloads and records the outcome it has; it does not run the activity again.
func TestActivityOutcomeSurvivesConcurrentSignal(t *testing.T) {
	e := newEnv(t)
	var runs atomic.Int32
	var eng *Engine
	var id string
	act := Step{Name: "act", Activity: func(ctx context.Context, ac *ActivityContext) (any, error) {
		if runs.Add(1) == 1 {
			if err := eng.Signal(context.Background(), id, "late", "x"); err != nil {
				return nil, err
			}
		}
		return "done", nil
	}}
	wait := Step{Name: "wait", Do: func(ctx context.Context, sc *StepContext) (any, error) {
		return sc.AwaitSignal("late")
	}}
	must(t, e.reg.Register(Definition{Name: "sig", Version: 1, Steps: []Step{act, wait}}))
	eng = e.engine("r1", nil)
	id = IDFor("sig", "1")
	_, _, err := eng.Start(e.ctx(), "sig", id, nil)
	must(t, err)
	e.drain(eng)
	if n := runs.Load(); n != 1 {
		t.Fatalf("activity ran %d times, want 1", n)
	}
	if s := e.state(eng, id).State; s != StateCompleted {
		t.Fatalf("saga %s, want COMPLETED", s)
	}
}

// New refuses an activity that could outlive the claim of the runner running it.
func TestActivityTimeoutMustFitTheLease(t *testing.T) {
	e := newEnv(t)
	must(t, e.reg.Register(Definition{Name: "long", Version: 1, Steps: []Step{{Name: "slow", Timeout: 20 * time.Second,
		Activity: func(context.Context, *ActivityContext) (any, error) { return nil, nil }}}}))
	_, err := New(e.st, e.reg, e.d, Config{Lease: 30 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "exceeds half of Config.Lease") {
		t.Fatalf("New with a 20s activity and a 30s lease: %v, want an error about the lease", err)
	}
	if _, err := New(e.st, e.reg, e.d, Config{Lease: 40 * time.Second}); err != nil {
		t.Fatalf("New with a 40s lease: %v", err)
	}
	bad := NewRegistry()
	err = bad.Register(Definition{Name: "both", Version: 1, Steps: []Step{{Name: "x",
		Do:       func(context.Context, *StepContext) (any, error) { return nil, nil },
		Activity: func(context.Context, *ActivityContext) (any, error) { return nil, nil }}}})
	if err == nil || !strings.Contains(err.Error(), "exactly one of Do and Activity") {
		t.Fatalf("a step with Do and Activity: %v", err)
	}
}
