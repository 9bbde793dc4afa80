package agent

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	hodeiv1 "github.com/hodei-jobs/hodei/gen/hodei/v1"
)

// collector is a logSink that records batches.
type collector struct {
	mu      sync.Mutex
	batches [][]*hodeiv1.LogLine
	times   []time.Time
}

func (c *collector) sink(lines []*hodeiv1.LogLine) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.batches = append(c.batches, lines)
	c.times = append(c.times, time.Now())
}

func (c *collector) lines(stream hodeiv1.LogStream) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, b := range c.batches {
		for _, l := range b {
			if stream == hodeiv1.LogStream_LOG_STREAM_UNSPECIFIED || l.Stream == stream {
				out = append(out, l.Line)
			}
		}
	}
	return out
}

func (c *collector) all() []*hodeiv1.LogLine {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*hodeiv1.LogLine
	for _, b := range c.batches {
		out = append(out, b...)
	}
	return out
}

const stdout, stderr = hodeiv1.LogStream_LOG_STREAM_STDOUT, hodeiv1.LogStream_LOG_STREAM_STDERR

func cmdSpec(argv ...string) *hodeiv1.JobSpec { return &hodeiv1.JobSpec{Command: argv} }

func run(t *testing.T, spec *hodeiv1.JobSpec, opts execOptions) (execResult, *collector) {
	t.Helper()
	c := &collector{}
	p, err := startJob("job-1", spec, opts, c.sink)
	if err != nil {
		t.Fatalf("startJob: %v", err)
	}
	select {
	case <-p.Done():
	case <-time.After(20 * time.Second):
		p.Cancel(0)
		t.Fatal("job did not finish in 20s")
	}
	return p.Result(), c
}

func TestExecExitCodes(t *testing.T) {
	for _, tc := range []struct {
		name string
		argv []string
		code int
		err  string
	}{
		{"true", []string{"true"}, 0, ""},
		{"exit3", []string{"sh", "-c", "exit 3"}, 3, ""},
		{"signal", []string{"sh", "-c", "kill -TERM $$"}, 128 + 15, "SIGTERM"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := run(t, cmdSpec(tc.argv...), execOptions{})
			if r.ExitCode != tc.code || !strings.Contains(r.Err, tc.err) || (tc.err == "") != (r.Err == "") {
				t.Fatalf("result = %+v, want exit %d, error containing %q", r, tc.code, tc.err)
			}
			if r.Cancelled || r.StartedAt.IsZero() || r.FinishedAt.Before(r.StartedAt) {
				t.Fatalf("result = %+v", r)
			}
		})
	}
}

func TestExecStartFailure(t *testing.T) {
	_, err := startJob("j", cmdSpec("no-such-command-hodei"), execOptions{}, func([]*hodeiv1.LogLine) {})
	if err == nil || !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "no-such-command-hodei") {
		t.Fatalf("err = %v", err)
	}
	if r := startFailure(err, time.Now()); r.ExitCode != 127 || r.Err == "" {
		t.Fatalf("startFailure = %+v", r)
	}
	if _, err := startJob("j", &hodeiv1.JobSpec{}, execOptions{}, nil); err == nil {
		t.Fatal("empty spec started")
	}
}

func TestExecStreamsInOrder(t *testing.T) {
	const n = 300
	r, c := run(t, cmdSpec("sh", "-c", `i=1; while [ $i -le 300 ]; do echo out$i; echo err$i >&2; i=$((i+1)); done`), execOptions{})
	if r.ExitCode != 0 {
		t.Fatalf("result %+v", r)
	}
	for _, s := range []struct {
		stream hodeiv1.LogStream
		prefix string
	}{{stdout, "out"}, {stderr, "err"}} {
		got := c.lines(s.stream)
		if len(got) != n {
			t.Fatalf("%s: %d lines, want %d", s.prefix, len(got), n)
		}
		for i, l := range got {
			if want := s.prefix + strconv.Itoa(i+1); l != want {
				t.Fatalf("%s line %d = %q, want %q", s.prefix, i, l, want)
			}
		}
	}
	for i, l := range c.all() {
		if l.Seq != int64(i+1) {
			t.Fatalf("line %d has seq %d, want %d (contiguous from 1)", i, l.Seq, i+1)
		}
	}
	for _, b := range c.batches {
		if len(b) > DefaultMaxBatchLines {
			t.Fatalf("batch of %d lines > %d", len(b), DefaultMaxBatchLines)
		}
	}
}

