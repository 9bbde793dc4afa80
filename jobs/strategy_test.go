package jobs_test

import (
	"fmt"
	"testing"

	"github.com/hodei-jobs/hodei/jobs"
	"github.com/hodei-jobs/hodei/provider"
)

// sizedCloud is the fake cloud under another name and capacity, so that one test has
// two providers of different sizes.
type sizedCloud struct {
	*fakeCloud
	name string
	max  int
}

func (c sizedCloud) Name() string { return c.name }
func (c sizedCloud) Capabilities() provider.Capabilities {
	return provider.Capabilities{MaxWorkers: c.max}
}

// twoClouds registers "big" (4 workers) before "small" (2 workers).
func twoClouds(t *testing.T, cloud *fakeCloud) *provider.Registry {
	r := provider.NewRegistry()
	for _, p := range []sizedCloud{{cloud, "big", 4}, {cloud, "small", 2}} {
		if err := r.Register(p.name, p); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// Which provider each scheduled job's worker went to, after submitting n jobs and one
// scheduler pass, for each strategy: first-fit fills the first provider, least-loaded
// spreads jobs in proportion to the providers' capacities.
func TestProviderStrategy(t *testing.T) {
	for _, c := range []struct {
		strategy jobs.Strategy
		// after 3 jobs, and after 6 (both providers full)
		three, six string
	}{
		{jobs.StrategyFirstFit, "big=3 small=0", "big=4 small=2"},
		{"", "big=3 small=0", "big=4 small=2"}, // the default
		{jobs.StrategyLeastLoaded, "big=2 small=1", "big=4 small=2"},
	} {
		name := string(c.strategy)
		if name == "" {
			name = "default"
		}
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, envOpts{capacity: 10, noScheduler: true, noEngineLoop: true, providers: twoClouds, strategy: c.strategy})
			ctx := e.ctx()
			submitAndSchedule := func(n int) string {
				for range n {
					if _, err := e.svc.Submit(ctx, spec(nil)); err != nil {
						t.Fatal(err)
					}
				}
				if _, err := e.svc.Schedule(ctx); err != nil {
					t.Fatal(err)
				}
				return fmt.Sprintf("big=%d small=%d",
					e.count(`SELECT count(*) FROM workers WHERE provider = 'big'`),
					e.count(`SELECT count(*) FROM workers WHERE provider = 'small'`))
			}
			if got := submitAndSchedule(3); got != c.three {
				t.Errorf("3 jobs: %s, want %s", got, c.three)
			}
			if got := submitAndSchedule(3); got != c.six {
				t.Errorf("6 jobs: %s, want %s", got, c.six)
			}
			// A seventh waits: both are full.
			if got := submitAndSchedule(1); got != c.six {
				t.Errorf("7 jobs: %s, want %s", got, c.six)
			}
		})
	}
}

func TestProviderStrategyRefused(t *testing.T) {
	cfg := jobs.Config{ServerURL: "http://x", DefaultProvider: "fake", Capacity: 1, ProviderStrategy: "random"}
	if err := cfg.Validate(); err == nil || err.Error() != `jobs: Config.ProviderStrategy "random": want first-fit or least-loaded` {
		t.Errorf("Validate: %v", err)
	}
}
