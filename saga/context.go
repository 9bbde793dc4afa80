package saga

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/hodei-jobs/hodei/command"
)

// ErrWaiting is returned (wrapped) by StepContext.AwaitSignal, Sleep and
// AwaitSignalTimeout when the saga must park. A step returns it as is; the runner rolls
// the step's transaction back, records that the step waits and parks the saga until a
// signal or timer wakes it. The step then runs again from the top with the same attempt.
var ErrWaiting = errors.New("saga: step is waiting")

// ErrSignalTimeout: AwaitSignalTimeout's timer fired before the signal arrived.
var ErrSignalTimeout = errors.New("saga: timed out waiting for signal")

// timerReq is a timer a step asked for that the history does not have yet.
type timerReq struct {
	Name   string
	FireAt time.Time
}

// StepContext is handed to a running step or compensation. It is not safe for concurrent
// use and is only valid during the call.
type StepContext struct {
	sagaID, sagaType string
	version          int
	step             string
	index, attempt   int
	compensating     bool
	input            []byte
	st               *sagaState
	now              time.Time
	d                command.Dispatcher

	sleeps  int
	timers  []timerReq
	waitFor []string
}

// SagaID is the saga's id.
func (sc *StepContext) SagaID() string { return sc.sagaID }

// Type is the saga type's name.
func (sc *StepContext) Type() string { return sc.sagaType }

// Version is the saga definition version the saga started on.
func (sc *StepContext) Version() int { return sc.version }

// Step is the running step's name.
func (sc *StepContext) Step() string { return sc.step }

// Attempt is the attempt number, from 1.
func (sc *StepContext) Attempt() int { return sc.attempt }

// Compensating reports whether this is a compensation run.
func (sc *StepContext) Compensating() bool { return sc.compensating }

// Now is the engine clock's time when the step started.
func (sc *StepContext) Now() time.Time { return sc.now }

// Input decodes the saga's input (JSON) into v.
func (sc *StepContext) Input(v any) error {
	if len(sc.input) == 0 {
		return nil
	}
	if err := json.Unmarshal(sc.input, v); err != nil {
		return fmt.Errorf("saga %s: decode input: %w", sc.sagaID, err)
	}
	return nil
}

// Output decodes the output of the completed step named step into v; ok is false when
// that step has not completed.
func (sc *StepContext) Output(step string, v any) (ok bool, err error) {
	raw, ok := sc.st.Outputs[step]
	if !ok {
		return false, nil
	}
	if len(raw) == 0 || string(raw) == "null" {
		return true, nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return true, fmt.Errorf("saga %s: decode output of %s: %w", sc.sagaID, step, err)
	}
	return true, nil
}

// Key is the idempotency key of this run: "saga id/step/attempt" (compensations add
// "/compensate"). Commands dispatched by the step must use it, or Key()+"/suffix" when
// the step sends several.
func (sc *StepContext) Key() string {
	k := sc.sagaID + "/" + sc.step
	if sc.compensating {
		k += "/compensate"
	}
	return k + "/" + strconv.Itoa(sc.attempt)
}

// Dispatch sends cmd through the engine's dispatcher in the step's transaction. cmd's
// idempotency key must be Key() or start with Key()+"/": a step reaches the world only
// through commands that are safe to repeat.
func (sc *StepContext) Dispatch(ctx context.Context, cmd command.Command) (any, error) {
	k := cmd.IdempotencyKey()
	if k != sc.Key() && !strings.HasPrefix(k, sc.Key()+"/") {
		return nil, fmt.Errorf("saga %s step %s: command %s has idempotency key %q, want %q or %q+\"/…\"",
			sc.sagaID, sc.step, cmd.CommandType(), k, sc.Key(), sc.Key())
	}
	return sc.d.DispatchAny(ctx, cmd)
}

// DispatchAny is Dispatch; it makes a StepContext a command.Dispatcher, so steps can use
// the typed command.Dispatch[R](ctx, sc, cmd).
func (sc *StepContext) DispatchAny(ctx context.Context, cmd command.Command) (any, error) {
	return sc.Dispatch(ctx, cmd)
}

// AwaitSignal returns the payload of signal name if the saga has received it (at any
// time since it started); otherwise it returns ErrWaiting and the saga parks until a
// signal arrives.
func (sc *StepContext) AwaitSignal(name string) (json.RawMessage, error) {
	if p, ok := sc.st.Signals[name]; ok {
		return p, nil
	}
	sc.waitFor = append(sc.waitFor, "signal:"+name)
	return nil, fmt.Errorf("%w for signal %q", ErrWaiting, name)
}

// Signal returns the payload of signal name without waiting.
func (sc *StepContext) Signal(name string) (json.RawMessage, bool) {
	p, ok := sc.st.Signals[name]
	return p, ok
}

// timerName scopes a timer to this step run.
func (sc *StepContext) timerName(name string) string {
	return sc.step + "/" + strconv.Itoa(sc.attempt) + "/" + name
}

// awaitTimer returns nil once the durable timer name (scoped to this step and attempt)
// has fired; until then it creates it (first call) and returns ErrWaiting.
func (sc *StepContext) awaitTimer(name string, d time.Duration) (fired bool) {
	full := sc.timerName(name)
	if t, ok := sc.st.Timers[full]; ok {
		if t.Fired {
			return true
		}
	} else {
		sc.timers = append(sc.timers, timerReq{Name: full, FireAt: sc.now.Add(d)})
	}
	sc.waitFor = append(sc.waitFor, "timer:"+full)
	return false
}

// Sleep parks the saga for d on a durable timer. Each Sleep call in a step is its own
// timer (numbered in call order), so a step that sleeps twice waits twice.
func (sc *StepContext) Sleep(d time.Duration) error {
	sc.sleeps++
	if sc.awaitTimer("sleep-"+strconv.Itoa(sc.sleeps), d) {
		return nil
	}
	return fmt.Errorf("%w for %s timer", ErrWaiting, d)
}

// AwaitSignalTimeout is AwaitSignal bounded by a durable timer of d started on the first
// call: it returns the payload, ErrWaiting, or ErrSignalTimeout once the timer fired
// without the signal.
func (sc *StepContext) AwaitSignalTimeout(name string, d time.Duration) (json.RawMessage, error) {
	if p, ok := sc.st.Signals[name]; ok {
		return p, nil
	}
	if sc.awaitTimer("signal-timeout-"+name, d) {
		return nil, fmt.Errorf("%w %q after %s", ErrSignalTimeout, name, d)
	}
	sc.waitFor = append(sc.waitFor, "signal:"+name)
	return nil, fmt.Errorf("%w for signal %q (timeout %s)", ErrWaiting, name, d)
}
