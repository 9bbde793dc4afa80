package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	hodeiv1 "github.com/hodei-jobs/hodei/gen/hodei/v1"
	"github.com/hodei-jobs/hodei/gen/hodei/v1/hodeiv1connect"
	"github.com/hodei-jobs/hodei/server"
)

// envAdminToken is the admin API's bearer token, for `hodei server`/`hodei dev` (the
// token the server requires) and `hodei admin` (the token sent).
const envAdminToken = "HODEI_ADMIN_TOKEN"

// adminTokenServerFlag defines --admin-token on `hodei server` and `hodei dev`.
func adminTokenServerFlag(cmd *cobra.Command, p *string) {
	stringFlagEnv(cmd, p, "admin-token", envAdminToken, "",
		"bootstrap admin token (named admin-token, every namespace); without it and without --auth the admin API answers loopback clients only")
}

// authServerFlags defines --auth, --bootstrap-token-file and --insecure on `hodei
// server` and `hodei dev`.
func authServerFlags(cmd *cobra.Command, cfg *server.Config) {
	cmd.Flags().BoolVar(&cfg.Auth, "auth", false,
		"require an API token on every call, from loopback too (hodei token create)")
	bindEnv(cmd, "auth", "HODEI_AUTH")
	stringFlagEnv(cmd, &cfg.BootstrapTokenFile, "bootstrap-token-file", "HODEI_BOOTSTRAP_TOKEN_FILE", "",
		"file with the first admin token (token \"bootstrap\"); created with a new random token (mode 0600) when missing")
	cmd.Flags().BoolVar(&cfg.Insecure, "insecure", false,
		"listen beyond loopback without TLS and authentication anyway (a warning on every start)")
	bindEnv(cmd, "insecure", "HODEI_INSECURE")
}

// adminFlags are the connection flags of every `hodei admin` command.
type adminFlags struct {
	server, token string
}

func (f *adminFlags) define(cmd *cobra.Command) {
	serverFlag(cmd, &f.server)
	stringFlagEnv(cmd, &f.token, "admin-token", envAdminToken, "",
		"admin token of the server (sent as Authorization: Bearer); not needed for a server on this machine started without one")
}

// client returns an AdminService client sending the token, and the job client for
// explaining errors.
// The token is --admin-token (HODEI_ADMIN_TOKEN) if set, else the API token of
// --token, HODEI_TOKEN or the context.
func (f *adminFlags) client(cmd *cobra.Command) (hodeiv1connect.AdminServiceClient, *apiClient, error) {
	c, err := newAPIClient(cmd, f.server)
	if err != nil {
		return nil, nil, err
	}
	if f.token != "" {
		c.token = f.token
	}
	return hodeiv1connect.NewAdminServiceClient(c.hc, c.baseURL, bearer(c.token)...), c, nil
}

// explainAdmin adds the token hint to explain.
func explainAdmin(c *apiClient, err error) error {
	switch connect.CodeOf(err) {
	case connect.CodeUnauthenticated:
		return fmt.Errorf("not authenticated: %s (set --token, %s, a context, or --admin-token)", connectMessage(err), envToken)
	case connect.CodePermissionDenied:
		return fmt.Errorf("not allowed: %s", connectMessage(err))
	}
	return c.explain(err)
}

func connectMessage(err error) string {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Message()
	}
	return err.Error()
}

func newAdminCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "admin",
		Short: "Operator commands: resume jobs that need manual intervention, handle outbox dead letters, show the leader",
		Long: `Operator commands over the server's AdminService. When the server was started with
--admin-token (HODEI_ADMIN_TOKEN), pass the same token here; a server started without
one answers admin requests from this machine (loopback) only.`,
		Args: cobra.NoArgs,
	}
	job := &cobra.Command{Use: "job", Short: "Act on jobs", Args: cobra.NoArgs}
	job.AddCommand(newAdminJobResumeCmd())
	dl := &cobra.Command{Use: "dead-letters", Short: "List and requeue outbox rows in DEAD_LETTER", Args: cobra.NoArgs}
	dl.AddCommand(newAdminDeadListCmd(), newAdminDeadRequeueCmd())
	cmd.AddCommand(job, dl, newAdminStatusCmd(), newAdminPruneCmd())
	return cmd
}

