package saga

import (
	"context"
	"sync"
	"testing"
	"time"
)

// TestReleaseOnStart: a runner that restarts under the same id (a crashed server
// holding its data directory again) takes back at once the sagas its earlier run held,
// instead of waiting for their leases to expire; without ReleaseOnStart they wait.
func TestReleaseOnStart(t *testing.T) {
	e := newEnv(t)
	must(t, e.reg.Register(Definition{Name: "held", Version: 1, Steps: []Step{e.effectStep("a", nil)}}))
	starter := e.engine("starter", nil)
	id := IDFor("held", "x")
	if _, _, err := starter.Start(e.ctx(), "held", id, nil); err != nil {
		t.Fatal(err)
	}
	// The earlier run of "stable" claimed the saga for ten minutes, then died.
	recs, err := e.st.Sagas().Claim(e.ctx(), "stable", e.clock.Now(), 10*time.Minute, 10)
	must(t, err)
	if len(recs) != 1 {
		t.Fatalf("claimed %d sagas, want 1", len(recs))
	}
	run := func(release bool, d time.Duration) *Info {
		eng := e.engine("stable", func(c *Config) { c.ReleaseOnStart = release })
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Go(func() { _ = eng.Run(ctx) })
		deadline := time.Now().Add(d)
		var info *Info
		for time.Now().Before(deadline) {
			if info = e.state(eng, id); info.State == StateCompleted {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
		wg.Wait()
		return info
	}
	if info := run(false, 500*time.Millisecond); info.State == StateCompleted {
		t.Fatalf("without ReleaseOnStart the held saga ran before its lease expired: %+v", info)
	}
	if info := run(true, 10*time.Second); info.State != StateCompleted {
		t.Fatalf("with ReleaseOnStart the held saga did not run: %+v", info)
	}
}
