package agent

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/timestamppb"

	hodeiv1 "github.com/hodei-jobs/hodei/gen/hodei/v1"
)

// Executor defaults.
const (
	DefaultMaxBatchLines = 100
	DefaultMaxBatchDelay = 250 * time.Millisecond
	DefaultMaxLineBytes  = 64 << 10
	// maxBatchBytes also ends a batch, so a batch of long lines stays ~1 MiB.
	maxBatchBytes       = 1 << 20
	defaultDrainTimeout = time.Second
	defaultInterpreter  = "/bin/sh"
	defaultPath         = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// execOptions tune the executor; zero values take the defaults above.
type execOptions struct {
	MaxBatchLines int           // flush a log batch at this many lines
	MaxBatchDelay time.Duration // or this long after its first line
	MaxLineBytes  int           // longer lines are split (at a rune boundary)
	// DrainTimeout: after the job's main process exited, how long to wait for its
	// stdout/stderr to reach EOF before killing what is left of its process group.
	DrainTimeout time.Duration
	// MemoryLimitBytes applies RLIMIT_AS to the job when its spec asks for no memory.
	MemoryLimitBytes int64
	// CgroupMemory: memory is the container cgroup's business (see Config.CgroupMemory).
	CgroupMemory bool
	// CgroupDir is where the agent reads its memory cgroup's files; default
	// /sys/fs/cgroup (tests point it elsewhere).
	CgroupDir string
	// TempDir is where the per-job scratch directory is created; default os.TempDir().
	TempDir string
	// BaseEnv is the environment every job starts from; default PATH and HOME of the
	// agent (or a standard PATH and /).
	BaseEnv map[string]string
	// Secrets are the job's secret values by variable (RunJob.secret_env): set in the
	// job's environment only, and masked in its output before a line is batched.
	Secrets map[string]string
	// JobTmpDir sets TMPDIR to the job's own directory (removed when the job ends)
	// unless the job's env sets it: a reused worker's jobs leave no temporary files.
	JobTmpDir bool
}

func (o *execOptions) setDefaults() {
	if o.MaxBatchLines <= 0 {
		o.MaxBatchLines = DefaultMaxBatchLines
	}
	if o.MaxBatchDelay <= 0 {
		o.MaxBatchDelay = DefaultMaxBatchDelay
	}
	if o.MaxLineBytes <= 0 {
		o.MaxLineBytes = DefaultMaxLineBytes
	}
	if o.DrainTimeout <= 0 {
		o.DrainTimeout = defaultDrainTimeout
	}
	if o.TempDir == "" {
		o.TempDir = os.TempDir()
	}
	if o.CgroupDir == "" {
		o.CgroupDir = "/sys/fs/cgroup"
	}
	if o.BaseEnv == nil {
		o.BaseEnv = map[string]string{"PATH": defaultPath, "HOME": "/"}
		if v := os.Getenv("PATH"); v != "" {
			o.BaseEnv["PATH"] = v
		}
		if v := os.Getenv("HOME"); v != "" {
			o.BaseEnv["HOME"] = v
		}
	}
}

// execResult is how a job ended.
type execResult struct {
	ExitCode   int
	Err        string // set for a start failure or a signal
	Cancelled  bool
	StartedAt  time.Time
	FinishedAt time.Time
}

// logSink receives batches of log lines in seq order, one call at a time. It may block
// (back-pressure: the job then blocks writing its output).
type logSink func(lines []*hodeiv1.LogLine)

// jobProcess is one running job: its main process leads a process group of its own.
type jobProcess struct {
	id        string
	cmd       *exec.Cmd
	pid       int
	startedAt time.Time
	dir       string // private scratch dir (script, default working dir); removed at the end
	done      chan struct{}
	result    execResult // valid after done

	mu        sync.Mutex
	reaped    bool // the leader was reaped: its pid (= pgid) may be reused, never signal it
	cancelled bool
	killTimer *time.Timer

	cgroupDir string // set in cgroup-memory mode: OOM kills are read from here
	oomBefore int64  // the cgroup's oom_kill count when the job started
}

// startJob starts spec's command or script. A non-nil error means nothing runs (the
// caller reports it as the job's result, see startFailure).
func startJob(jobID string, spec *hodeiv1.JobSpec, opts execOptions, sink logSink) (*jobProcess, error) {
	opts.setDefaults()
	if err := canRunJobs(); err != nil {
		return nil, err
	}
	if spec == nil {
		return nil, errors.New("job spec is missing")
	}
	dir, err := os.MkdirTemp(opts.TempDir, "hodei-job-")
	if err != nil {
		return nil, fmt.Errorf("create job directory: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(dir)
		}
	}()
	base := opts.BaseEnv
	if opts.JobTmpDir {
		base = make(map[string]string, len(opts.BaseEnv)+1)
		for k, v := range opts.BaseEnv {
			base[k] = v
		}
		base["TMPDIR"] = dir
	}
	env := mergeEnv(base, spec.GetEnv(), jobID)
	var secretValues []string
	if len(opts.Secrets) > 0 {
		m := envMap(env)
		for k, v := range opts.Secrets {
			m[k] = v
			secretValues = append(secretValues, v)
		}
		env = mergeEnv(nil, m, jobID)
	}

	var argv []string
	switch {
	case spec.GetScript() != nil:
		interp := spec.GetScript().GetInterpreter()
		if interp == "" {
			interp = defaultInterpreter
		}
		path, err := writeScript(dir, spec.GetScript().GetContent())
		if err != nil {
			return nil, err
		}
		argv = []string{interp, path}
	case len(spec.GetCommand()) > 0:
		argv = spec.GetCommand()
	default:
		return nil, errors.New("job spec has neither command nor script")
	}
	bin, err := lookPath(argv[0], envValue(env, "PATH"))
	if err != nil {
		return nil, err
	}

	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("stdout pipe: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return nil, fmt.Errorf("stderr pipe: %w", err)
	}
	cmd := &exec.Cmd{
		Path:        bin,
		Args:        argv,
		Env:         env,
		Dir:         spec.GetWorkingDir(),
		Stdout:      outW,
		Stderr:      errW,
		SysProcAttr: groupLeaderAttr(),
	}
	if cmd.Dir == "" {
		cmd.Dir = dir
	}
	err = cmd.Start()
	outW.Close() // the child holds its own copies
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return nil, fmt.Errorf("start %s: %w", argv[0], err)
	}
	p := &jobProcess{id: jobID, cmd: cmd, pid: cmd.Process.Pid, startedAt: time.Now(), dir: dir, done: make(chan struct{})}
	if opts.CgroupMemory {
		p.cgroupDir = opts.CgroupDir
		p.oomBefore = oomKills(opts.CgroupDir)
		// The kernel's OOM killer picks the job before the agent (raising a score
		// needs no privilege).
		_ = os.WriteFile("/proc/"+strconv.Itoa(p.pid)+"/oom_score_adj", []byte("1000"), 0)
	}
	mem := spec.GetResources().GetMemoryBytes()
	if mem <= 0 {
		mem = opts.MemoryLimitBytes
	}
	if mem > 0 && !opts.CgroupMemory {
		if err := limitAddressSpace(p.pid, mem); err != nil {
			killGroup(p.pid, syscall.SIGKILL)
			_ = cmd.Wait()
			outR.Close()
			errR.Close()
			return nil, fmt.Errorf("apply memory limit RLIMIT_AS=%d: %w", mem, err)
		}
	}
	ok = true

	b := newBatcher(jobID, opts.MaxBatchLines, opts.MaxBatchDelay, sink)
	var readers sync.WaitGroup
	readers.Add(2)
	go func() {
		defer readers.Done()
		readLines(newMaskReader(outR, secretValues), opts.MaxLineBytes, b.adder(hodeiv1.LogStream_LOG_STREAM_STDOUT))
	}()
	go func() {
		defer readers.Done()
		readLines(newMaskReader(errR, secretValues), opts.MaxLineBytes, b.adder(hodeiv1.LogStream_LOG_STREAM_STDERR))
	}()
	go p.wait(&readers, []*os.File{outR, errR}, b, opts.DrainTimeout)
	return p, nil
}

