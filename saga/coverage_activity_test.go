package saga

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/command"
)

// An activity reaches the world through Config.ActivityDispatcher with a command keyed
// by its own key (its effect commits once); it sees the saga's type, step, clock, input
// and signals; a command under another key, or an engine without an activity
// dispatcher, fails the step and the steps before it are compensated.
func TestActivityDispatchAndView(t *testing.T) {
	e := newEnv(t)
	var seen string
	dispatching := Step{Name: "dispatching", Retry: RetryPolicy{MaxAttempts: 1},
		Activity: func(ctx context.Context, ac *ActivityContext) (any, error) {
			var in struct{ Who string }
			if err := ac.Input(&in); err != nil {
				return nil, err
			}
			p, ok := ac.Signal("hint")
			seen = fmt.Sprintf("%s/%s/%s/%s/%v/%s", ac.Type(), ac.Step(), in.Who, ac.Now().Format(time.RFC3339), ok, p)
			return command.Dispatch[effectResult](ctx, ac, effectCmd{Key: ac.Key() + "/create", Saga: ac.SagaID(), Step: "dispatching"})
		}}
	foreign := Step{Name: "foreign", Retry: RetryPolicy{MaxAttempts: 1},
		Activity: func(ctx context.Context, ac *ActivityContext) (any, error) {
			return ac.Dispatch(ctx, effectCmd{Key: "not-mine", Saga: ac.SagaID(), Step: "foreign"})
		}}
	must(t, e.reg.Register(Definition{Name: "act-ok", Version: 1, Steps: []Step{e.effectStep("a", nil), dispatching}}))
	must(t, e.reg.Register(Definition{Name: "act-foreign", Version: 1, Steps: []Step{e.effectStep("a", nil), foreign}}))
	edge := command.ActivityChain(e.bus, command.ChainConfig{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	eng := e.engine("r1", func(c *Config) { c.ActivityDispatcher = edge })

	id := IDFor("act-ok", "1")
	_, _, err := eng.Start(e.ctx(), "act-ok", id, map[string]string{"Who": "me"})
	must(t, err)
	must(t, eng.Signal(e.ctx(), id, "hint", "north"))
	e.drain(eng)
	if got := e.state(eng, id); got.State != StateCompleted || e.effects(id, "dispatching") != 1 {
		t.Fatalf("state %s, effects %d; want COMPLETED with one effect", got.State, e.effects(id, "dispatching"))
	}
	if want := "act-ok/dispatching/me/" + t0.Format(time.RFC3339) + `/true/"north"`; seen != want {
		t.Fatalf("activity saw %q, want %q", seen, want)
	}

	id2 := IDFor("act-foreign", "1")
	_, _, err = eng.Start(e.ctx(), "act-foreign", id2, nil)
	must(t, err)
	e.drain(eng)
	if got := e.state(eng, id2); got.State != StateCompensated || !strings.Contains(got.Error, `idempotency key "not-mine"`) ||
		e.effects(id2, "foreign") != 0 || e.effects(id2, "a/undo") != 1 {
		t.Fatalf("foreign key: state %s (%q), effects %d, undo %d; want COMPENSATED, refused, none, 1",
			got.State, got.Error, e.effects(id2, "foreign"), e.effects(id2, "a/undo"))
	}

	// The same definition on an engine wired without an activity dispatcher.
	bare := e.engine("r2", nil)
	id3 := IDFor("act-ok", "bare")
	_, _, err = bare.Start(e.ctx(), "act-ok", id3, nil)
	must(t, err)
	e.drain(bare)
	if got := e.state(bare, id3); got.State != StateCompensated || !strings.Contains(got.Error, "Config.ActivityDispatcher") {
		t.Fatalf("no dispatcher: state %s (%q); want COMPENSATED naming Config.ActivityDispatcher", got.State, got.Error)
	}
}

// An activity that overruns its Timeout is a transient failure (retried, then final);
// an activity that asks to wait fails, since only steps in a transaction can park.
func TestActivityTimeoutAndWaitAreFailures(t *testing.T) {
	e := newEnv(t)
	runs := 0
	slow := Step{Name: "slow", Timeout: 30 * time.Millisecond, Retry: RetryPolicy{MaxAttempts: 2, Initial: time.Second, Max: time.Second},
		Activity: func(ctx context.Context, ac *ActivityContext) (any, error) {
			runs++
			<-ctx.Done()
			if runs == 1 {
				return nil, ctx.Err()
			}
			return "too late", nil
		}}
	waits := Step{Name: "waits", Retry: RetryPolicy{MaxAttempts: 1},
		Activity: func(ctx context.Context, ac *ActivityContext) (any, error) {
			return nil, fmt.Errorf("%w for a reply", ErrWaiting)
		}}
	must(t, e.reg.Register(Definition{Name: "slow-act", Version: 1, Steps: []Step{slow}}))
	must(t, e.reg.Register(Definition{Name: "wait-act", Version: 1, Steps: []Step{waits}}))
	eng := e.engine("r1", nil)
	id := IDFor("slow-act", "1")
	_, _, err := eng.Start(e.ctx(), "slow-act", id, nil)
	must(t, err)
	e.drain(eng)
	e.clock.Advance(time.Minute)
	e.drain(eng)
	f := failures(e.history(eng, id))
	if runs != 2 || len(f) != 2 || !strings.Contains(f[0], "activity timed out after 30ms") || !strings.Contains(f[1], "activity timed out") {
		t.Fatalf("runs %d, failures %q; want two activity timeouts", runs, f)
	}
	if got := e.state(eng, id); got.State != StateFailed {
		t.Fatalf("state %s, want FAILED", got.State)
	}
	id2 := IDFor("wait-act", "1")
	_, _, err = eng.Start(e.ctx(), "wait-act", id2, nil)
	must(t, err)
	e.drain(eng)
	got := e.state(eng, id2)
	if got.State != StateFailed || !strings.Contains(got.Error, "activities cannot wait") {
		t.Fatalf("state %s (%q), want FAILED saying activities cannot wait", got.State, got.Error)
	}
	if kinds(e.history(eng, id2), EventStepWaiting) != nil {
		t.Fatal("the activity parked the saga")
	}
}
