package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hodei-jobs/hodei/provider"
)

// Name is the provider's registry name.
const Name = "local"

// Environment variables the worker receives.
const (
	EnvServer      = "HODEI_SERVER"
	EnvWorkerID    = "HODEI_WORKER_ID"
	EnvOTP         = "HODEI_ONE_TIME_PASSWORD"
	EnvMemoryBytes = "HODEI_WORKER_MEMORY_BYTES"
	EnvIdleTimeout = "HODEI_WORKER_IDLE_TIMEOUT"
	EnvCACertPEM   = "HODEI_CA_CERT_PEM" // the CA bundle of an https:// server (WorkerSpec.CACertPEM)
)

// Config configures the local provider.
type Config struct {
	// Binary is the hodei executable; default os.Executable().
	Binary string
	// Args are the arguments; default ["worker"].
	Args []string
	// StateDir holds pid records and worker logs; default $TMPDIR/hodei-local-<uid>.
	StateDir string
	// MaxWorkers is the capacity; default max(2, 4·NumCPU).
	MaxWorkers int
	// GracePeriod between SIGTERM and SIGKILL in Destroy; default 5s.
	GracePeriod time.Duration
	// Env is extra KEY=VALUE environment for every worker.
	Env []string
	// IdleTimeout is how long a worker lingers after its job's result was acknowledged
	// (HODEI_WORKER_IDLE_TIMEOUT); default 1ms: it exits at once, so Destroy usually
	// finds it gone. An entry in Env overrides it.
	IdleTimeout time.Duration
	// KeepLogs keeps <workerID>.log after Destroy.
	KeepLogs bool
	// Labels are the provider's labels, matched by jobs' selectors.
	Labels map[string]string
	// Logger; default slog.Default().
	Logger *slog.Logger
}

func (c *Config) setDefaults() error {
	if c.Binary == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("local: Config.Binary empty and os.Executable failed: %w", err)
		}
		c.Binary = exe
	}
	if c.Args == nil {
		c.Args = []string{"worker"}
	}
	if c.StateDir == "" {
		c.StateDir = filepath.Join(os.TempDir(), "hodei-local-"+strconv.Itoa(os.Getuid()))
	}
	if c.MaxWorkers == 0 {
		c.MaxWorkers = max(2, 4*runtime.NumCPU())
	}
	if c.GracePeriod == 0 {
		c.GracePeriod = 5 * time.Second
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = time.Millisecond
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Validate checks the configuration (after defaults).
func (c *Config) Validate() error {
	if c.MaxWorkers < 0 {
		return fmt.Errorf("local: Config.MaxWorkers is negative (%d)", c.MaxWorkers)
	}
	if c.IdleTimeout < 0 {
		return fmt.Errorf("local: Config.IdleTimeout is negative (%s)", c.IdleTimeout)
	}
	if c.GracePeriod < 0 {
		return fmt.Errorf("local: Config.GracePeriod is negative (%s)", c.GracePeriod)
	}
	for _, kv := range c.Env {
		if !strings.Contains(kv, "=") {
			return fmt.Errorf("local: Config.Env entry %q is not KEY=VALUE", kv)
		}
	}
	if !filepath.IsAbs(c.Binary) {
		return fmt.Errorf("local: Config.Binary %q is not an absolute path", c.Binary)
	}
	return nil
}

// Provider runs workers as local processes. Safe for concurrent use.
type Provider struct {
	cfg    Config
	log    *slog.Logger
	onExit atomic.Pointer[func(workerID string, exitErr error)]

	mu       sync.Mutex
	children map[string]*child // started by this instance
}

type child struct {
	rec        record
	done       chan struct{} // closed after Wait returned
	destroying bool          // Destroy began (p.mu): no longer counts against MaxWorkers
}

// record is the pid file's content.
type record struct {
	WorkerID  string    `json:"worker_id"`
	JobID     string    `json:"job_id,omitempty"`
	PID       int       `json:"pid"`
	StartTime uint64    `json:"start_time"` // /proc/<pid>/stat field 22
	StartedAt time.Time `json:"started_at"`
}

var (
	_ provider.Provider     = (*Provider)(nil)
	_ provider.Lister       = (*Provider)(nil)
	_ provider.ExitNotifier = (*Provider)(nil)
)

// OnExit sets the handler called (from the goroutine that reaps it) when a worker this
// Provider started exits, for whatever reason: the control plane learns at once that a
// worker died instead of waiting for its heartbeats to stop. It must not block. Workers
// started by an earlier process of the server are not its children and are not
// reported.
func (p *Provider) OnExit(handler func(workerID string, exitErr error)) {
	if handler == nil {
		p.onExit.Store(nil)
		return
	}
	p.onExit.Store(&handler)
}

// New builds a local provider and creates its StateDir (0700).
func New(cfg Config) (*Provider, error) {
	if err := CheckPlatform(); err != nil {
		return nil, err
	}
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("local: create Config.StateDir: %w", err)
	}
	return &Provider{
		cfg:      cfg,
		log:      cfg.Logger.With("provider", Name),
		children: map[string]*child{},
	}, nil
}

