package local

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/provider"
)

// The test binary doubles as the worker: `<test binary> worker` with HODEI_FAKE_WORKER set
// behaves as described in fakeWorker.
func TestMain(m *testing.M) {
	if mode := os.Getenv("HODEI_FAKE_WORKER"); mode != "" && len(os.Args) > 1 && os.Args[1] == "worker" {
		os.Exit(fakeWorker(mode))
	}
	os.Exit(m.Run())
}

// fakeWorker starts a "job" (sleep 300 in a process group of its own, as the agent does)
// and then, depending on mode:
//
//	good:        on SIGTERM kills the job's group and exits 0
//	term-exits:  on SIGTERM exits 0 and leaves the job behind
//	ignore-term: ignores SIGTERM
//	exit:        exits 3 at once (no job)
func fakeWorker(mode string) int {
	if mode == "exit" {
		return 3
	}
	if mode == "ignore-term" {
		signal.Ignore(syscall.SIGTERM)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	job := exec.Command("sleep", "300")
	job.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := job.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "fake worker:", err)
		return 1
	}
	if mode == "ignore-term" {
		select {}
	}
	<-sig
	if mode == "good" {
		_ = syscall.Kill(-job.Process.Pid, syscall.SIGKILL)
		_ = job.Wait()
	}
	return 0
}

func newProvider(t *testing.T, dir, mode string, mod func(*Config)) *Provider {
	t.Helper()
	cfg := Config{StateDir: dir, Env: []string{"HODEI_FAKE_WORKER=" + mode}, GracePeriod: 3 * time.Second}
	if mod != nil {
		mod(&cfg)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func spec(id string) provider.WorkerSpec {
	return provider.WorkerSpec{WorkerID: id, OneTimePassword: "otp-secret-" + id, ServerURL: "http://127.0.0.1:1", JobID: "job-" + id}
}

func pidOf(t *testing.T, p *Provider, id string) int {
	t.Helper()
	rec, err := p.readRecord(id)
	if err != nil {
		t.Fatalf("pid record of %s: %v", id, err)
	}
	return rec.PID
}

// waitMembers waits until the worker's session has n live processes.
func waitMembers(t *testing.T, sid, n int) []int {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		m := sessionMembers(sid)
		if len(m) == n {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("session %d has members %v, want %d", sid, m, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func mustStatus(t *testing.T, p *Provider, id string, want provider.Status) {
	t.Helper()
	got, err := p.Status(context.Background(), id)
	if err != nil || got != want {
		t.Fatalf("Status(%s) = %q, %v; want %q", id, got, err, want)
	}
}

func TestCreateStatusDestroy(t *testing.T) {
	ctx := context.Background()
	p := newProvider(t, t.TempDir(), "good", nil)
	if got := p.Capabilities().MaxWorkers; got < 2 {
		t.Fatalf("default MaxWorkers = %d, want >= 2", got)
	}
	mustStatus(t, p, "w1", provider.StatusUnknown)
	if err := p.Create(ctx, spec("w1")); err != nil {
		t.Fatal(err)
	}
	pid := pidOf(t, p, "w1")
	mustStatus(t, p, "w1", provider.StatusRunning)

	// Idempotent: a second Create starts nothing.
	if err := p.Create(ctx, spec("w1")); err != nil {
		t.Fatal(err)
	}
	if got := pidOf(t, p, "w1"); got != pid {
		t.Fatalf("second Create changed pid %d -> %d", pid, got)
	}

	members := waitMembers(t, pid, 2) // worker + its job
	// Own session and process group.
	st, err := readStat(pid)
	if err != nil || st.session != pid || st.pgrp != pid {
		t.Fatalf("worker stat = %+v, %v; want session = pgrp = pid %d", st, err, pid)
	}
	// The secret is in the environment, never on the command line.
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(cmdline), "otp-secret") {
		t.Fatalf("OTP on the command line: %q", cmdline)
	}
	environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		t.Fatal(err)
	}
	env := strings.Split(string(environ), "\x00")
	for _, want := range []string{"HODEI_WORKER_ID=w1", "HODEI_ONE_TIME_PASSWORD=otp-secret-w1", "HODEI_SERVER=http://127.0.0.1:1"} {
		if !slices.Contains(env, want) {
			t.Errorf("worker environment lacks %s: %q", want, env)
		}
	}

	start := time.Now()
	if err := p.Destroy(ctx, "w1"); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Destroy of a cooperative worker took %s (grace 3s)", d)
	}
	for _, m := range members {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", m)); err == nil {
			if st, err := readStat(m); err == nil && st.session == pid {
				t.Errorf("process %d of the worker survives Destroy (state %c)", m, st.state)
			}
		}
	}
	mustStatus(t, p, "w1", provider.StatusUnknown)
	if err := p.Destroy(ctx, "w1"); err != nil {
		t.Fatalf("second Destroy: %v", err)
	}
	if _, err := os.Stat(p.logPath("w1")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("log file left after Destroy: %v", err)
	}
}

func TestDestroyEscalatesToSIGKILL(t *testing.T) {
	p := newProvider(t, t.TempDir(), "ignore-term", func(c *Config) { c.GracePeriod = 300 * time.Millisecond })
	if err := p.Create(context.Background(), spec("stubborn")); err != nil {
		t.Fatal(err)
	}
	pid := pidOf(t, p, "stubborn")
	waitMembers(t, pid, 2)
	start := time.Now()
	if err := p.Destroy(context.Background(), "stubborn"); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("Destroy returned after %s, before the grace period", d)
	}
	if m := sessionMembers(pid); len(m) != 0 {
		t.Fatalf("session members left: %v", m)
	}
}

