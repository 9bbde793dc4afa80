package bench

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/internal/pgtest"
	"github.com/hodei-jobs/hodei/store"
	"github.com/hodei-jobs/hodei/store/postgres"
	"github.com/hodei-jobs/hodei/store/sqlite"
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

// TestBenchRefusesADatabaseInUse: a database holding a job is refused without
// AllowDataLoss, and nothing is deleted.
func TestBenchRefusesADatabaseInUse(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "in-use.db")
	st, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Jobs().Create(ctx, &domain.Job{Spec: domain.JobSpec{Command: []string{"true"}}}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	_, err = RunOutbox(ctx, OutboxConfig{Driver: DriverSQLite, SQLitePath: path, Messages: 10, Duration: 100 * time.Millisecond, Rate: 10, Relays: 1})
	if !errors.Is(err, ErrDatabaseInUse) || !strings.Contains(err.Error(), "--i-know-this-deletes-data") {
		t.Fatalf("RunOutbox on a database with a job: %v, want ErrDatabaseInUse naming the flag", err)
	}
	pg := pgtest.NewDatabase(t)
	if _, err := postgres.Migrate(ctx, pg); err != nil {
		t.Fatal(err)
	}
	pst, err := postgres.Open(ctx, pg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pst.Outbox().Insert(ctx, &store.OutboxMessage{Kind: store.KindEvent, Type: "x.y", IdempotencyKey: "k",
		Payload: []byte(`{}`), MaxAttempts: 1, ScheduledAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	pst.Close()
	if _, err := RunSagas(ctx, SagasConfig{DatabaseURL: pg, Sagas: 1, Steps: 1}); !errors.Is(err, ErrDatabaseInUse) {
		t.Fatalf("RunSagas on a database with an outbox row: %v, want ErrDatabaseInUse", err)
	}
}
