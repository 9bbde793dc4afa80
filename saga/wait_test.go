package saga

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/store"
)

func waitStep(name, signal string) Step {
	return Step{Name: name, Do: func(ctx context.Context, sc *StepContext) (any, error) {
		p, err := sc.AwaitSignal(signal)
		if err != nil {
			return nil, err
		}
		return p, nil
	}}
}

func TestSignalWakesParkedSaga(t *testing.T) {
	e := newEnv(t)
	must(t, e.reg.Register(Definition{Name: "wait", Version: 1, Steps: []Step{
		e.effectStep("a", nil), waitStep("await", "result"), e.effectStep("c", nil),
	}}))
	eng := e.engine("r1", nil)
	id := IDFor("wait", "1")
	_, _, err := eng.Start(e.ctx(), "wait", id, nil)
	must(t, err)
	e.drain(eng)
	r, _ := e.st.Sagas().Get(e.ctx(), id)
	if r.State != string(StateWaiting) || !r.RunnableAt.IsZero() || r.ClaimedBy != "" {
		t.Fatalf("parked saga row %+v, want WAITING, not runnable, unclaimed", r)
	}
	e.clock.Advance(time.Hour)
	e.drain(eng) // nothing to do while parked
	must(t, eng.Signal(e.ctx(), id, "other", map[string]int{"x": 1}))
	e.drain(eng) // woken by an unrelated signal: runs the step, which parks again
	if got := e.state(eng, id); got.State != StateWaiting {
		t.Fatalf("after an unrelated signal: %s, want WAITING", got.State)
	}
	must(t, eng.Signal(e.ctx(), id, "result", map[string]int{"exit": 0}))
	e.drain(eng)
	if got := e.state(eng, id); got.State != StateCompleted {
		t.Fatalf("after the signal: %s, want COMPLETED", got.State)
	}
	h := e.history(eng, id)
	var out json.RawMessage
	for _, ev := range h {
		if ev.Type == EventStepCompleted && ev.Step == "await" {
			out = ev.Data.Output
		}
	}
	if string(out) != `{"exit":0}` || e.effects(id, "c") != 1 {
		t.Fatalf("await output %s, c effects %d", out, e.effects(id, "c"))
	}
	if n := len(kinds(h, EventStepWaiting)); n != 2 {
		t.Fatalf("%d step.waiting events, want 2", n)
	}
}

// Signals go through the Waker: a running Run loop picks the saga up without a poll tick.
func TestRunLoopWakesOnSignal(t *testing.T) {
	e := newEnv(t)
	must(t, e.reg.Register(Definition{Name: "wait", Version: 1, Steps: []Step{waitStep("await", "go")}}))
	waker := NewLocalWaker()
	eng := e.engine("r1", func(c *Config) { c.Waker = waker; c.PollInterval = time.Hour })
	id := IDFor("wait", "1")
	ctx, cancel := context.WithCancel(e.ctx())
	done := make(chan error, 1)
	go func() { done <- eng.Run(ctx) }()
	_, _, err := eng.Start(e.ctx(), "wait", id, nil)
	must(t, err)
	waitFor(t, func() bool { return e.state(eng, id).State == StateWaiting })
	must(t, eng.Signal(e.ctx(), id, "go", "now"))
	waitFor(t, func() bool { return e.state(eng, id).State == StateCompleted })
	cancel()
	must(t, <-done)
}

// waitFor polls cond (the result of asynchronous work) until it holds or 20s pass.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 20s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func sleepStep(name string, d time.Duration) Step {
	return Step{Name: name, Do: func(ctx context.Context, sc *StepContext) (any, error) {
		if err := sc.Sleep(d); err != nil {
			return nil, err
		}
		return sc.Now(), nil
	}}
}

