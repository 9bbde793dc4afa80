package provider

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/hodei-jobs/hodei/domain"
)

// WorkerSpec is what a provider needs to start one worker.
type WorkerSpec struct {
	WorkerID        string
	OneTimePassword string // secret: environment only, never argv or logs
	ServerURL       string
	JobID           string
	Resources       domain.Resources
	Labels          map[string]string
	// Image is the container image the worker runs in ("" for providers that run no
	// images, e.g. local). Container providers bind-mount the agent into it.
	Image string
	// Pull is the image pull policy (domain.PullNever, PullIfNotPresent, PullAlways;
	// "" means if-not-present).
	Pull domain.PullPolicy
	// Owner is the node (control-plane replica) creating the worker; container
	// providers record it as a label.
	Owner string
	// CACertPEM is the PEM CA bundle the worker verifies an https:// ServerURL with
	// (empty: the system's roots). Not a secret; providers pass it as
	// HODEI_CA_CERT_PEM (or a file named by HODEI_CA_CERT).
	CACertPEM string
	// TraceParent is the W3C traceparent of the job's trace ("" when untraced);
	// providers pass it as TRACEPARENT so that the agent's registration joins the trace.
	TraceParent string
	// MaxJobs above 1 makes the worker a reused one (a warm pool's): its agent runs up
	// to MaxJobs jobs one after another, cleaning up between them.
	MaxJobs int
	// JobWait is how long an idle worker's agent waits for a job before it exits (a
	// warm worker waits for its first job, and between jobs); 0: the agent's default.
	JobWait time.Duration
	// Timeout is the job's timeout (0: none). The control plane ends a job that
	// exceeds it; a provider that can bound a worker's life by itself (kubernetes:
	// activeDeadlineSeconds) may use it plus a grace period as a backstop.
	Timeout time.Duration
}

// Environment variables of the agent for WorkerSpec.MaxJobs and JobWait.
const (
	EnvMaxJobs         = "HODEI_WORKER_MAX_JOBS"
	EnvFirstJobTimeout = "HODEI_WORKER_FIRST_JOB_TIMEOUT"
)

// AgentEnv is the agent's environment for the spec's reuse settings (MaxJobs,
// JobWait), "K=V" entries; providers add it to the worker's environment.
func (s WorkerSpec) AgentEnv() []string {
	var env []string
	if s.MaxJobs > 1 {
		env = append(env, EnvMaxJobs+"="+strconv.Itoa(s.MaxJobs))
	}
	if s.JobWait > 0 {
		env = append(env, EnvFirstJobTimeout+"="+s.JobWait.String())
	}
	return env
}

// Validate reports the first missing field.
func (s WorkerSpec) Validate() error {
	switch {
	case s.WorkerID == "":
		return errors.New("provider: WorkerSpec.WorkerID is empty")
	case s.OneTimePassword == "":
		return errors.New("provider: WorkerSpec.OneTimePassword is empty")
	case s.ServerURL == "":
		return errors.New("provider: WorkerSpec.ServerURL is empty")
	case s.MaxJobs < 0:
		return fmt.Errorf("provider: WorkerSpec.MaxJobs is negative (%d)", s.MaxJobs)
	case s.JobWait < 0:
		return fmt.Errorf("provider: WorkerSpec.JobWait is negative (%s)", s.JobWait)
	case s.Timeout < 0:
		return fmt.Errorf("provider: WorkerSpec.Timeout is negative (%s)", s.Timeout)
	case s.Resources.MemoryBytes < 0:
		return fmt.Errorf("provider: WorkerSpec.Resources.MemoryBytes is negative (%d)", s.Resources.MemoryBytes)
	case s.Resources.CPUMillis < 0:
		return fmt.Errorf("provider: WorkerSpec.Resources.CPUMillis is negative (%d)", s.Resources.CPUMillis)
	}
	return nil
}

// Status is what a provider knows about a worker's infrastructure.
type Status string

const (
	StatusRunning Status = "running" // the worker process/container is alive
	StatusExited  Status = "exited"  // it existed and has ended (not yet destroyed, or destroyed)
	StatusUnknown Status = "unknown" // the provider has no record of the worker
)