func TestExecBatchingLimits(t *testing.T) {
	// Count limit: 250 lines written at once leave as 100, 100, 50.
	_, c := run(t, cmdSpec("sh", "-c", `i=0; while [ $i -lt 250 ]; do echo $i; i=$((i+1)); done`), execOptions{MaxBatchDelay: 5 * time.Second})
	var sizes []int
	for _, b := range c.batches {
		sizes = append(sizes, len(b))
	}
	if len(sizes) != 3 || sizes[0] != 100 || sizes[1] != 100 || sizes[2] != 50 {
		t.Fatalf("batch sizes %v, want [100 100 50]", sizes)
	}

	// Byte limit: 40 lines of 64 KiB leave in batches of 16 (1 MiB).
	_, c = run(t, cmdSpec("sh", "-c", `head -c 2621440 /dev/zero | tr '\0' x`), execOptions{MaxBatchDelay: 5 * time.Second})
	sizes = nil
	for _, b := range c.batches {
		sizes = append(sizes, len(b))
	}
	if len(sizes) != 3 || sizes[0] != 16 || sizes[1] != 16 || sizes[2] != 8 {
		t.Fatalf("batch sizes %v, want [16 16 8]", sizes)
	}

	// Time limit: a lone line leaves ~250 ms after it was written, while the job runs.
	start := time.Now()
	_, c = run(t, cmdSpec("sh", "-c", `echo first; sleep 1.5; echo second`), execOptions{})
	if len(c.batches) != 2 {
		t.Fatalf("%d batches, want 2", len(c.batches))
	}
	if d := c.times[0].Sub(start); d < 200*time.Millisecond || d > 1200*time.Millisecond {
		t.Fatalf("first batch after %s, want ~250ms (before the job ended)", d)
	}
}

func TestExecLongLinesSplit(t *testing.T) {
	_, c := run(t, cmdSpec("sh", "-c", `head -c 200000 /dev/zero | tr '\0' x; echo; echo short`), execOptions{})
	got := c.lines(stdout)
	want := []int{65536, 65536, 65536, 200000 - 3*65536, 5}
	if len(got) != len(want) {
		t.Fatalf("%d lines, want %d", len(got), len(want))
	}
	for i, l := range got {
		if len(l) != want[i] {
			t.Fatalf("line %d has %d bytes, want %d", i, len(l), want[i])
		}
	}
}

func TestReadLinesRuneBoundary(t *testing.T) {
	var got []string
	a15 := strings.Repeat("a", 15)
	// Limit 16 bytes: the 16th byte is the first of é, so the cut comes before it.
	readLines(strings.NewReader(a15+"ébb\nxy\r\nlast"), 16, func(s string) { got = append(got, s) })
	if strings.Join(got, "|") != a15+"|ébb|xy|last" {
		t.Fatalf("got %q", got)
	}
	got = nil
	long := strings.Repeat("é", 40) + "z"
	readLines(strings.NewReader(long), 16, func(s string) { got = append(got, s) })
	for _, l := range got {
		if len(l) > 16 || strings.ContainsRune(l, '\uFFFD') {
			t.Fatalf("bad split: %q", got)
		}
	}
	if strings.Join(got, "") != long {
		t.Fatalf("lost bytes: %q", got)
	}
	if cutPoint([]byte("abcé"), 4) != 3 || cutPoint([]byte("abé"), 4) != 4 || cutPoint([]byte("abcd"), 4) != 4 {
		t.Fatal("cutPoint")
	}
	got = nil
	readLines(strings.NewReader("bad\xffbyte\n"), 16, func(s string) { got = append(got, s) })
	if got[0] != "bad\uFFFDbyte" {
		t.Fatalf("invalid UTF-8 not replaced: %q", got)
	}
}

func TestExecScriptFile(t *testing.T) {
	spec := &hodeiv1.JobSpec{Script: &hodeiv1.Script{Content: "stat -c %a \"$0\"\necho \"$0\"\nstat -c %a \"$(dirname \"$0\")\"\n"}}
	r, c := run(t, spec, execOptions{TempDir: t.TempDir()})
	got := c.lines(stdout)
	if r.ExitCode != 0 || len(got) != 3 {
		t.Fatalf("result %+v, lines %q", r, got)
	}
	if got[0] != "700" || got[2] != "700" {
		t.Fatalf("script mode %s, its directory %s; want 700 and 700", got[0], got[2])
	}
	if _, err := os.Stat(got[1]); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("script %s still exists after the job: %v", got[1], err)
	}
	if _, err := os.Stat(filepath.Dir(got[1])); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("job directory still exists after the job: %v", err)
	}

	// Interpreter.
	spec = &hodeiv1.JobSpec{Script: &hodeiv1.Script{Content: "echo $((6*7))", Interpreter: "/bin/bash"}}
	if _, err := os.Stat("/bin/bash"); err == nil {
		_, c = run(t, spec, execOptions{})
		if got := c.lines(stdout); len(got) != 1 || got[0] != "42" {
			t.Fatalf("bash script printed %q", got)
		}
	}
}

