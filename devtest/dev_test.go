package devtest

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDevRunsJobKeepsItAcrossRestart: `hodei dev` prints its address, a
// copy-paste example and that it runs without authentication and TLS on loopback, `hodei job run -- echo hello` against it prints hello and exits
// 0, SIGTERM stops it promptly with exit 0, and a new `hodei dev` on the same data dir
// lists the job again with its output.
func TestDevRunsJobKeepsItAcrossRestart(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "dev")
	d := startDev(t, dataDir, "127.0.0.1:0")
	t.Logf("hodei dev: ready (/readyz 200) %s after start", d.startup.Round(time.Millisecond))
	want := "job run --server " + d.url + " -- echo hello"
	if !strings.Contains(d.banner.String(), want) {
		t.Errorf("banner lacks the example %q:\n%s", want, d.banner)
	}
	// On loopback dev needs neither authentication nor TLS, and says so.
	if want := "authentication off and no TLS: fine on loopback"; !strings.Contains(d.banner.String(), want) {
		t.Errorf("banner lacks %q:\n%s", want, d.banner)
	}
	for _, f := range []string{"LOCK", "hodei.db", "nats", "workers"} {
		if _, err := os.Stat(filepath.Join(dataDir, f)); err != nil {
			t.Errorf("data dir: %v", err)
		}
	}

	r := mustCLI(t, "job", "run", "--server", d.url, "--", "echo", "hello")
	if r.stdout != "hello\n" {
		t.Fatalf("job run printed %q, want %q (stderr %q)", r.stdout, "hello\n", r.stderr)
	}
	t.Logf("hodei job run -- echo hello: %s", r.took.Round(time.Millisecond))
	jobs := listJobs(t, d.url)
	if len(jobs) != 1 || jobs[0].State != "SUCCEEDED" || jobs[0].ExitCode == nil || *jobs[0].ExitCode != 0 {
		t.Fatalf("job list: %+v, want one SUCCEEDED job with exit code 0", jobs)
	}
	id := jobs[0].ID

	code, took := d.signal(syscall.SIGTERM, 15*time.Second)
	t.Logf("SIGTERM to exit: %s", took.Round(time.Millisecond))
	if code != 0 {
		t.Fatalf("exit code after SIGTERM: %d, want 0\n%s", code, d.out)
	}
	if took > 5*time.Second {
		t.Errorf("SIGTERM to exit took %s, want under 5s", took)
	}

	d2 := startDev(t, dataDir, d.listen())
	jobs = listJobs(t, d2.url)
	if len(jobs) != 1 || jobs[0].ID != id || jobs[0].State != "SUCCEEDED" {
		t.Fatalf("job list after restart: %+v, want job %s SUCCEEDED", jobs, id)
	}
	if r := mustCLI(t, "job", "logs", "--server", d2.url, id); r.stdout != "hello\n" {
		t.Fatalf("job logs after restart: %q, want %q", r.stdout, "hello\n")
	}
}

// TestDevSecondInstanceRefused: a second `hodei dev` on the same data dir exits 1
// with the "in use" error naming the first one's pid, changes nothing in the data dir,
// and the first one keeps serving.
func TestDevSecondInstanceRefused(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "dev")
	d := startDev(t, dataDir, "127.0.0.1:0")
	before := entries(t, dataDir)
	lockBefore, err := os.ReadFile(filepath.Join(dataDir, "LOCK"))
	if err != nil {
		t.Fatal(err)
	}

	r := cli(t, "dev", "--listen", "127.0.0.1:0", "--data-dir", dataDir)
	want := "hodei: data dir " + dataDir + " is in use by another hodei dev or hodei server (pid " + itoa(d.cmd.Process.Pid) + ")\n"
	if r.code != 1 || r.stderr != want || r.stdout != "" {
		t.Fatalf("second hodei dev: exit %d, stdout %q, stderr %q; want exit 1 and stderr %q", r.code, r.stdout, r.stderr, want)
	}
	t.Logf("second instance refused in %s", r.took.Round(time.Millisecond))
	if after := entries(t, dataDir); !slices.Equal(before, after) {
		t.Fatalf("the refused instance changed the data dir:\nbefore %v\nafter  %v", before, after)
	}
	if lockAfter, _ := os.ReadFile(filepath.Join(dataDir, "LOCK")); string(lockAfter) != string(lockBefore) {
		t.Fatalf("LOCK changed from %q to %q", lockBefore, lockAfter)
	}

	select {
	case <-d.done:
		t.Fatalf("the first hodei dev exited: %v", d.waitErr)
	default:
	}
	if r := mustCLI(t, "job", "run", "--server", d.url, "--", "echo", "still here"); r.stdout != "still here\n" {
		t.Fatalf("first instance after the refused one: job run printed %q", r.stdout)
	}
}

// TestDevContinuesRunningJobAfterCrash: `hodei dev` is SIGKILLed while a job runs; its
// worker (a separate process) keeps running the job and reconnects to the next
// `hodei dev` on the same address and data dir, which records the result and the
// output from both sides of the crash.
func TestDevContinuesRunningJobAfterCrash(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "dev")
	d := startDev(t, dataDir, "127.0.0.1:0")
	r := mustCLI(t, "job", "submit", "--server", d.url, "--", "sh", "-c", "echo before; sleep 3; echo after")
	id := strings.TrimSpace(r.stdout)
	waitState(t, d, id, "RUNNING", 30*time.Second)
	if code, _ := d.signal(syscall.SIGKILL, 10*time.Second); code != -1 {
		t.Fatalf("exit code after SIGKILL: %d, want -1 (killed)", code)
	}

	d2 := startDev(t, dataDir, d.listen())
	j := waitState(t, d2, id, "SUCCEEDED", 60*time.Second)
	if j.ExitCode == nil || *j.ExitCode != 0 {
		t.Fatalf("job after the crash: %+v, want exit code 0", j)
	}
	if r := mustCLI(t, "job", "logs", "--server", d2.url, id); r.stdout != "before\nafter\n" {
		t.Fatalf("job logs: %q, want %q", r.stdout, "before\nafter\n")
	}
}
