package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hodei-jobs/hodei/auth"
	hodeiv1 "github.com/hodei-jobs/hodei/gen/hodei/v1"
	"github.com/hodei-jobs/hodei/gen/hodei/v1/hodeiv1connect"
	"github.com/hodei-jobs/hodei/store"
	"github.com/hodei-jobs/hodei/store/postgres"
)

func newTokenCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Create, list and revoke API tokens (admin)",
		Long: `API tokens authenticate clients (Authorization: Bearer). A token has a name, a role
(viewer: get, list, logs, watch; submitter: also submit and cancel; admin: everything)
and the namespaces whose jobs it sees ("*": all). The server stores only its SHA-256:
the token is printed once, when it is created.

The commands go through the admin API with an admin token (--token, HODEI_TOKEN, a
context, or --admin-token). The first admin token comes from
  hodei token create --database-url postgres://… --name admin --role admin
(a direct write to the database, no server needed), or from the file of
hodei server --bootstrap-token-file.`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(newTokenCreateCmd(), newTokenListCmd(), newTokenRevokeCmd())
	return cmd
}

func newTokenCreateCmd() *cobra.Command {
	var (
		f           adminFlags
		name, role  string
		namespaces  []string
		expires     time.Duration
		databaseURL string
		output      string
	)
	cmd := &cobra.Command{
		Use:   "create --name NAME --role viewer|submitter|admin [--namespace N]... [--expires 720h]",
		Short: "Create a token and print it (once: only its hash is stored)",
		Long: `Create a token and print its secret on stdout (once: only its SHA-256 is stored) and
what it is on stderr; -o json prints both as one JSON object {"token": {...}, "secret": "..."}.`,
		Example: `  hodei token create --name ci --role submitter --namespace team-a --expires 720h
  hodei token create --database-url postgres://localhost/hodei --name admin --role admin
  hodei token create --name deploy --role submitter --namespace team-a -o json | jq -r .secret`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireFlags(cmd, "name", "role"); err != nil {
				return err
			}
			if err := checkOutput(output); err != nil {
				return err
			}
			if expires < 0 {
				return fmt.Errorf("--expires: must not be negative (0: never expires), got %s", expires)
			}
			spec := auth.TokenSpec{Name: name, Role: role, Namespaces: namespaces, ExpiresIn: expires}
			if err := spec.Validate(); err != nil {
				return fmt.Errorf("--%s", flagOfTokenError(err))
			}
			var (
				tok    *hodeiv1.ApiToken
				secret string
			)
			if databaseURL != "" {
				t, s, err := createTokenInDB(cmd.Context(), databaseURL, spec)
				if err != nil {
					return err
				}
				tok, secret = tokenProto(t), s
			} else {
				ac, c, err := f.client(cmd)
				if err != nil {
					return err
				}
				req := &hodeiv1.CreateTokenRequest{Name: name, Role: role, Namespaces: namespaces}
				if expires > 0 {
					req.ExpiresIn = durationpb.New(expires)
				}
				res, err := ac.CreateToken(cmd.Context(), connect.NewRequest(req))
				if err != nil {
					return explainAdmin(c, err)
				}
				tok, secret = res.Msg.GetToken(), res.Msg.GetSecret()
			}
			if output == outputJSON {
				return writeProtoJSON(cmd.OutOrStdout(), &hodeiv1.CreateTokenResponse{Token: tok, Secret: secret})
			}
			fmt.Fprintln(cmd.OutOrStdout(), secret)
			fmt.Fprintf(cmd.ErrOrStderr(), "token %s created (role %s, namespaces %s%s); it is shown only this once\n",
				tok.GetName(), tok.GetRole(), strings.Join(tok.GetNamespaces(), ","), expiry(tok.GetExpiresAt()))
			return nil
		},
	}
	f.define(cmd)
	cmd.Flags().StringVar(&name, "name", "", "name of the token (unique; lower-case letters, digits, '-')")
	cmd.Flags().StringVar(&role, "role", "", "viewer, submitter or admin")
	cmd.Flags().StringArrayVar(&namespaces, "namespace", nil, `namespace the token sees (repeatable; "*": all; an admin token without one sees all)`)
	cmd.Flags().DurationVar(&expires, "expires", 0, "lifetime, e.g. 720h (0: never expires)")
	cmd.Flags().StringVar(&databaseURL, "database-url", "", "write the token straight into this PostgreSQL database (migrating it) instead of asking a server: for the first admin token")
	outputFlag(cmd, &output)
	return cmd
}

// flagOfTokenError turns "namespaces[0]: …" into "namespace: …" (the flag's name).
func flagOfTokenError(err error) string {
	msg := err.Error()
	switch {
	case strings.HasPrefix(msg, "namespaces"):
		_, rest, _ := strings.Cut(msg, ":")
		return "namespace:" + rest
	case strings.HasPrefix(msg, "expires_in"):
		return "expires" + strings.TrimPrefix(msg, "expires_in")
	}
	return msg
}

func expiry(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return ", never expires"
	}
	return ", expires " + ts.AsTime().Format(time.RFC3339)
}

