package saga

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/command"
	"github.com/hodei-jobs/hodei/store"
)

// failures lists the Error of every step.failed / compensation.failed event, in order.
func failures(h []*Event) []string {
	var out []string
	for _, ev := range h {
		if ev.Type == EventStepFailed || ev.Type == EventCompensationFailed {
			out = append(out, ev.Step+": "+ev.Data.Error)
		}
	}
	return out
}

// An operator who mistypes a setting is told which field is wrong.
func TestConfigValidateNamesTheField(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		field string
		mut   func(*Config)
	}{
		{"RunnerID", func(c *Config) { c.RunnerID = strings.Repeat("r", 201) }},
		{"Lease", func(c *Config) { c.Lease = time.Millisecond }},
		{"PollInterval", func(c *Config) { c.PollInterval = time.Microsecond }},
		{"BatchSize", func(c *Config) { c.BatchSize = 10001 }},
		{"Concurrency", func(c *Config) { c.Concurrency = -1 }},
		{"SnapshotEvery", func(c *Config) { c.SnapshotEvery = 1 }},
		{"SnapshotKeep", func(c *Config) { c.SnapshotKeep = 101 }},
		{"MaxTransitions", func(c *Config) { c.MaxTransitions = -1 }},
		{"MaxStepsPerTx", func(c *Config) { c.MaxStepsPerTx = 1001 }},
	} {
		cfg := Config{}
		tc.mut(&cfg)
		_, err := New(e.st, e.reg, e.d, cfg)
		if err == nil || !strings.Contains(err.Error(), "Config."+tc.field) {
			t.Errorf("New with a bad %s = %v, want an error naming Config.%s", tc.field, err, tc.field)
		}
	}
	if _, err := New(nil, e.reg, e.d, Config{}); err == nil {
		t.Error("New without a store succeeded")
	}
	eng, err := New(e.st, e.reg, e.d, Config{})
	must(t, err)
	if eng.RunnerID() == "" {
		t.Error("default RunnerID is empty")
	}
}

// A saga author who writes a bad definition learns what is wrong when registering it,
// not when the first saga runs.
func TestRegisterRejectsBadDefinitions(t *testing.T) {
	do := func(context.Context, *StepContext) (any, error) { return nil, nil }
	for _, tc := range []struct {
		want string
		def  Definition
	}{
		{"Definition.Name", Definition{Version: 1, Steps: []Step{{Name: "a", Do: do}}}},
		{"Definition.Version", Definition{Name: "x", Steps: []Step{{Name: "a", Do: do}}}},
		{"Steps has 0 entries", Definition{Name: "x", Version: 1}},
		{"exactly one of Do and Activity", Definition{Name: "x", Version: 1, Steps: []Step{{Name: "a"}}}},
		{`duplicate step name "a"`, Definition{Name: "x", Version: 1, Steps: []Step{{Name: "a", Do: do}, {Name: "a", Do: do}}}},
		{"Retry.MaxAttempts", Definition{Name: "x", Version: 1, Steps: []Step{{Name: "a", Do: do, Retry: RetryPolicy{MaxAttempts: 1001}}}}},
		{"Retry.Initial", Definition{Name: "x", Version: 1, Steps: []Step{{Name: "a", Do: do, Retry: RetryPolicy{Initial: time.Minute, Max: time.Second}}}}},
		{"Retry.Jitter", Definition{Name: "x", Version: 1, Steps: []Step{{Name: "a", Do: do, Retry: RetryPolicy{Jitter: 2}}}}},
		{"Timeout", Definition{Name: "x", Version: 1, Steps: []Step{{Name: "a", Do: do, Timeout: -time.Second}}}},
	} {
		err := NewRegistry().Register(tc.def)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Register(%+v) = %v, want an error mentioning %q", tc.def, err, tc.want)
		}
	}
	r := NewRegistry()
	must(t, r.Register(Definition{Name: "x", Version: 1, Steps: []Step{{Name: "a", Do: do}}}))
	if err := r.Register(Definition{Name: "x", Version: 1, Steps: []Step{{Name: "a", Do: do}}}); err == nil {
		t.Error("registering x v1 twice succeeded")
	}
	if _, err := r.Lookup("x", 2); !errors.Is(err, ErrUnknownSaga) {
		t.Errorf("Lookup(x, 2) = %v, want ErrUnknownSaga", err)
	}
}

