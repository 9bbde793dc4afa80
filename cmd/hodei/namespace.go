package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	hodeiv1 "github.com/hodei-jobs/hodei/gen/hodei/v1"
	"github.com/hodei-jobs/hodei/gen/hodei/v1/hodeiv1connect"
)

func newNamespaceCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "namespace",
		Short: "Namespace limits on running jobs (admin)",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newNamespaceSetCmd(), newNamespaceListCmd())
	return cmd
}

func newNamespaceSetCmd() *cobra.Command {
	var (
		f          adminFlags
		maxRunning int
		output     string
	)
	cmd := &cobra.Command{
		Use:   "set NAME --max-running N",
		Short: "Limit how many jobs of a namespace hold a worker at once (0: no limit)",
		Long: `Limit how many jobs of namespace NAME may be PROVISIONING, ASSIGNED or RUNNING at once.
The scheduler leaves its other jobs PENDING until one ends; other namespaces' jobs still
start. --max-running 0 removes the limit. Lowering a limit stops no running job.`,
		Example: `  hodei namespace set team-a --max-running 20`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if !cmd.Flags().Changed("max-running") {
				return fmt.Errorf("--max-running is required (0 removes the limit)")
			}
			if maxRunning < 0 {
				return fmt.Errorf("--max-running: must not be negative, got %d", maxRunning)
			}
			ac, c, err := f.client(cmd)
			if err != nil {
				return err
			}
			res, err := ac.SetNamespace(cmd.Context(), connect.NewRequest(&hodeiv1.SetNamespaceRequest{
				Name: args[0], MaxRunning: int32(min(maxRunning, 1<<31-1))}))
			if err != nil {
				return explainAdmin(c, err)
			}
			if output == outputJSON {
				return writeProtoJSON(cmd.OutOrStdout(), res.Msg)
			}
			writeNamespaces(cmd.OutOrStdout(), []*hodeiv1.Namespace{res.Msg.GetNamespace()})
			return nil
		},
	}
	f.define(cmd)
	cmd.Flags().IntVar(&maxRunning, "max-running", 0, "most jobs of the namespace holding a worker at once (0: no limit)")
	outputFlag(cmd, &output)
	return cmd
}

func newNamespaceListCmd() *cobra.Command {
	return newAdminListCmd("List the namespaces with a limit or with jobs: limit, running and pending jobs",
		func(ctx context.Context, ac hodeiv1connect.AdminServiceClient) (*hodeiv1.ListNamespacesResponse, error) {
			res, err := ac.ListNamespaces(ctx, connect.NewRequest(&hodeiv1.ListNamespacesRequest{}))
			if err != nil {
				return nil, err
			}
			return res.Msg, nil
		},
		func(w io.Writer, m *hodeiv1.ListNamespacesResponse) { writeNamespaces(w, m.GetNamespaces()) })
}

func writeNamespaces(w io.Writer, nss []*hodeiv1.Namespace) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAMESPACE\tMAX RUNNING\tRUNNING\tPENDING")
	for _, n := range nss {
		limit := "-"
		if n.GetMaxRunning() > 0 {
			limit = strconv.Itoa(int(n.GetMaxRunning()))
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\n", n.GetName(), limit, n.GetRunning(), n.GetPending())
	}
	_ = tw.Flush()
}
