package main

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/hodei-jobs/hodei/internal/bench"
	"github.com/hodei-jobs/hodei/server"
)

func newBenchRecoveryCmd() *cobra.Command {
	var (
		output string
		cfg    bench.RecoveryConfig
	)
	cmd := &cobra.Command{
		Use:   "recovery",
		Short: "Measure worker SIGKILL → job RUNNING again on a replacement worker",
		Long: "Run a server in this process (on --database-url, or --driver sqlite with " +
			"--sqlite-path or a temporary file; its workers are real `hodei worker` processes) " +
			"and --kills times: submit a job (`sleep 600`, 3 attempts), wait until it runs, " +
			"SIGKILL its worker process, and measure the time until the job is RUNNING again " +
			"with a higher attempt; then cancel it. The server that started a worker sees it " +
			"exit and recovers at once. With --after-restart all the jobs start first, the " +
			"server is stopped gracefully and a new one started on the same data directory, " +
			"database and address, the workers reconnect, and then each is killed: the new " +
			"server is not their parent and detects the kill by the stream close and " +
			"--disconnect-grace. Each wait is bounded by --wait-timeout; a kill that does not " +
			"recover is an error.",
		Example: "  hodei bench recovery --database-url postgres://localhost/hodei_bench\n" +
			"  hodei bench recovery --database-url postgres://localhost/hodei_bench --after-restart -o json\n" +
			"  hodei bench recovery --driver sqlite --kills 3",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			switch cfg.Driver {
			case bench.DriverPostgres:
				if cfg.SQLitePath != "" {
					return errors.New("--sqlite-path: only with --driver sqlite")
				}
				if cfg.DatabaseURL == "" {
					return fmt.Errorf("--database-url (or %s) is required with --driver postgres", envDatabaseURL)
				}
			case bench.DriverSQLite:
				if cmd.Flags().Lookup("database-url").Changed {
					return errors.New("--database-url: not with --driver sqlite (use --sqlite-path)")
				}
				cfg.DatabaseURL = ""
			default:
				return fmt.Errorf("--driver: %q is not postgres or sqlite", cfg.Driver)
			}
			if cfg.Kills < 1 || cfg.Kills > 100 {
				return fmt.Errorf("--kills: must be in [1, 100], got %d", cfg.Kills)
			}
			if cfg.WaitTimeout < time.Second {
				return fmt.Errorf("--wait-timeout: must be at least 1s, got %s", cfg.WaitTimeout)
			}
			if err := checkLivenessFlags(&server.Config{Cleanup: cfg.Cleanup}); err != nil {
				return err
			}
			if output == outputText {
				cfg.Log = cmd.ErrOrStderr()
			}
			res, err := bench.RunRecovery(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if output == outputJSON {
				return writeJSON(out, res)
			}
			s := res.Settings
			fmt.Fprintf(out, "server:     %s (in-process, %s), mode %s\n", res.Server, res.Driver, res.Mode)
			fmt.Fprintf(out, "liveness:   heartbeat %s, disconnect grace %s, lost after %s, cleanup every %s\n",
				benchMsDuration(s.HeartbeatIntervalMs), benchMsDuration(s.DisconnectGraceMs), benchMsDuration(s.WorkerLostAfterMs), benchMsDuration(s.CleanupIntervalMs))
			if res.ReconnectMs > 0 {
				fmt.Fprintf(out, "reconnect:  all workers back %.0f ms after the restart\n", res.ReconnectMs)
			}
			for i, k := range res.Kills {
				fmt.Fprintf(out, "kill %-3d    job %s worker pid %d: RUNNING again after %.0f ms (attempt %d → %d), then %s\n",
					i+1, k.JobID, k.PID, k.RecoveryMs, k.AttemptBefore, k.AttemptAfter, k.FinalState)
			}
			parts := make([]string, len(res.RecoveryMs))
			for i, v := range res.RecoveryMs {
				parts[i] = fmt.Sprintf("%.0f", v)
			}
			fmt.Fprintf(out, "recovery:   kill → RUNNING again: min %.0f ms, median %.0f ms, max %.0f ms (%s)\n",
				res.MinMs, res.MedianMs, res.MaxMs, strings.Join(parts, ", "))
			return nil
		},
	}
	stringFlagEnv(cmd, &cfg.DatabaseURL, "database-url", envDatabaseURL, "",
		"PostgreSQL database of the in-process server (migrated; the bench's jobs stay in it)")
	outputFlag(cmd, &output)
	f := cmd.Flags()
	f.StringVar(&cfg.Driver, "driver", bench.DriverPostgres, "store driver of the in-process server: postgres (--database-url) or sqlite (--sqlite-path)")
	f.StringVar(&cfg.SQLitePath, "sqlite-path", "", "SQLite file with --driver sqlite (default: one in the temporary data directory)")
	f.IntVar(&cfg.Kills, "kills", 5, "worker kills measured")
	f.BoolVar(&cfg.AfterRestart, "after-restart", false,
		"restart the server before the kills, so that it is not the workers' parent (detection by stream close + grace)")
	f.DurationVar(&cfg.WaitTimeout, "wait-timeout", 2*time.Minute, "bound of each wait (job running, recovery, cancellation, reconnection)")
	f.DurationVar(&cfg.Cleanup.HeartbeatInterval, "heartbeat-interval", 5*time.Second,
		"how often workers send a heartbeat (the server's default)")
	f.DurationVar(&cfg.Cleanup.DisconnectGrace, "disconnect-grace", 0,
		"a worker whose stream closed and that is not back within this time is lost (0: 2 heartbeat intervals, at most --worker-lost-after)")
	f.DurationVar(&cfg.Cleanup.LostAfter, "worker-lost-after", 0,
		"a worker not heard of for this long is lost (0: 3 heartbeat intervals)")
	return cmd
}

// benchMsDuration formats a millisecond count as a duration.
func benchMsDuration(v int64) time.Duration { return time.Duration(v) * time.Millisecond }
