package devtest

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDevWarmWorkerReusedWithoutLeaks: `hodei dev --warm-workers 1 --warm-max-jobs 3
// --max-workers 1` keeps one local worker registered; three jobs run on that one
// `hodei worker` process (the job's parent), and the second and third see no file,
// process or variable of the one before: the first leaves a file in its working
// directory and TMPDIR, a daemon that left its process group (setsid) and has FIRST=1
// in its environment.
func TestDevWarmWorkerReusedWithoutLeaks(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "dev")
	d := startDev(t, dataDir, "127.0.0.1:0", "--warm-workers", "1", "--warm-max-jobs", "3", "--max-workers", "1")
	first := mustCLI(t, "job", "run", "--server", d.url, "--env", "FIRST=1", "--", "sh", "-c",
		`echo agent=$PPID; echo dir=$PWD; echo tmp=$TMPDIR; echo x > left; echo x > "$TMPDIR/left"
setsid sleep 300 </dev/null >/dev/null 2>&1 &
echo daemon=$!`)
	vals := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(first.stdout), "\n") {
		k, v, _ := strings.Cut(l, "=")
		vals[k] = v
	}
	if vals["agent"] == "" || vals["dir"] == "" || vals["daemon"] == "" {
		t.Fatalf("first job printed %q", first.stdout)
	}
	probe := `echo agent=$PPID
[ -e ` + vals["dir"] + `/left ] && echo LEAK cwd file
[ -e ` + vals["tmp"] + `/left ] && echo LEAK tmp file
kill -0 ` + vals["daemon"] + ` 2>/dev/null && echo LEAK daemon alive
[ -n "$FIRST" ] && echo LEAK env FIRST
true`
	for i := range 2 {
		// Capacity 1: the job waits for the warm worker to come back to the pool.
		r := mustCLI(t, "job", "run", "--server", d.url, "--", "sh", "-c", probe)
		if strings.Contains(r.stdout, "LEAK") {
			t.Fatalf("job %d after the first saw: %q", i+2, r.stdout)
		}
		if got := strings.TrimSpace(strings.SplitN(r.stdout, "\n", 2)[0]); got != "agent="+vals["agent"] {
			t.Fatalf("job %d ran under %q, want the warm worker's agent=%s (reused)", i+2, got, vals["agent"])
		}
	}
}

// TestDevWarmWorkerSurvivesRestart: a warm worker idle when `hodei dev` stops (SIGTERM
// does not kill workers) reconnects to the next `hodei dev` on the same data dir and
// address; the sweep leaves it, and the next job runs on it (the same agent process).
func TestDevWarmWorkerSurvivesRestart(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "dev")
	args := []string{"--warm-workers", "1", "--warm-max-jobs", "5", "--max-workers", "1"}
	d := startDev(t, dataDir, "127.0.0.1:0", args...)
	before := strings.TrimSpace(mustCLI(t, "job", "run", "--server", d.url, "--", "sh", "-c", "echo $PPID").stdout)
	if code, _ := d.signal(syscall.SIGTERM, 15*time.Second); code != 0 {
		t.Fatalf("hodei dev exit code %d after SIGTERM\n%s", code, d.out)
	}
	d2 := startDev(t, dataDir, d.listen(), args...)
	after := strings.TrimSpace(mustCLI(t, "job", "run", "--server", d2.url, "--", "sh", "-c", "echo $PPID").stdout)
	if before == "" || after != before {
		t.Fatalf("job after the restart ran under agent %q, before it under %q: the warm worker was not reused", after, before)
	}
}
