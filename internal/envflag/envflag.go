// Package envflag ties cobra flags to HODEI_* environment variables: a flag bound with
// Bind takes its value from the variable when it is not given on the command line (the
// command line wins). The value is read when the command runs (ApplyDefaults, called
// from a root's PersistentPreRunE), not when the flag is defined, so --help never
// prints a secret such as a database password as a "default". Shared by the hodei CLI
// and the slim hodei-agent binary.
package envflag

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// annotation is the flag annotation that holds the environment variable's name.
const annotation = "hodei_env"

// Bind ties the existing flag `name` of cmd to the environment variable env and notes
// the variable in the flag's usage.
func Bind(cmd *cobra.Command, name, env string) {
	f := cmd.Flags().Lookup(name)
	if f == nil {
		f = cmd.PersistentFlags().Lookup(name)
	}
	if f == nil {
		panic(fmt.Sprintf("envflag.Bind: command %q has no flag --%s", cmd.Name(), name))
	}
	if f.Annotations == nil {
		f.Annotations = map[string][]string{}
	}
	f.Annotations[annotation] = []string{env}
	f.Usage += " [$" + env + "]"
}

// String defines the string flag --name bound to the environment variable env.
func String(cmd *cobra.Command, p *string, name, env, def, usage string) {
	cmd.Flags().StringVar(p, name, def, usage)
	Bind(cmd, name, env)
}

// ApplyDefaults sets every env-bound flag of cmd that was not given on the command line
// from its environment variable, if that is set and non-empty.
func ApplyDefaults(cmd *cobra.Command) error {
	var errs []error
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		env := Of(f)
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

// Of returns the environment variable f is bound to ("" if none).
func Of(f *pflag.Flag) string {
	if v := f.Annotations[annotation]; len(v) == 1 {
		return v[0]
	}
	return ""
}

// Require returns an error naming the first of the given flags that is empty after
// environment defaults were applied, with its environment variable if it has one.
func Require(cmd *cobra.Command, names ...string) error {
	for _, name := range names {
		f := cmd.Flags().Lookup(name)
		if f == nil {
			return fmt.Errorf("internal error: no flag --%s", name)
		}
		if f.Value.String() != "" {
			continue
		}
		if env := Of(f); env != "" {
			return fmt.Errorf("--%s is required (or set the environment variable %s)", name, env)
		}
		return fmt.Errorf("--%s is required", name)
	}
	return nil
}
