package main

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/hodei-jobs/hodei/internal/envflag"
)

// Flags mirror HODEI_* environment variables (internal/envflag): a flag bound with
// bindEnv takes its value from the variable when it is not given on the command line;
// the command line wins, and the value is read when the command runs (applyEnvDefaults,
// called from the root's PersistentPreRunE).
//
// A subcommand that defines its own PersistentPreRunE hides the root's (cobra runs only
// the nearest one) and must call applyEnvDefaults itself.

// Names of the environment variables shared by several subcommands.
const (
	envDatabaseURL = "HODEI_DATABASE_URL"
)

func bindEnv(cmd *cobra.Command, name, env string) { envflag.Bind(cmd, name, env) }

func stringFlagEnv(cmd *cobra.Command, p *string, name, env, def, usage string) {
	envflag.String(cmd, p, name, env, def, usage)
}

// databaseURLFlag defines --database-url bound to HODEI_DATABASE_URL.
func databaseURLFlag(cmd *cobra.Command, p *string) {
	stringFlagEnv(cmd, p, "database-url", envDatabaseURL, "",
		"PostgreSQL URL, e.g. postgres://user:pass@localhost:5432/hodei")
}

func applyEnvDefaults(cmd *cobra.Command) error { return envflag.ApplyDefaults(cmd) }

func envOf(f *pflag.Flag) string { return envflag.Of(f) }

func requireFlags(cmd *cobra.Command, names ...string) error { return envflag.Require(cmd, names...) }

// Output formats accepted by -o/--output.
const (
	outputText = "text"
	outputJSON = "json"
)

// outputFlag defines -o/--output (text or json).
func outputFlag(cmd *cobra.Command, p *string) {
	cmd.Flags().StringVarP(p, "output", "o", outputText, "output format: text or json")
}

// checkOutput validates the value of -o/--output.
func checkOutput(format string) error {
	switch format {
	case outputText, outputJSON:
		return nil
	}
	return fmt.Errorf("--output: unknown format %q (want %s or %s)", format, outputText, outputJSON)
}

// writeJSON prints v as one JSON object followed by a newline.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("write json: %w", err)
	}
	return nil
}
