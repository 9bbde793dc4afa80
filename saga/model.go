package saga

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/google/uuid"
)

// State is the life-cycle state of a saga (see the diagram in doc.go).
type State string

// Saga states.
const (
	StateRunning            State = "RUNNING"
	StateWaiting            State = "WAITING"
	StateCompensating       State = "COMPENSATING"
	StateCompleted          State = "COMPLETED"
	StateFailed             State = "FAILED"
	StateCompensated        State = "COMPENSATED"
	StateCompensationFailed State = "COMPENSATION_FAILED"
	StateCancelled          State = "CANCELLED"
)

// Terminal reports whether no runner will ever touch a saga in state s again.
func (s State) Terminal() bool {
	switch s {
	case StateCompleted, StateFailed, StateCompensated, StateCompensationFailed, StateCancelled:
		return true
	}
	return false
}

// StepFunc is the body of a step or of its compensation. It reaches the world only by
// dispatching commands through sc.Dispatch with keys built from sc.Key(). Its output
// (nil allowed) is JSON-encoded into the history and readable by later steps with
// StepContext.Output. It runs inside the transaction that records its outcome.
type StepFunc func(ctx context.Context, sc *StepContext) (any, error)

// RetryPolicy bounds the attempts of a step (or compensation) whose error is transient
// (command.IsTransient, or the step's Timeout). Delays follow command.Backoff.
type RetryPolicy struct {
	MaxAttempts int           // total attempts including the first; default 3
	Initial     time.Duration // delay after the first failure; default 100ms
	Max         time.Duration // cap of the delay; default 30s
	Jitter      float64       // ± fraction; default 0.1
}

func (p *RetryPolicy) setDefaults() {
	if p.MaxAttempts == 0 {
		p.MaxAttempts = 3
	}
	if p.Initial == 0 {
		p.Initial = 100 * time.Millisecond
	}
	if p.Max == 0 {
		p.Max = 30 * time.Second
	}
	if p.Jitter == 0 {
		p.Jitter = 0.1
	}
}

// Validate reports the first invalid field.
func (p *RetryPolicy) Validate() error {
	switch {
	case p.MaxAttempts < 1 || p.MaxAttempts > 1000:
		return fmt.Errorf("Retry.MaxAttempts %d out of range [1, 1000]", p.MaxAttempts)
	case p.Initial < 0 || p.Max < p.Initial:
		return fmt.Errorf("Retry.Initial %s / Retry.Max %s: need 0 <= Initial <= Max", p.Initial, p.Max)
	case p.Jitter < 0 || p.Jitter > 1:
		return fmt.Errorf("Retry.Jitter %v out of range [0, 1]", p.Jitter)
	}
	return nil
}

// ActivityFunc is the body of an activity step: an effect on the outside world (a
// provider call, a message to a worker) that runs outside any transaction, after the
// step.scheduled event that records the intent has committed. Its output (nil allowed) is
// recorded by a transaction of its own, like a step's. It runs at least once per
// attempt: a runner that dies (or loses its claim) between the effect and the recording
// runs it again with the same attempt, so it must be idempotent by ActivityContext.Key
// or by the identity of what it acts on. Its error is a step error: transient ones are
// retried by the step's RetryPolicy, others fail the step.
type ActivityFunc func(ctx context.Context, ac *ActivityContext) (any, error)

// Step is one step of a saga type. Exactly one of Do and Activity is set: Do runs inside
// the transaction that records its outcome (and may share it with neighbouring steps,
// see "Step groups" in doc.go); Activity runs outside any transaction (see "Activities").
type Step struct {
	Name       string
	Do         StepFunc
	Activity   ActivityFunc
	Compensate StepFunc // nil: nothing to undo
	Retry      RetryPolicy
	// Timeout bounds one run of Do, Activity or Compensate; exceeding it is a transient
	// failure. Default 30s, for an activity half the engine's Config.Lease, which it must
	// not exceed (New checks), so that the runner's claim outlives it.
	Timeout time.Duration
}

// Definition is one version of a saga type.
type Definition struct {
	Name    string
	Version int
	Steps   []Step
}

