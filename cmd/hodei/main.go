// Command hodei is the single Hodei Jobs binary: server, worker, CLI, admin, migrate and
// benchmarks. Flags mirror HODEI_* environment variables.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRootCmd()
	if err := root.ExecuteContext(ctx); err != nil {
		// An *exitError (e.g. `job run` passing on the job's exit code) chooses the code.
		var ee *exitError
		if errors.As(err, &ee) {
			if ee.Msg != "" {
				fmt.Fprintln(os.Stderr, "hodei:", ee.Msg)
			}
			os.Exit(ee.Code)
		}
		fmt.Fprintln(os.Stderr, "hodei:", err)
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "hodei",
		Short:         "Hodei Jobs: run jobs on workers provisioned on demand",
		SilenceUsage:  true,
		SilenceErrors: true,
		// Flags bound to HODEI_* variables take their value from the environment when
		// not given (flags.go).
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error { return applyEnvDefaults(cmd) },
	}
	clientFlags(root)
	tlsClientFlags(root)
	root.AddCommand(
		newVersionCmd(),
		newMigrateCmd(),
		newBenchCmd(),
		newSagaCmd(),
		newJobCmd(),
		newServerCmd(),
		newDevCmd(),
		newWorkerCmd(),
		newAdminCmd(),
		newTokenCmd(),
		newSecretCmd(),
		newAuditCmd(),
		newContextCmd(),
		newNamespaceCmd(),
		// Each subcommand lives in its own file: add its constructor here.
	)
	return root
}