// wait observes the leader's exit without reaping it (so its pid, the group id, stays
// reserved), lets the output drain, kills what is left of the group, then reaps.
func (p *jobProcess) wait(readers *sync.WaitGroup, pipes []*os.File, b *batcher, drain time.Duration) {
	waitExitedNoReap(p.pid)
	drained := make(chan struct{})
	go func() { readers.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(drain):
	}
	// The job is over: nothing of it may outlive it (background children holding
	// the pipes, daemons in its group).
	p.signalGroup(syscall.SIGKILL)
	select {
	case <-drained:
	case <-time.After(drain):
		// Something outside the group (setsid) still holds the pipes: stop reading.
		for _, f := range pipes {
			f.Close()
		}
		<-drained
	}
	for _, f := range pipes {
		f.Close()
	}

	p.mu.Lock()
	p.reaped = true
	if p.killTimer != nil {
		p.killTimer.Stop()
	}
	cancelled := p.cancelled
	p.mu.Unlock()
	waitErr := p.cmd.Wait()
	finished := time.Now()
	b.close()
	os.RemoveAll(p.dir)

	r := execResult{Cancelled: cancelled, StartedAt: p.startedAt, FinishedAt: finished}
	var exitErr *exec.ExitError
	switch {
	case waitErr == nil:
	case errors.As(waitErr, &exitErr):
		ws, _ := exitErr.Sys().(syscall.WaitStatus)
		if ws.Signaled() {
			r.ExitCode = 128 + int(ws.Signal())
			r.Err = "terminated by signal " + signalName(ws.Signal())
			if ws.Signal() == syscall.SIGKILL && p.cgroupDir != "" && oomKills(p.cgroupDir) > p.oomBefore {
				r.Err = "out of memory" + limitSuffix(p.cgroupDir)
			}
		} else {
			r.ExitCode = ws.ExitStatus()
		}
	default:
		r.ExitCode = -1
		r.Err = "wait: " + waitErr.Error()
	}
	p.result = r
	close(p.done)
}

