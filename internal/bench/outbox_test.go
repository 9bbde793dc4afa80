package bench

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// A small run of both phases: every latency row is delivered by a wake-up (the poll is a
// minute) and the figures are filled in.
func TestRunOutboxSmall(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := RunOutbox(ctx, OutboxConfig{
		DatabaseURL: pgtest.NewDatabase(t), Messages: 3000, Rate: 200, Duration: 500 * time.Millisecond, Relays: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.ThroughputPerS <= 0 || res.BurnDownSeconds <= 0 {
		t.Errorf("burn-down figures missing: %+v", res)
	}
	if res.LatencyInserted != 100 || res.LatencyDispatched != 100 || res.LostWakeups != 0 {
		t.Errorf("latency phase: %d inserted, %d dispatched, %d lost wake-ups; want 100, 100, 0",
			res.LatencyInserted, res.LatencyDispatched, res.LostWakeups)
	}
	if res.LatencyP50Ms <= 0 || res.LatencyP99Ms < res.LatencyP50Ms {
		t.Errorf("latency percentiles p50 %v p99 %v", res.LatencyP50Ms, res.LatencyP99Ms)
	}
}

// The same on the SQLite driver: the latency phase inserts through the relays' own
// Store, and every row is still delivered by an (in-process) wake-up.
func TestRunOutboxSmallSQLite(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := RunOutbox(ctx, OutboxConfig{
		Driver: DriverSQLite, SQLitePath: filepath.Join(t.TempDir(), "bench.db"),
		Messages: 3000, Rate: 200, Duration: 500 * time.Millisecond, Relays: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Driver != DriverSQLite || res.LatencyInserter != "same-process" {
		t.Errorf("driver %q inserter %q, want sqlite and same-process", res.Driver, res.LatencyInserter)
	}
	if res.ThroughputPerS <= 0 || res.BurnDownSeconds <= 0 {
		t.Errorf("burn-down figures missing: %+v", res)
	}
	if res.LatencyInserted != 100 || res.LatencyDispatched != 100 || res.LostWakeups != 0 {
		t.Errorf("latency phase: %d inserted, %d dispatched, %d lost wake-ups; want 100, 100, 0",
			res.LatencyInserted, res.LatencyDispatched, res.LostWakeups)
	}
}

func TestOutboxConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg   OutboxConfig
		field string
	}{
		{OutboxConfig{}, "DatabaseURL"},
		{OutboxConfig{DatabaseURL: "x", Messages: -1}, "Messages"},
		{OutboxConfig{DatabaseURL: "x", Relays: 100}, "Relays"},
		{OutboxConfig{DatabaseURL: "x", Rate: -5}, "Rate"},
		{OutboxConfig{Driver: DriverSQLite}, "SQLitePath"},
		{OutboxConfig{Driver: DriverSQLite, SQLitePath: "f", DatabaseURL: "x"}, "DatabaseURL"},
		{OutboxConfig{Driver: "mysql", DatabaseURL: "x"}, "Driver"},
	} {
		tc.cfg.setDefaults()
		if err := tc.cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%+v: %v, want an error naming %s", tc.cfg, err, tc.field)
		}
	}
}
