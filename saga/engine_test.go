package saga

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/command"
	"github.com/hodei-jobs/hodei/store"
)

func TestHappyPath(t *testing.T) {
	e := newEnv(t)
	var seenA effectResult
	must(t, e.reg.Register(Definition{Name: "order", Version: 1, Steps: []Step{
		e.effectStep("a", nil),
		e.effectStep("b", func(sc *StepContext) error {
			var in struct{ N int }
			if err := sc.Input(&in); err != nil || in.N != 7 {
				return errors.New("input not visible to the step")
			}
			ok, err := sc.Output("a", &seenA)
			if !ok || err != nil {
				return errors.New("output of a not visible")
			}
			return nil
		}),
		e.effectStep("c", nil),
	}}))
	eng := e.engine("r1", nil)
	id := IDFor("order", "subject-1")
	info, created, err := eng.Start(e.ctx(), "order", id, map[string]int{"N": 7})
	must(t, err)
	if !created || info.State != StateRunning {
		t.Fatalf("Start: created=%v info=%+v", created, info)
	}
	e.drain(eng)
	if got := e.state(eng, id); got.State != StateCompleted || got.CurrentStep != 3 {
		t.Fatalf("saga %+v, want COMPLETED at step 3", got)
	}
	for _, s := range []string{"a", "b", "c"} {
		if n := e.effects(id, s); n != 1 {
			t.Fatalf("step %s: %d effects, want 1", s, n)
		}
	}
	if seenA.JobID == "" {
		t.Fatal("step b did not read step a's output")
	}
	want := []string{"saga.started:", "step.scheduled:a", "step.completed:a", "step.scheduled:b", "step.completed:b",
		"step.scheduled:c", "step.completed:c", "saga.completed:"}
	if got := kinds(e.history(eng, id)); !slices.Equal(got, want) {
		t.Fatalf("history\n got %v\nwant %v", got, want)
	}
	if r, _ := e.st.Sagas().Get(e.ctx(), id); r.ClaimedBy != "" || !r.RunnableAt.IsZero() {
		t.Fatalf("finished saga still claimed or runnable: %+v", r)
	}
}

func TestStartTwiceIsNoOp(t *testing.T) {
	e := newEnv(t)
	must(t, e.reg.Register(Definition{Name: "order", Version: 1, Steps: []Step{e.effectStep("a", nil)}}))
	eng := e.engine("r1", nil)
	id := IDFor("order", "job-42")
	if id != IDFor("order", "job-42") || id == IDFor("order", "job-43") || id == IDFor("other", "job-42") {
		t.Fatal("IDFor is not deterministic per type and subject")
	}
	_, created, err := eng.Start(e.ctx(), "order", id, nil)
	must(t, err)
	info, again, err := eng.Start(e.ctx(), "order", id, map[string]string{"different": "input"})
	must(t, err)
	if !created || again || info.ID != id || info.LastSeq != 2 {
		t.Fatalf("second Start: created=%v info=%+v, want the existing saga", again, info)
	}
	if h := e.history(eng, id); len(h) != 2 {
		t.Fatalf("history has %d events after two Starts, want 2", len(h))
	}
	// Start joins the caller's transaction: a rollback leaves no saga.
	other := IDFor("order", "job-44")
	err = e.st.InTx(e.ctx(), func(ctx context.Context) error {
		if _, _, err := eng.Start(ctx, "order", other, nil); err != nil {
			return err
		}
		return errBoom
	})
	if !errors.Is(err, errBoom) {
		t.Fatal(err)
	}
	if _, err := eng.Get(e.ctx(), other); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("saga started in a rolled-back tx exists: %v", err)
	}
	if _, _, err := eng.Start(e.ctx(), "nope", "x", nil); !errors.Is(err, ErrUnknownSaga) {
		t.Fatalf("unknown type: %v", err)
	}
}

