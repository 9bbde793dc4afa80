package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

// Client credentials, kubectl-style. A command that talks to a server sends the token
// from, in this order: --token / HODEI_TOKEN; the token file of the context named by
// --context / HODEI_CONTEXT, else of the config's current context. The context also
// gives the server URL when neither --server nor HODEI_SERVER is set. The config file is
// --config / HODEI_CONFIG, default <user config dir>/hodei/config.json; it stores token
// *files*, never tokens.

const (
	envToken   = "HODEI_TOKEN"
	envContext = "HODEI_CONTEXT"
	envConfig  = "HODEI_CONFIG"
)

// clientConfig is the CLI's config file.
type clientConfig struct {
	CurrentContext string                   `json:"current_context,omitempty"`
	Contexts       map[string]clientContext `json:"contexts,omitempty"`
}

type clientContext struct {
	Server    string `json:"server"`
	TokenFile string `json:"token_file,omitempty"`
	// CACert, ClientCert and ClientKey are TLS files (tls.go), stored as paths.
	CACert     string `json:"ca_cert,omitempty"`
	ClientCert string `json:"client_cert,omitempty"`
	ClientKey  string `json:"client_key,omitempty"`
}

// clientFlags are the root's persistent flags for credentials.
func clientFlags(root *cobra.Command) {
	root.PersistentFlags().String("token", "", "API token sent as Authorization: Bearer (else the current context's token file)")
	root.PersistentFlags().String("context", "", "context of the config file to use (default: its current context)")
	root.PersistentFlags().String("config", "", "client config file with contexts (default <user config dir>/hodei/config.json)")
	bindEnv(root, "token", envToken)
	bindEnv(root, "context", envContext)
	bindEnv(root, "config", envConfig)
}

func flagString(cmd *cobra.Command, name string) string {
	if f := cmd.Flags().Lookup(name); f != nil {
		return f.Value.String()
	}
	return ""
}

func configPath(cmd *cobra.Command) (string, error) {
	if p := flagString(cmd, "config"); p != "" {
		return p, nil
	}
	d, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("no client config dir (set --config or %s): %w", envConfig, err)
	}
	return filepath.Join(d, "hodei", "config.json"), nil
}

func loadClientConfig(path string) (*clientConfig, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &clientConfig{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("client config: %w", err)
	}
	var c clientConfig
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("client config %s: %w", path, err)
	}
	return &c, nil
}

func (c *clientConfig) save(path string) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("client config: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("client config: %w", err)
	}
	return os.Rename(tmp, path)
}

// connection returns the server URL and the token a command uses, given its --server
// value.
func connection(cmd *cobra.Command, server string) (string, string, error) {
	token := flagString(cmd, "token")
	name := flagString(cmd, "context")
	path, err := configPath(cmd)
	if err != nil {
		if name != "" {
			return "", "", err
		}
		return server, token, nil
	}
	cfg, err := loadClientConfig(path)
	if err != nil {
		return "", "", err
	}
	if name == "" {
		name = cfg.CurrentContext
	}
	if name == "" {
		return server, token, nil
	}
	cc, ok := cfg.Contexts[name]
	if !ok {
		return "", "", fmt.Errorf("--context: no context %q in %s (hodei context add)", name, path)
	}
	if f := cmd.Flags().Lookup("server"); f != nil && !f.Changed && os.Getenv(envServer) == "" && cc.Server != "" {
		server = cc.Server
	}
	if token == "" && cc.TokenFile != "" {
		b, err := os.ReadFile(cc.TokenFile)
		if err != nil {
			return "", "", fmt.Errorf("context %q: token file: %w", name, err)
		}
		token = strings.TrimSpace(string(b))
	}
	return server, token, nil
}

func newContextCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "context",
		Short: "Named server connections (server URL and token file) in the client config file",
		Args:  cobra.NoArgs,
	}
	var server, tokenFile string
	add := &cobra.Command{
		Use:     "add NAME --server URL [--token-file FILE] [--ca-cert FILE] [--client-cert FILE --client-key FILE]",
		Short:   "Add or replace a context (the first one becomes the current context)",
		Example: `  hodei context add prod --server https://hodei.example.com:7070 --token-file ~/.config/hodei/prod.token`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireFlags(cmd, "server"); err != nil {
				return err
			}
			base, err := checkServerURL(server)
			if err != nil {
				return err
			}
			if tokenFile != "" {
				if tokenFile, err = filepath.Abs(tokenFile); err != nil {
					return fmt.Errorf("--token-file: %w", err)
				}
				if _, err := os.Stat(tokenFile); err != nil {
					return fmt.Errorf("--token-file: %w", err)
				}
			}
			path, err := configPath(cmd)
			if err != nil {
				return err
			}
			cfg, err := loadClientConfig(path)
			if err != nil {
				return err
			}
			if cfg.Contexts == nil {
				cfg.Contexts = map[string]clientContext{}
			}
			ca, cert, key, err := contextTLSFiles(cmd)
			if err != nil {
				return err
			}
			cfg.Contexts[args[0]] = clientContext{Server: base, TokenFile: tokenFile, CACert: ca, ClientCert: cert, ClientKey: key}
			if cfg.CurrentContext == "" {
				cfg.CurrentContext = args[0]
			}
			if err := cfg.save(path); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "context %s added to %s (current: %s)\n", args[0], path, cfg.CurrentContext)
			return nil
		},
	}
	add.Flags().StringVar(&server, "server", "", "URL of the Hodei server")
	add.Flags().StringVar(&tokenFile, "token-file", "", "file holding the API token (read at each use; the token is not copied)")
	use := &cobra.Command{
		Use:   "use NAME",
		Short: "Make NAME the current context",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path, err := configPath(cmd)
			if err != nil {
				return err
			}
			cfg, err := loadClientConfig(path)
			if err != nil {
				return err
			}
			if _, ok := cfg.Contexts[args[0]]; !ok {
				names := make([]string, 0, len(cfg.Contexts))
				for n := range cfg.Contexts {
					names = append(names, n)
				}
				sort.Strings(names)
				return fmt.Errorf("no context %q in %s (have: %s)", args[0], path, strings.Join(names, ", "))
			}
			cfg.CurrentContext = args[0]
			if err := cfg.save(path); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "current context: %s\n", args[0])
			return nil
		},
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List the contexts",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path, err := configPath(cmd)
			if err != nil {
				return err
			}
			cfg, err := loadClientConfig(path)
			if err != nil {
				return err
			}
			names := make([]string, 0, len(cfg.Contexts))
			for n := range cfg.Contexts {
				names = append(names, n)
			}
			slices.Sort(names)
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "CURRENT\tNAME\tSERVER\tTOKEN FILE")
			for _, n := range names {
				cur := ""
				if n == cfg.CurrentContext {
					cur = "*"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", cur, n, cfg.Contexts[n].Server, cfg.Contexts[n].TokenFile)
			}
			return tw.Flush()
		},
	}
	cmd.AddCommand(add, use, list)
	return cmd
}
