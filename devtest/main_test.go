package devtest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// hodeiBin is the binary under test, built once by TestMain and only read afterwards.
var hodeiBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "hodei-devtest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "devtest:", err)
		os.Exit(1)
	}
	code := 1
	if hodeiBin, err = build(dir); err != nil {
		fmt.Fprintln(os.Stderr, "devtest:", err)
	} else {
		code = m.Run()
	}
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// build compiles ./cmd/hodei of this module into dir.
func build(dir string) (string, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	out, err := exec.Command(goBin, "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	bin := filepath.Join(dir, "hodei")
	cmd := exec.Command(goBin, "build", "-o", bin, "./cmd/hodei")
	cmd.Dir = filepath.Dir(strings.TrimSpace(string(out)))
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/hodei: %w\n%s", err, out)
	}
	return bin, nil
}

// lockedBuffer collects a process's output from several goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// env is the environment of every process the tests start: this one's without HODEI_*
// variables, with XDG_DATA_HOME pointing into the test's temporary directory (so a
// missing --data-dir could never touch the user's real one).
func env(t *testing.T) []string {
	var e []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "HODEI_") && !strings.HasPrefix(kv, "XDG_DATA_HOME=") {
			e = append(e, kv)
		}
	}
	return append(e, "XDG_DATA_HOME="+t.TempDir())
}

// dev is one `hodei dev` process.
type dev struct {
	t       *testing.T
	dataDir string
	url     string
	cmd     *exec.Cmd
	out     *lockedBuffer // stdout and stderr
	banner  *lockedBuffer // stdout only
	done    chan struct{} // closed when the process exited
	waitErr error         // valid after done
	startup time.Duration // start to /readyz 200
}

// bannerEnd ends the last line of `hodei dev`'s banner (the example job).
const bannerEnd = " -- echo hello"

