package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/hodei-jobs/hodei/outbox"
	"github.com/hodei-jobs/hodei/store/postgres"
)

// pruneResult is what `hodei admin prune -o json` prints.
type pruneResult struct {
	Kind   string `json:"kind"`
	Retain string `json:"retain"`
	Rows   int    `json:"rows"`
	DryRun bool   `json:"dry_run"`
}

func newAdminPruneCmd() *cobra.Command {
	var (
		dbURL, output string
		retain        time.Duration
		dryRun        bool
	)
	cmd := &cobra.Command{
		Use:   "prune",
		Short: "Delete finished outbox rows older than the retention (--dry-run: count them)",
		Long: `Delete, in small batches, the outbox rows that finished (COMPLETED or CANCELLED)
longer ago than --retain-outbox: what the leading hodei server does every minute. Rows
still to be relayed (PENDING, RETRY) and dead letters are never deleted. --dry-run
deletes nothing and prints how many rows would go. It talks to the database directly
(--database-url), like hodei migrate.`,
		Example: `  hodei admin prune --database-url postgres://localhost/hodei --dry-run
  hodei admin prune --database-url postgres://localhost/hodei --retain-outbox 72h -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if err := requireFlags(cmd, "database-url"); err != nil {
				return err
			}
			st, err := postgres.Open(cmd.Context(), dbURL)
			if err != nil {
				return fmt.Errorf("prune: %w", err)
			}
			defer st.Close()
			p, err := outbox.NewPruner(st.Outbox(), outbox.PrunerConfig{Retain: retain})
			if err != nil {
				return fmt.Errorf("--retain-outbox: %w", err)
			}
			n, err := p.PruneOnce(cmd.Context(), dryRun)
			if err != nil {
				return fmt.Errorf("prune: %w", err)
			}
			res := pruneResult{Kind: "outbox", Retain: retain.String(), Rows: n, DryRun: dryRun}
			out := cmd.OutOrStdout()
			if output == outputJSON {
				return writeJSON(out, []pruneResult{res})
			}
			verb := "deleted"
			if dryRun {
				verb = "would be deleted"
			}
			fmt.Fprintf(out, "outbox: %d finished rows older than %s %s\n", n, retain, verb)
			return nil
		},
	}
	databaseURLFlag(cmd, &dbURL)
	outputFlag(cmd, &output)
	cmd.Flags().DurationVar(&retain, "retain-outbox", outbox.DefaultRetain,
		"keep finished outbox rows this long (at least 1m)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "delete nothing; print how many rows would be deleted")
	return cmd
}