func TestTimerWakesParkedSaga(t *testing.T) {
	e := newEnv(t)
	must(t, e.reg.Register(Definition{Name: "sleepy", Version: 1, Steps: []Step{sleepStep("nap", 10*time.Minute), e.effectStep("b", nil)}}))
	eng := e.engine("r1", nil)
	other := e.engine("r2", nil)
	id := IDFor("sleepy", "1")
	_, _, err := eng.Start(e.ctx(), "sleepy", id, nil)
	must(t, err)
	e.drain(eng)
	ts, err := e.st.Sagas().Timers(e.ctx(), id)
	must(t, err)
	if len(ts) != 1 || !ts[0].FireAt.Equal(t0.Add(10*time.Minute)) || ts[0].Status != store.TimerPending {
		t.Fatalf("timers %+v, want one PENDING at t0+10m", ts)
	}
	if n, err := eng.FireDueTimers(e.ctx()); err != nil || n != 0 {
		t.Fatalf("fired %d timers early (err %v)", n, err)
	}
	e.clock.Advance(10 * time.Minute)
	// Two replicas poll at once: exactly one fires.
	res := make(chan int, 2)
	for _, x := range []*Engine{eng, other} {
		go func() { n, _ := x.FireDueTimers(e.ctx()); res <- n }()
	}
	if total := <-res + <-res; total != 1 {
		t.Fatalf("timer fired %d times, want 1", total)
	}
	e.drain(eng)
	if got := e.state(eng, id); got.State != StateCompleted || e.effects(id, "b") != 1 {
		t.Fatalf("saga %s, b effects %d; want COMPLETED and 1", got.State, e.effects(id, "b"))
	}
	want := []string{"timer.created:nap", "step.waiting:nap", "timer.fired:", "step.completed:nap"}
	if got := kinds(e.history(eng, id), EventTimerCreated, EventStepWaiting, EventTimerFired, EventStepCompleted)[:4]; !slices.Equal(got, want) {
		t.Fatalf("history %v, want %v", got, want)
	}
}

// A timer that fell due while no process ran fires when one starts.
func TestTimerDueDuringDowntimeFiresAtStart(t *testing.T) {
	e := newEnv(t)
	must(t, e.reg.Register(Definition{Name: "sleepy", Version: 1, Steps: []Step{sleepStep("nap", time.Minute), e.effectStep("b", nil)}}))
	first := e.engine("before-downtime", nil)
	id := IDFor("sleepy", "1")
	_, _, err := first.Start(e.ctx(), "sleepy", id, nil)
	must(t, err)
	e.drain(first) // parks on the timer; then the process "stops"
	e.clock.Advance(6 * time.Hour)
	next := e.engine("after-downtime", func(c *Config) { c.PollInterval = time.Hour })
	ctx, cancel := context.WithCancel(e.ctx())
	done := make(chan error, 1)
	go func() { done <- next.Run(ctx) }() // only the start-up poll can fire it
	waitFor(t, func() bool { return e.state(next, id).State == StateCompleted })
	cancel()
	must(t, <-done)
	if e.effects(id, "b") != 1 {
		t.Fatal("step after the timer did not take effect once")
	}
}

func TestVersionedSagaFinishesOnItsVersion(t *testing.T) {
	e := newEnv(t)
	must(t, e.reg.Register(Definition{Name: "flow", Version: 1, Steps: []Step{
		e.effectStep("v1-a", nil), waitStep("v1-wait", "go"), e.effectStep("v1-b", nil)}}))
	eng := e.engine("r1", nil)
	old := IDFor("flow", "old")
	_, _, err := eng.Start(e.ctx(), "flow", old, nil)
	must(t, err)
	e.drain(eng)
	must(t, e.reg.Register(Definition{Name: "flow", Version: 2, Steps: []Step{e.effectStep("v2-a", nil)}}))
	if err := e.reg.Register(Definition{Name: "flow", Version: 2, Steps: []Step{e.effectStep("x", nil)}}); err == nil {
		t.Fatal("registering v2 twice succeeded")
	}
	neu := IDFor("flow", "new")
	info, _, err := eng.Start(e.ctx(), "flow", neu, nil)
	must(t, err)
	if info.Version != 2 {
		t.Fatalf("new saga on v%d, want v2", info.Version)
	}
	must(t, eng.Signal(e.ctx(), old, "go", nil))
	e.drain(eng)
	if got := kinds(e.history(eng, old), EventStepCompleted); !slices.Equal(got,
		[]string{"step.completed:v1-a", "step.completed:v1-wait", "step.completed:v1-b"}) {
		t.Fatalf("v1 saga ran %v", got)
	}
	if got := kinds(e.history(eng, neu), EventStepCompleted); !slices.Equal(got, []string{"step.completed:v2-a"}) {
		t.Fatalf("v2 saga ran %v", got)
	}
}

