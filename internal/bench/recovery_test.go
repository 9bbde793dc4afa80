package bench

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/internal/pgtest"
	"github.com/hodei-jobs/hodei/jobs"
)

// buildHodeiBinary builds ./cmd/hodei into a temporary directory: the in-process
// server of RunRecovery starts it as its workers (the test binary cannot be one).
func buildHodeiBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "hodei")
	build := exec.Command("go", "build", "-o", bin, "github.com/hodei-jobs/hodei/cmd/hodei")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/hodei: %v\n%s", err, out)
	}
	return bin
}

// checkRecovery asserts that every kill was measured and its job ended CANCELLED.
func checkRecovery(t *testing.T, res *RecoveryResult, kills int, mode string) {
	t.Helper()
	if res.Mode != mode {
		t.Errorf("Mode = %q, want %q", res.Mode, mode)
	}
	if len(res.Kills) != kills || len(res.RecoveryMs) != kills {
		t.Fatalf("got %d kills and %d figures, want %d: %+v", len(res.Kills), len(res.RecoveryMs), kills, res)
	}
	for i, k := range res.Kills {
		if k.RecoveryMs <= 0 {
			t.Errorf("kill %d: RecoveryMs = %v, want > 0", i+1, k.RecoveryMs)
		}
		if k.AttemptAfter <= k.AttemptBefore {
			t.Errorf("kill %d: attempt %d → %d, want higher", i+1, k.AttemptBefore, k.AttemptAfter)
		}
		if k.ReplacementID == "" || k.ReplacementID == k.WorkerID {
			t.Errorf("kill %d: replacement %q of worker %q", i+1, k.ReplacementID, k.WorkerID)
		}
		if k.FinalState != "CANCELLED" {
			t.Errorf("kill %d: job %s ended %q, want CANCELLED", i+1, k.JobID, k.FinalState)
		}
	}
	if res.MinMs <= 0 || res.MinMs > res.MedianMs || res.MedianMs > res.MaxMs {
		t.Errorf("min/median/max = %v/%v/%v", res.MinMs, res.MedianMs, res.MaxMs)
	}
}

// TestRunRecovery kills two workers of an in-process server on PostgreSQL (their
// parent: it sees the exits) and then, after a restart, two workers it did not start
// (stream close + a short grace), with the real hodei binary as worker.
func TestRunRecovery(t *testing.T) {
	bin := buildHodeiBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	t.Run("parent", func(t *testing.T) {
		var log strings.Builder
		res, err := RunRecovery(ctx, RecoveryConfig{
			DatabaseURL:  pgtest.NewDatabase(t),
			Kills:        2,
			WorkerBinary: bin,
			WaitTimeout:  time.Minute,
			Log:          &log,
		})
		if err != nil {
			t.Fatalf("RunRecovery: %v\nlog:\n%s", err, log.String())
		}
		checkRecovery(t, res, 2, RecoveryModeParent)
		if res.Settings.DisconnectGraceMs != 10_000 || res.Settings.HeartbeatIntervalMs != 5_000 {
			t.Errorf("Settings = %+v, want the defaults (grace 10s, heartbeat 5s)", res.Settings)
		}
		// The parent sees the exit: far below the 10s disconnect grace.
		if res.MaxMs >= 10_000 {
			t.Errorf("parent-mode recovery took %v ms, want well below the disconnect grace", res.MaxMs)
		}
	})

	t.Run("after-restart", func(t *testing.T) {
		var log strings.Builder
		grace := 1500 * time.Millisecond
		res, err := RunRecovery(ctx, RecoveryConfig{
			DatabaseURL:  pgtest.NewDatabase(t),
			Kills:        2,
			AfterRestart: true,
			Cleanup:      jobs.CleanupConfig{HeartbeatInterval: time.Second, LostAfter: 10 * time.Second, DisconnectGrace: grace},
			WorkerBinary: bin,
			WaitTimeout:  time.Minute,
			Log:          &log,
		})
		if err != nil {
			t.Fatalf("RunRecovery: %v\nlog:\n%s", err, log.String())
		}
		checkRecovery(t, res, 2, RecoveryModeAfterRestart)
		// The new server is not the workers' parent: it waits for the grace.
		if res.MinMs < float64(grace.Milliseconds()) {
			t.Errorf("after-restart recovery %v ms is below the disconnect grace %s: the kill was not detected by the stream close", res.MinMs, grace)
		}
		if res.ReconnectMs <= 0 {
			t.Errorf("ReconnectMs = %v, want > 0", res.ReconnectMs)
		}
	})
}

func TestRecoveryConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  RecoveryConfig
		want string // "" valid, else part of the error
	}{
		{"postgres", RecoveryConfig{DatabaseURL: "postgres://x/y"}, ""},
		{"sqlite", RecoveryConfig{Driver: DriverSQLite}, ""},
		{"no database", RecoveryConfig{}, "DatabaseURL is required"},
		{"sqlite with url", RecoveryConfig{Driver: DriverSQLite, DatabaseURL: "postgres://x/y"}, "DatabaseURL is for"},
		{"sqlite path with postgres", RecoveryConfig{DatabaseURL: "postgres://x/y", SQLitePath: "/tmp/x.db"}, "SQLitePath"},
		{"driver", RecoveryConfig{Driver: "mysql"}, "Driver"},
		{"kills", RecoveryConfig{Driver: DriverSQLite, Kills: 101}, "Kills 101"},
		{"binary", RecoveryConfig{Driver: DriverSQLite, WorkerBinary: "hodei"}, "WorkerBinary"},
		{"cleanup", RecoveryConfig{Driver: DriverSQLite, Cleanup: jobs.CleanupConfig{HeartbeatInterval: time.Millisecond}}, "Cleanup"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.setDefaults()
			err := cfg.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Validate = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestRecoveryMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{{[]float64{5}, 5}, {[]float64{1, 2, 9}, 2}, {[]float64{1, 2, 4, 9}, 3}} {
		if got := recoveryMedian(tc.in); got != tc.want {
			t.Errorf("recoveryMedian(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}