func TestPermanentFailureCompensatesInReverse(t *testing.T) {
	e := newEnv(t)
	noComp := e.effectStep("b", nil)
	noComp.Compensate = nil
	must(t, e.reg.Register(Definition{Name: "order", Version: 1, Steps: []Step{
		e.effectStep("a", nil),
		noComp,
		e.effectStep("c", nil),
		e.effectStep("d", func(*StepContext) error { return errBoom }), // permanent: no retry
		e.effectStep("e", nil),
	}}))
	eng := e.engine("r1", nil)
	id := IDFor("order", "1")
	_, _, err := eng.Start(e.ctx(), "order", id, nil)
	must(t, err)
	e.drain(eng)
	got := e.state(eng, id)
	if got.State != StateCompensated || got.Error == "" {
		t.Fatalf("saga %+v, want COMPENSATED with the error", got)
	}
	h := e.history(eng, id)
	if order := kinds(h, EventCompensationCompleted); !slices.Equal(order, []string{"compensation.completed:c", "compensation.completed:a"}) {
		t.Fatalf("compensation order %v, want c then a", order)
	}
	if e.callsOf("d") != 1 || e.callsOf("e") != 0 {
		t.Fatalf("d ran %d times (want 1, no retry of a permanent error), e ran %d", e.callsOf("d"), e.callsOf("e"))
	}
	for step, want := range map[string]int{"a": 1, "b": 1, "c": 1, "d": 0, "a/undo": 1, "c/undo": 1, "b/undo": 0} {
		if n := e.effects(id, step); n != want {
			t.Fatalf("effects of %s: %d, want %d", step, n, want)
		}
	}
	if last := h[len(h)-1]; last.Type != EventCompensated {
		t.Fatalf("last event %s, want %s", last.Type, EventCompensated)
	}
}

func TestFailingCompensationEndsCompensationFailed(t *testing.T) {
	e := newEnv(t)
	a := e.effectStep("a", nil)
	a.Retry = RetryPolicy{MaxAttempts: 2, Initial: time.Second, Max: time.Second}
	a.Compensate = func(ctx context.Context, sc *StepContext) (any, error) {
		e.count("a/undo")
		return nil, command.Transient(errors.New("provider unreachable"))
	}
	must(t, e.reg.Register(Definition{Name: "order", Version: 1, Steps: []Step{
		a, e.effectStep("b", func(*StepContext) error { return errBoom }),
	}}))
	eng := e.engine("r1", nil)
	id := IDFor("order", "1")
	_, _, err := eng.Start(e.ctx(), "order", id, nil)
	must(t, err)
	e.drain(eng)
	if got := e.state(eng, id); got.State != StateCompensating {
		t.Fatalf("state %s, want COMPENSATING while the compensation backs off", got.State)
	}
	e.clock.Advance(2 * time.Second)
	e.drain(eng)
	got := e.state(eng, id)
	if got.State != StateCompensationFailed || e.callsOf("a/undo") != 2 {
		t.Fatalf("saga %+v after %d compensation runs, want COMPENSATION_FAILED after 2", got, e.callsOf("a/undo"))
	}
	e.clock.Advance(time.Hour)
	e.drain(eng)
	if e.callsOf("a/undo") != 2 {
		t.Fatal("a COMPENSATION_FAILED saga was run again")
	}
	want := []string{"compensation.started:a", "compensation.failed:a", "compensation.started:a", "compensation.failed:a"}
	if got := kinds(e.history(eng, id), EventCompensationStarted, EventCompensationFailed, EventCompensationCompleted); !slices.Equal(got, want) {
		t.Fatalf("compensation history %v, want %v", got, want)
	}
}

func TestCancelCompensatesAndEndsCancelled(t *testing.T) {
	e := newEnv(t)
	must(t, e.reg.Register(Definition{Name: "order", Version: 1, Steps: []Step{
		e.effectStep("a", nil),
		{Name: "wait", Do: func(ctx context.Context, sc *StepContext) (any, error) { return sc.AwaitSignal("go") }},
	}}))
	eng := e.engine("r1", nil)
	id := IDFor("order", "1")
	_, _, err := eng.Start(e.ctx(), "order", id, nil)
	must(t, err)
	e.drain(eng)
	must(t, eng.Cancel(e.ctx(), id, "user asked"))
	e.drain(eng)
	if got := e.state(eng, id); got.State != StateCancelled || e.effects(id, "a/undo") != 1 {
		t.Fatalf("saga %+v, a/undo effects %d; want CANCELLED with a compensated", got, e.effects(id, "a/undo"))
	}
	if err := eng.Signal(e.ctx(), id, "go", nil); !errors.Is(err, ErrFinished) {
		t.Fatalf("signal to a cancelled saga: %v, want ErrFinished", err)
	}
}

