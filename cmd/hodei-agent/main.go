// Command hodei-agent is the worker agent alone: the same command as `hodei worker`
// (internal/workercmd), in a binary that links nothing else, so that the process a
// provider starts for every job costs less CPU and memory. `make build` writes it next
// to bin/hodei, where hodei server and hodei dev find it (server.AgentCommand).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/hodei-jobs/hodei/internal/envflag"
	"github.com/hodei-jobs/hodei/internal/workercmd"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	cmd := workercmd.New("hodei-agent")
	cmd.SilenceUsage = true
	cmd.SilenceErrors = true
	cmd.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error { return envflag.ApplyDefaults(cmd) }
	cmd.AddCommand(copySelfCommand())
	if err := cmd.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "hodei-agent:", err)
		os.Exit(1)
	}
}
