package saga

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hodei-jobs/hodei/command"
	"github.com/hodei-jobs/hodei/store"
)

// ActivityContext is handed to a running activity. It gives read access to the saga's
// input and the outputs of its completed steps; it has no dispatcher and no waits,
// because an activity runs outside any transaction (see "Activities" in doc.go). It is
// only valid during the call.
type ActivityContext struct {
	sc *StepContext
	d  command.Dispatcher
}

// Dispatch sends cmd through the engine's Config.ActivityDispatcher, outside any
// transaction. cmd's idempotency key must be Key() or start with Key()+"/", as for a
// step; its handler runs at least once per attempt and must be idempotent.
func (ac *ActivityContext) Dispatch(ctx context.Context, cmd command.Command) (any, error) {
	k := cmd.IdempotencyKey()
	if k != ac.Key() && !strings.HasPrefix(k, ac.Key()+"/") {
		return nil, fmt.Errorf("saga %s activity %s: command %s has idempotency key %q, want %q or %q+\"/…\"",
			ac.sc.sagaID, ac.sc.step, cmd.CommandType(), k, ac.Key(), ac.Key())
	}
	if ac.d == nil {
		return nil, fmt.Errorf("saga %s activity %s: command %s: the engine has no Config.ActivityDispatcher",
			ac.sc.sagaID, ac.sc.step, cmd.CommandType())
	}
	return ac.d.DispatchAny(ctx, cmd)
}

// DispatchAny is Dispatch; it makes an ActivityContext a command.Dispatcher, so that
// activities can use the typed command.Dispatch[R](ctx, ac, cmd).
func (ac *ActivityContext) DispatchAny(ctx context.Context, cmd command.Command) (any, error) {
	return ac.Dispatch(ctx, cmd)
}

// SagaID is the saga's id.
func (ac *ActivityContext) SagaID() string { return ac.sc.sagaID }

// Type is the saga type's name.
func (ac *ActivityContext) Type() string { return ac.sc.sagaType }

// Step is the activity step's name.
func (ac *ActivityContext) Step() string { return ac.sc.step }

// Attempt is the attempt number, from 1.
func (ac *ActivityContext) Attempt() int { return ac.sc.attempt }

// Key is the attempt's idempotency key, "saga id/step/attempt", as for a step.
func (ac *ActivityContext) Key() string { return ac.sc.Key() }

// Now is the engine clock's time when the activity started.
func (ac *ActivityContext) Now() time.Time { return ac.sc.now }

// Input decodes the saga's input into v.
func (ac *ActivityContext) Input(v any) error { return ac.sc.Input(v) }

// Output decodes the output of the completed step named step into v; ok is false when
// that step has not completed.
func (ac *ActivityContext) Output(step string, v any) (bool, error) { return ac.sc.Output(step, v) }

// Signal returns the payload of signal name if the saga has received it, without waiting.
func (ac *ActivityContext) Signal(name string) (json.RawMessage, bool) { return ac.sc.Signal(name) }

// activityResult is the outcome of an activity run not yet recorded. The runner keeps it
// across an append conflict (a signal arrived while the activity ran) so that the effect
// is recorded, not repeated, when the reloaded saga still has the same attempt scheduled.
type activityResult struct {
	index, attempt int
	out            []byte
	err            error
}

// matches reports whether r is the outcome of st's scheduled forward step.
func (r *activityResult) matches(st *sagaState) bool {
	return r != nil && st.Status == StateRunning && st.Scheduled && st.Step == r.index && st.Attempt == r.attempt
}

// runActivity runs the scheduled activity step of st outside any transaction, under the
// step's timeout, and returns its outcome (a timeout is a transient error).
func (e *Engine) runActivity(ctx context.Context, rec *store.SagaRecord, st *sagaState, step *Step) *activityResult {
	sc := e.stepContext(rec, st, step, st.Step, false)
	timeout := step.Timeout
	if timeout == 0 {
		timeout = e.cfg.Lease / 2
	}
	actx, run := e.startStep(ctx, rec.ID, rec.Type, step.Name, st.Attempt, false)
	actx, cancel := context.WithTimeout(actx, timeout)
	defer cancel()
	out, err := step.Activity(actx, &ActivityContext{sc: sc, d: e.cfg.ActivityDispatcher})
	timedOut := actx.Err() == context.DeadlineExceeded && ctx.Err() == nil
	r := &activityResult{index: st.Step, attempt: st.Attempt}
	switch {
	case err != nil && timedOut:
		r.err = command.Transient(fmt.Errorf("activity timed out after %s: %w", timeout, err))
	case err != nil:
		r.err = err
	case timedOut:
		r.err = command.Transient(fmt.Errorf("activity timed out after %s", timeout))
	default:
		r.out, r.err = toJSON(out)
		if r.err != nil {
			r.err = fmt.Errorf("encode output: %w", r.err)
		}
	}
	if errors.Is(r.err, ErrWaiting) {
		// Not %w: the step must fail, and recordFailure parks any error that is ErrWaiting.
		r.err = fmt.Errorf("activities cannot wait: %v", r.err)
	}
	run.end(r.err)
	return r
}

// checkActivities reports an activity step whose Timeout exceeds half the lease.
func checkActivities(reg *Registry, lease time.Duration) error {
	for _, d := range reg.all() {
		for _, s := range d.Steps {
			if s.Activity != nil && s.Timeout > lease/2 {
				return fmt.Errorf("saga: %s v%d: activity step %s: Timeout %s exceeds half of Config.Lease (%s)",
					d.Name, d.Version, s.Name, s.Timeout, lease)
			}
		}
	}
	return nil
}