// Name returns "local".
func (p *Provider) Name() string { return Name }

// Capabilities reports MaxWorkers and the enforced limits.
func (p *Provider) Capabilities() provider.Capabilities {
	return provider.Capabilities{MaxWorkers: p.cfg.MaxWorkers, Enforced: []string{"rlimit_as"}, Labels: maps.Clone(p.cfg.Labels)} // node-local
}

// validWorkerID reports whether id is 1-200 characters of [A-Za-z0-9._-], not starting
// with '.', '-' or '_'. (Hand-written: the equivalent regexp costs ~3 ms to compile at
// every start of every worker process, as the agent's binary links this package.)
func validWorkerID(id string) bool {
	if len(id) == 0 || len(id) > 200 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case (c == '.' || c == '_' || c == '-') && i > 0:
		default:
			return false
		}
	}
	return true
}

func checkWorkerID(id string) error {
	if !validWorkerID(id) {
		return fmt.Errorf("local: worker id %q: want 1-200 characters of [A-Za-z0-9._-], not starting with . - or _", id)
	}
	return nil
}

func (p *Provider) pidPath(id string) string { return filepath.Join(p.cfg.StateDir, id+".pid") }
func (p *Provider) logPath(id string) string { return filepath.Join(p.cfg.StateDir, id+".log") }

// Create starts `<Binary> worker` for spec. Idempotent per WorkerID: if this provider
// (or an earlier instance on the same StateDir) already created it, nothing happens.
func (p *Provider) Create(ctx context.Context, spec provider.WorkerSpec) error {
	if err := spec.Validate(); err != nil {
		return err
	}
	if err := checkWorkerID(spec.WorkerID); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.children[spec.WorkerID]; ok {
		return nil
	}
	if _, err := p.readRecord(spec.WorkerID); err == nil {
		return nil // created by an earlier instance
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if n := p.aliveLocked(); n >= p.cfg.MaxWorkers {
		return fmt.Errorf("local: create worker %s: %w: %d of MaxWorkers=%d workers alive",
			spec.WorkerID, provider.ErrCapacity, n, p.cfg.MaxWorkers)
	}

	logf, err := os.OpenFile(p.logPath(spec.WorkerID), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("local: create worker %s: open log: %w", spec.WorkerID, err)
	}
	defer logf.Close() // the child has its own descriptor
	cmd := exec.Command(p.cfg.Binary, p.cfg.Args...)
	cmd.Env = p.workerEnv(spec)
	cmd.Dir = p.cfg.StateDir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = newSessionAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("local: create worker %s: start %s: %w", spec.WorkerID, p.cfg.Binary, err)
	}
	pid := cmd.Process.Pid
	c := &child{done: make(chan struct{})}
	go p.reap(spec.WorkerID, cmd, c.done)
	st, err := readStat(pid)
	if err != nil {
		_ = kill(-pid, syscall.SIGKILL)
		return fmt.Errorf("local: create worker %s: read start time of pid %d: %w", spec.WorkerID, pid, err)
	}
	c.rec = record{WorkerID: spec.WorkerID, JobID: spec.JobID, PID: pid, StartTime: st.startTime, StartedAt: time.Now().UTC()}
	if err := p.writeRecord(c.rec); err != nil {
		_ = kill(-pid, syscall.SIGKILL)
		return fmt.Errorf("local: create worker %s: %w", spec.WorkerID, err)
	}
	p.children[spec.WorkerID] = c
	p.log.InfoContext(ctx, "worker started", "worker_id", spec.WorkerID, "job_id", spec.JobID, "pid", pid)
	return nil
}

