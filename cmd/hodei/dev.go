package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/hodei-jobs/hodei/server"
	"github.com/hodei-jobs/hodei/telemetry"
)

// envDevDataDir is the environment variable of `hodei dev --data-dir`. It differs from
// `hodei server`'s HODEI_DATA_DIR so that one setting cannot point both at one
// directory.
const envDevDataDir = "HODEI_DEV_DATA_DIR"

func newDevCmd() *cobra.Command {
	var (
		cfg      server.Config
		logLevel string
		logFmt   string
		pf       providerFlags
	)
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run the whole platform in one process with no external services (SQLite, embedded NATS, local workers)",
		Long: `Run a development control plane: the same API, sagas, outbox relay, scheduler and
local workers as "hodei server", with everything it needs inside this process and under
one data directory:

  DATA_DIR/hodei.db   the SQLite database (WAL mode; also hodei.db-wal, hodei.db-shm)
  DATA_DIR/nats/      the embedded NATS JetStream store
  DATA_DIR/workers/   the local workers' pid records and logs
  DATA_DIR/LOCK       held (flock) while "hodei dev" runs; holds its pid

The default data directory is $XDG_DATA_HOME/hodei/dev, or ~/.local/share/hodei/dev when
XDG_DATA_HOME is not set. State survives a restart: jobs are listed again, and a job
that was running continues (its worker keeps running and reconnects to the next
"hodei dev" on the same address). A second "hodei dev" on the same data directory
refuses to start and changes nothing.

SQLite limits it to one process on one machine; production uses "hodei server" with
PostgreSQL. On SIGTERM or Ctrl-C it drains requests, stops and exits 0; workers of
running jobs are not killed.`,
		Example: `  hodei dev
  hodei dev --listen 127.0.0.1:8080 --data-dir /tmp/hodei-dev --max-workers 4`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			loaded, err := applyConfigFile(cmd)
			if err != nil {
				return err
			}
			if cfg.Pools, err = poolsFromFile(loaded); err != nil {
				return err
			}
			kubeFromFile(loaded, &cfg)
			if cfg.MaxWorkers < 0 {
				return fmt.Errorf("--max-workers: must not be negative, got %d", cfg.MaxWorkers)
			}
			if err := checkLivenessFlags(&cfg); err != nil {
				return err
			}
			if err := pf.apply(cmd, &cfg); err != nil {
				return err
			}
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level: %w", err)
			}
			if cfg.DataDir == "" {
				d, err := defaultDevDataDir()
				if err != nil {
					return err
				}
				cfg.DataDir = d
			}
			// The lock comes before anything else is opened or created in the data dir.
			lock, err := server.LockDataDir(cfg.DataDir)
			if err != nil {
				return err
			}
			defer func() { _ = lock.Release() }()
			cfg.DataDir = lock.Dir()
			cfg.DataDirLocked = true
			cfg.Driver = server.DriverSQLite
			logger, err := telemetry.NewLogger(cmd.ErrOrStderr(), logFmt, level)
			if err != nil {
				return err
			}
			stopTracing, err := startTracing(cmd.Context(), telemetry.ServerServiceName, logger)
			if err != nil {
				return err
			}
			defer stopTracing()
			out := cmd.OutOrStdout()
			cfg.OnReady = func(url string) { printDevBanner(out, url, cfg.DataDir, cfg.Auth) }
			err = server.Run(cmd.Context(), cfg, logger)
			if errors.Is(err, syscall.EADDRINUSE) {
				return fmt.Errorf("%w (is another hodei dev or hodei server running? choose another address with --listen)", err)
			}
			return err
		},
	}
	stringFlagEnv(cmd, &cfg.Listen, "listen", envListen, server.DefaultListen,
		"TCP address of the API (host:port; port 0 picks a free one)")
	stringFlagEnv(cmd, &cfg.DataDir, "data-dir", envDevDataDir, "",
		"directory for the SQLite database, the NATS store and the workers' state (default $XDG_DATA_HOME/hodei/dev or ~/.local/share/hodei/dev)")
	adminTokenServerFlag(cmd, &cfg.AdminToken)
	authServerFlags(cmd, &cfg)
	secretServerFlags(cmd, &cfg)
	tlsServerFlags(cmd, &cfg)
	livenessFlags(cmd, &cfg)
	pf.define(cmd, &cfg)
	serverConfigFlag(cmd)
	observabilityFlags(cmd, &logFmt, &cfg)
	cmd.Flags().IntVar(&cfg.MaxWorkers, "max-workers", 0,
		"most local workers (= jobs) running at once; jobs beyond it wait in PENDING (0: max(2, 4 x CPUs))")
	bindEnv(cmd, "max-workers", envMaxWorkers)
	retentionFlags(cmd, &cfg.RetainOutbox, &cfg.RetainSagas, &cfg.RetainJobs, &cfg.RetainLogs, &cfg.RetainIdempotency, true)
	cmd.Flags().StringVar(&logLevel, "log-level", "warn", "log level: debug, info, warn or error")
	return cmd
}

// defaultDevDataDir is $XDG_DATA_HOME/hodei/dev, or ~/.local/share/hodei/dev when
// XDG_DATA_HOME is unset or not absolute (the XDG spec says to ignore a relative one).
func defaultDevDataDir() (string, error) {
	if x := os.Getenv("XDG_DATA_HOME"); x != "" && filepath.IsAbs(x) {
		return filepath.Join(x, "hodei", "dev"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no default data dir (set --data-dir or %s): %w", envDevDataDir, err)
	}
	return filepath.Join(home, ".local", "share", "hodei", "dev"), nil
}

// printDevBanner tells the user where the API listens and how to run a job against it.
// Its first line, "hodei dev listening on URL", is what scripts and tests wait for.
func printDevBanner(w io.Writer, url, dataDir string, authOn bool) {
	example := cliInvocation() + " job run"
	if url != defaultServerURL {
		example += " --server " + url
	}
	security := "authentication off and no TLS: fine on loopback, where only this machine can connect (hodei server refuses other addresses without them)"
	if authOn {
		security = "authentication on (--auth): every call needs a token (hodei token create, --token); no TLS"
	}
	if strings.HasPrefix(url, "https://") {
		security = strings.Replace(security, "no TLS", "TLS on (clients: --ca-cert)", 1)
	}
	// One write, so that a reader of the first line does not race the rest.
	fmt.Fprintf(w, "hodei dev listening on %s\n"+
		"data in %s (SQLite database, NATS store, workers); Ctrl-C stops\n"+
		"%s\n"+
		"\nRun a job from another terminal:\n\n    %s -- echo hello\n\n", url, dataDir, security, example)
}

// cliInvocation is how the user can call this same binary: "go run ./cmd/hodei" when it
// was started by `go run` (the executable lives in go's temporary build dir), the path
// it was invoked by when that was a path (bin/hodei), else "hodei".
func cliInvocation() string {
	if exe, err := os.Executable(); err == nil && isGoRunBinary(exe) {
		return "go run ./cmd/hodei"
	}
	if len(os.Args) > 0 && strings.ContainsRune(os.Args[0], filepath.Separator) {
		return os.Args[0]
	}
	return "hodei"
}

// isGoRunBinary reports whether exe looks like a binary built by `go run`:
// <tmp>/go-buildNNN/bNNN/exe/<name>.
func isGoRunBinary(exe string) bool {
	dir := filepath.Dir(exe)
	return filepath.Base(dir) == "exe" && strings.HasPrefix(filepath.Base(filepath.Dir(filepath.Dir(dir))), "go-build")
}