// Bad calls write nothing and say why; calls on sagas that do not exist or have ended
// are refused with errors callers can test for.
func TestStartSignalCancelRefusals(t *testing.T) {
	e := newEnv(t)
	must(t, e.reg.Register(Definition{Name: "one", Version: 1, Steps: []Step{e.effectStep("a", nil)}}))
	eng := e.engine("r1", nil)
	ctx := e.ctx()
	if _, _, err := eng.Start(ctx, "one", "", nil); err == nil {
		t.Error("Start with an empty id succeeded")
	}
	if _, _, err := eng.Start(ctx, "nope", "x", nil); !errors.Is(err, ErrUnknownSaga) {
		t.Errorf("Start of an unregistered type = %v, want ErrUnknownSaga", err)
	}
	if _, _, err := eng.Start(ctx, "one", "bad-input", map[string]any{"c": make(chan int)}); err == nil {
		t.Error("Start with an unencodable input succeeded")
	}
	if _, err := eng.Get(ctx, "bad-input"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a refused Start left a saga behind (Get = %v)", err)
	}
	if err := eng.Signal(ctx, "no-such", "go", nil); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Signal to an unknown saga = %v, want store.ErrNotFound", err)
	}
	if err := eng.Cancel(ctx, "no-such", "why"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Cancel of an unknown saga = %v, want store.ErrNotFound", err)
	}

	// Input given as JSON bytes is stored as is; other bytes as a JSON string.
	id := IDFor("one", "raw")
	_, _, err := eng.Start(ctx, "one", id, []byte(`{"n":1}`))
	must(t, err)
	other := IDFor("one", "bytes")
	_, _, err = eng.Start(ctx, "one", other, []byte("not json"))
	must(t, err)
	for sid, want := range map[string]string{id: `{"n":1}`, other: `"bm90IGpzb24="`} {
		rec, err := e.st.Sagas().Get(ctx, sid)
		must(t, err)
		var got, w any
		must(t, json.Unmarshal(rec.Input, &got))
		must(t, json.Unmarshal([]byte(want), &w))
		if gb, _ := json.Marshal(got); string(gb) != string(mustJSON(w)) {
			t.Errorf("input of %s = %s, want %s", sid, rec.Input, want)
		}
	}

	if err := eng.Signal(ctx, id, "", nil); err == nil {
		t.Error("Signal with an empty name succeeded")
	}
	if err := eng.Signal(ctx, id, "go", make(chan int)); err == nil {
		t.Error("Signal with an unencodable payload succeeded")
	}
	before := e.state(eng, id).LastSeq
	e.drain(eng)
	if got := e.state(eng, id); got.State != StateCompleted || got.LastSeq <= before {
		t.Fatalf("saga %s at seq %d, want COMPLETED", got.State, got.LastSeq)
	}
	end := e.state(eng, id).LastSeq
	if err := eng.Signal(ctx, id, "late", nil); !errors.Is(err, ErrFinished) {
		t.Errorf("Signal to a finished saga = %v, want ErrFinished", err)
	}
	if err := eng.Cancel(ctx, id, "too late"); !errors.Is(err, ErrFinished) {
		t.Errorf("Cancel of a finished saga = %v, want ErrFinished", err)
	}
	if got := e.state(eng, id).LastSeq; got != end {
		t.Errorf("refused calls appended to a finished saga (seq %d -> %d)", end, got)
	}
	if err := eng.RecordIncident(ctx, id, "", "x"); err == nil {
		t.Error("RecordIncident with an empty kind succeeded")
	}
}

