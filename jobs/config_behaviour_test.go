package jobs_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/command"
	"github.com/hodei-jobs/hodei/jobs"
	"github.com/hodei-jobs/hodei/provider"
)

// An operator who mistypes a cleanup setting is told which field is wrong, and neither
// the cleanup loop nor a single run starts with it (nothing is scanned or written).
func TestCleanupConfigNamesTheField(t *testing.T) {
	e := newEnv(t, envOpts{noScheduler: true, noEngineLoop: true})
	for _, tc := range []struct {
		cfg  jobs.CleanupConfig
		want string
	}{
		{jobs.CleanupConfig{Interval: time.Millisecond}, "CleanupConfig.Interval 1ms out of range"},
		{jobs.CleanupConfig{Interval: 48 * time.Hour}, "CleanupConfig.Interval 48h0m0s out of range"},
		{jobs.CleanupConfig{HeartbeatInterval: 2 * time.Hour}, "CleanupConfig.HeartbeatInterval 2h0m0s out of range"},
		{jobs.CleanupConfig{HeartbeatInterval: 10 * time.Second, LostAfter: 5 * time.Second},
			"CleanupConfig.LostAfter 5s is below HeartbeatInterval 10s"},
		{jobs.CleanupConfig{CreatingTimeout: time.Millisecond}, "CleanupConfig.CreatingTimeout 1ms out of range"},
	} {
		c := tc.cfg
		c.SetDefaults()
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%+v) = %v, want an error containing %q", tc.cfg, err, tc.want)
		}
		if r, err := e.svc.Cleanup(e.ctx(), tc.cfg); err == nil || r != nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Cleanup(%+v) = %v, %v; want no report and an error containing %q", tc.cfg, r, err, tc.want)
		}
		ctx, cancel := context.WithTimeout(e.ctx(), 5*time.Second)
		err := e.svc.RunCleanup(ctx, tc.cfg) // returns at once: it never loops on a bad config
		cancel()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("RunCleanup(%+v) = %v, want an error containing %q", tc.cfg, err, tc.want)
		}
	}
	if n := e.count(`SELECT count(*) FROM outbox WHERE type = $1`, jobs.EventCleanupCompleted); n != 0 {
		t.Fatalf("a refused config wrote %d cleanup.completed events", n)
	}
}

// A Service without any provider cannot pick a default one, and says so.
func TestConfigWithoutProvider(t *testing.T) {
	e := newEnv(t, envOpts{noScheduler: true, noEngineLoop: true})
	_, err := jobs.New(e.st, command.NewBus(), e.engine, provider.NewRegistry(), e.cloud, jobs.Config{ServerURL: "http://127.0.0.1:1"})
	if err == nil || !strings.Contains(err.Error(), "Config.DefaultProvider is empty and no provider is registered") {
		t.Fatalf("jobs.New without providers = %v, want an error naming Config.DefaultProvider", err)
	}
}
