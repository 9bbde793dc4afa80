package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
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
	// KeepLogs keeps <workerID>.log after Destroy.
	KeepLogs bool
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
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	children map[string]*child // started by this instance
}

type child struct {
	rec  record
	done chan struct{} // closed after Wait returned
}

// record is the pid file's content.
type record struct {
	WorkerID  string    `json:"worker_id"`
	JobID     string    `json:"job_id,omitempty"`
	PID       int       `json:"pid"`
	StartTime uint64    `json:"start_time"` // /proc/<pid>/stat field 22
	StartedAt time.Time `json:"started_at"`
}

var _ provider.Provider = (*Provider)(nil)

// New builds a local provider and creates its StateDir (0700).
func New(cfg Config) (*Provider, error) {
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
	return provider.Capabilities{MaxWorkers: p.cfg.MaxWorkers, Enforced: []string{"rlimit_as"}}
}

var workerIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$`)

func checkWorkerID(id string) error {
	if !workerIDPattern.MatchString(id) {
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
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("local: create worker %s: start %s: %w", spec.WorkerID, p.cfg.Binary, err)
	}
	pid := cmd.Process.Pid
	c := &child{done: make(chan struct{})}
	go p.reap(spec.WorkerID, cmd, c.done)
	st, err := readStat(pid)
	if err != nil {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		return fmt.Errorf("local: create worker %s: read start time of pid %d: %w", spec.WorkerID, pid, err)
	}
	c.rec = record{WorkerID: spec.WorkerID, JobID: spec.JobID, PID: pid, StartTime: st.startTime, StartedAt: time.Now().UTC()}
	if err := p.writeRecord(c.rec); err != nil {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
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
	env = append(env, p.cfg.Env...)
	env = append(env,
		EnvServer+"="+spec.ServerURL,
		EnvWorkerID+"="+spec.WorkerID,
		EnvOTP+"="+spec.OneTimePassword,
	)
	if spec.Resources.MemoryBytes > 0 {
		env = append(env, EnvMemoryBytes+"="+strconv.FormatInt(spec.Resources.MemoryBytes, 10))
	}
	return env
}

// reap waits for the worker so it never lingers as a zombie.
func (p *Provider) reap(id string, cmd *exec.Cmd, done chan struct{}) {
	err := cmd.Wait()
	close(done)
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

// Destroy ends the worker's whole session: SIGTERM to its process group, SIGKILL to
// every process left in the session after the grace period (or at once if ctx ends).
// Idempotent: an unknown worker is not an error.
func (p *Provider) Destroy(ctx context.Context, workerID string) error {
	if err := checkWorkerID(workerID); err != nil {
		return err
	}
	p.mu.Lock()
	c, own := p.children[workerID]
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
	if p.recordState(rec) == procRecycled {
		p.log.WarnContext(ctx, "worker pid was recycled; nothing to signal", "worker_id", workerID, "pid", rec.PID)
	} else {
		p.terminate(ctx, rec)
	}
	if own {
		// The session is gone; the leader is reaped by reap shortly.
		select {
		case <-c.done:
		case <-time.After(2 * time.Second):
			p.log.WarnContext(ctx, "worker not reaped 2s after SIGKILL", "worker_id", workerID, "pid", rec.PID)
		}
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
	p.log.InfoContext(ctx, "worker destroyed", "worker_id", workerID, "pid", rec.PID)
	return nil
}

// terminate signals the session whose id is rec.PID (the leader may already be gone).
func (p *Provider) terminate(ctx context.Context, rec record) {
	sid := rec.PID
	if len(sessionMembers(sid)) == 0 {
		return
	}
	_ = syscall.Kill(-sid, syscall.SIGTERM) // the agent's group; it stops its job itself
	deadline := time.NewTimer(p.cfg.GracePeriod)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
wait:
	for {
		select {
		case <-tick.C:
			if len(sessionMembers(sid)) == 0 {
				return
			}
		case <-deadline.C:
			break wait
		case <-ctx.Done():
			break wait
		}
	}
	// SIGKILL until the session is empty (a member may fork while we scan).
	for i := 0; i < 50; i++ {
		members := sessionMembers(sid)
		if len(members) == 0 {
			return
		}
		if i == 0 {
			p.log.Warn("worker session still alive after grace; SIGKILL", "worker_id", rec.WorkerID,
				"pids", members, "grace", p.cfg.GracePeriod)
		}
		_ = syscall.Kill(-sid, syscall.SIGKILL)
		for _, pid := range members {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.log.Error("worker session survives SIGKILL", "worker_id", rec.WorkerID, "pids", sessionMembers(sid))
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

// procStat is the part of /proc/<pid>/stat the provider uses.
type procStat struct {
	state     byte
	pgrp      int
	session   int
	startTime uint64
}

func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	return parseStat(string(b))
}

// parseStat parses /proc/<pid>/stat; the command name (field 2) may hold spaces and
// parentheses, so fields are counted from the last ')'.
func parseStat(s string) (procStat, error) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return procStat{}, errors.New("stat: no ')'")
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); field n is f[n-3].
	if len(f) < 20 {
		return procStat{}, fmt.Errorf("stat: %d fields after comm, want >= 20", len(f))
	}
	pgrp, err1 := strconv.Atoi(f[2])
	sess, err2 := strconv.Atoi(f[3])
	start, err3 := strconv.ParseUint(f[19], 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return procStat{}, fmt.Errorf("stat: %w", err)
	}
	return procStat{state: f[0][0], pgrp: pgrp, session: sess, startTime: start}, nil
}

// sessionMembers lists the live (non-zombie) processes whose session id is sid.
func sessionMembers(sid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := readStat(pid)
		if err != nil || st.session != sid || st.state == 'Z' || st.state == 'X' {
			continue
		}
		pids = append(pids, pid)
	}
	return pids
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