func (p *Provider) workerEnv(spec provider.WorkerSpec) []string {
	env := make([]string, 0, 8+len(p.cfg.Env))
	for _, k := range []string{"PATH", "HOME", "TMPDIR", "LANG"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	env = append(env, EnvIdleTimeout+"="+p.cfg.IdleTimeout.String())
	env = append(env, p.cfg.Env...)
	env = append(env, spec.AgentEnv()...)
	env = append(env,
		EnvServer+"="+spec.ServerURL,
		EnvWorkerID+"="+spec.WorkerID,
		EnvOTP+"="+spec.OneTimePassword,
	)
	if spec.CACertPEM != "" {
		env = append(env, EnvCACertPEM+"="+spec.CACertPEM)
	}
	if spec.TraceParent != "" {
		env = append(env, "TRACEPARENT="+spec.TraceParent)
	}
	if spec.Resources.MemoryBytes > 0 {
		env = append(env, EnvMemoryBytes+"="+strconv.FormatInt(spec.Resources.MemoryBytes, 10))
	}
	return env
}

// reap waits for the worker so it never lingers as a zombie.
func (p *Provider) reap(id string, cmd *exec.Cmd, done chan struct{}) {
	err := cmd.Wait()
	close(done)
	if h := p.onExit.Load(); h != nil {
		(*h)(id, err)
	}
	if err != nil {
		p.log.Warn("worker exited", "worker_id", id, "pid", cmd.Process.Pid, "status", err.Error(),
			"log_tail", tail(p.logPath(id), 2048))
		return
	}
	p.log.Info("worker exited", "worker_id", id, "pid", cmd.Process.Pid, "status", "exit status 0")
}

// aliveLocked counts live workers: own children not yet exited plus live records of
// earlier instances.
func (p *Provider) aliveLocked() int {
	n := 0
	for _, c := range p.children {
		if c.destroying {
			continue
		}
		select {
		case <-c.done:
		default:
			n++
		}
	}
	entries, err := os.ReadDir(p.cfg.StateDir)
	if err != nil {
		return n
	}
	for _, e := range entries {
		id, ok := strings.CutSuffix(e.Name(), ".pid")
		if !ok {
			continue
		}
		if _, own := p.children[id]; own {
			continue
		}
		if rec, err := p.readRecord(id); err == nil && p.recordState(rec) == procAlive {
			n++
		}
	}
	return n
}

// Status reports running, exited or unknown.
func (p *Provider) Status(ctx context.Context, workerID string) (provider.Status, error) {
	if err := checkWorkerID(workerID); err != nil {
		return provider.StatusUnknown, err
	}
	p.mu.Lock()
	c, own := p.children[workerID]
	p.mu.Unlock()
	if own {
		select {
		case <-c.done:
			return provider.StatusExited, nil
		default:
			return provider.StatusRunning, nil
		}
	}
	rec, err := p.readRecord(workerID)
	if errors.Is(err, os.ErrNotExist) {
		return provider.StatusUnknown, nil
	}
	if err != nil {
		return provider.StatusUnknown, err
	}
	if p.recordState(rec) == procAlive {
		return provider.StatusRunning, nil
	}
	return provider.StatusExited, nil
}

// Destroy ends the worker's whole session. Idempotent: an unknown worker is not an
// error. For a worker this instance started (the common case):
//
//  1. if its agent still runs, SIGTERM to its process group, then wait for the agent to
//     exit (the provider is its parent and Waits for it: no polling) for at most
//     Config.GracePeriod (or until ctx ends);
//  2. one scan of /proc for processes left in the session (a job that escaped its
//     group, or an agent that did not stop its job); they get SIGKILL at once, and so
//     does the session if the agent outlived the grace period.
//
// An ephemeral agent exits by itself once its result is acknowledged, so step 1 usually
// finds it gone and Destroy costs one /proc scan. A worker of an earlier instance (pid
// record only) is watched through its leader's /proc/<pid>/stat every 50ms instead.
// A worker being destroyed no longer counts against MaxWorkers.
func (p *Provider) Destroy(ctx context.Context, workerID string) error {
	if err := checkWorkerID(workerID); err != nil {
		return err
	}
	p.mu.Lock()
	c, own := p.children[workerID]
	if own {
		c.destroying = true
	}
	p.mu.Unlock()
	var rec record
	if own {
		rec = c.rec
	} else {
		r, err := p.readRecord(workerID)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		rec = r
	}
	switch {
	case own:
		p.terminateChild(ctx, c)
	case p.recordState(rec) == procRecycled:
		p.log.WarnContext(ctx, "worker pid was recycled; nothing to signal", "worker_id", workerID, "pid", rec.PID)
	default:
		p.terminate(ctx, rec)
	}
	p.mu.Lock()
	delete(p.children, workerID)
	p.mu.Unlock()
	if err := os.Remove(p.pidPath(workerID)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("local: destroy worker %s: %w", workerID, err)
	}
	if !p.cfg.KeepLogs {
		_ = os.Remove(p.logPath(workerID))
	}
	p.log.DebugContext(ctx, "worker destroyed", "worker_id", workerID, "pid", rec.PID)
	return nil
}

// terminateChild ends the session of a worker this instance started: it waits for the
// leader through reap (c.done), so the common case needs a single /proc scan.
func (p *Provider) terminateChild(ctx context.Context, c *child) {
	sid := c.rec.PID
	select {
	case <-c.done:
	default:
		_ = kill(-sid, syscall.SIGTERM) // the agent's group; it stops its job itself
		grace := time.NewTimer(p.cfg.GracePeriod)
		select {
		case <-c.done:
		case <-grace.C:
		case <-ctx.Done():
		}
		grace.Stop()
	}
	select {
	case <-c.done:
		// The agent is gone; anything left in its session escaped the agent's cleanup.
		if members := leftInSession(c.rec); len(members) > 0 {
			p.log.Warn("processes left in a worker's session after its agent exited; SIGKILL",
				"worker_id", c.rec.WorkerID, "pids", members)
			p.killSession(c.rec)
		}
	default:
		p.log.Warn("worker session still alive after grace; SIGKILL", "worker_id", c.rec.WorkerID,
			"pid", sid, "grace", p.cfg.GracePeriod)
		p.killSession(c.rec)
		select {
		case <-c.done:
		case <-time.After(2 * time.Second):
			p.log.Warn("worker not reaped 2s after SIGKILL", "worker_id", c.rec.WorkerID, "pid", sid)
		}
	}
}

// terminate signals the session whose id is rec.PID, for a worker of an earlier
// instance (the leader may already be gone): SIGTERM to the leader's group, then its
// leader is watched (one stat read per 50ms) until it ends or the grace period passes,
// then every process left in the session gets SIGKILL.
func (p *Provider) terminate(ctx context.Context, rec record) {
	sid := rec.PID
	if p.recordState(rec) == procAlive {
		_ = kill(-sid, syscall.SIGTERM)
		deadline := time.NewTimer(p.cfg.GracePeriod)
		defer deadline.Stop()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
	wait:
		for {
			select {
			case <-tick.C:
				if p.recordState(rec) != procAlive {
					break wait
				}
			case <-deadline.C:
				break wait
			case <-ctx.Done():
				break wait
			}
		}
	}
	p.killSession(rec)
}

// killSession SIGKILLs the session's group and every member until none is left (a
// member may fork while we scan).
func (p *Provider) killSession(rec record) {
	sid := rec.PID
	for i := 0; i < 50; i++ {
		members := sessionMembers(sid)
		if len(members) == 0 {
			return
		}
		_ = kill(-sid, syscall.SIGKILL)
		for _, pid := range members {
			_ = kill(pid, syscall.SIGKILL)
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.log.Error("worker session survives SIGKILL", "worker_id", rec.WorkerID, "pids", sessionMembers(sid))
}

// List returns the ids of the workers this provider (or an earlier instance on the same
// StateDir) created and has not destroyed yet, alive or not: the control plane
// destroys those it no longer knows (a Destroy lost in a crash).
func (p *Provider) List(ctx context.Context) ([]string, error) {
	entries, err := os.ReadDir(p.cfg.StateDir)
	if err != nil {
		return nil, fmt.Errorf("local: list workers: %w", err)
	}
	var ids []string
	for _, e := range entries {
		if id, ok := strings.CutSuffix(e.Name(), ".pid"); ok && checkWorkerID(id) == nil {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

type procState int

const (
	procGone     procState = iota // no such process (or a zombie)
	procAlive                     // the recorded process
	procRecycled                  // another process has the pid
)

func (p *Provider) recordState(rec record) procState {
	st, err := readStat(rec.PID)
	if err != nil {
		return procGone
	}
	if st.startTime != rec.StartTime {
		return procRecycled
	}
	if st.state == 'Z' || st.state == 'X' {
		return procGone
	}
	return procAlive
}

func (p *Provider) readRecord(id string) (record, error) {
	b, err := os.ReadFile(p.pidPath(id))
	if err != nil {
		return record{}, err
	}
	var rec record
	if err := json.Unmarshal(b, &rec); err != nil {
		return record{}, fmt.Errorf("local: pid file %s: %w", p.pidPath(id), err)
	}
	if rec.PID <= 1 {
		return record{}, fmt.Errorf("local: pid file %s: invalid pid %d", p.pidPath(id), rec.PID)
	}
	return rec, nil
}

func (p *Provider) writeRecord(rec record) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(p.cfg.StateDir, rec.WorkerID+".pid.tmp*")
	if err != nil {
		return fmt.Errorf("write pid file: %w", err)
	}
	_, werr := tmp.Write(b)
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write pid file: %w", err)
	}
	if err := os.Rename(tmp.Name(), p.pidPath(rec.WorkerID)); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write pid file: %w", err)
	}
	return nil
}

func tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > n {
		_, _ = f.Seek(-n, io.SeekEnd)
	}
	b, _ := io.ReadAll(io.LimitReader(f, n))
	return string(b)
}