// Two runners on one saga: A's lease runs out while its step is blocked; B takes the
// saga over and finishes it; A's late outcome conflicts and changes nothing.
func TestRacingRunnersRunEachStepOnce(t *testing.T) {
	e := newEnv(t)
	blocked, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	must(t, e.reg.Register(Definition{Name: "race", Version: 1, Steps: []Step{
		{Name: "a", Do: func(ctx context.Context, sc *StepContext) (any, error) {
			first := false
			once.Do(func() { first = true })
			if first { // runner A: wait until B has finished the saga
				close(blocked)
				<-release
			}
			e.count("a")
			return command.Dispatch[effectResult](ctx, sc, effectCmd{Key: sc.Key(), Saga: sc.SagaID(), Step: "a"})
		}},
		e.effectStep("b", nil),
	}}))
	engA := e.engine("runner-A", nil)
	engB := e.engine("runner-B", nil)
	id := IDFor("race", "1")
	_, _, err := engA.Start(e.ctx(), "race", id, nil)
	must(t, err)
	doneA := make(chan error, 1)
	go func() { _, err := engA.RunOnce(e.ctx()); doneA <- err }()
	<-blocked
	if n, err := engB.RunOnce(e.ctx()); err != nil || n != 0 {
		t.Fatalf("B claimed %d sagas held by A (err %v)", n, err)
	}
	e.clock.Advance(11 * time.Second) // A's 10s lease expires
	e.drain(engB)
	if got := e.state(engB, id); got.State != StateCompleted {
		t.Fatalf("B left the saga %s", got.State)
	}
	close(release)
	must(t, <-doneA)
	if n := e.effects(id, "a"); n != 1 || e.callsOf("a") != 2 {
		t.Fatalf("step a ran %d times and took effect %d times, want 2 runs and 1 effect", e.callsOf("a"), n)
	}
	if n := e.effects(id, "b"); n != 1 {
		t.Fatalf("step b took effect %d times, want 1", n)
	}
	h := e.history(engB, id)
	if got := kinds(h, EventStepCompleted); !slices.Equal(got, []string{"step.completed:a", "step.completed:b"}) {
		t.Fatalf("completions %v: a step was recorded twice", got)
	}
	if got := e.state(engA, id); got.State != StateCompleted || got.LastSeq != h[len(h)-1].Seq {
		t.Fatalf("A's late outcome changed the saga: %+v", got)
	}
}

// The runner dies (its context is cancelled) inside a step, after the step's command
// wrote its effect but before the outcome was recorded. A new runner resumes the saga:
// the step runs again with the same attempt key and the effect exists once. (One step
// per transaction here; TestCrashInGroupRollsBackTheGroup covers step groups.)
func TestCrashBetweenCommandAndOutcome(t *testing.T) {
	e := newEnv(t)
	must(t, e.reg.Register(Definition{Name: "crash", Version: 1, Steps: []Step{
		e.effectStep("a", nil), e.effectStep("b", nil), e.effectStep("c", nil),
	}}))
	id := IDFor("crash", "1")
	runCtx, kill := context.WithCancel(e.ctx())
	var keys []string
	hook := func(ctx context.Context, c effectCmd) {
		keys = append(keys, c.Key)
		if c.Step == "b" && len(keys) == 2 {
			kill()
		}
	}
	e.afterEffect.Store(&hook)
	oneStep := func(c *Config) { c.MaxStepsPerTx = 1 }
	eng1 := e.engine("dies", oneStep)
	_, _, err := eng1.Start(e.ctx(), "crash", id, nil)
	must(t, err)
	if _, err := eng1.RunOnce(runCtx); err != nil {
		t.Fatal(err)
	}
	h := e.history(eng1, id)
	if last := h[len(h)-1]; last.Type != EventStepScheduled || last.Step != "b" || last.Attempt != 1 {
		t.Fatalf("after the crash the history ends with %s:%s#%d, want step.scheduled:b#1", last.Type, last.Step, last.Attempt)
	}
	// The new process starts after the dead one's lease expired.
	e.clock.Advance(time.Minute)
	eng2 := e.engine("resumes", oneStep)
	e.drain(eng2)
	if got := e.state(eng2, id); got.State != StateCompleted {
		t.Fatalf("resumed saga %s, want COMPLETED", got.State)
	}
	for _, s := range []string{"a", "b", "c"} {
		if n := e.effects(id, s); n != 1 {
			t.Fatalf("step %s took effect %d times, want 1", s, n)
		}
	}
	if len(keys) != 4 || keys[1] != keys[2] || keys[1] != id+"/b/1" {
		t.Fatalf("command keys %v, want b dispatched twice with key %s", keys, id+"/b/1")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