// startDev starts `hodei dev` on dataDir and listen, waits for its whole banner (up to
// the example line: the banner is several lines, and a reader that stops at the first
// may see the rest missing) and for /readyz,
// and registers a cleanup that stops it (SIGTERM, then SIGKILL) and kills any workers
// it left behind. On failure of the test its output is logged.
func startDev(t *testing.T, dataDir, listen string, extra ...string) *dev {
	t.Helper()
	d := &dev{t: t, dataDir: dataDir, out: &lockedBuffer{}, banner: &lockedBuffer{}, done: make(chan struct{})}
	args := append([]string{"dev", "--listen", listen, "--data-dir", dataDir}, extra...)
	cmd := exec.Command(hodeiBin, args...)
	cmd.Env = env(t)
	pr, pw := io.Pipe()
	cmd.Stdout = io.MultiWriter(d.out, d.banner, pw)
	cmd.Stderr = d.out
	// Its own process group; killed if this test binary dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start hodei dev: %v", err)
	}
	d.cmd = cmd
	go func() {
		d.waitErr = cmd.Wait()
		pw.Close()
		close(d.done)
	}()
	t.Cleanup(func() {
		d.stop()
		killWorkers(t, dataDir)
		if t.Failed() {
			t.Logf("hodei dev %s output:\n%s", strings.Join(args, " "), d.out)
		}
	})
	urlc := make(chan string, 1)
	bannerDone := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		listening := false
		for sc.Scan() {
			line := sc.Text()
			if u, ok := strings.CutPrefix(line, "hodei dev listening on "); ok && !listening {
				listening = true
				urlc <- strings.TrimSpace(u)
			}
			if listening && strings.HasSuffix(line, bannerEnd) {
				close(bannerDone)
				break
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	bannerDeadline := time.After(60 * time.Second)
	select {
	case d.url = <-urlc:
	case <-d.done:
		t.Fatalf("hodei dev exited before listening: %v\n%s", d.waitErr, d.out)
	case <-bannerDeadline:
		t.Fatalf("hodei dev did not print its address within 60s\n%s", d.out)
	}
	// d.banner has every byte the scanner saw: MultiWriter writes it before the pipe.
	select {
	case <-bannerDone:
	case <-d.done:
		t.Fatalf("hodei dev exited before the end of its banner: %v\n%s", d.waitErr, d.out)
	case <-bannerDeadline:
		t.Fatalf("hodei dev did not print the end of its banner (a line ending %q) within 60s\n%s", bannerEnd, d.out)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := http.Get(d.url + "/readyz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				break
			}
			err = errors.New(res.Status)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s/readyz never 200 (last: %v)\n%s", d.url, err, d.out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	d.startup = time.Since(start)
	return d
}

// listen is the host:port of the running process, to restart on the same address.
func (d *dev) listen() string { return strings.TrimPrefix(d.url, "http://") }

// signal sends sig and waits up to timeout for the exit; it returns the exit code
// (-1: killed by a signal) and how long the exit took.
func (d *dev) signal(sig syscall.Signal, timeout time.Duration) (code int, took time.Duration) {
	d.t.Helper()
	start := time.Now()
	if err := d.cmd.Process.Signal(sig); err != nil {
		d.t.Fatalf("signal %v: %v", sig, err)
	}
	select {
	case <-d.done:
	case <-time.After(timeout):
		d.t.Fatalf("hodei dev did not exit within %s of %v\n%s", timeout, sig, d.out)
	}
	return d.cmd.ProcessState.ExitCode(), time.Since(start)
}

// stop ends the process if it still runs: SIGTERM, SIGKILL after 15s.
func (d *dev) stop() {
	select {
	case <-d.done:
		return
	default:
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(15 * time.Second):
		d.t.Errorf("hodei dev ignored SIGTERM for 15s; killing it")
		_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
		<-d.done
	}
}

// killWorkers kills the session of every worker with a pid record under dataDir that
// is still a `hodei worker` process.
func killWorkers(t *testing.T, dataDir string) {
	files, _ := filepath.Glob(filepath.Join(dataDir, "workers", "*.pid"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var rec struct {
			PID int `json:"pid"`
		}
		if json.Unmarshal(b, &rec) != nil || rec.PID <= 0 {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", rec.PID))
		if err != nil || !bytes.Contains(cmdline, []byte("worker")) {
			continue
		}
		t.Logf("killing leftover worker pid %d (%s)", rec.PID, filepath.Base(f))
		_ = syscall.Kill(-rec.PID, syscall.SIGKILL) // the worker leads its own session and group
	}
}

// result of one CLI invocation.
type result struct {
	stdout, stderr string
	code           int
	took           time.Duration
}

// cli runs `hodei args...` (60s at most) and returns its output and exit code.
func cli(t *testing.T, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, hodeiBin, args...)
	cmd.Env = env(t)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String(), took: time.Since(start)}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("hodei %s: %v", strings.Join(args, " "), err)
	}
	if ctx.Err() != nil {
		t.Fatalf("hodei %s: no exit within 60s; output:\n%s%s", strings.Join(args, " "), r.stdout, r.stderr)
	}
	return r
}

// mustCLI is cli requiring exit code 0.
func mustCLI(t *testing.T, args ...string) result {
	t.Helper()
	r := cli(t, args...)
	if r.code != 0 {
		t.Fatalf("hodei %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r
}

// job is the part of the CLI's JSON job the tests read.
type job struct {
	ID       string `json:"id"`
	State    string `json:"state"`
	ExitCode *int   `json:"exitCode"`
}

func getJob(t *testing.T, url, id string) job {
	t.Helper()
	r := mustCLI(t, "job", "get", "--server", url, "-o", "json", id)
	var j job
	if err := json.Unmarshal([]byte(r.stdout), &j); err != nil {
		t.Fatalf("job get -o json: %v\n%s", err, r.stdout)
	}
	return j
}

func listJobs(t *testing.T, url string) []job {
	t.Helper()
	r := mustCLI(t, "job", "list", "--server", url, "-o", "json")
	var l struct {
		Jobs []job `json:"jobs"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &l); err != nil {
		t.Fatalf("job list -o json: %v\n%s", err, r.stdout)
	}
	return l.Jobs
}

// waitState polls the job until it is in state (or the timeout passes).
func waitState(t *testing.T, d *dev, id, state string, timeout time.Duration) job {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		j := getJob(t, d.url, id)
		if j.State == state {
			return j
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s is %s after %s, want %s", id, j.State, timeout, state)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// entries lists the names under dir (recursively) except the NATS store's insides,
// which the running NATS server may change on its own.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	var names []string
	err := filepath.WalkDir(dir, func(p string, de os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		names = append(names, rel)
		if de.IsDir() && rel == "nats" {
			return filepath.SkipDir
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}

func itoa(n int) string { return strconv.Itoa(n) }
