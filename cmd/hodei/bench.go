package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/hodei-jobs/hodei/internal/bench"
)

// newBenchCmd is the parent of the benchmarks; each benchmark adds its own subcommand
// constructor to the AddCommand list below.
func newBenchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Run a benchmark against a real database",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(
		newBenchOutboxCmd(),
		newBenchSagasCmd(),
		newBenchJobsCmd(),
		newBenchRecoveryCmd(),
		newBenchSoakCmd(),
	)
	return cmd
}

func newBenchOutboxCmd() *cobra.Command {
	var (
		dbURL, output string
		cfg           bench.OutboxConfig
	)
	cmd := &cobra.Command{
		Use:   "outbox",
		Short: "Measure outbox relay throughput (burn-down) and insert→dispatch latency",
		Long: "Phase 1 pre-inserts --messages command rows and measures how fast --relays relays " +
			"dispatch them to a no-op handler. Phase 2 inserts single rows, each in its own " +
			"transaction, at --rate per second for --duration and reports the latency from " +
			"commit to handler (p50/p95/p99), with the relays' safety poll at one minute so " +
			"that every row must be delivered by a wake-up. The database's outbox table is " +
			"TRUNCATED: use a database of its own. With --driver sqlite --sqlite-path FILE the " +
			"relays run on the embedded SQLite driver; SQLite is one process per database, so " +
			"the latency phase inserts through the relays' own store (in-process wake-ups) " +
			"instead of a second connection pool (PostgreSQL: NOTIFY).",
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
				if err := requireFlags(cmd, "database-url"); err != nil {
					return err
				}
				cfg.DatabaseURL = dbURL
			case bench.DriverSQLite:
				if cmd.Flags().Lookup("database-url").Changed {
					return errors.New("--database-url: not with --driver sqlite (use --sqlite-path)")
				}
				if err := requireFlags(cmd, "sqlite-path"); err != nil {
					return err
				}
			default:
				return fmt.Errorf("--driver: %q is not postgres or sqlite", cfg.Driver)
			}
			if output == outputText {
				cfg.Log = cmd.ErrOrStderr()
			}
			res, err := bench.RunOutbox(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if output == outputJSON {
				return writeJSON(out, res)
			}
			fmt.Fprintf(out, "driver:     %s (latency inserter: %s)\n", res.Driver, res.LatencyInserter)
			fmt.Fprintf(out, "burn-down:  %d messages, %d relays: %.0f messages/s (%.2fs)\n",
				res.Messages, res.Relays, res.ThroughputPerS, res.BurnDownSeconds)
			fmt.Fprintf(out, "latency:    %d inserts at %.0f/s: p50 %.2f ms, p95 %.2f ms, p99 %.2f ms, max %.2f ms\n",
				res.LatencyInserted, res.AchievedRate, res.LatencyP50Ms, res.LatencyP95Ms, res.LatencyP99Ms, res.LatencyMaxMs)
			fmt.Fprintf(out, "wake-ups:   poll %s; %d of %d rows claimed on wake-ups, %d by poll, %d lost wake-ups, %d dispatched\n",
				res.PollInterval, res.ClaimedOnWake, res.LatencyInserted, res.ClaimedByPoll, res.LostWakeups, res.LatencyDispatched)
			return nil
		},
	}
	databaseURLFlag(cmd, &dbURL)
	outputFlag(cmd, &output)
	f := cmd.Flags()
	f.StringVar(&cfg.Driver, "driver", bench.DriverPostgres, "store driver: postgres (--database-url) or sqlite (--sqlite-path)")
	f.StringVar(&cfg.SQLitePath, "sqlite-path", "", "SQLite database file with --driver sqlite (created if missing; its outbox is emptied)")
	f.IntVar(&cfg.Messages, "messages", 100000, "rows pre-inserted for the burn-down")
	f.IntVar(&cfg.Rate, "rate", 500, "inserts per second in the latency phase")
	f.DurationVar(&cfg.Duration, "duration", 10*time.Second, "length of the latency phase")
	f.IntVar(&cfg.Relays, "relays", 4, "relays running on the table")
	f.IntVar(&cfg.BatchSize, "batch-size", 1000, "rows per claim")
	f.IntVar(&cfg.Concurrency, "concurrency", 1, "commands of a batch dispatched at once")
	f.BoolVar(&cfg.AllowDataLoss, "i-know-this-deletes-data", false, "run even on a database that holds jobs or outbox rows (the benchmark empties the outbox)")
	return cmd
}