// A saga whose failure leaves nothing to undo ends FAILED (not COMPENSATED), and no
// compensation runs.
func TestFailureWithNothingToUndoEndsFailed(t *testing.T) {
	e := newEnv(t)
	noUndo := func(name string) Step {
		s := e.effectStep(name, nil)
		s.Compensate = nil
		return s
	}
	must(t, e.reg.Register(Definition{Name: "first-fails", Version: 1, Steps: []Step{
		e.effectStep("a", func(*StepContext) error { return errBoom }), e.effectStep("b", nil)}}))
	must(t, e.reg.Register(Definition{Name: "no-undo", Version: 1, Steps: []Step{
		noUndo("a"), noUndo("b"), e.effectStep("c", func(*StepContext) error { return errBoom })}}))
	eng := e.engine("r1", nil)
	for _, typ := range []string{"first-fails", "no-undo"} {
		id := IDFor(typ, "1")
		_, _, err := eng.Start(e.ctx(), typ, id, nil)
		must(t, err)
		e.drain(eng)
		info := e.state(eng, id)
		if info.State != StateFailed || !strings.Contains(info.Error, "boom") {
			t.Errorf("%s: state %s, error %q; want FAILED with the step's error", typ, info.State, info.Error)
		}
		h := e.history(eng, id)
		if c := kinds(h, EventCompensationStarted, EventCompensationCompleted); len(c) != 0 {
			t.Errorf("%s: compensations ran: %v", typ, c)
		}
		if last := h[len(h)-1].Type; last != EventFailed {
			t.Errorf("%s: last event %s, want %s", typ, last, EventFailed)
		}
	}
	if n := e.callsOf("a/undo") + e.callsOf("b/undo"); n != 0 {
		t.Fatalf("%d compensations called", n)
	}
}

// A saga of a version this replica does not know is left alone (not failed) and looked
// at again later; a replica that knows the version runs it.
func TestUnknownVersionIsLeftForAReplicaThatKnowsIt(t *testing.T) {
	e := newEnv(t)
	must(t, e.reg.Register(Definition{Name: "v", Version: 1, Steps: []Step{e.effectStep("a", nil)}}))
	must(t, e.reg.Register(Definition{Name: "v", Version: 2, Steps: []Step{e.effectStep("a", nil), e.effectStep("b2", nil)}}))
	newer := e.engine("new", nil)
	oldReg := NewRegistry()
	must(t, oldReg.Register(Definition{Name: "v", Version: 1, Steps: []Step{e.effectStep("a", nil)}}))
	older, err := New(e.st, oldReg, e.d, Config{RunnerID: "old", Clock: e.clock, Lease: 10 * time.Second,
		PollInterval: 20 * time.Millisecond})
	must(t, err)

	id := IDFor("v", "1")
	info, _, err := newer.Start(e.ctx(), "v", id, nil)
	must(t, err)
	if info.Version != 2 {
		t.Fatalf("started on version %d, want the latest (2)", info.Version)
	}
	n, err := older.RunOnce(e.ctx())
	must(t, err)
	if n != 1 {
		t.Fatalf("old replica claimed %d sagas, want 1", n)
	}
	rec, err := e.st.Sagas().Get(e.ctx(), id)
	must(t, err)
	if rec.State != string(StateRunning) || e.callsOf("a") != 0 || !rec.RunnableAt.Equal(t0.Add(time.Minute)) || rec.ClaimedBy != "" {
		t.Fatalf("after the old replica: state %s, a ran %d times, runnable_at %s, claimed by %q; "+
			"want RUNNING, not run, runnable in a minute, unclaimed", rec.State, e.callsOf("a"), rec.RunnableAt, rec.ClaimedBy)
	}
	if n, _ := older.RunOnce(e.ctx()); n != 0 {
		t.Fatalf("the saga was claimed again before its minute was up")
	}
	e.clock.Advance(time.Minute)
	e.drain(newer)
	if got := e.state(newer, id); got.State != StateCompleted || e.effects(id, "b2") != 1 {
		t.Fatalf("state %s, b2 effects %d; want COMPLETED on version 2", got.State, e.effects(id, "b2"))
	}
}

