package main

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	hodeiv1 "github.com/hodei-jobs/hodei/gen/hodei/v1"
	"github.com/hodei-jobs/hodei/gen/hodei/v1/hodeiv1connect"
	"github.com/hodei-jobs/hodei/server"
)

// Environment variable of `hodei server --secrets-key-file`.
const envSecretsKeyFile = "HODEI_SECRETS_KEY_FILE"

// secretServerFlags defines the server's secrets key flags.
func secretServerFlags(cmd *cobra.Command, cfg *server.Config) {
	stringFlagEnv(cmd, &cfg.SecretsKeyFile, "secrets-key-file", envSecretsKeyFile, "",
		"file holding the key job secrets are encrypted under: 32 random bytes (or 64 hex digits), e.g. head -c 32 /dev/urandom > key (empty: no secrets)")
	cmd.Flags().StringArrayVar(&cfg.SecretsOldKeyFiles, "secrets-old-key-file", nil,
		"an earlier --secrets-key-file, to read values sealed under it until `hodei secret rotate-key` (repeatable)")
}

func newSecretCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "secret",
		Short: "Manage job secrets (values are encrypted at rest and never shown again)",
		Long: `Job secrets are values a job receives in its environment (hodei job submit --secret NAME
or --secret NAME=ENV). They are encrypted on the server (--secrets-key-file), sent only to
the worker running the job, and masked as *** in the job's logs. Setting, deleting and
rotating need an admin token; listing names needs a submitter token of the namespace.`,
	}
	cmd.AddCommand(newSecretSetCmd(), newSecretListCmd(), newSecretDeleteCmd(), newSecretRotateCmd())
	return cmd
}

func secretClient(cmd *cobra.Command, f *adminFlags) (hodeiv1connect.SecretServiceClient, *apiClient, error) {
	c, err := newAPIClient(cmd, f.server)
	if err != nil {
		return nil, nil, err
	}
	if f.token != "" {
		c.token = f.token
	}
	return hodeiv1connect.NewSecretServiceClient(c.hc, c.baseURL, bearer(c.token)...), c, nil
}

// readSecretValue reads the value from r: all of it, without one trailing newline
// (echo's, or the one typed before Ctrl-D).
func readSecretValue(r io.Reader) (string, error) {
	b, err := io.ReadAll(io.LimitReader(r, 1<<20))
	if err != nil {
		return "", fmt.Errorf("read the value from stdin: %w", err)
	}
	b = bytes.TrimSuffix(b, []byte("\n"))
	b = bytes.TrimSuffix(b, []byte("\r"))
	if len(b) == 0 {
		return "", fmt.Errorf("stdin: empty value (pipe it in: printf %%s \"$VALUE\" | hodei secret set NAME)")
	}
	return string(b), nil
}

func newSecretSetCmd() *cobra.Command {
	var (
		f         adminFlags
		namespace string
		output    string
	)
	cmd := &cobra.Command{
		Use:   "set NAME",
		Short: "Set a secret; its value is read from stdin (never from the command line)",
		Example: `  printf %s "$DEPLOY_TOKEN" | hodei secret set DEPLOY_TOKEN --namespace team-a
  hodei secret set DB_PASSWORD --namespace team-a < password.txt`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			value, err := readSecretValue(cmd.InOrStdin())
			if err != nil {
				return err
			}
			sc, c, err := secretClient(cmd, &f)
			if err != nil {
				return err
			}
			res, err := sc.SetSecret(cmd.Context(), connect.NewRequest(&hodeiv1.SetSecretRequest{
				Namespace: namespace, Name: args[0], Value: value}))
			if err != nil {
				return explainAdmin(c, err)
			}
			if output == outputJSON {
				return writeProtoJSON(cmd.OutOrStdout(), res.Msg)
			}
			s := res.Msg.GetSecret()
			fmt.Fprintf(cmd.OutOrStdout(), "secret %s set in namespace %s (key %s)\n", s.GetName(), s.GetNamespace(), s.GetKeyId())
			return nil
		},
	}
	f.define(cmd)
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "", "namespace of the secret (default: the token's only namespace, else default)")
	outputFlag(cmd, &output)
	return cmd
}

