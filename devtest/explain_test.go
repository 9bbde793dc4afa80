package devtest

import (
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestDevJobExplain: against `hodei dev` with room for one worker, `hodei job explain`
// says that a RUNNING job runs on its worker with a recent heartbeat, that the jobs
// behind it are PENDING with the right number ahead and the provider at capacity, and
// what an ended job ended with.
func TestDevJobExplain(t *testing.T) {
	d := startDev(t, filepath.Join(t.TempDir(), "dev"), "127.0.0.1:0", "--max-workers", "1")
	submit := func(args ...string) string {
		t.Helper()
		r := mustCLI(t, append([]string{"job", "submit", "--server", d.url}, args...)...)
		return strings.TrimSpace(r.stdout)
	}
	running := submit("--", "sh", "-c", "sleep 30")
	waitState(t, d, running, "RUNNING", time.Minute)
	second := submit("--", "true")
	third := submit("--", "true")

	r := mustCLI(t, "job", "explain", "--server", d.url, running)
	if !regexp.MustCompile(`^RUNNING on worker \S+ \(local\), (last heartbeat [0-9.]+m?s ago|no heartbeat yet)\n`).MatchString(r.stdout) {
		t.Errorf("explain of the running job:\n%s", r.stdout)
	}
	r = mustCLI(t, "job", "explain", "--server", d.url, third)
	if !strings.HasPrefix(r.stdout, "PENDING: 1 jobs ahead of it; provider local at capacity 1/1\n") {
		t.Errorf("explain of the third job:\n%s", r.stdout)
	}
	r = mustCLI(t, "job", "explain", "--server", d.url, second)
	if !strings.HasPrefix(r.stdout, "PENDING: 0 jobs ahead of it; provider local at capacity 1/1\n") {
		t.Errorf("explain of the second job:\n%s", r.stdout)
	}

	mustCLI(t, "job", "cancel", "--server", d.url, running)
	waitState(t, d, third, "SUCCEEDED", time.Minute)
	r = mustCLI(t, "job", "explain", "--server", d.url, third)
	if !strings.HasPrefix(r.stdout, "SUCCEEDED ") || !strings.Contains(r.stdout, "with exit code 0") {
		t.Errorf("explain of the ended job:\n%s", r.stdout)
	}
	r = mustCLI(t, "job", "explain", "--server", d.url, "-o", "json", third)
	if !strings.Contains(r.stdout, `"state": "SUCCEEDED"`) && !strings.Contains(r.stdout, `"state":"SUCCEEDED"`) {
		t.Errorf("explain -o json:\n%s", r.stdout)
	}
	if r := cli(t, "job", "explain", "--server", d.url, "01234567-89ab-cdef-0123-456789abcdef"); r.code == 0 || !strings.Contains(r.stderr, "not found") {
		t.Errorf("explain of a missing job: exit %d, stderr %q", r.code, r.stderr)
	}
}
