package server

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hodei-jobs/hodei/auth"
	"github.com/hodei-jobs/hodei/store"
)

// BootstrapTokenName is the name of the admin token of Config.BootstrapTokenFile.
const BootstrapTokenName = "bootstrap"

// newAuthenticator builds the API's authenticator: tokens from the store, the admin
// token and the bootstrap file as admin tokens, the audit trail in the store.
func newAuthenticator(ctx context.Context, st store.Store, cfg Config, logger *slog.Logger) (*auth.Authenticator, error) {
	log := logger.With("component", "server")
	var boot []auth.Bootstrap
	if cfg.AdminToken != "" {
		boot = append(boot, auth.Bootstrap{Name: "admin-token", Secret: cfg.AdminToken})
	}
	if cfg.BootstrapTokenFile != "" {
		if err := bootstrapToken(ctx, st, cfg.BootstrapTokenFile, log); err != nil {
			return nil, err
		}
	}
	if !ListenIsLoopback(cfg.Listen) && cfg.Insecure {
		log.Warn("INSECURE: the API listens beyond loopback without TLS (--insecure); tokens and job data cross the network in clear text",
			"listen", cfg.Listen, "auth", cfg.Auth)
	}
	if !cfg.Auth {
		log.Info("authentication is off (--auth): calls without a token are accepted; admin calls only from loopback unless --admin-token is set")
	}
	a, err := auth.New(auth.Config{Required: cfg.Auth, Tokens: st.Tokens(), Bootstrap: boot, Audit: st.Audit(), Logger: logger})
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	return a, nil
}

// bootstrapToken reads (or creates) the bootstrap token file and stores its token as
// the admin token "bootstrap" unless one of that name exists.
func bootstrapToken(ctx context.Context, st store.Store, path string, log *slog.Logger) error {
	b, err := os.ReadFile(path)
	var secret string
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if secret, err = auth.NewSecret(); err != nil {
			return fmt.Errorf("server: --bootstrap-token-file: %w", err)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return fmt.Errorf("server: --bootstrap-token-file %s: %w", path, err)
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return fmt.Errorf("server: --bootstrap-token-file %s: %w", path, err)
		}
		_, werr := f.WriteString(secret + "\n")
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			return fmt.Errorf("server: --bootstrap-token-file %s: %w", path, werr)
		}
		log.Info("bootstrap admin token written", "file", path, "name", BootstrapTokenName)
	case err != nil:
		return fmt.Errorf("server: --bootstrap-token-file %s: %w", path, err)
	default:
		secret = strings.TrimSpace(string(b))
		if _, err := auth.ParseBearer("Bearer " + secret); err != nil || len(secret) < 16 {
			return fmt.Errorf("server: --bootstrap-token-file %s: not a token (want one line of at least 16 printable characters)", path)
		}
	}
	t := &store.Token{Name: BootstrapTokenName, Hash: auth.HashSecret(secret), Role: auth.RoleAdmin.String(),
		Namespaces: []string{auth.AllNamespaces}, CreatedAt: time.Now().UTC()}
	err = st.Tokens().Create(ctx, t)
	if errors.Is(err, store.ErrConflict) {
		// Created by an earlier start (or revoked since: then it stays revoked).
		return nil
	}
	if err != nil {
		return fmt.Errorf("server: store the bootstrap token: %w", err)
	}
	return nil
}