// validate checks d and fills step defaults in place.
func (d *Definition) validate() error {
	if d.Name == "" {
		return errors.New("saga: Definition.Name is empty")
	}
	if d.Version < 1 {
		return fmt.Errorf("saga: %s: Definition.Version %d must be >= 1", d.Name, d.Version)
	}
	if len(d.Steps) == 0 || len(d.Steps) > 1000 {
		return fmt.Errorf("saga: %s v%d: Steps has %d entries, want 1..1000", d.Name, d.Version, len(d.Steps))
	}
	seen := map[string]bool{}
	for i := range d.Steps {
		s := &d.Steps[i]
		if s.Name == "" || (s.Do == nil) == (s.Activity == nil) {
			return fmt.Errorf("saga: %s v%d: Steps[%d]: Name and exactly one of Do and Activity are required", d.Name, d.Version, i)
		}
		if seen[s.Name] {
			return fmt.Errorf("saga: %s v%d: Steps[%d]: duplicate step name %q", d.Name, d.Version, i, s.Name)
		}
		seen[s.Name] = true
		s.Retry.setDefaults()
		if err := s.Retry.Validate(); err != nil {
			return fmt.Errorf("saga: %s v%d: step %s: %w", d.Name, d.Version, s.Name, err)
		}
		if s.Timeout == 0 && s.Activity == nil { // an activity's default depends on the lease
			s.Timeout = defaultStepTimeout
		}
		if s.Timeout < 0 {
			return fmt.Errorf("saga: %s v%d: step %s: Timeout %s is negative", d.Name, d.Version, s.Name, s.Timeout)
		}
	}
	return nil
}

// defaultStepTimeout is the Timeout of a step that sets none.
const defaultStepTimeout = 30 * time.Second

// ErrUnknownSaga: no definition is registered for a saga type/version.
var ErrUnknownSaga = errors.New("saga: unknown saga type or version")

// Registry holds saga definitions; several versions of one type live side by side so that
// sagas started on an old version finish on its steps. Safe for concurrent use.
type Registry struct {
	mu   sync.RWMutex
	defs map[string]map[int]*Definition
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{defs: map[string]map[int]*Definition{}} }

// Register adds a definition. Registering a type/version twice is an error.
func (r *Registry) Register(d Definition) error {
	d.Steps = append([]Step(nil), d.Steps...)
	if err := d.validate(); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	vs := r.defs[d.Name]
	if vs == nil {
		vs = map[int]*Definition{}
		r.defs[d.Name] = vs
	}
	if _, dup := vs[d.Version]; dup {
		return fmt.Errorf("saga: %s v%d registered twice", d.Name, d.Version)
	}
	vs[d.Version] = &d
	return nil
}

// Lookup returns the definition of name at version.
func (r *Registry) Lookup(name string, version int) (*Definition, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	d, ok := r.defs[name][version]
	if !ok {
		return nil, fmt.Errorf("%w: %s v%d", ErrUnknownSaga, name, version)
	}
	return d, nil
}

// Latest returns the highest registered version of name; new sagas start on it.
func (r *Registry) Latest(name string) (*Definition, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	vs := r.defs[name]
	if len(vs) == 0 {
		return nil, fmt.Errorf("%w: %s", ErrUnknownSaga, name)
	}
	keys := make([]int, 0, len(vs))
	for v := range vs {
		keys = append(keys, v)
	}
	sort.Ints(keys)
	return vs[keys[len(keys)-1]], nil
}

// namespace is the UUIDv5 namespace of saga ids (a fixed random UUID).
var namespace = uuid.MustParse("5b0f6b8e-8f2a-4c59-9a51-3c1d0a6e7f42")

// IDFor returns the deterministic saga id for a saga of sagaType about subject (a job id,
// a worker id…): UUIDv5(namespace, type + "\x00" + subject). Starting a saga with this id
// twice starts it once.
func IDFor(sagaType, subject string) string {
	return uuid.NewSHA1(namespace, []byte(sagaType+"\x00"+subject)).String()
}

// all returns every registered definition.
func (r *Registry) all() []*Definition {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []*Definition
	for _, vs := range r.defs {
		for _, d := range vs {
			out = append(out, d)
		}
	}
	return out
}