// signalGroup signals the job's process group while the leader is not yet reaped.
func (p *jobProcess) signalGroup(sig syscall.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.reaped {
		killGroup(p.pid, sig)
	}
}

// Cancel sends SIGTERM to the job's process group and SIGKILL after grace. Idempotent;
// a later call with a shorter grace brings the SIGKILL forward.
func (p *jobProcess) Cancel(grace time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.reaped {
		return
	}
	first := !p.cancelled
	p.cancelled = true
	if first {
		killGroup(p.pid, syscall.SIGTERM)
	}
	if grace <= 0 {
		killGroup(p.pid, syscall.SIGKILL)
		return
	}
	if p.killTimer != nil {
		p.killTimer.Stop()
	}
	p.killTimer = time.AfterFunc(grace, func() { p.signalGroup(syscall.SIGKILL) })
}

// Done is closed when the job ended, its output was flushed and it was reaped.
func (p *jobProcess) Done() <-chan struct{} { return p.done }

// Result is valid after Done.
func (p *jobProcess) Result() execResult { return p.result }

// startFailure is the result reported for a job that could not start: a shell-like
// exit code (127 not found, 126 not executable) and the error text.
func startFailure(err error, at time.Time) execResult {
	code := 127
	if errors.Is(err, os.ErrPermission) || errors.Is(err, syscall.ENOEXEC) {
		code = 126
	}
	return execResult{ExitCode: code, Err: err.Error(), StartedAt: at, FinishedAt: at}
}

// writeScript writes content to a new 0700 file in dir (itself private) and returns its path.
func writeScript(dir, content string) (string, error) {
	f, err := os.CreateTemp(dir, "script-")
	if err != nil {
		return "", fmt.Errorf("write script: %w", err)
	}
	_, werr := f.WriteString(content)
	cerr := f.Close()
	if err := errors.Join(werr, cerr, os.Chmod(f.Name(), 0o700)); err != nil {
		return "", fmt.Errorf("write script: %w", err)
	}
	return f.Name(), nil
}

// mergeEnv lays the job's env over the base env and adds HODEI_JOB_ID; the result is
// sorted for determinism.
func mergeEnv(base, job map[string]string, jobID string) []string {
	m := make(map[string]string, len(base)+len(job)+1)
	for k, v := range base {
		m[k] = v
	}
	m["HODEI_JOB_ID"] = jobID
	for k, v := range job {
		m[k] = v
	}
	env := make([]string, 0, len(m))
	for k, v := range m {
		env = append(env, k+"="+v)
	}
	sort.Strings(env)
	return env
}

// envMap is the map form of env ("K=V" entries).
func envMap(env []string) map[string]string {
	m := make(map[string]string, len(env))
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return m
}

func envValue(env []string, key string) string {
	for _, kv := range env {
		if k, v, _ := strings.Cut(kv, "="); k == key {
			return v
		}
	}
	return ""
}

