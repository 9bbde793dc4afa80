package bench

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/internal/pgtest"
)

// Bad soak settings are refused with an error naming the flag.
func TestSoakConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  SoakConfig
		want string
	}{
		{SoakConfig{}, "--database-url"},
		{SoakConfig{DatabaseURL: "postgres://x", Rate: -1}, "--rate"},
		{SoakConfig{DatabaseURL: "postgres://x", Duration: time.Second}, "--duration"},
		{SoakConfig{DatabaseURL: "postgres://x", Retain: time.Millisecond}, "--retain"},
		{SoakConfig{DatabaseURL: "postgres://x", Duration: time.Minute, Sample: 2 * time.Minute}, "--sample"},
	} {
		tc.cfg.setDefaults()
		if err := tc.cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%+v) = %v, want an error naming %s", tc.cfg, err, tc.want)
		}
	}
}

// A short soak against a real server and PostgreSQL: every job succeeds, the pruner
// deletes ended jobs, their sagas and log lines while jobs keep coming, and every sample
// measures every table.
func TestSoakPrunesWhileSubmitting(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, err := RunSoak(ctx, SoakConfig{DatabaseURL: pgtest.NewDatabase(t), Duration: 20 * time.Second,
		Sample: 10 * time.Second, Rate: 2, Retain: time.Second, PruneInterval: time.Second,
		WorkerBinary: buildHodeiBinary(t)})
	if err != nil {
		t.Fatal(err)
	}
	if res.Submitted == 0 || res.Succeeded != res.Submitted {
		t.Fatalf("%d submitted, %d succeeded (first error %q); want all", res.Submitted, res.Succeeded, res.FirstError)
	}
	if len(res.Samples) != 2 {
		t.Fatalf("%d samples, want 2", len(res.Samples))
	}
	pruned := map[string]int{}
	for _, s := range res.Samples {
		for k, n := range s.Pruned {
			pruned[k] += n
		}
		for _, tb := range soakTables {
			if s.Tables[tb].Bytes <= 0 {
				t.Fatalf("sample %d: table %s measured %+v", s.Minute, tb, s.Tables[tb])
			}
		}
	}
	if pruned["jobs"] == 0 || pruned["outbox"] == 0 {
		t.Fatalf("pruned %v while submitting for 20s with 1s retention; want jobs and outbox rows", pruned)
	}
	if res.PrunePasses == 0 || res.MaxBatchMs <= 0 {
		t.Fatalf("%d prune passes, longest batch %.1f ms", res.PrunePasses, res.MaxBatchMs)
	}
}