// A signal that arrives while a step waits out its retry backoff wakes the saga but
// does not retry the step early; the same holds for a compensation's backoff.
func TestWakeDuringBackoffDoesNotRetryEarly(t *testing.T) {
	e := newEnv(t)
	failA := 1
	failUndo := 1
	a := e.effectStep("a", nil)
	undo := a.Compensate
	a.Compensate = func(ctx context.Context, sc *StepContext) (any, error) {
		if failUndo > 0 {
			failUndo--
			e.count("a/undo-failed")
			return nil, command.Transient(errBoom)
		}
		return undo(ctx, sc)
	}
	b := e.effectStep("b", func(*StepContext) error {
		if failA > 0 {
			failA--
			return command.Transient(errBoom)
		}
		return errors.New("permanent")
	})
	must(t, e.reg.Register(Definition{Name: "backoff", Version: 1, Steps: []Step{a, b}}))
	eng := e.engine("r1", nil)
	id := IDFor("backoff", "1")
	_, _, err := eng.Start(e.ctx(), "backoff", id, nil)
	must(t, err)
	e.drain(eng)
	if e.callsOf("b") != 1 {
		t.Fatalf("b ran %d times, want 1 (then backing off)", e.callsOf("b"))
	}
	must(t, eng.Signal(e.ctx(), id, "unrelated", nil))
	e.drain(eng)
	if e.callsOf("b") != 1 {
		t.Fatalf("b retried during its backoff after a signal (%d runs)", e.callsOf("b"))
	}
	if rec, _ := e.st.Sagas().Get(e.ctx(), id); !rec.RunnableAt.After(t0) {
		t.Fatalf("runnable_at %s: the backoff was lost", rec.RunnableAt)
	}
	e.clock.Advance(time.Minute)
	e.drain(eng) // b fails for good; a's compensation fails once and backs off
	if e.callsOf("b") != 2 || e.callsOf("a/undo-failed") != 1 || e.callsOf("a/undo") != 0 {
		t.Fatalf("b runs %d, failed undos %d, undos %d; want 2, 1, 0",
			e.callsOf("b"), e.callsOf("a/undo-failed"), e.callsOf("a/undo"))
	}
	must(t, eng.Signal(e.ctx(), id, "unrelated-2", nil))
	e.drain(eng)
	if e.callsOf("a/undo") != 0 {
		t.Fatal("the compensation was retried during its backoff after a signal")
	}
	e.clock.Advance(time.Minute)
	e.drain(eng)
	if got := e.state(eng, id); got.State != StateCompensated || e.effects(id, "a/undo") != 1 {
		t.Fatalf("state %s, a/undo effects %d; want COMPENSATED and 1", got.State, e.effects(id, "a/undo"))
	}
}

// A step that overruns its Timeout is a transient failure, retried, and never recorded
// as completed, even if it returns nil afterwards.
func TestStepTimeoutIsATransientFailure(t *testing.T) {
	e := newEnv(t)
	runs := 0
	slow := Step{Name: "slow", Timeout: 30 * time.Millisecond, Retry: RetryPolicy{MaxAttempts: 2, Initial: time.Second, Max: time.Second},
		Do: func(ctx context.Context, sc *StepContext) (any, error) {
			runs++
			<-ctx.Done()
			if runs == 1 {
				return nil, ctx.Err()
			}
			return "too late", nil // ignores its deadline
		}}
	must(t, e.reg.Register(Definition{Name: "slow", Version: 1, Steps: []Step{slow}}))
	eng := e.engine("r1", nil)
	id := IDFor("slow", "1")
	_, _, err := eng.Start(e.ctx(), "slow", id, nil)
	must(t, err)
	e.drain(eng)
	e.clock.Advance(time.Minute)
	e.drain(eng)
	h := e.history(eng, id)
	f := failures(h)
	if runs != 2 || len(f) != 2 || !strings.Contains(f[0], "step timed out after 30ms") || !strings.Contains(f[1], "step timed out") {
		t.Fatalf("runs %d, failures %q; want two timeouts", runs, f)
	}
	if got := e.state(eng, id); got.State != StateFailed || len(kinds(h, EventStepCompleted)) != 0 {
		t.Fatalf("state %s with completed steps %v; want FAILED, none completed", got.State, kinds(h, EventStepCompleted))
	}
}

