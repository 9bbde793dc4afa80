package main

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/hodei-jobs/hodei/internal/bench"
)

func newBenchJobsCmd() *cobra.Command {
	var (
		output    string
		cfg       bench.JobsConfig
		traceSink bool
	)
	cmd := &cobra.Command{
		Use:   "jobs",
		Short: "Measure end-to-end job throughput and submit→RUNNING latency",
		Long: "Submit --jobs jobs running `true`, --concurrency of them in flight at once (each " +
			"client submits a job, watches it to its end and submits the next), and report " +
			"jobs per second from the first submission to the last end, and the latency from " +
			"submission to the job's start (p50/p95/p99). Against a running server with " +
			"--server, or with --database-url against a server started in this process on a " +
			"free port (its workers are real `hodei worker` processes), or with --driver sqlite " +
			"against such a server on an SQLite file (--sqlite-path; default a temporary one).",
		Example: "  hodei bench jobs --server http://127.0.0.1:7070 --jobs 500 --concurrency 16\n" +
			"  hodei bench jobs --database-url postgres://localhost/hodei_bench -o json\n" +
			"  hodei bench jobs --driver sqlite --sqlite-path /tmp/bench.db --jobs 200\n" +
			"  hodei bench jobs --driver sqlite --warm-workers 8 --warm-max-jobs 100 --max-workers 8 -o json\n" +
			"  hodei bench jobs --driver sqlite --provider docker --image busybox:1.36 --jobs 100 -o json",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			// Given on the command line, --server and --database-url exclude each other.
			// Otherwise a database URL (flag or HODEI_DATABASE_URL) asks for an
			// in-process server, and --server's value (HODEI_SERVER or the default) is
			// used without one.
			srvGiven := cmd.Flags().Lookup("server").Changed
			if srvGiven && cmd.Flags().Lookup("database-url").Changed {
				return errors.New("--server and --database-url: give one (a running server, or an in-process one)")
			}
			switch cfg.Driver {
			case bench.DriverPostgres:
				if cfg.SQLitePath != "" {
					return errors.New("--sqlite-path: only with --driver sqlite")
				}
			case bench.DriverSQLite:
				if srvGiven {
					return errors.New("--server and --driver sqlite: give one (a running server, or an in-process one on SQLite)")
				}
				if cmd.Flags().Lookup("database-url").Changed {
					return errors.New("--database-url: not with --driver sqlite (use --sqlite-path)")
				}
				cfg.DatabaseURL, cfg.ServerURL = "", ""
			default:
				return fmt.Errorf("--driver: %q is not postgres or sqlite", cfg.Driver)
			}
			if cfg.Driver == bench.DriverSQLite {
				// An in-process server on SQLite: cfg is complete.
			} else if srvGiven || cfg.DatabaseURL == "" {
				cfg.Driver = ""
				cfg.DatabaseURL = ""
				if _, err := checkServerURL(cfg.ServerURL); err != nil {
					return err
				}
			} else {
				cfg.ServerURL = ""
			}
			if cfg.Jobs < 1 {
				return fmt.Errorf("--jobs: must be at least 1, got %d", cfg.Jobs)
			}
			if cfg.Concurrency < 1 {
				return fmt.Errorf("--concurrency: must be at least 1, got %d", cfg.Concurrency)
			}
			if output == outputText {
				cfg.Log = cmd.ErrOrStderr()
			}
			if cfg.Provider != "" && cfg.Provider != "local" && cfg.Provider != "docker" {
				return fmt.Errorf("--provider: %q: want local or docker", cfg.Provider)
			}
			if cfg.WarmWorkers < 0 || cfg.WarmMaxJobs < 1 {
				return fmt.Errorf("--warm-workers (%d) must not be negative and --warm-max-jobs (%d) must be at least 1", cfg.WarmWorkers, cfg.WarmMaxJobs)
			}
			if cfg.WarmWorkers > 0 && srvGiven {
				return errors.New("--warm-workers: only with an in-process server (start the running one with --warm-workers)")
			}
			if cfg.Provider == "docker" && cfg.Image == "" {
				return errors.New("--image: required with --provider docker (an image on the engine: jobs run with --pull never)")
			}
			var stopSink func() int64
			if traceSink {
				var err error
				if stopSink, err = startTraceSink(cmd.Context(), slog.New(slog.DiscardHandler)); err != nil {
					return err
				}
			}
			res, err := bench.RunJobs(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			if stopSink != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "trace sink: %d spans received\n", stopSink())
			}
			out := cmd.OutOrStdout()
			if output == outputJSON {
				return writeJSON(out, res)
			}
			where := res.Server
			if res.InProcess {
				where += " (in-process, " + res.Driver + ")"
			}
			fmt.Fprintf(out, "server:      %s\n", where)
			fmt.Fprintf(out, "jobs:        %d (%d in flight): %d succeeded, %d did not\n", res.Jobs, res.Concurrency, res.Succeeded, res.NotSucceeded)
			if res.WarmWorkers > 0 {
				fmt.Fprintf(out, "warm pool:   %d workers, %d jobs each at most\n", res.WarmWorkers, res.WarmMaxJobs)
			}
			fmt.Fprintf(out, "throughput:  %.1f jobs/s (%.2fs)\n", res.ThroughputPerS, res.DurationSeconds)
			fmt.Fprintf(out, "start:       submit→RUNNING p50 %.1f ms, p95 %.1f ms, p99 %.1f ms, max %.1f ms\n",
				res.StartLatencyP50Ms, res.StartLatencyP95Ms, res.StartLatencyP99Ms, res.StartLatencyMaxMs)
			fmt.Fprintf(out, "end:         submit→end p50 %.1f ms, p95 %.1f ms; SubmitJob p50 %.1f ms\n",
				res.EndLatencyP50Ms, res.EndLatencyP95Ms, res.SubmitP50Ms)
			if res.BareRuns > 0 {
				fmt.Fprintf(out, "bare run:    docker run --rm %s true p50 %.1f ms, p95 %.1f ms (%d runs); start overhead p50 %.1f ms, ratio %.2f\n",
					res.Image, res.BareRunP50Ms, res.BareRunP95Ms, res.BareRuns, res.StartOverheadP50Ms, res.StartToBareRunP50Ratio)
			}
			if res.NotSucceeded > 0 {
				return &exitError{Code: 1, Msg: fmt.Sprintf("bench jobs: %d of %d jobs did not succeed", res.NotSucceeded, res.Jobs)}
			}
			return nil
		},
	}
	serverFlag(cmd, &cfg.ServerURL)
	stringFlagEnv(cmd, &cfg.DatabaseURL, "database-url", envDatabaseURL, "",
		"run a server in this process on this PostgreSQL database instead of using --server")
	outputFlag(cmd, &output)
	traceSinkFlag(cmd, &traceSink)
	f := cmd.Flags()
	f.StringVar(&cfg.Driver, "driver", bench.DriverPostgres, "store driver of the in-process server: postgres (--database-url) or sqlite (--sqlite-path)")
	f.StringVar(&cfg.SQLitePath, "sqlite-path", "", "SQLite file of the in-process server with --driver sqlite (default: one in a temporary data directory)")
	f.IntVar(&cfg.Jobs, "jobs", 500, "jobs submitted")
	f.IntVar(&cfg.Concurrency, "concurrency", 16, "jobs in flight at once")
	f.IntVar(&cfg.MaxWorkers, "max-workers", 0, "capacity of the in-process server (0: its default)")
	f.StringVar(&cfg.Provider, "provider", "", "provider the jobs run on: local or docker (an in-process server then runs that provider; with docker the bench also times bare container runs)")
	f.StringVar(&cfg.Image, "image", "", "image the jobs run in (with --provider docker; it must be on the engine: --pull never)")
	f.StringVar(&cfg.Docker.Host, "docker-host", "", "Docker Engine of the in-process server and of the bare runs (default $DOCKER_HOST or the local socket)")
	f.StringVar(&cfg.Docker.AgentBinary, "docker-agent", "", "static hodei binary mounted into containers (default this executable, which must be built with CGO_ENABLED=0)")
	f.IntVar(&cfg.WarmWorkers, "warm-workers", 0, "warm pool of the in-process server: idle workers kept for the jobs' provider and image (0: none, every job gets a fresh worker)")
	f.IntVar(&cfg.WarmMaxJobs, "warm-max-jobs", 1, "jobs one warm worker runs before it is replaced (with --warm-workers)")
	f.StringVar(&cfg.CPUProfile, "cpuprofile", "", "write a CPU profile of this process (the in-process server) to this file")
	return cmd
}