func newAdminJobResumeCmd() *cobra.Command {
	var (
		f                 adminFlags
		resolution, notes string
		output            string
	)
	cmd := &cobra.Command{
		Use:   "resume ID --resolution retry|manually_fixed|cancelled [--notes TEXT]",
		Short: "Resume a job in MANUAL_INTERVENTION_REQUIRED",
		Long: `Resume a job in MANUAL_INTERVENTION_REQUIRED:
  retry           back to PENDING; it runs again as a new attempt
  manually_fixed  FAILED, with the resolution and notes recorded (handled outside Hodei)
  cancelled       CANCELLED`,
		Example: `  hodei admin job resume 0193… --resolution retry
  hodei admin job resume 0193… --resolution manually_fixed --notes "restored by hand"`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if err := requireFlags(cmd, "resolution"); err != nil {
				return err
			}
			ac, c, err := f.client(cmd)
			if err != nil {
				return err
			}
			res, err := ac.ResumeJob(cmd.Context(), connect.NewRequest(&hodeiv1.ResumeJobRequest{
				JobId: args[0], Resolution: resolution, Notes: notes}))
			if err != nil {
				return explainAdmin(c, err)
			}
			if output == outputJSON {
				return writeProtoJSON(cmd.OutOrStdout(), res.Msg.GetJob())
			}
			j := res.Msg.GetJob()
			fmt.Fprintf(cmd.OutOrStdout(), "job %s resumed (%s): now %s\n", j.GetId(), resolution, j.GetState())
			return nil
		},
	}
	f.define(cmd)
	cmd.Flags().StringVar(&resolution, "resolution", "", "retry, manually_fixed or cancelled")
	cmd.Flags().StringVar(&notes, "notes", "", "free text recorded on the job")
	outputFlag(cmd, &output)
	return cmd
}

func newAdminDeadListCmd() *cobra.Command {
	var (
		f      adminFlags
		limit  int
		output string
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List outbox messages in DEAD_LETTER (oldest first)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			ac, c, err := f.client(cmd)
			if err != nil {
				return err
			}
			res, err := ac.ListDeadLetters(cmd.Context(), connect.NewRequest(&hodeiv1.ListDeadLettersRequest{Limit: int32(limit)}))
			if err != nil {
				return explainAdmin(c, err)
			}
			if output == outputJSON {
				return writeProtoJSON(cmd.OutOrStdout(), res.Msg)
			}
			writeDeadLetters(cmd.OutOrStdout(), res.Msg.GetMessages())
			return nil
		},
	}
	f.define(cmd)
	cmd.Flags().IntVar(&limit, "limit", 0, "most messages listed (0: the server's default, 100)")
	outputFlag(cmd, &output)
	return cmd
}

func writeDeadLetters(w io.Writer, msgs []*hodeiv1.DeadLetter) {
	if len(msgs) == 0 {
		fmt.Fprintln(w, "no dead letters")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tKIND\tTYPE\tATTEMPTS\tUPDATED\tKEY\tLAST ERROR")
	for _, m := range msgs {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d/%d\t%s\t%s\t%s\n", m.GetId(), m.GetKind(), m.GetType(),
			m.GetAttempts(), m.GetMaxAttempts(), formatTime(m.GetUpdatedAt().AsTime(), m.GetUpdatedAt() != nil),
			shorten(m.GetIdempotencyKey(), 48), shorten(oneLine(m.GetLastError()), 80))
	}
	tw.Flush()
}

func newAdminDeadRequeueCmd() *cobra.Command {
	var f adminFlags
	cmd := &cobra.Command{
		Use:   "requeue ID",
		Short: "Return a dead letter to PENDING (zero attempts) so that a relay sends it again",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := strconv.ParseInt(args[0], 10, 64)
			if err != nil || id <= 0 {
				return fmt.Errorf("ID: want a positive outbox row id, got %q", args[0])
			}
			ac, c, err := f.client(cmd)
			if err != nil {
				return err
			}
			if _, err := ac.RequeueDeadLetter(cmd.Context(), connect.NewRequest(&hodeiv1.RequeueDeadLetterRequest{Id: id})); err != nil {
				return explainAdmin(c, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "outbox message %d requeued\n", id)
			return nil
		},
	}
	f.define(cmd)
	return cmd
}

// writeJobSagas prints the sagas of `hodei job get` (the last execution saga is the
// current one).
func writeJobSagas(w io.Writer, sagas []*hodeiv1.SagaSummary) {
	if len(sagas) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nSAGA\tTYPE\tSTATE\tSTEP\tERROR")
	for _, s := range sagas {
		step := fmt.Sprint(s.GetCurrentStep())
		if s.GetCurrentStepName() != "" {
			step += " (" + s.GetCurrentStepName() + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.GetId(), s.GetType(), s.GetState(), step, shorten(oneLine(s.GetError()), 80))
	}
	tw.Flush()
}

// newAdminListCmd is a `list` subcommand of an admin resource: it calls list through
// the admin API and prints the answer as a table (write) or, with -o json, as JSON.
func newAdminListCmd[R proto.Message](short string, list func(context.Context, hodeiv1connect.AdminServiceClient) (R, error),
	write func(io.Writer, R)) *cobra.Command {
	var (
		f      adminFlags
		output string
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			ac, c, err := f.client(cmd)
			if err != nil {
				return err
			}
			res, err := list(cmd.Context(), ac)
			if err != nil {
				return explainAdmin(c, err)
			}
			if output == outputJSON {
				return writeProtoJSON(cmd.OutOrStdout(), res)
			}
			write(cmd.OutOrStdout(), res)
			return nil
		},
	}
	f.define(cmd)
	outputFlag(cmd, &output)
	return cmd
}
