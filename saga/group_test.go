package saga

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/command"
	"github.com/hodei-jobs/hodei/store"
)

// txsOf counts the transactions that wrote a saga's events (distinct xmin).
func (e *env) txsOf(id string) int {
	e.t.Helper()
	var n int
	if err := e.st.Pool().QueryRow(context.Background(),
		`SELECT count(DISTINCT xmin::text) FROM saga_events WHERE saga_id = $1`, id).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

// Consecutive ready steps run in one transaction, MaxStepsPerTx at a time, and the
// history is the same as with one transaction per step.
func TestStepGroupsShareATransaction(t *testing.T) {
	e := newEnv(t)
	var steps []Step
	names := []string{"a", "b", "c", "d", "e"}
	for _, n := range names {
		steps = append(steps, e.effectStep(n, nil))
	}
	must(t, e.reg.Register(Definition{Name: "five", Version: 1, Steps: steps}))
	want := []string{"saga.started:"}
	for _, n := range names {
		want = append(want, "step.scheduled:"+n, "step.completed:"+n)
	}
	want = append(want, "saga.completed:")
	for _, tc := range []struct{ max, txs int }{
		{16, 2}, // Start, then all five steps
		{2, 4},  // Start, then a+b, c+d, e
		{1, 6},  // Start, then one per step
	} {
		eng := e.engine("r1", func(c *Config) { c.MaxStepsPerTx = tc.max })
		id := IDFor("five", time.Duration(tc.max).String())
		_, _, err := eng.Start(e.ctx(), "five", id, nil)
		must(t, err)
		e.drain(eng)
		if got := kinds(e.history(eng, id)); !slices.Equal(got, want) {
			t.Fatalf("MaxStepsPerTx %d: history\n got %v\nwant %v", tc.max, got, want)
		}
		if n := e.txsOf(id); n != tc.txs {
			t.Fatalf("MaxStepsPerTx %d: events written by %d transactions, want %d", tc.max, n, tc.txs)
		}
		for _, n := range names {
			if got := e.effects(id, n); got != 1 {
				t.Fatalf("MaxStepsPerTx %d: step %s took effect %d times", tc.max, n, got)
			}
		}
		if r, _ := e.st.Sagas().Get(e.ctx(), id); r.State != string(StateCompleted) || r.ClaimedBy != "" || r.LastSeq != int64(len(want)) {
			t.Fatalf("MaxStepsPerTx %d: row %+v", tc.max, r)
		}
	}
	if _, err := New(e.st, e.reg, e.d, Config{MaxStepsPerTx: 1001}); err == nil {
		t.Fatal("MaxStepsPerTx 1001 accepted")
	}
}

// The runner dies in step c of a group a+b+c, after c's command wrote its effect: the
// whole group rolls back (effects and outcomes of a and b too), and the resumed saga
// runs every step of the group once more with the same keys, each taking effect once.
func TestCrashInGroupRollsBackTheGroup(t *testing.T) {
	e := newEnv(t)
	must(t, e.reg.Register(Definition{Name: "crash", Version: 1, Steps: []Step{
		e.effectStep("a", nil), e.effectStep("b", nil), e.effectStep("c", nil),
	}}))
	id := IDFor("crash", "group")
	runCtx, kill := context.WithCancel(e.ctx())
	var mu sync.Mutex
	var keys []string
	hook := func(ctx context.Context, c effectCmd) {
		mu.Lock()
		defer mu.Unlock()
		keys = append(keys, c.Key)
		if c.Step == "c" && len(keys) == 3 {
			kill()
		}
	}
	e.afterEffect.Store(&hook)
	eng1 := e.engine("dies", nil)
	_, _, err := eng1.Start(e.ctx(), "crash", id, nil)
	must(t, err)
	if _, err := eng1.RunOnce(runCtx); err != nil {
		t.Fatal(err)
	}
	h := e.history(eng1, id)
	if got := kinds(h); !slices.Equal(got, []string{"saga.started:", "step.scheduled:a"}) {
		t.Fatalf("after the crash the history is %v, want nothing of the group", got)
	}
	for _, s := range []string{"a", "b", "c"} {
		if n := e.effects(id, s); n != 0 {
			t.Fatalf("after the crash step %s has %d effects, want 0 (rolled back with the group)", s, n)
		}
	}
	e.clock.Advance(time.Minute) // the dead runner's lease expires
	eng2 := e.engine("resumes", nil)
	e.drain(eng2)
	if got := e.state(eng2, id); got.State != StateCompleted {
		t.Fatalf("resumed saga %s, want COMPLETED", got.State)
	}
	for _, s := range []string{"a", "b", "c"} {
		if n := e.effects(id, s); n != 1 {
			t.Fatalf("step %s took effect %d times, want 1", s, n)
		}
	}
	want := []string{id + "/a/1", id + "/b/1", id + "/c/1", id + "/a/1", id + "/b/1", id + "/c/1"}
	if !slices.Equal(keys, want) {
		t.Fatalf("command keys %v, want the group twice with the same keys %v", keys, want[:3])
	}
	if got := kinds(e.history(eng2, id), EventStepCompleted); !slices.Equal(got,
		[]string{"step.completed:a", "step.completed:b", "step.completed:c"}) {
		t.Fatalf("completions %v", got)
	}
}

// A step that fails inside a group ends it: its own writes and after-commit callbacks
// roll back to its savepoint, the steps before it stay completed (run once), and its
// failure and retry are recorded after them.
func TestFailureInGroupKeepsEarlierSteps(t *testing.T) {
	e := newEnv(t)
	var bCommitted, cCommitted atomic.Int32
	b := e.effectStep("b", nil)
	bDo := b.Do
	b.Do = func(ctx context.Context, sc *StepContext) (any, error) {
		e.st.AfterCommit(ctx, func() { bCommitted.Add(1) })
		return bDo(ctx, sc)
	}
	c := e.effectStep("c", func(sc *StepContext) error {
		if sc.Attempt() == 1 {
			return command.Transient(errBoom) // after the effect: it must roll back
		}
		return nil
	})
	cDo := c.Do
	c.Do = func(ctx context.Context, sc *StepContext) (any, error) {
		e.st.AfterCommit(ctx, func() { cCommitted.Add(1) })
		return cDo(ctx, sc)
	}
	must(t, e.reg.Register(Definition{Name: "flaky", Version: 1, Steps: []Step{e.effectStep("a", nil), b, c}}))
	eng := e.engine("r1", nil)
	id := IDFor("flaky", "group")
	_, _, err := eng.Start(e.ctx(), "flaky", id, nil)
	must(t, err)
	e.drain(eng)
	want := []string{"saga.started:", "step.scheduled:a", "step.completed:a", "step.scheduled:b", "step.completed:b",
		"step.scheduled:c", "step.failed:c", "step.scheduled:c"}
	if got := kinds(e.history(eng, id)); !slices.Equal(got, want) {
		t.Fatalf("history\n got %v\nwant %v", got, want)
	}
	if e.effects(id, "a") != 1 || e.effects(id, "b") != 1 || e.effects(id, "c") != 0 {
		t.Fatalf("effects a=%d b=%d c=%d, want 1 1 0", e.effects(id, "a"), e.effects(id, "b"), e.effects(id, "c"))
	}
	if e.callsOf("a") != 1 || e.callsOf("b") != 1 || e.callsOf("c") != 1 {
		t.Fatalf("runs a=%d b=%d c=%d, want 1 each", e.callsOf("a"), e.callsOf("b"), e.callsOf("c"))
	}
	if bCommitted.Load() != 1 || cCommitted.Load() != 0 {
		t.Fatalf("after-commit callbacks: b %d, c %d; want 1 and 0 (c's was rolled back)", bCommitted.Load(), cCommitted.Load())
	}
	if n := e.txsOf(id); n != 2 {
		t.Fatalf("a, b and c's failure written by %d transactions after Start, want 1", n-1)
	}
	r, _ := e.st.Sagas().Get(e.ctx(), id)
	if r.State != string(StateRunning) || !r.RunnableAt.Equal(t0.Add(time.Second)) || r.ClaimedBy != "" {
		t.Fatalf("row %+v, want RUNNING, runnable at t0+1s, unclaimed", r)
	}
	e.clock.Advance(time.Second)
	e.drain(eng)
	if got := e.state(eng, id); got.State != StateCompleted || e.effects(id, "c") != 1 || e.callsOf("a") != 1 {
		t.Fatalf("saga %s, c effects %d, a runs %d", got.State, e.effects(id, "c"), e.callsOf("a"))
	}
	if cCommitted.Load() != 1 {
		t.Fatalf("c's after-commit callback ran %d times, want 1", cCommitted.Load())
	}
}

// A step that waits inside a group parks the saga after the steps before it, in the
// same transaction, and a step that fails for good inside a group starts compensation
// of the steps completed in it.
func TestWaitAndFinalFailureInGroup(t *testing.T) {
	e := newEnv(t)
	must(t, e.reg.Register(Definition{Name: "wait", Version: 1, Steps: []Step{
		e.effectStep("a", nil), e.effectStep("b", nil), waitStep("await", "go"), e.effectStep("d", nil),
	}}))
	must(t, e.reg.Register(Definition{Name: "fail", Version: 1, Steps: []Step{
		e.effectStep("x", nil), e.effectStep("y", func(*StepContext) error { return errBoom }),
	}}))
	eng := e.engine("r1", nil)
	wid, fid := IDFor("wait", "1"), IDFor("fail", "1")
	_, _, err := eng.Start(e.ctx(), "wait", wid, nil)
	must(t, err)
	_, _, err = eng.Start(e.ctx(), "fail", fid, nil)
	must(t, err)
	e.drain(eng)
	if got := kinds(e.history(eng, wid)); !slices.Equal(got, []string{"saga.started:", "step.scheduled:a",
		"step.completed:a", "step.scheduled:b", "step.completed:b", "step.scheduled:await", "step.waiting:await"}) {
		t.Fatalf("waiting saga history %v", got)
	}
	if n := e.txsOf(wid); n != 2 {
		t.Fatalf("a, b and the wait written by %d transactions after Start, want 1", n-1)
	}
	if r, _ := e.st.Sagas().Get(e.ctx(), wid); r.State != string(StateWaiting) || !r.RunnableAt.IsZero() || r.ClaimedBy != "" {
		t.Fatalf("parked row %+v", r)
	}
	must(t, eng.Signal(e.ctx(), wid, "go", nil))
	e.drain(eng)
	if got := e.state(eng, wid); got.State != StateCompleted || e.effects(wid, "a") != 1 || e.effects(wid, "d") != 1 {
		t.Fatalf("woken saga %s, effects a=%d d=%d", got.State, e.effects(wid, "a"), e.effects(wid, "d"))
	}
	if got := e.state(eng, fid); got.State != StateCompensated || e.effects(fid, "x/undo") != 1 || e.effects(fid, "y") != 0 {
		t.Fatalf("failed saga %s, x/undo %d, y %d; want COMPENSATED, 1, 0", got.State, e.effects(fid, "x/undo"), e.effects(fid, "y"))
	}
	if e.callsOf("x") != 1 || e.callsOf("y") != 1 {
		t.Fatalf("runs x=%d y=%d, want 1 each", e.callsOf("x"), e.callsOf("y"))
	}
}

// An append by someone else while a group runs (here a signal) makes the group's append
// stale: the whole group rolls back and runs again, each effect lands once.
func TestConflictDuringGroupRerunsIt(t *testing.T) {
	e := newEnv(t)
	must(t, e.reg.Register(Definition{Name: "conflict", Version: 1, Steps: []Step{
		e.effectStep("a", nil), e.effectStep("b", nil), e.effectStep("c", nil),
	}}))
	eng := e.engine("r1", nil)
	id := IDFor("conflict", "1")
	var once sync.Once
	hook := func(ctx context.Context, c effectCmd) {
		if c.Step == "b" {
			once.Do(func() { // outside the step's transaction, on its own connection
				must(t, eng.Signal(context.Background(), id, "poke", nil))
			})
		}
	}
	e.afterEffect.Store(&hook)
	_, _, err := eng.Start(e.ctx(), "conflict", id, nil)
	must(t, err)
	e.drain(eng)
	if got := e.state(eng, id); got.State != StateCompleted {
		t.Fatalf("state %s", got.State)
	}
	for _, s := range []string{"a", "b", "c"} {
		if n := e.effects(id, s); n != 1 {
			t.Fatalf("step %s took effect %d times, want 1", s, n)
		}
	}
	if e.callsOf("a") != 2 {
		t.Fatalf("a ran %d times, want 2 (the group ran again after the conflict)", e.callsOf("a"))
	}
	if got := kinds(e.history(eng, id), EventStepCompleted, EventSignalReceived); !slices.Equal(got,
		[]string{"signal.received:", "step.completed:a", "step.completed:b", "step.completed:c"}) {
		t.Fatalf("history %v", got)
	}
}

// RecordIncident adds an event that changes nothing: a parked saga stays parked and its
// step does not run again; finished sagas take incidents too.
func TestRecordIncidentDoesNotWake(t *testing.T) {
	e := newEnv(t)
	var runs atomic.Int32
	must(t, e.reg.Register(Definition{Name: "wait", Version: 1, Steps: []Step{
		{Name: "await", Do: func(ctx context.Context, sc *StepContext) (any, error) {
			runs.Add(1)
			return sc.AwaitSignal("go")
		}},
	}}))
	eng := e.engine("r1", nil)
	id := IDFor("wait", "incident")
	_, _, err := eng.Start(e.ctx(), "wait", id, nil)
	must(t, err)
	e.drain(eng)
	before, _ := e.st.Sagas().Get(e.ctx(), id)
	must(t, eng.RecordIncident(e.ctx(), id, "task_dead", "delivered 5 times without an ack"))
	after, _ := e.st.Sagas().Get(e.ctx(), id)
	if after.State != string(StateWaiting) || !after.RunnableAt.IsZero() || after.LastSeq != before.LastSeq+1 ||
		after.Error != before.Error || after.CurrentStep != before.CurrentStep {
		t.Fatalf("row after the incident %+v, before %+v", after, before)
	}
	e.clock.Advance(time.Hour)
	e.drain(eng)
	if runs.Load() != 1 || e.state(eng, id).State != StateWaiting {
		t.Fatalf("the incident woke the saga: step ran %d times, state %s", runs.Load(), e.state(eng, id).State)
	}
	h := e.history(eng, id)
	last := h[len(h)-1]
	if last.Type != EventIncidentRecorded || last.Data.Name != "task_dead" || last.Data.Error != "delivered 5 times without an ack" {
		t.Fatalf("last event %+v", last)
	}
	st, err := eng.load(e.ctx(), id)
	must(t, err)
	if st.Status != StateWaiting || st.LastSeq != last.Seq {
		t.Fatalf("folded state %+v", st)
	}
	must(t, eng.Signal(e.ctx(), id, "go", nil))
	e.drain(eng)
	if got := e.state(eng, id); got.State != StateCompleted {
		t.Fatalf("state %s after the signal", got.State)
	}
	must(t, eng.RecordIncident(e.ctx(), id, "late", "after the end"))
	if got := e.state(eng, id); got.State != StateCompleted {
		t.Fatalf("incident on a finished saga changed it to %s", got.State)
	}
	if err := eng.RecordIncident(e.ctx(), "missing", "k", ""); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("incident on a missing saga: %v, want ErrNotFound", err)
	}
	if err := eng.RecordIncident(e.ctx(), id, "", "x"); err == nil {
		t.Fatal("empty kind accepted")
	}
}