func TestSnapshotsWrittenUsedAndCorruptRebuilt(t *testing.T) {
	e := newEnv(t)
	var steps []Step
	for _, n := range []string{"s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8"} {
		steps = append(steps, e.effectStep(n, nil))
	}
	steps = append(steps, waitStep("park", "go"))
	must(t, e.reg.Register(Definition{Name: "long", Version: 1, Steps: steps}))
	// Two steps per transaction: each append crosses a multiple of 5 (a snapshot is
	// taken per append at most).
	eng := e.engine("r1", func(c *Config) { c.SnapshotEvery = 5; c.SnapshotKeep = 2; c.MaxStepsPerTx = 2 })
	id := IDFor("long", "1")
	_, _, err := eng.Start(e.ctx(), "long", id, nil)
	must(t, err)
	e.drain(eng)
	ctx := e.ctx()
	snaps, err := e.st.Sagas().Snapshots(ctx, id, 10)
	must(t, err)
	if len(snaps) != 2 {
		t.Fatalf("%d snapshots kept, want 2", len(snaps))
	}
	for _, s := range snaps {
		if sum := sha256.Sum256(s.State); !slices.Equal(sum[:], s.SHA256) {
			t.Fatalf("snapshot at %d has a bad checksum", s.Seq)
		}
	}
	if n := len(kinds(e.history(eng, id), EventSnapshotTaken)); n < 3 {
		t.Fatalf("%d snapshot.taken events, want >= 3", n)
	}
	full := replay(t, eng, id)
	// Used: a doctored snapshot with a valid checksum shows up in the loaded state.
	var doctored sagaState
	must(t, json.Unmarshal(snaps[0].State, &doctored))
	doctored.Outputs["marker"] = json.RawMessage(`"from-snapshot"`)
	b, _ := json.Marshal(&doctored)
	sum := sha256.Sum256(b)
	must(t, e.st.Sagas().PutSnapshot(ctx, &store.SagaSnapshot{SagaID: id, Seq: snaps[0].Seq, State: b, SHA256: sum[:]}, 2))
	st, err := eng.load(ctx, id)
	must(t, err)
	if string(st.Outputs["marker"]) != `"from-snapshot"` {
		t.Fatal("load did not use the newest snapshot")
	}
	// Corrupt: bytes changed behind the checksum's back; load ignores both snapshots
	// (the older one too, once corrupted) and rebuilds from history.
	if _, err := e.st.Pool().Exec(ctx, `UPDATE saga_snapshots SET state = convert_to('{"status":"COMPLETED","last_seq":'||seq||'}', 'UTF8') WHERE saga_id = $1`, id); err != nil {
		t.Fatal(err)
	}
	st, err = eng.load(ctx, id)
	must(t, err)
	stJSON, _ := json.Marshal(st)
	if string(stJSON) != string(full) {
		t.Fatalf("state rebuilt after corruption differs from a full replay:\n%s\n%s", stJSON, full)
	}
	// The saga still runs to the end with its snapshots corrupted.
	must(t, eng.Signal(ctx, id, "go", nil))
	e.drain(eng)
	if got := e.state(eng, id); got.State != StateCompleted {
		t.Fatalf("state %s, want COMPLETED", got.State)
	}
}

