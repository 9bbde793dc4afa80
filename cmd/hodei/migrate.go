package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/hodei-jobs/hodei/store/postgres"
)

// migrateResult is what `hodei migrate -o json` prints.
type migrateResult struct {
	Applied  []string `json:"applied"`
	UpToDate bool     `json:"up_to_date"`
}

func newMigrateCmd() *cobra.Command {
	var dbURL, output string
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Apply the database migrations embedded in this binary",
		Long: "Apply the schema migrations embedded in this binary that the database has not " +
			"recorded yet. Safe to run again and from several hosts at once.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if err := requireFlags(cmd, "database-url"); err != nil {
				return err
			}
			applied, err := postgres.Migrate(cmd.Context(), dbURL)
			if err != nil {
				return fmt.Errorf("migrate: %w", err)
			}
			res := migrateResult{Applied: applied, UpToDate: len(applied) == 0}
			if res.Applied == nil {
				res.Applied = []string{}
			}
			out := cmd.OutOrStdout()
			if output == outputJSON {
				return writeJSON(out, res)
			}
			if res.UpToDate {
				fmt.Fprintln(out, "database schema is up to date")
				return nil
			}
			for _, v := range res.Applied {
				fmt.Fprintln(out, "applied", v)
			}
			return nil
		},
	}
	databaseURLFlag(cmd, &dbURL)
	outputFlag(cmd, &output)
	return cmd
}