// A step's output that cannot be encoded fails the step (its effects roll back), and
// a step that dispatches a command not keyed by its own idempotency key is refused, so
// a retry can never repeat an effect under another key.
func TestStepOutputAndKeyMistakesFailTheSaga(t *testing.T) {
	e := newEnv(t)
	badOut := Step{Name: "bad-out", Retry: RetryPolicy{MaxAttempts: 1},
		Do: func(ctx context.Context, sc *StepContext) (any, error) {
			if _, err := command.Dispatch[effectResult](ctx, sc, effectCmd{Key: sc.Key(), Saga: sc.SagaID(), Step: "bad-out"}); err != nil {
				return nil, err
			}
			return make(chan int), nil
		}}
	foreign := Step{Name: "foreign", Retry: RetryPolicy{MaxAttempts: 1},
		Do: func(ctx context.Context, sc *StepContext) (any, error) {
			return sc.Dispatch(ctx, effectCmd{Key: "someone-else/1", Saga: sc.SagaID(), Step: "foreign"})
		}}
	must(t, e.reg.Register(Definition{Name: "bad-out", Version: 1, Steps: []Step{e.effectStep("a", nil), badOut}}))
	must(t, e.reg.Register(Definition{Name: "foreign", Version: 1, Steps: []Step{e.effectStep("a", nil), foreign}}))
	eng := e.engine("r1", nil)
	for typ, want := range map[string]string{"bad-out": "encode output", "foreign": `idempotency key "someone-else/1"`} {
		id := IDFor(typ, "1")
		_, _, err := eng.Start(e.ctx(), typ, id, nil)
		must(t, err)
		e.drain(eng)
		info := e.state(eng, id)
		if info.State != StateCompensated || !strings.Contains(info.Error, want) {
			t.Errorf("%s: state %s, error %q; want COMPENSATED with %q", typ, info.State, info.Error, want)
		}
		if n := e.effects(id, typ); n != 0 {
			t.Errorf("%s: %d effects of the failed step committed", typ, n)
		}
		if n := e.effects(id, "a/undo"); n != 1 {
			t.Errorf("%s: a compensated %d times, want 1", typ, n)
		}
	}
}

// What a step sees of its saga: type, version, input, earlier outputs, signals without
// waiting, and whether it is compensating; undecodable input fails the step.
func TestStepContextView(t *testing.T) {
	e := newEnv(t)
	type in struct {
		N int `json:"n"`
	}
	var seen []string
	first := Step{Name: "first", Do: func(ctx context.Context, sc *StepContext) (any, error) {
		return map[string]int{"v": 7}, nil
	}, Compensate: func(ctx context.Context, sc *StepContext) (any, error) {
		seen = append(seen, "compensating="+boolStr(sc.Compensating()))
		return nil, nil
	}}
	second := Step{Name: "second", Retry: RetryPolicy{MaxAttempts: 1}, Do: func(ctx context.Context, sc *StepContext) (any, error) {
		var v in
		if err := sc.Input(&v); err != nil {
			return nil, err
		}
		var out struct{ V int }
		ok, err := sc.Output("first", &out)
		if err != nil || !ok {
			return nil, errors.New("no output of first")
		}
		if ok, _ := sc.Output("second", &out); ok {
			return nil, errors.New("own output visible before completing")
		}
		_, sig := sc.Signal("go")
		seen = append(seen, sc.Type(), strings.Repeat("v", sc.Version()), "n="+string(rune('0'+v.N)),
			"first="+string(rune('0'+out.V)), "signal="+boolStr(sig), "compensating="+boolStr(sc.Compensating()))
		return nil, errors.New("stop here")
	}}
	must(t, e.reg.Register(Definition{Name: "view", Version: 2, Steps: []Step{first, second}}))
	eng := e.engine("r1", nil)
	id := IDFor("view", "1")
	_, _, err := eng.Start(e.ctx(), "view", id, map[string]int{"n": 3})
	must(t, err)
	must(t, eng.Signal(e.ctx(), id, "go", nil))
	e.drain(eng)
	want := []string{"view", "vv", "n=3", "first=7", "signal=true", "compensating=false", "compensating=true"}
	if !slices.Equal(seen, want) {
		t.Fatalf("step saw %v, want %v", seen, want)
	}
	// The same definition with an input the step cannot decode.
	bad := IDFor("view", "bad")
	_, _, err = eng.Start(e.ctx(), "view", bad, map[string]string{"n": "three"})
	must(t, err)
	e.drain(eng)
	if info := e.state(eng, bad); info.State != StateCompensated || !strings.Contains(info.Error, "decode input") {
		t.Fatalf("bad input: state %s, error %q; want COMPENSATED with a decode error", info.State, info.Error)
	}
}