// replay folds the whole history without snapshots.
func replay(t *testing.T, eng *Engine, id string) []byte {
	t.Helper()
	h, err := eng.History(context.Background(), id)
	must(t, err)
	st := newState()
	for _, ev := range h {
		must(t, st.apply(ev))
	}
	b, _ := json.Marshal(st)
	return b
}

// b64Codec is a second codec for the test: JSON, base64-encoded.
type b64Codec struct{}

func (b64Codec) Name() string { return "json-b64" }
func (b64Codec) Marshal(d *EventData) ([]byte, error) {
	j, err := json.Marshal(d)
	return []byte(base64.StdEncoding.EncodeToString(j)), err
}
func (b64Codec) Unmarshal(b []byte, d *EventData) error {
	j, err := base64.StdEncoding.DecodeString(string(b))
	if err != nil {
		return err
	}
	return json.Unmarshal(j, d)
}

// The codec is recorded per event: a saga started with JSON events and continued by an
// engine writing another codec (Config.Codec, with Config.Codecs to read the old ones)
// reads back whole, and an engine without that codec refuses the history.
func TestCodecsPerEvent(t *testing.T) {
	d := &EventData{Output: []byte(`{"a":1}`), Error: "e", Final: true, Name: "n", TimerID: "t",
		FireAt: t0, NotBefore: t0.Add(time.Second), Seq: 42, Index: 3}
	for _, c := range []Codec{JSONCodec{}, b64Codec{}} {
		b, err := c.Marshal(d)
		must(t, err)
		var got EventData
		must(t, c.Unmarshal(b, &got))
		gb, _ := json.Marshal(&got)
		wb, _ := json.Marshal(d)
		if string(gb) != string(wb) {
			t.Fatalf("%s round trip: %s, want %s", c.Name(), gb, wb)
		}
	}

	e := newEnv(t)
	must(t, e.reg.Register(Definition{Name: "mixed", Version: 1, Steps: []Step{e.effectStep("a", nil), e.effectStep("b", nil)}}))
	jsonEng := e.engine("json", nil)
	b64Eng := e.engine("b64", func(c *Config) { c.Codec = b64Codec{} })
	id := IDFor("mixed", "1")
	_, _, err := jsonEng.Start(e.ctx(), "mixed", id, nil)
	must(t, err)
	e.drain(b64Eng)
	if _, err := jsonEng.History(e.ctx(), id); !errors.Is(err, ErrUnknownCodec) {
		t.Fatalf("history read without the codec: %v, want ErrUnknownCodec", err)
	}
	h := e.history(b64Eng, id)
	var codecs []string
	for _, ev := range h {
		if !slices.Contains(codecs, ev.Codec) {
			codecs = append(codecs, ev.Codec)
		}
	}
	if !slices.Equal(codecs, []string{"json", "json-b64"}) || e.state(b64Eng, id).State != StateCompleted {
		t.Fatalf("codecs %v, state %s", codecs, e.state(b64Eng, id).State)
	}
	var out effectResult
	must(t, json.Unmarshal(h[len(h)-2].Data.Output, &out))
	if out.JobID == "" {
		t.Fatalf("output written with the second codec unreadable: %+v", h[len(h)-2])
	}
}

// silentWaker counts wake-ups and never delivers one.
type silentWaker struct{ wakes atomic.Int64 }

func (w *silentWaker) Wake(context.Context, string) error { w.wakes.Add(1); return nil }
func (w *silentWaker) Wakeups(ctx context.Context) <-chan string {
	return make(chan string)
}