// A worker whose agent exits on SIGTERM but leaves its job (or was SIGKILLed): the
// session sweep still ends the job.
func TestDestroyEndsOrphanedJob(t *testing.T) {
	p := newProvider(t, t.TempDir(), "term-exits", func(c *Config) { c.GracePeriod = 300 * time.Millisecond })
	if err := p.Create(context.Background(), spec("leaky")); err != nil {
		t.Fatal(err)
	}
	pid := pidOf(t, p, "leaky")
	waitMembers(t, pid, 2)
	if err := p.Destroy(context.Background(), "leaky"); err != nil {
		t.Fatal(err)
	}
	if m := sessionMembers(pid); len(m) != 0 {
		t.Fatalf("session members left: %v", m)
	}
}

func TestRestartedProviderStatusAndDestroy(t *testing.T) {
	dir := t.TempDir()
	p1 := newProvider(t, dir, "good", nil)
	if err := p1.Create(context.Background(), spec("w")); err != nil {
		t.Fatal(err)
	}
	pid := pidOf(t, p1, "w")
	waitMembers(t, pid, 2)

	p2 := newProvider(t, dir, "good", func(c *Config) { c.MaxWorkers = 1 })
	mustStatus(t, p2, "w", provider.StatusRunning)
	// Create of the same worker by the new instance is a no-op.
	if err := p2.Create(context.Background(), spec("w")); err != nil {
		t.Fatal(err)
	}
	if got := pidOf(t, p2, "w"); got != pid {
		t.Fatalf("restarted Create started a new worker: pid %d -> %d", pid, got)
	}
	// The earlier instance's live worker counts against capacity.
	if err := p2.Create(context.Background(), spec("other")); !errors.Is(err, provider.ErrCapacity) {
		t.Fatalf("Create beyond capacity: err = %v, want ErrCapacity", err)
	}
	if err := p2.Destroy(context.Background(), "w"); err != nil {
		t.Fatal(err)
	}
	if m := sessionMembers(pid); len(m) != 0 {
		t.Fatalf("session members left: %v", m)
	}
	mustStatus(t, p2, "w", provider.StatusUnknown)
}

func TestRecycledPIDIsNotSignalled(t *testing.T) {
	dir := t.TempDir()
	p := newProvider(t, dir, "good", nil)
	stranger := exec.Command("sleep", "30")
	stranger.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := stranger.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stranger.Process.Kill(); _ = stranger.Wait() })
	st, err := readStat(stranger.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	// A record left by a worker that had this pid earlier (other start time).
	if err := p.writeRecord(record{WorkerID: "old", PID: stranger.Process.Pid, StartTime: st.startTime - 1}); err != nil {
		t.Fatal(err)
	}
	mustStatus(t, p, "old", provider.StatusExited)
	if err := p.Destroy(context.Background(), "old"); err != nil {
		t.Fatal(err)
	}
	if err := stranger.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("stranger with the recycled pid was signalled: %v", err)
	}
	mustStatus(t, p, "old", provider.StatusUnknown)
}