// Capabilities describes a provider's capacity, reach and what it enforces.
type Capabilities struct {
	// MaxWorkers is the number of workers the provider runs at once; Create beyond it fails.
	MaxWorkers int
	// Shared: every replica of the control plane reaches the same infrastructure (a
	// Docker engine over its API, a Kubernetes cluster), so any replica may operate any
	// of its workers. False (node-local, e.g. local processes): only the node that created
	// a worker knows it, and operations on it are routed to that node (provider/routing).
	Shared bool
	// Enforced lists the resource limits actually applied, e.g. "rlimit_as".
	Enforced []string
	// Images: the provider runs workers in container images (WorkerSpec.Image).
	Images bool
	// RequiresImage: the provider cannot run a worker whose spec has no image.
	RequiresImage bool
	// Labels are the provider's labels, matched by a job's selector.
	Labels map[string]string
}

// Provider creates and destroys workers. See the package documentation for the contract.
type Provider interface {
	Name() string
	Capabilities() Capabilities
	// Create starts the worker; idempotent per spec.WorkerID.
	Create(ctx context.Context, spec WorkerSpec) error
	// Destroy ends the worker and everything it started; idempotent.
	Destroy(ctx context.Context, workerID string) error
	// Status reports whether the worker lives.
	Status(ctx context.Context, workerID string) (Status, error)
}

// Lister is implemented by providers that can list the workers they run (for local:
// the records in its state directory), so that a sweep can find workers left behind.
type Lister interface {
	// List returns the ids of the workers the provider runs or has records of.
	List(ctx context.Context) ([]string, error)
}

// ExitNotifier is implemented by providers that learn at once when a worker's
// infrastructure ends (local: the provider reaps its child processes). The handler set
// last receives every later exit, on the provider's goroutines; it must not block.
type ExitNotifier interface {
	// OnExit sets the handler of worker exits (nil: none). err is nil for a clean exit.
	OnExit(handler func(workerID string, err error))
}

// PermanentError marks a Create failure that repeating cannot fix (an image that does
// not exist, a spec the provider cannot run): the job fails at once with its message
// instead of being provisioned again.
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent wraps err as a PermanentError (nil stays nil).
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &PermanentError{Err: err}
}

// IsPermanent reports whether err or anything it wraps is a PermanentError.
func IsPermanent(err error) bool {
	var p *PermanentError
	return errors.As(err, &p)
}

// ErrOOMKilled matches (errors.Is) the exit error an ExitNotifier reports for a worker
// whose infrastructure was killed for exceeding its memory limit (a container's
// cgroup): repeating the job with the same limit fails the same way.
var ErrOOMKilled = errors.New("out of memory")

// ErrCapacity is returned (wrapped) by Create when the provider runs MaxWorkers workers.
var ErrCapacity = errors.New("provider: at capacity")

// ErrNotRegistered is returned (wrapped) by Registry.Get for an unknown name.
var ErrNotRegistered = errors.New("provider: not registered")

// Registry maps names to providers. Build it at start-up; it is safe for concurrent use.
// The zero value is not usable: call NewRegistry.
type Registry struct {
	mu    sync.RWMutex
	byKey map[string]Provider
	first string
	order []string
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{byKey: map[string]Provider{}}
}

// Register adds p under name. The first provider registered is the default.
func (r *Registry) Register(name string, p Provider) error {
	if name == "" {
		return errors.New("provider: Register: empty name")
	}
	if p == nil {
		return fmt.Errorf("provider: Register %q: nil provider", name)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.byKey[name]; dup {
		return fmt.Errorf("provider: Register: %q already registered", name)
	}
	r.byKey[name] = p
	r.order = append(r.order, name)
	if r.first == "" {
		r.first = name
	}
	return nil
}

// Get returns the provider registered as name.
func (r *Registry) Get(name string) (Provider, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	p, ok := r.byKey[name]
	if !ok {
		return nil, fmt.Errorf("%w: %q (have %v)", ErrNotRegistered, name, r.namesLocked())
	}
	return p, nil
}

// Default returns the first registered provider, or nil if there is none.
func (r *Registry) Default() Provider {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.byKey[r.first]
}

// Ordered returns the registered names in registration order (the order selection
// tries them in).
func (r *Registry) Ordered() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return append([]string(nil), r.order...)
}

// Names returns the registered names, sorted.
func (r *Registry) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.namesLocked()
}

func (r *Registry) namesLocked() []string {
	names := make([]string, 0, len(r.byKey))
	for n := range r.byKey {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