// createTokenInDB writes a new token straight into the database at url.
func createTokenInDB(ctx context.Context, url string, spec auth.TokenSpec) (*store.Token, string, error) {
	if _, err := postgres.Migrate(ctx, url); err != nil {
		return nil, "", fmt.Errorf("--database-url: %w", err)
	}
	st, err := postgres.Open(ctx, url)
	if err != nil {
		return nil, "", fmt.Errorf("--database-url: %w", err)
	}
	defer st.Close()
	t, secret, err := auth.NewToken(spec, time.Now())
	if err != nil {
		return nil, "", err
	}
	if err := st.Tokens().Create(ctx, t); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return nil, "", fmt.Errorf("--name: a token named %q exists (revoke it or choose another name)", spec.Name)
		}
		return nil, "", err
	}
	return t, secret, nil
}

func tokenProto(t *store.Token) *hodeiv1.ApiToken {
	p := &hodeiv1.ApiToken{Name: t.Name, Role: t.Role, Namespaces: t.Namespaces, CreatedAt: timestamppb.New(t.CreatedAt)}
	if !t.ExpiresAt.IsZero() {
		p.ExpiresAt = timestamppb.New(t.ExpiresAt)
	}
	return p
}

func newTokenListCmd() *cobra.Command {
	return newAdminListCmd("List the tokens (never their secrets)",
		func(ctx context.Context, ac hodeiv1connect.AdminServiceClient) (*hodeiv1.ListTokensResponse, error) {
			res, err := ac.ListTokens(ctx, connect.NewRequest(&hodeiv1.ListTokensRequest{}))
			if err != nil {
				return nil, err
			}
			return res.Msg, nil
		},
		func(w io.Writer, m *hodeiv1.ListTokensResponse) { writeTokens(w, m.GetTokens()) })
}

func writeTokens(w io.Writer, toks []*hodeiv1.ApiToken) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tROLE\tNAMESPACES\tCREATED\tEXPIRES\tSTATUS")
	now := time.Now()
	for _, t := range toks {
		status := "active"
		switch {
		case t.GetRevokedAt() != nil:
			status = "revoked " + formatTime(t.GetRevokedAt().AsTime(), true)
		case t.GetExpiresAt() != nil && !now.Before(t.GetExpiresAt().AsTime()):
			status = "expired"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", t.GetName(), t.GetRole(), strings.Join(t.GetNamespaces(), ","),
			formatTime(t.GetCreatedAt().AsTime(), t.GetCreatedAt() != nil),
			formatTime(t.GetExpiresAt().AsTime(), t.GetExpiresAt() != nil), status)
	}
	tw.Flush()
}

func newTokenRevokeCmd() *cobra.Command {
	var (
		f      adminFlags
		output string
	)
	cmd := &cobra.Command{
		Use:   "revoke NAME",
		Short: "Revoke a token: the next request that uses it is refused, and its open streams (logs --follow, job run) end within a second",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			ac, c, err := f.client(cmd)
			if err != nil {
				return err
			}
			res, err := ac.RevokeToken(cmd.Context(), connect.NewRequest(&hodeiv1.RevokeTokenRequest{Name: args[0]}))
			if err != nil {
				return explainAdmin(c, err)
			}
			if output == outputJSON {
				return writeProtoJSON(cmd.OutOrStdout(), res.Msg)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "token %s revoked at %s\n", res.Msg.GetToken().GetName(),
				formatTime(res.Msg.GetToken().GetRevokedAt().AsTime(), true))
			return nil
		},
	}
	f.define(cmd)
	outputFlag(cmd, &output)
	return cmd
}

func newAuditCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "Read the audit trail (admin)", Args: cobra.NoArgs}
	var (
		f      adminFlags
		since  string
		actor  string
		limit  int
		output string
	)
	list := &cobra.Command{
		Use:   "list [--since 1h|RFC3339] [--actor NAME] [-o json]",
		Short: "List audit records, oldest first: changes and refused requests, who, when, from where",
		Example: `  hodei audit list --since 1h
  hodei audit list --actor ci -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			req := &hodeiv1.ListAuditRequest{Actor: actor, Limit: int32(min(max(limit, 0), 1<<30))}
			if since != "" {
				t, err := parseSince(since, time.Now())
				if err != nil {
					return err
				}
				req.Since = timestamppb.New(t)
			}
			ac, c, err := f.client(cmd)
			if err != nil {
				return err
			}
			res, err := ac.ListAudit(cmd.Context(), connect.NewRequest(req))
			if err != nil {
				return explainAdmin(c, err)
			}
			if output == outputJSON {
				return writeProtoJSON(cmd.OutOrStdout(), res.Msg)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TIME\tACTOR\tACTION\tOUTCOME\tTARGET\tNAMESPACE\tFROM\tDETAIL")
			for _, r := range res.Msg.GetRecords() {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", formatTime(r.GetTime().AsTime(), true),
					r.GetActor(), r.GetAction(), r.GetOutcome(), r.GetTarget(), r.GetNamespace(), r.GetRemote(),
					shorten(oneLine(r.GetDetail()), 80))
			}
			return tw.Flush()
		},
	}
	f.define(list)
	list.Flags().StringVar(&since, "since", "", "only records from this long ago (e.g. 1h) or this time (RFC 3339)")
	list.Flags().StringVar(&actor, "actor", "", "only records of this token name (anonymous: calls without a token)")
	list.Flags().IntVar(&limit, "limit", 0, "most records (0: the server's default, 100; at most 1000)")
	outputFlag(list, &output)
	cmd.AddCommand(list)
	return cmd
}

// parseSince parses --since: a duration back from now, or an RFC 3339 time.
func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("--since: %s is negative", s)
		}
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("--since: %q is neither a duration (1h) nor an RFC 3339 time", s)
	}
	return t, nil
}