func newSecretListCmd() *cobra.Command {
	var (
		f         adminFlags
		namespace string
		output    string
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List secret names (never values) of the namespaces the token sees",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			sc, c, err := secretClient(cmd, &f)
			if err != nil {
				return err
			}
			res, err := sc.ListSecrets(cmd.Context(), connect.NewRequest(&hodeiv1.ListSecretsRequest{Namespace: namespace}))
			if err != nil {
				return explainAdmin(c, err)
			}
			if output == outputJSON {
				return writeProtoJSON(cmd.OutOrStdout(), res.Msg)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAMESPACE\tNAME\tKEY\tUPDATED")
			for _, s := range res.Msg.GetSecrets() {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", s.GetNamespace(), s.GetName(), s.GetKeyId(),
					formatTime(s.GetUpdatedAt().AsTime(), s.GetUpdatedAt() != nil))
			}
			return tw.Flush()
		},
	}
	f.define(cmd)
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "", "only this namespace (default: every namespace the token sees)")
	outputFlag(cmd, &output)
	return cmd
}

func newSecretDeleteCmd() *cobra.Command {
	var (
		f         adminFlags
		namespace string
		output    string
	)
	cmd := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a secret (jobs naming it can no longer start)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			sc, c, err := secretClient(cmd, &f)
			if err != nil {
				return err
			}
			res, err := sc.DeleteSecret(cmd.Context(), connect.NewRequest(&hodeiv1.DeleteSecretRequest{Namespace: namespace, Name: args[0]}))
			if err != nil {
				return explainAdmin(c, err)
			}
			if output == outputJSON {
				return writeProtoJSON(cmd.OutOrStdout(), res.Msg)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "secret %s deleted from namespace %s\n", res.Msg.GetSecret().GetName(), res.Msg.GetSecret().GetNamespace())
			return nil
		},
	}
	f.define(cmd)
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "", "namespace of the secret (default: the token's only namespace, else default)")
	outputFlag(cmd, &output)
	return cmd
}

func newSecretRotateCmd() *cobra.Command {
	var f adminFlags
	cmd := &cobra.Command{
		Use:   "rotate-key",
		Short: "Re-encrypt every secret under the server's current --secrets-key-file",
		Long: `Re-encrypt every secret value under the server's current key. Start the server with the
new key in --secrets-key-file and the old one in --secrets-old-key-file, run this, then
the old key file is no longer needed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			sc, c, err := secretClient(cmd, &f)
			if err != nil {
				return err
			}
			res, err := sc.RotateSecretsKey(cmd.Context(), connect.NewRequest(&hodeiv1.RotateSecretsKeyRequest{}))
			if err != nil {
				return explainAdmin(c, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "key %s: %d secrets re-encrypted, %d already under it\n",
				res.Msg.GetKeyId(), res.Msg.GetRotated(), res.Msg.GetUnchanged())
			return nil
		},
	}
	f.define(cmd)
	return cmd
}

// parseSecretRefs parses --secret NAME or NAME=ENV.
func parseSecretRefs(vals []string) ([]*hodeiv1.SecretRef, error) {
	var out []*hodeiv1.SecretRef
	for _, v := range vals {
		name, env, _ := strings.Cut(v, "=")
		if name == "" {
			return nil, fmt.Errorf("--secret: want NAME or NAME=ENV, got %q", v)
		}
		if strings.Contains(v, "=") && env == "" {
			return nil, fmt.Errorf("--secret %s: empty variable name after '='", v)
		}
		out = append(out, &hodeiv1.SecretRef{Name: name, Env: env})
	}
	return out, nil
}

func formatSecretRefs(refs []*hodeiv1.SecretRef) string {
	parts := make([]string, len(refs))
	for i, r := range refs {
		parts[i] = r.GetName()
		if r.GetEnv() != "" && r.GetEnv() != r.GetName() {
			parts[i] += "→" + r.GetEnv()
		}
	}
	return strings.Join(parts, " ")
}
