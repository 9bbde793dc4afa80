package main

import (
	"crypto/x509"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/hodei-jobs/hodei/internal/tlsconf"
	"github.com/hodei-jobs/hodei/server"
)

// TLS of the API. The server side: --tls-cert/--tls-key (reloaded when the files
// change), --tls-client-ca (mTLS), --tls-worker-ca. The client side (root persistent
// flags, also stored in contexts): --ca-cert verifies an https:// server,
// --client-cert/--client-key answer a server that requires client certificates.

const (
	envCACert     = tlsconf.EnvCACert // shared with `hodei worker`: the CA that verifies the server
	envClientCert = "HODEI_CLIENT_CERT"
	envClientKey  = "HODEI_CLIENT_KEY"
)

// tlsServerFlags defines the TLS flags of `hodei server` and `hodei dev`.
func tlsServerFlags(cmd *cobra.Command, cfg *server.Config) {
	stringFlagEnv(cmd, &cfg.TLSCert, "tls-cert", "HODEI_TLS_CERT", "",
		"PEM certificate (chain) of the API: with --tls-key the API speaks HTTPS only; reloaded when the file changes")
	stringFlagEnv(cmd, &cfg.TLSKey, "tls-key", "HODEI_TLS_KEY", "",
		"PEM private key of --tls-cert; reloaded when the file changes")
	stringFlagEnv(cmd, &cfg.TLSClientCA, "tls-client-ca", "HODEI_TLS_CLIENT_CA", "",
		"PEM CA bundle: every API request must present a client certificate it signed (mTLS; workers use their own credentials)")
	stringFlagEnv(cmd, &cfg.TLSWorkerCA, "tls-worker-ca", "HODEI_TLS_WORKER_CA", "",
		"PEM CA bundle handed to workers to verify the server (default: the --tls-cert file)")
}

// tlsClientFlags defines the root's persistent client TLS flags.
func tlsClientFlags(root *cobra.Command) {
	root.PersistentFlags().String("ca-cert", "", "PEM CA bundle that verifies an https:// server (else the context's, else the system's roots)")
	root.PersistentFlags().String("client-cert", "", "PEM client certificate for a server started with --tls-client-ca (with --client-key)")
	root.PersistentFlags().String("client-key", "", "PEM private key of --client-cert")
	bindEnv(root, "ca-cert", envCACert)
	bindEnv(root, "client-cert", envClientCert)
	bindEnv(root, "client-key", envClientKey)
}

// clientTLSFiles returns the CA bundle and client certificate files a command uses:
// the flags (or their variables), else the context's.
func clientTLSFiles(cmd *cobra.Command) (ca, cert, key string, err error) {
	ca, cert, key = flagString(cmd, "ca-cert"), flagString(cmd, "client-cert"), flagString(cmd, "client-key")
	cc, err := selectedContext(cmd)
	if err != nil || cc == nil {
		return ca, cert, key, err
	}
	if ca == "" {
		ca = cc.CACert
	}
	if cert == "" && key == "" {
		cert, key = cc.ClientCert, cc.ClientKey
	}
	return ca, cert, key, nil
}

// selectedContext is the context of --context or the config's current one (nil: none).
func selectedContext(cmd *cobra.Command) (*clientContext, error) {
	name := flagString(cmd, "context")
	path, err := configPath(cmd)
	if err != nil {
		if name != "" {
			return nil, err
		}
		return nil, nil
	}
	cfg, err := loadClientConfig(path)
	if err != nil {
		return nil, err
	}
	if name == "" {
		name = cfg.CurrentContext
	}
	if name == "" {
		return nil, nil
	}
	cc, ok := cfg.Contexts[name]
	if !ok {
		return nil, fmt.Errorf("--context: no context %q in %s (hodei context add)", name, path)
	}
	return &cc, nil
}

// clientHTTP returns the HTTP client for the server at base (normalised): h2c for
// http://, TLS verified with the CA bundle and with the client certificate for https://.
func clientHTTP(cmd *cobra.Command, base string) (*http.Client, error) {
	if strings.HasPrefix(base, "http://") {
		return newHTTPClient(true, nil), nil
	}
	ca, cert, key, err := clientTLSFiles(cmd)
	if err != nil {
		return nil, err
	}
	var roots *x509.CertPool
	if ca != "" {
		if roots, err = tlsconf.LoadCertPool(ca, "--ca-cert"); err != nil {
			return nil, err
		}
	}
	cfg, err := tlsconf.ClientConfig(roots, cert, key)
	if err != nil {
		return nil, err
	}
	return newHTTPClient(false, cfg), nil
}

// contextTLSFiles returns the TLS files `context add` stores: the flags given on its
// command line, as absolute paths.
func contextTLSFiles(cmd *cobra.Command) (ca, cert, key string, err error) {
	abs := func(name string) (string, error) {
		f := cmd.Flags().Lookup(name)
		if f == nil || !f.Changed || f.Value.String() == "" {
			return "", nil
		}
		p, err := filepath.Abs(f.Value.String())
		if err != nil {
			return "", fmt.Errorf("--%s: %w", name, err)
		}
		return p, nil
	}
	if ca, err = abs("ca-cert"); err != nil {
		return
	}
	if cert, err = abs("client-cert"); err != nil {
		return
	}
	if key, err = abs("client-key"); err != nil {
		return
	}
	if ca != "" {
		if _, err = tlsconf.LoadCertPool(ca, "--ca-cert"); err != nil {
			return
		}
	}
	if cert != "" || key != "" {
		_, err = tlsconf.ClientConfig(nil, cert, key)
	}
	return
}
