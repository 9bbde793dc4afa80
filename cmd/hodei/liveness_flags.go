package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/hodei-jobs/hodei/server"
)

// Environment variables of the liveness and cleanup flags (`hodei server`, `hodei dev`).
const (
	envHeartbeatInterval   = "HODEI_HEARTBEAT_INTERVAL"
	envWorkerLostAfter     = "HODEI_WORKER_LOST_AFTER"
	envCleanupInterval     = "HODEI_CLEANUP_INTERVAL"
	envCreatingTimeout     = "HODEI_CREATING_TIMEOUT"
	envCleanupDryRun       = "HODEI_CLEANUP_DRY_RUN"
	envRegistrationTimeout = "HODEI_REGISTRATION_TIMEOUT"
	envDisconnectGrace     = "HODEI_DISCONNECT_GRACE"
)

// livenessFlags defines the flags that decide when a worker counts as lost and how the
// cleanup loop runs (cfg.Cleanup, jobs.CleanupConfig), and how long a new worker may
// take to register. Zero values keep the package defaults, which the usage strings
// state.
func livenessFlags(cmd *cobra.Command, cfg *server.Config) {
	f := cmd.Flags()
	c := &cfg.Cleanup
	f.DurationVar(&cfg.RegistrationTimeout, "registration-timeout", 2*time.Minute,
		"how long a new worker may take to register before it is destroyed and its job tried again")
	bindEnv(cmd, "registration-timeout", envRegistrationTimeout)
	f.DurationVar(&c.HeartbeatInterval, "heartbeat-interval", 5*time.Second,
		"how often workers send a heartbeat (told to each worker when it registers)")
	bindEnv(cmd, "heartbeat-interval", envHeartbeatInterval)
	f.DurationVar(&c.LostAfter, "worker-lost-after", 0,
		"a worker not heard of for this long is lost: its job is recovered on a replacement worker (0: 3 heartbeat intervals)")
	bindEnv(cmd, "worker-lost-after", envWorkerLostAfter)
	f.DurationVar(&c.DisconnectGrace, "disconnect-grace", 0,
		"a worker whose stream closed and that is not back within this time is lost at once (0: 2 heartbeat intervals, at most --worker-lost-after)")
	bindEnv(cmd, "disconnect-grace", envDisconnectGrace)
	f.DurationVar(&c.Interval, "cleanup-interval", 15*time.Second,
		"how often one replica looks for lost workers, workers stuck in CREATING and orphaned jobs")
	bindEnv(cmd, "cleanup-interval", envCleanupInterval)
	f.DurationVar(&c.CreatingTimeout, "creating-timeout", 5*time.Minute,
		"a worker still CREATING after this long is destroyed")
	bindEnv(cmd, "creating-timeout", envCreatingTimeout)
	f.BoolVar(&c.DryRun, "cleanup-dry-run", false,
		"log what the cleanup loop would do (and the recoveries it would start) without acting")
	bindEnv(cmd, "cleanup-dry-run", envCleanupDryRun)
}

// checkLivenessFlags names the flag of a liveness setting that cannot work.
func checkLivenessFlags(cfg *server.Config) error {
	c := cfg.Cleanup
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"registration-timeout", cfg.RegistrationTimeout}, {"heartbeat-interval", c.HeartbeatInterval},
		{"worker-lost-after", c.LostAfter}, {"cleanup-interval", c.Interval}, {"creating-timeout", c.CreatingTimeout},
		{"disconnect-grace", c.DisconnectGrace},
	} {
		if d.v < 0 {
			return fmt.Errorf("--%s: must not be negative, got %s", d.name, d.v)
		}
	}
	if c.LostAfter != 0 && c.HeartbeatInterval != 0 && c.LostAfter < c.HeartbeatInterval {
		return fmt.Errorf("--worker-lost-after (%s) must be at least --heartbeat-interval (%s): a worker would count as lost between two heartbeats",
			c.LostAfter, c.HeartbeatInterval)
	}
	lost := c.LostAfter
	if lost == 0 && c.HeartbeatInterval != 0 {
		lost = 3 * c.HeartbeatInterval
	}
	if c.DisconnectGrace != 0 && lost != 0 && c.DisconnectGrace > lost {
		return fmt.Errorf("--disconnect-grace (%s) must not exceed --worker-lost-after (%s)", c.DisconnectGrace, lost)
	}
	return nil
}