// lookPath resolves name like a shell with the job's PATH (not the agent's).
func lookPath(name, path string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	if path == "" {
		path = defaultPath
	}
	for _, d := range filepath.SplitList(path) {
		if d == "" {
			d = "."
		}
		p := filepath.Join(d, name)
		fi, err := os.Stat(p)
		if err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("start %s: executable file not found in PATH %q: %w", name, path, os.ErrNotExist)
}

// readLines calls emit for every line of r (without the newline and a trailing CR),
// splitting lines longer than max bytes at a rune boundary. Invalid UTF-8 is replaced
// (log lines are protobuf strings).
func readLines(r io.Reader, max int, emit func(string)) {
	br := bufio.NewReaderSize(r, max)
	var carry []byte
	for {
		chunk, err := br.ReadSlice('\n')
		data := chunk
		if len(carry) > 0 {
			data = append(carry, chunk...)
		}
		switch {
		case err == nil:
			line := data[:len(data)-1]
			if n := len(line); n > 0 && line[n-1] == '\r' {
				line = line[:n-1]
			}
			emit(toLine(line))
			carry = carry[:0]
		case errors.Is(err, bufio.ErrBufferFull):
			for len(data) >= max {
				cut := cutPoint(data, max)
				emit(toLine(data[:cut]))
				data = data[cut:]
			}
			carry = append(carry[:0:0], data...)
		default: // EOF or closed pipe
			if len(data) > 0 {
				emit(toLine(data))
			}
			return
		}
	}
}

// cutPoint returns where to split b (len(b) >= max) so that b[:cut] does not end in
// the first bytes of a rune.
func cutPoint(b []byte, max int) int {
	if len(b) < max {
		return len(b)
	}
	for i := max - 1; i > 0 && i >= max-utf8.UTFMax; i-- {
		if utf8.RuneStart(b[i]) {
			if utf8.FullRune(b[i:max]) {
				return max
			}
			return i
		}
	}
	return max
}

func toLine(b []byte) string { return strings.ToValidUTF8(string(b), "\uFFFD") }

// batcher numbers lines (seq from 1, in arrival order across both streams) and hands
// them to the sink in batches of at most maxLines, at most maxDelay after a batch's
// first line.
type batcher struct {
	jobID    string
	maxLines int
	maxDelay time.Duration
	sink     logSink

	mu    sync.Mutex // held while calling sink: batches leave in seq order
	seq   int64
	buf   []*hodeiv1.LogLine
	size  int // bytes of line text in buf
	timer *time.Timer
	gen   int // batch generation, so a stale timer does not flush a newer batch early
}

func newBatcher(jobID string, maxLines int, maxDelay time.Duration, sink logSink) *batcher {
	return &batcher{jobID: jobID, maxLines: maxLines, maxDelay: maxDelay, sink: sink}
}

func (b *batcher) adder(stream hodeiv1.LogStream) func(string) {
	return func(line string) { b.add(stream, line) }
}

func (b *batcher) add(stream hodeiv1.LogStream, line string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.seq++
	b.buf = append(b.buf, &hodeiv1.LogLine{Seq: b.seq, Stream: stream, Line: line, Time: timestamppb.Now()})
	b.size += len(line)
	if len(b.buf) >= b.maxLines || b.size >= maxBatchBytes {
		b.flushLocked()
		return
	}
	if len(b.buf) == 1 {
		gen := b.gen
		b.timer = time.AfterFunc(b.maxDelay, func() {
			b.mu.Lock()
			defer b.mu.Unlock()
			if b.gen == gen {
				b.flushLocked()
			}
		})
	}
}

func (b *batcher) flushLocked() {
	if b.timer != nil {
		b.timer.Stop()
		b.timer = nil
	}
	b.gen++
	if len(b.buf) == 0 {
		return
	}
	lines := b.buf
	b.buf, b.size = nil, 0
	b.sink(lines)
}

// close flushes what is left; no line is added after it.
func (b *batcher) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.flushLocked()
}

// oomKills returns the oom_kill counter of the memory cgroup mounted at dir (cgroup v2:
// memory.events; v1: memory/memory.oom_control), or 0 if there is none.
func oomKills(dir string) int64 {
	for _, f := range []string{"memory.events", "memory/memory.oom_control"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "oom_kill "); ok {
				n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				return n
			}
		}
	}
	return 0
}

// limitSuffix is " (limit 64Mi)" from the memory cgroup's limit, or "" if unlimited or
// unknown.
func limitSuffix(dir string) string {
	for _, f := range []string{"memory.max", "memory/memory.limit_in_bytes"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil || n <= 0 || n >= 1<<62 {
			return ""
		}
		return " (limit " + formatBytes(n) + ")"
	}
	return ""
}

// formatBytes writes n with the largest binary suffix dividing it (domain.FormatMemory's
// rule; the agent does not import domain).
func formatBytes(n int64) string {
	for _, u := range []struct {
		s string
		m int64
	}{{"Ti", 1 << 40}, {"Gi", 1 << 30}, {"Mi", 1 << 20}, {"Ki", 1 << 10}} {
		if n%u.m == 0 {
			return strconv.FormatInt(n/u.m, 10) + u.s
		}
	}
	return strconv.FormatInt(n, 10)
}