// A process whose Run loop is active runs the sagas it starts and signals itself: the
// claim is taken with the write and the saga handed to the loop after the commit, with
// no wake-up, task or poll (handoff.go). The waker here delivers nothing and the poll is
// an hour away, so only the hand-off can move the saga.
func TestStartAndSignalAreHandedToOwnLoop(t *testing.T) {
	e := newEnv(t)
	must(t, e.reg.Register(Definition{Name: "wait", Version: 1, Steps: []Step{waitStep("await", "go")}}))
	waker := &silentWaker{}
	eng := e.engine("r1", func(c *Config) { c.Waker = waker; c.PollInterval = time.Hour })
	id := IDFor("wait", "handoff")
	ctx, cancel := context.WithCancel(e.ctx())
	done := make(chan error, 1)
	go func() { done <- eng.Run(ctx) }()
	waitFor(t, eng.hand.active)
	_, _, err := eng.Start(e.ctx(), "wait", id, nil)
	must(t, err)
	waitFor(t, func() bool { return e.state(eng, id).State == StateWaiting })
	must(t, eng.Signal(e.ctx(), id, "go", "now"))
	waitFor(t, func() bool { return e.state(eng, id).State == StateCompleted })
	if n := waker.wakes.Load(); n != 0 {
		t.Fatalf("%d wake-ups published, want none (the saga was handed over locally)", n)
	}
	r, err := e.st.Sagas().Get(e.ctx(), id)
	must(t, err)
	if r.ClaimedBy != "" {
		t.Fatalf("finished saga still claimed by %q", r.ClaimedBy)
	}
	cancel()
	must(t, <-done)

	// Without a running loop (or with NoHandoff) the signal wakes runners instead and
	// takes no claim.
	off := e.engine("r2", func(c *Config) { c.Waker = waker; c.NoHandoff = true })
	id2 := IDFor("wait", "no-handoff")
	_, _, err = off.Start(e.ctx(), "wait", id2, nil)
	must(t, err)
	if r, err := e.st.Sagas().Get(e.ctx(), id2); err != nil || r.ClaimedBy != "" {
		t.Fatalf("saga started without hand-off: claim %q (%v), want none", r.ClaimedBy, err)
	}
	if n := waker.wakes.Load(); n != 1 {
		t.Fatalf("%d wake-ups, want 1 for the start without hand-off", n)
	}
}

// A claim taken with a write whose hand-off never came (the commit failed ambiguously:
// it committed, but its after-commit work did not run) is released by the loop's poll
// after staleTake, so the saga does not wait for the whole lease.
func TestStaleTakenClaimIsReleased(t *testing.T) {
	e := newEnv(t)
	must(t, e.reg.Register(Definition{Name: "wait", Version: 1, Steps: []Step{waitStep("await", "go")}}))
	eng := e.engine("r1", func(c *Config) {
		c.Waker = NewLocalWaker()
		c.PollInterval = 200 * time.Millisecond
		c.Lease = time.Hour
	})
	id := IDFor("wait", "stale-take")
	ctx, cancel := context.WithCancel(e.ctx())
	done := make(chan error, 1)
	go func() { done <- eng.Run(ctx) }()
	waitFor(t, eng.hand.active)
	_, _, err := eng.Start(e.ctx(), "wait", id, nil)
	must(t, err)
	waitFor(t, func() bool { return e.state(eng, id).State == StateWaiting })
	// The signal's write, with the claim taken, as Signal makes it, but without the
	// hand-off that only a reported commit triggers.
	rec, err := e.st.Sagas().Get(e.ctx(), id)
	must(t, err)
	ev, err := eng.encode(EventSignalReceived, "", 0, &EventData{Name: "go", Output: []byte(`"now"`)})
	must(t, err)
	upd := wakeUpdate(rec, eng.cfg.Clock.Now())
	if !eng.takeFor(rec, &upd, eng.cfg.Clock.Now()) {
		t.Fatal("takeFor did not take the claim of a parked saga")
	}
	must(t, e.st.Sagas().Append(e.ctx(), id, rec.LastSeq, upd, ev))
	began := time.Now()
	waitFor(t, func() bool { return e.state(eng, id).State == StateCompleted })
	if took := time.Since(began); took < staleTake-time.Second || took > staleTake+10*time.Second {
		t.Errorf("the saga went on %s after the orphaned claim, want about %s (not the hour's lease)", took, staleTake)
	}
	cancel()
	must(t, <-done)
}
