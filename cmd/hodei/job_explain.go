package main

import (
	"fmt"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	hodeiv1 "github.com/hodei-jobs/hodei/gen/hodei/v1"
)

func newJobExplainCmd() *cobra.Command {
	var server, output string
	cmd := &cobra.Command{
		Use:   "explain ID",
		Short: "Say in words why a job is where it is",
		Long: `Ask the server why a job is in its state, answered in words: for a PENDING job how
many jobs are ahead of it and whether its providers are at capacity; for a
PROVISIONING one how long its worker has had to register; for a RUNNING one its
worker and last heartbeat; for an ended one its exit code or error. The first line
is the summary, further facts follow indented. -o json prints the API's answer.`,
		Example: `  hodei job explain 0190c2a4-...
  PENDING: 37 jobs ahead of it; provider docker at capacity 8/8
    waiting 41s since submission (priority 0)`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			c, err := newAPIClient(cmd, server)
			if err != nil {
				return err
			}
			res, err := c.jobs.ExplainJob(cmd.Context(), connect.NewRequest(&hodeiv1.ExplainJobRequest{Id: args[0]}))
			if err != nil {
				return c.explain(err)
			}
			out := cmd.OutOrStdout()
			if output == outputJSON {
				return writeProtoJSON(out, res.Msg)
			}
			fmt.Fprintln(out, res.Msg.GetSummary())
			for _, d := range res.Msg.GetDetails() {
				fmt.Fprintln(out, "  "+d)
			}
			return nil
		},
	}
	serverFlag(cmd, &server)
	outputFlag(cmd, &output)
	return cmd
}
