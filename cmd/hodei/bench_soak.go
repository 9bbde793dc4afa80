package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/hodei-jobs/hodei/internal/bench"
)

func newBenchSoakCmd() *cobra.Command {
	var (
		output string
		cfg    bench.SoakConfig
	)
	cmd := &cobra.Command{
		Use:   "soak",
		Short: "Submit jobs at a steady rate for a long time while retention prunes; report throughput and table sizes per minute",
		Long: "Run a server in this process on --database-url (its workers are real `hodei worker` " +
			"processes), submit --rate jobs per second that print a line for --duration, and run the " +
			"retention pruner every --prune-interval with every kind kept --retain (what the leader " +
			"does with the --retain-* flags, shortened). Every --sample (default a minute) it prints " +
			"the jobs ended per second, the rows pruned, the longest prune batch, and each table's " +
			"rows and bytes (pg_total_relation_size). Running for months means both stay flat.",
		Example: "  hodei bench soak --database-url postgres://localhost/hodei_soak --duration 10m --rate 10\n" +
			"  hodei bench soak --database-url postgres://localhost/hodei_soak --duration 2m --retain 30s -o json",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if err := requireFlags(cmd, "database-url"); err != nil {
				return err
			}
			if output == outputText {
				cfg.Log = cmd.ErrOrStderr()
			}
			res, err := bench.RunSoak(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if output == outputJSON {
				return writeJSON(out, res)
			}
			fmt.Fprintf(out, "server: %s; %g jobs/s for %.0fs; every kind kept %s, pruned every %s\n",
				res.Server, res.Rate, res.DurationS, res.Retain, res.PruneInterval)
			fmt.Fprintf(out, "jobs: %d submitted, %d succeeded, %d did not (%d errors); %d prune passes, longest batch %.1f ms\n",
				res.Submitted, res.Succeeded, res.NotSucceeded, res.Errors, res.PrunePasses, res.MaxBatchMs)
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', tabwriter.AlignRight)
			fmt.Fprint(tw, "min\tended/s\tpruned\tbatch ms\tjobs\tjob_logs\tsagas\tsaga_events\toutbox\tidem keys\tworkers\ttotal MB\tload\t\n")
			for _, s := range res.Samples {
				fmt.Fprintf(tw, "%d\t%.1f\t%d\t%.1f\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%.2f\t%.2f\t\n", s.Minute, s.EndedPerS,
					sumPruned(s.Pruned), s.MaxBatchMs, s.Tables["jobs"].Rows, s.Tables["job_logs"].Rows, s.Tables["sagas"].Rows,
					s.Tables["saga_events"].Rows, s.Tables["outbox"].Rows, s.Tables["idempotency_keys"].Rows,
					s.Tables["workers"].Rows, float64(s.TotalBytes)/(1<<20), s.Load1)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if res.NotSucceeded > 0 {
				return &exitError{Code: 1, Msg: fmt.Sprintf("bench soak: %d of %d jobs did not succeed (first error: %s)",
					res.NotSucceeded, res.Submitted, res.FirstError)}
			}
			return nil
		},
	}
	stringFlagEnv(cmd, &cfg.DatabaseURL, "database-url", envDatabaseURL, "",
		"PostgreSQL database of the in-process server (migrated; its tables are measured)")
	outputFlag(cmd, &output)
	f := cmd.Flags()
	f.DurationVar(&cfg.Duration, "duration", 0, "how long to submit (default 10m)")
	f.Float64Var(&cfg.Rate, "rate", 0, "jobs submitted per second (default 10)")
	f.IntVar(&cfg.MaxInFlight, "max-in-flight", 0, "most jobs submitted and not ended; a tick beyond it is skipped (default 200)")
	f.DurationVar(&cfg.Retain, "retain", 0, "retention of every kind (outbox, sagas, jobs, logs, idempotency keys) (default 30s)")
	f.DurationVar(&cfg.PruneInterval, "prune-interval", 0, "interval of the retention pruner (default 10s)")
	f.DurationVar(&cfg.Sample, "sample", 0, "reporting period (default 1m)")
	f.IntVar(&cfg.MaxWorkers, "max-workers", 0, "capacity of the in-process server (0: its default)")
	return cmd
}

func sumPruned(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}
