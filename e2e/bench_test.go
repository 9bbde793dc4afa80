package e2e

import (
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/hodei-jobs/hodei/internal/pgtest"
)

// `hodei bench jobs` against a running platform and with an in-process server on the
// same driver prints the agreed JSON keys, and every job succeeds. (Figures are not
// judged here: benchmarks are not timed tests.)
func TestBenchJobs(t *testing.T) { forEachBackend(t, testBenchJobs) }

func testBenchJobs(t *testing.T, b backend) {
	s := startServer(t, b, 4)
	check := func(r cliResult, driver string) {
		t.Helper()
		if r.code != 0 {
			t.Fatalf("%v", r)
		}
		var res map[string]any
		if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
			t.Fatalf("%v\n%v", r, err)
		}
		for _, k := range []string{"throughput_per_s", "start_latency_p50_ms", "start_latency_p95_ms", "start_latency_p99_ms"} {
			if v, ok := res[k].(float64); !ok || v <= 0 {
				t.Errorf("bench jobs -o json: %s = %v, want a positive number (%s)", k, res[k], r.stdout)
			}
		}
		if res["succeeded"] != float64(20) {
			t.Errorf("bench jobs: succeeded = %v, want 20 (%s)", res["succeeded"], r.stdout)
		}
		if driver != "" && res["driver"] != driver {
			t.Errorf("bench jobs in-process: driver = %v, want %s (%s)", res["driver"], driver, r.stdout)
		}
		t.Logf("%s", r.stdout)
	}
	check(s.hodei("bench", "jobs", "--server", s.url, "--jobs", "20", "--concurrency", "4", "-o", "json"), "")
	if b == backendDev {
		check(s.hodei("bench", "jobs", "--driver", "sqlite", "--sqlite-path", filepath.Join(t.TempDir(), "bench.db"),
			"--max-workers", "4", "--jobs", "20", "--concurrency", "4", "-o", "json"), "sqlite")
	} else {
		check(s.hodei("bench", "jobs", "--database-url", pgtest.NewDatabase(t), "--max-workers", "4",
			"--jobs", "20", "--concurrency", "4", "-o", "json"), "postgres")
	}
}