func TestExecEnvAndWorkingDir(t *testing.T) {
	t.Setenv("HODEI_ONE_TIME_PASSWORD", "agent-secret")
	t.Setenv("HOME", "/home/agent")
	wd := t.TempDir()
	spec := &hodeiv1.JobSpec{
		Command:    []string{"sh", "-c", `echo "$FOO|$HOME|$HODEI_JOB_ID|${HODEI_ONE_TIME_PASSWORD:-unset}"; pwd; env | wc -l`},
		Env:        map[string]string{"FOO": "bar baz"},
		WorkingDir: wd,
	}
	r, c := run(t, spec, execOptions{})
	got := c.lines(stdout)
	if r.ExitCode != 0 || len(got) != 3 {
		t.Fatalf("result %+v lines %q", r, got)
	}
	if got[0] != "bar baz|/home/agent|job-1|unset" {
		t.Fatalf("env line %q", got[0])
	}
	realWD, _ := filepath.EvalSymlinks(wd)
	if got[1] != wd && got[1] != realWD {
		t.Fatalf("pwd = %q, want %q", got[1], wd)
	}
	// Minimal environment: PATH, HOME, HODEI_JOB_ID, FOO (+ what sh adds: PWD, maybe SHLVL, _).
	if n, _ := strconv.Atoi(strings.TrimSpace(got[2])); n > 8 {
		t.Fatalf("job environment has %d variables, want a minimal one", n)
	}
	// The job's PATH is used to find its command.
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "hodei-hello"), []byte("#!/bin/sh\necho hello from path\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, c = run(t, &hodeiv1.JobSpec{Command: []string{"hodei-hello"}, Env: map[string]string{"PATH": dir + ":/usr/bin:/bin"}}, execOptions{})
	if got := c.lines(stdout); len(got) != 1 || got[0] != "hello from path" {
		t.Fatalf("got %q", got)
	}
}

func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || !strings.HasPrefix(string(b[i+1:]), " Z")
}

func waitDead(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("process %d still alive", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// firstLine waits for the job's first stdout line.
func firstLine(t *testing.T, c *collector) string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if l := c.lines(stdout); len(l) > 0 {
			return l[0]
		}
		if time.Now().After(deadline) {
			t.Fatal("no output from the job")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestExecCancelKillsGroup(t *testing.T) {
	c := &collector{}
	p, err := startJob("j", cmdSpec("sh", "-c", `sleep 100 & echo $!; sleep 100`), execOptions{MaxBatchDelay: 10 * time.Millisecond}, c.sink)
	if err != nil {
		t.Fatal(err)
	}
	grandchild, err := strconv.Atoi(firstLine(t, c))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	p.Cancel(2 * time.Second)
	select {
	case <-p.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("cancelled job did not end")
	}
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Errorf("SIGTERM-able job took %s to end", d)
	}
	r := p.Result()
	if !r.Cancelled || r.ExitCode != 143 || !strings.Contains(r.Err, "SIGTERM") {
		t.Fatalf("result %+v, want cancelled, exit 143", r)
	}
	waitDead(t, grandchild)
	p.Cancel(0) // idempotent after the end
}

func TestExecCancelEscalatesToSIGKILL(t *testing.T) {
	c := &collector{}
	p, err := startJob("j", cmdSpec("sh", "-c", `trap '' TERM; sleep 100 & echo $!; wait`), execOptions{MaxBatchDelay: 10 * time.Millisecond}, c.sink)
	if err != nil {
		t.Fatal(err)
	}
	grandchild, err := strconv.Atoi(firstLine(t, c))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	p.Cancel(300 * time.Millisecond)
	<-p.Done()
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("job ended %s after SIGTERM although it ignores it", d)
	}
	if r := p.Result(); !r.Cancelled || r.ExitCode != 137 {
		t.Fatalf("result %+v, want cancelled, exit 137", r)
	}
	waitDead(t, grandchild)
}

// A background process holding stdout does not keep the job alive forever, and does
// not outlive it.
func TestExecLeftoverProcessesKilled(t *testing.T) {
	start := time.Now()
	r, c := run(t, cmdSpec("sh", "-c", `sleep 100 & echo $!`), execOptions{DrainTimeout: 200 * time.Millisecond})
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("job took %s", d)
	}
	if r.ExitCode != 0 {
		t.Fatalf("result %+v", r)
	}
	pid, err := strconv.Atoi(c.lines(stdout)[0])
	if err != nil {
		t.Fatal(err)
	}
	waitDead(t, pid)
}

func TestExecMemoryLimit(t *testing.T) {
	const limit = 512 << 20
	_, c := run(t, cmdSpec("sh", "-c", `sleep 0.2; grep "Max address space" /proc/self/limits`), execOptions{MemoryLimitBytes: limit})
	got := c.lines(stdout)
	if len(got) != 1 || len(strings.Fields(got[0])) < 5 || strings.Fields(got[0])[3] != strconv.Itoa(limit) {
		t.Fatalf("limits line %q, want soft limit %d", got, limit)
	}
	// The spec's value wins over the worker's.
	spec := cmdSpec("sh", "-c", `sleep 0.2; grep "Max address space" /proc/self/limits`)
	spec.Resources = &hodeiv1.Resources{MemoryBytes: 256 << 20}
	_, c = run(t, spec, execOptions{MemoryLimitBytes: limit})
	if got := c.lines(stdout); len(got) != 1 || strings.Fields(got[0])[3] != strconv.Itoa(256<<20) {
		t.Fatalf("limits line %q, want %d", got, 256<<20)
	}
}