func TestCapacity(t *testing.T) {
	ctx := context.Background()
	p := newProvider(t, t.TempDir(), "good", func(c *Config) { c.MaxWorkers = 1 })
	if got := p.Capabilities(); got.MaxWorkers != 1 || !slices.Contains(got.Enforced, "rlimit_as") {
		t.Fatalf("Capabilities = %+v", got)
	}
	if err := p.Create(ctx, spec("a")); err != nil {
		t.Fatal(err)
	}
	err := p.Create(ctx, spec("b"))
	if !errors.Is(err, provider.ErrCapacity) || !strings.Contains(err.Error(), "MaxWorkers=1") {
		t.Fatalf("Create beyond capacity: err = %v", err)
	}
	if err := p.Destroy(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if err := p.Create(ctx, spec("b")); err != nil {
		t.Fatalf("Create after a Destroy freed capacity: %v", err)
	}
	if err := p.Destroy(ctx, "b"); err != nil {
		t.Fatal(err)
	}
}

func TestExitedWorkerIsReaped(t *testing.T) {
	p := newProvider(t, t.TempDir(), "exit", nil)
	if err := p.Create(context.Background(), spec("short")); err != nil {
		t.Fatal(err)
	}
	pid := pidOf(t, p, "short")
	deadline := time.Now().Add(5 * time.Second)
	for {
		s, _ := p.Status(context.Background(), "short")
		_, statErr := os.Stat("/proc/" + strconv.Itoa(pid))
		if s == provider.StatusExited && errors.Is(statErr, os.ErrNotExist) {
			break // exited and reaped: no zombie
		}
		if time.Now().After(deadline) {
			t.Fatalf("worker not exited+reaped: status %q, /proc entry err %v", s, statErr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A restarted provider sees it as exited too.
	p2 := newProvider(t, p.cfg.StateDir, "exit", nil)
	mustStatus(t, p2, "short", provider.StatusExited)
	if err := p2.Destroy(context.Background(), "short"); err != nil {
		t.Fatal(err)
	}
}

func TestValidation(t *testing.T) {
	p := newProvider(t, t.TempDir(), "good", nil)
	if err := p.Create(context.Background(), spec("../evil")); err == nil {
		t.Fatal("path-like worker id accepted")
	}
	s := spec("x")
	s.OneTimePassword = ""
	if err := p.Create(context.Background(), s); err == nil || !strings.Contains(err.Error(), "OneTimePassword") {
		t.Fatalf("missing OTP: err = %v", err)
	}
	if _, err := New(Config{Binary: "relative/hodei"}); err == nil {
		t.Fatal("relative Binary accepted")
	}
	if _, err := New(Config{MaxWorkers: -1}); err == nil || !strings.Contains(err.Error(), "MaxWorkers") {
		t.Fatalf("negative MaxWorkers: err = %v", err)
	}
}

func TestParseStat(t *testing.T) {
	line := "1234 (we) (ird) S 1 1230 1229 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 100 18446744073709551615\n"
	st, err := parseStat(line)
	if err != nil {
		t.Fatal(err)
	}
	if st.state != 'S' || st.pgrp != 1230 || st.session != 1229 || st.startTime != 98765 {
		t.Fatalf("parseStat = %+v", st)
	}
	if _, err := parseStat("garbage"); err == nil {
		t.Fatal("garbage parsed")
	}
}

// List names the workers with a pid record; a worker that exited by itself is
// destroyed (record and log removed) without waiting for any grace period.
func TestListAndDestroyExitedWorker(t *testing.T) {
	p := newProvider(t, t.TempDir(), "exit", nil)
	ctx := context.Background()
	if err := p.Create(ctx, spec("gone")); err != nil {
		t.Fatal(err)
	}
	ids, err := p.List(ctx)
	if err != nil || !slices.Equal(ids, []string{"gone"}) {
		t.Fatalf("List = %v, %v", ids, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for st, _ := p.Status(ctx, "gone"); st != provider.StatusExited; st, _ = p.Status(ctx, "gone") {
		if time.Now().After(deadline) {
			t.Fatalf("worker still %q", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
	start := time.Now()
	if err := p.Destroy(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Destroy of an exited worker took %s", d)
	}
	if ids, err := p.List(ctx); err != nil || len(ids) != 0 {
		t.Fatalf("List after Destroy = %v, %v", ids, err)
	}
}

func TestValidWorkerID(t *testing.T) {
	for id, want := range map[string]bool{"a": true, "01a2-b_c.d": true, "": false, ".x": false, "-x": false,
		"_x": false, "a/b": false, "a b": false, strings.Repeat("a", 200): true, strings.Repeat("a", 201): false} {
		if got := validWorkerID(id); got != want {
			t.Errorf("validWorkerID(%q) = %v, want %v", id, got, want)
		}
	}
}

// TestOnExitReportsDeadWorker: a worker that dies (here SIGKILLed, as by the OOM
// killer or an operator) is reported through OnExit with its exit status.
func TestOnExitReportsDeadWorker(t *testing.T) {
	type exit struct {
		id  string
		err error
	}
	exits := make(chan exit, 4)
	p := newProvider(t, t.TempDir(), "good", nil)
	p.OnExit(func(id string, err error) { exits <- exit{id, err} })
	if err := p.Create(context.Background(), spec("victim")); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = p.Destroy(context.Background(), "victim") }()
	pid := pidOf(t, p, "victim")
	waitMembers(t, pid, 2) // the worker and its "job"
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-exits:
		if e.id != "victim" || e.err == nil || !strings.Contains(e.err.Error(), "killed") {
			t.Fatalf("OnExit(%q, %v), want victim killed", e.id, e.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("OnExit not called within 5s of the worker's death")
	}
}
