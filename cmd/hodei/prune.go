package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/hodei-jobs/hodei/retention"
	"github.com/hodei-jobs/hodei/store/postgres"
)

// retentionFlags declares the --retain-* flags (with env bindings on hodei server).
func retentionFlags(cmd *cobra.Command, outbox, sagas, jobs, logs, idem *time.Duration, env bool) {
	f := cmd.Flags()
	f.DurationVar(outbox, "retain-outbox", retention.DefaultOutbox,
		"how long finished outbox rows (COMPLETED, CANCELLED) are kept; the leader deletes older ones in small batches every minute (0: keep forever; else at least 1m). Dead letters are kept")
	f.DurationVar(sagas, "retain-sagas", retention.DefaultSagas,
		"how long ended sagas that no job owns (warm-pool sagas) are kept, with their history (0: forever; else at least 1m). A job's sagas go with the job (--retain-jobs)")
	f.DurationVar(jobs, "retain-jobs", retention.DefaultJobs,
		"how long jobs that ended (SUCCEEDED, FAILED, TIMED_OUT, CANCELLED) are kept, with their logs and sagas, and TERMINATED workers (0: forever; else at least 1m). MANUAL_INTERVENTION_REQUIRED and jobs with a saga still going are never deleted")
	f.DurationVar(logs, "retain-logs", retention.DefaultLogs,
		"how long log lines of jobs that ended are kept (0: forever; else at least 1m); a job not ended keeps its lines")
	f.DurationVar(idem, "retain-idempotency", retention.DefaultIdempotency,
		"how long command idempotency keys are kept (0: forever; else at least 1m): a request repeated later runs again. Keys an unfinished outbox row carries are kept")
	if env {
		bindEnv(cmd, "retain-outbox", envRetainOutbox)
		bindEnv(cmd, "retain-sagas", envRetainSagas)
		bindEnv(cmd, "retain-jobs", envRetainJobs)
		bindEnv(cmd, "retain-logs", envRetainLogs)
		bindEnv(cmd, "retain-idempotency", envRetainIdempotency)
	}
}

func newAdminPruneCmd() *cobra.Command {
	var (
		dbURL, output string
		r             retention.Retentions
		dryRun        bool
	)
	cmd := &cobra.Command{
		Use:   "prune",
		Short: "Delete what ended longer ago than its retention (--dry-run: count it per kind)",
		Long: `One pass of what the leading hodei server does every minute: delete, in small
batches, what ended longer ago than its retention:
  outbox       finished outbox rows (COMPLETED, CANCELLED)        --retain-outbox (24h)
  sagas        ended sagas no job owns, with their history         --retain-sagas (168h)
  jobs         ended jobs with their log lines and sagas           --retain-jobs (720h)
  workers      TERMINATED workers and their credentials            --retain-jobs
  logs         log lines of ended jobs                             --retain-logs (168h)
  idempotency  command idempotency keys                            --retain-idempotency (168h)
Never deleted: jobs not ended (MANUAL_INTERVENTION_REQUIRED included) and jobs with a
saga still going, sagas not ended and their history, outbox rows still to be relayed
and dead letters, keys such rows carry, and the audit trail (append-only). A retention
of 0 keeps that kind forever. --dry-run deletes nothing and prints how many rows of
each kind would go. It talks to the database directly (--database-url), like hodei
migrate.`,
		Example: `  hodei admin prune --database-url postgres://localhost/hodei --dry-run
  hodei admin prune --database-url postgres://localhost/hodei --retain-outbox 72h --retain-jobs 0 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if err := requireFlags(cmd, "database-url"); err != nil {
				return err
			}
			if err := r.Validate(retention.MinFlagRetain); err != nil {
				return err
			}
			st, err := postgres.Open(cmd.Context(), dbURL)
			if err != nil {
				return fmt.Errorf("prune: %w", err)
			}
			defer st.Close()
			p, err := retention.NewPruner(st, retention.Config{Retain: r})
			if err != nil {
				return fmt.Errorf("prune: %w", err)
			}
			rep, err := p.PruneOnce(cmd.Context(), dryRun)
			if err != nil {
				return fmt.Errorf("prune: %w", err)
			}
			out := cmd.OutOrStdout()
			if output == outputJSON {
				return writeJSON(out, rep)
			}
			verb := "deleted"
			if dryRun {
				verb = "would go"
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintf(tw, "KIND\tRETAIN\tROWS (%s)\tKEPT\tBATCHES\tMAX BATCH\n", verb)
			for _, k := range rep.Kinds {
				if k.Retain == "0s" {
					fmt.Fprintf(tw, "%s\tforever\t-\t-\t-\t-\n", k.Kind)
					continue
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%.1fms\n", k.Kind, k.Retain, k.Rows, k.Kept, k.Batches, k.MaxBatchMs)
			}
			return tw.Flush()
		},
	}
	databaseURLFlag(cmd, &dbURL)
	outputFlag(cmd, &output)
	retentionFlags(cmd, &r.Outbox, &r.Sagas, &r.Jobs, &r.Logs, &r.Idempotency, false)
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "delete nothing; print how many rows of each kind would be deleted")
	return cmd
}
