package saga

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/command"
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

// TestDrainTimeout: when Run's context ends (a graceful shutdown), a saga whose step is
// running finishes that step within DrainTimeout; without it the step's context is
// cancelled with Run's and the step does not complete.
func TestDrainTimeout(t *testing.T) {
	for _, drain := range []time.Duration{10 * time.Second, 0} {
		e := newEnv(t)
		started := make(chan struct{}, 1)
		slow := Step{Name: "slow", Retry: RetryPolicy{MaxAttempts: 3, Initial: time.Second, Max: 10 * time.Second},
			Do: func(ctx context.Context, sc *StepContext) (any, error) {
				select {
				case started <- struct{}{}:
				default:
				}
				select {
				case <-time.After(300 * time.Millisecond):
				case <-ctx.Done():
					return nil, ctx.Err()
				}
				return command.Dispatch[effectResult](ctx, sc, effectCmd{Key: sc.Key(), Saga: sc.SagaID(), Step: "slow"})
			}}
		name := "drain-" + drain.String()
		must(t, e.reg.Register(Definition{Name: name, Version: 1, Steps: []Step{slow}}))
		eng := e.engine("r", func(c *Config) { c.DrainTimeout = drain })
		id := IDFor(name, "x")
		if _, _, err := eng.Start(e.ctx(), name, id, nil); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- eng.Run(ctx) }()
		select {
		case <-started:
		case <-time.After(30 * time.Second):
			t.Fatal("the step never started")
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Run: %v", err)
		}
		info := e.state(eng, id)
		switch {
		case drain > 0 && (info.State != StateCompleted || e.effects(id, "slow") != 1):
			t.Errorf("DrainTimeout %s: saga %s with %d effects after the shutdown, want completed with 1", drain, info.State, e.effects(id, "slow"))
		case drain == 0 && info.State == StateCompleted:
			t.Errorf("DrainTimeout 0: the running step completed after Run's context ended")
		}
	}
}