func boolStr(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

// A compensation cannot park the saga: asking to wait is a compensation failure and the
// saga ends COMPENSATION_FAILED for a human to look at.
func TestCompensationThatWaitsEndsCompensationFailed(t *testing.T) {
	e := newEnv(t)
	a := e.effectStep("a", nil)
	a.Retry = RetryPolicy{MaxAttempts: 1}
	a.Compensate = func(ctx context.Context, sc *StepContext) (any, error) {
		return sc.AwaitSignal("never")
	}
	must(t, e.reg.Register(Definition{Name: "undo-waits", Version: 1, Steps: []Step{a,
		e.effectStep("b", func(*StepContext) error { return errBoom })}}))
	eng := e.engine("r1", nil)
	id := IDFor("undo-waits", "1")
	_, _, err := eng.Start(e.ctx(), "undo-waits", id, nil)
	must(t, err)
	e.drain(eng)
	info := e.state(eng, id)
	if info.State != StateCompensationFailed || !strings.Contains(info.Error, "compensations cannot wait") {
		t.Fatalf("state %s, error %q; want COMPENSATION_FAILED saying compensations cannot wait", info.State, info.Error)
	}
	if kinds(e.history(eng, id), EventStepWaiting) != nil {
		t.Fatal("the compensation parked the saga")
	}
}

// Cancel while a step waits for a signal with a timeout: the saga is compensated and
// ends CANCELLED; the step's timer, when it falls due, does not touch the finished
// saga and is marked CANCELLED.
func TestCancelDuringWaitingAndTheStepsTimer(t *testing.T) {
	e := newEnv(t)
	wait := Step{Name: "await", Do: func(ctx context.Context, sc *StepContext) (any, error) {
		return sc.AwaitSignalTimeout("result", time.Hour)
	}}
	must(t, e.reg.Register(Definition{Name: "cancel-wait", Version: 1, Steps: []Step{e.effectStep("a", nil), wait, e.effectStep("c", nil)}}))
	eng := e.engine("r1", nil)
	id := IDFor("cancel-wait", "1")
	_, _, err := eng.Start(e.ctx(), "cancel-wait", id, nil)
	must(t, err)
	e.drain(eng)
	if got := e.state(eng, id); got.State != StateWaiting {
		t.Fatalf("state %s, want WAITING", got.State)
	}
	must(t, eng.Cancel(e.ctx(), id, "user asked"))
	e.drain(eng)
	info := e.state(eng, id)
	if info.State != StateCancelled || !strings.Contains(info.Error, "user asked") || e.effects(id, "a/undo") != 1 || e.effects(id, "c") != 0 {
		t.Fatalf("state %s (%q), a/undo %d, c %d; want CANCELLED with the reason, a undone once, c never run",
			info.State, info.Error, e.effects(id, "a/undo"), e.effects(id, "c"))
	}
	end := info.LastSeq
	e.clock.Advance(2 * time.Hour)
	n, err := eng.FireDueTimers(e.ctx())
	must(t, err)
	if n != 0 {
		t.Fatalf("%d timers fired into a cancelled saga", n)
	}
	ts, err := e.st.Sagas().Timers(e.ctx(), id)
	must(t, err)
	for _, tm := range ts {
		if tm.Status != store.TimerCancelled {
			t.Fatalf("timer %s is %s, want CANCELLED", tm.Name, tm.Status)
		}
	}
	if got := e.state(eng, id); got.LastSeq != end || got.State != StateCancelled {
		t.Fatalf("the due timer changed the cancelled saga: %s at seq %d (was %d)", got.State, got.LastSeq, end)
	}
	// A second Cancel is refused, the saga is over.
	if err := eng.Cancel(e.ctx(), id, "again"); !errors.Is(err, ErrFinished) {
		t.Fatalf("second Cancel = %v, want ErrFinished", err)
	}
}

// A history that this engine cannot read (an event type from a newer release, an
// unknown codec) stops the saga where it is instead of guessing: no step runs, the saga
// keeps its state, and History reports the codec problem.
func TestUnreadableHistoryIsNotRun(t *testing.T) {
	e := newEnv(t)
	must(t, e.reg.Register(Definition{Name: "two", Version: 1, Steps: []Step{e.effectStep("a", nil), waitStep("w", "go"), e.effectStep("c", nil)}}))
	eng := e.engine("r1", nil)
	ctx := e.ctx()
	evs := []*store.SagaEvent{
		{Type: "step.teleported", Codec: "json", Payload: []byte(`{}`)},
		{Type: EventSignalReceived, Codec: "morse", Payload: []byte(`.-.`)},
	}
	var ids []string
	for i := range evs {
		id := IDFor("two", string(rune('a'+i)))
		_, _, err := eng.Start(ctx, "two", id, nil)
		must(t, err)
		ids = append(ids, id)
	}
	e.drain(eng)
	for i, ev := range evs {
		rec, err := e.st.Sagas().Get(ctx, ids[i])
		must(t, err)
		ev.CreatedAt = t0
		must(t, e.st.Sagas().Append(ctx, ids[i], rec.LastSeq, store.SagaUpdate{State: string(StateRunning),
			CurrentStep: rec.CurrentStep, RunnableAt: t0}, ev))
	}
	for range 3 {
		if _, err := eng.RunOnce(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for i, id := range ids {
		if got := e.state(eng, id); got.State != StateRunning || e.effects(id, "c") != 0 {
			t.Errorf("%s: state %s, c effects %d; want RUNNING and c not run", evs[i].Type, got.State, e.effects(id, "c"))
		}
		// Not claimed again at every poll: looked at again in a minute.
		if rec, err := e.st.Sagas().Get(ctx, id); err != nil || rec.RunnableAt.Before(e.clock.Now().Add(59*time.Second)) {
			t.Errorf("%s: runnable at %v (err %v), want a minute after %v", evs[i].Type, rec.RunnableAt, err, e.clock.Now())
		}
	}
	if _, err := eng.History(ctx, ids[1]); !errors.Is(err, ErrUnknownCodec) {
		t.Errorf("History with an unknown codec = %v, want ErrUnknownCodec", err)
	}
}

// A snapshot whose checksum matches but whose content does not fit (undecodable, or
// for another seq) is skipped and the state rebuilt from the history.
func TestSnapshotWithValidChecksumButBadContentIsSkipped(t *testing.T) {
	e := newEnv(t)
	var steps []Step
	for _, n := range []string{"s1", "s2", "s3", "s4"} {
		steps = append(steps, e.effectStep(n, nil))
	}
	steps = append(steps, waitStep("park", "go"))
	must(t, e.reg.Register(Definition{Name: "snap", Version: 1, Steps: steps}))
	eng := e.engine("r1", func(c *Config) { c.SnapshotEvery = 4; c.MaxStepsPerTx = 1 })
	id := IDFor("snap", "1")
	ctx := e.ctx()
	_, _, err := eng.Start(ctx, "snap", id, nil)
	must(t, err)
	e.drain(eng)
	full := replay(t, eng, id)
	snaps, err := e.st.Sagas().Snapshots(ctx, id, 10)
	must(t, err)
	if len(snaps) == 0 {
		t.Fatal("no snapshot taken")
	}
	for i, bad := range [][]byte{[]byte(`{not json`), []byte(`{"status":"COMPLETED","last_seq":1}`)} {
		sum := sha256.Sum256(bad)
		must(t, e.st.Sagas().PutSnapshot(ctx, &store.SagaSnapshot{SagaID: id, Seq: snaps[0].Seq + int64(i) + 100,
			State: bad, SHA256: sum[:]}, 10))
	}
	// Only bad snapshots (and the good ones) exist; the newest are bad.
	st, err := eng.load(ctx, id)
	must(t, err)
	if b, _ := json.Marshal(st); string(b) != string(full) {
		t.Fatalf("state with bad snapshots differs from a full replay:\n%s\n%s", b, full)
	}
	must(t, eng.Signal(ctx, id, "go", nil))
	e.drain(eng)
	if got := e.state(eng, id); got.State != StateCompleted {
		t.Fatalf("state %s, want COMPLETED", got.State)
	}
}
