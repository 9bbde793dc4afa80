package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Flags mirror HODEI_* environment variables. A flag bound with bindEnv takes its value
// from the variable when it is not given on the command line; the command line wins.
// The value is read when the command runs (applyEnvDefaults, called from the root's
// PersistentPreRunE), not when the flag is defined, so `--help` never prints a secret
// such as a database password as a "default".
//
// A subcommand that defines its own PersistentPreRunE hides the root's (cobra runs only
// the nearest one) and must call applyEnvDefaults itself.

// envAnnotation is the flag annotation that holds the environment variable's name.
const envAnnotation = "hodei_env"

// Names of the environment variables shared by several subcommands.
const (
	envDatabaseURL = "HODEI_DATABASE_URL"
)

// bindEnv ties the existing flag `name` of cmd to the environment variable env and
// notes the variable in the flag's usage.
func bindEnv(cmd *cobra.Command, name, env string) {
	f := cmd.Flags().Lookup(name)
	if f == nil {
		f = cmd.PersistentFlags().Lookup(name)
	}
	if f == nil {
		panic(fmt.Sprintf("bindEnv: command %q has no flag --%s", cmd.Name(), name))
	}
	if f.Annotations == nil {
		f.Annotations = map[string][]string{}
	}
	f.Annotations[envAnnotation] = []string{env}
	f.Usage += " [$" + env + "]"
}

// stringFlagEnv defines the string flag --name bound to the environment variable env.
func stringFlagEnv(cmd *cobra.Command, p *string, name, env, def, usage string) {
	cmd.Flags().StringVar(p, name, def, usage)
	bindEnv(cmd, name, env)
}

// databaseURLFlag defines --database-url bound to HODEI_DATABASE_URL.
func databaseURLFlag(cmd *cobra.Command, p *string) {
	stringFlagEnv(cmd, p, "database-url", envDatabaseURL, "",
		"PostgreSQL URL, e.g. postgres://user:pass@localhost:5432/hodei")
}

// applyEnvDefaults sets every env-bound flag of cmd that was not given on the command
// line from its environment variable, if that is set and non-empty.
func applyEnvDefaults(cmd *cobra.Command) error {
	var errs []error
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		env := envOf(f)
		if env == "" || f.Changed {
			return
		}
		v, ok := os.LookupEnv(env)
		if !ok || v == "" {
			return
		}
		if err := f.Value.Set(v); err != nil {
			errs = append(errs, fmt.Errorf("$%s (for --%s): %w", env, f.Name, err))
		}
	})
	return errors.Join(errs...)
}

func envOf(f *pflag.Flag) string {
	if v := f.Annotations[envAnnotation]; len(v) == 1 {
		return v[0]
	}
	return ""
}

// requireFlags returns an error naming the first of the given flags that is empty after
// environment defaults were applied, with its environment variable if it has one.
func requireFlags(cmd *cobra.Command, names ...string) error {
	for _, name := range names {
		f := cmd.Flags().Lookup(name)
		if f == nil {
			return fmt.Errorf("internal error: no flag --%s", name)
		}
		if f.Value.String() != "" {
			continue
		}
		if env := envOf(f); env != "" {
			return fmt.Errorf("--%s is required (or set the environment variable %s)", name, env)
		}
		return fmt.Errorf("--%s is required", name)
	}
	return nil
}

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