// Run gathers wake-ups and claims them in batches; with the poll out of the way every
// saga is run from its wake-up.
func TestRunClaimsWakeupsInBatches(t *testing.T) {
	e := newEnv(t)
	must(t, e.reg.Register(Definition{Name: "two", Version: 1, Steps: []Step{e.effectStep("a", nil), e.effectStep("b", nil)}}))
	waker := NewLocalWaker()
	eng := e.engine("r1", func(c *Config) { c.Waker = waker; c.PollInterval = time.Hour; c.Concurrency = 3 })
	ctx, cancel := context.WithCancel(e.ctx())
	done := make(chan error, 1)
	go func() { done <- eng.Run(ctx) }()
	const n = 40
	ids := make([]string, n)
	var wg sync.WaitGroup
	for i := range ids {
		ids[i] = IDFor("two", time.Duration(i).String())
		wg.Go(func() {
			if _, _, err := eng.Start(e.ctx(), "two", ids[i], nil); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	waitFor(t, func() bool {
		for _, id := range ids {
			if e.state(eng, id).State != StateCompleted {
				return false
			}
		}
		return true
	})
	cancel()
	must(t, <-done)
	for _, id := range ids {
		if e.effects(id, "a") != 1 || e.effects(id, "b") != 1 {
			t.Fatalf("saga %s: effects a=%d b=%d", id, e.effects(id, "a"), e.effects(id, "b"))
		}
	}
}
