package main

import (
	"github.com/spf13/cobra"

	"github.com/hodei-jobs/hodei/internal/workercmd"
)

// newWorkerCmd is `hodei worker`, the agent a provider starts (internal/workercmd; the
// slim cmd/hodei-agent binary is the same command).
func newWorkerCmd() *cobra.Command { return workercmd.New("worker") }
