// Package workercmd is the worker agent's command line: `hodei worker` and the slim
// `hodei-agent` binary (cmd/hodei-agent) are the same command, so providers may start
// either. The slim binary links only the agent, so it starts with a third of the CPU
// and about half the memory of the full hodei binary.
package workercmd

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/hodei-jobs/hodei/agent"
	"github.com/hodei-jobs/hodei/internal/envflag"
	"github.com/hodei-jobs/hodei/internal/tlsconf"
	"github.com/hodei-jobs/hodei/telemetry"
)

// Environment of `hodei worker`, set by the provider that starts it.
const (
	envWorkerServer      = "HODEI_SERVER"
	envWorkerID          = "HODEI_WORKER_ID"
	envWorkerOTP         = "HODEI_ONE_TIME_PASSWORD"
	envWorkerHeartbeat   = "HODEI_HEARTBEAT_INTERVAL"
	envWorkerMemoryBytes = "HODEI_WORKER_MEMORY_BYTES"
	// envWorkerCgroupMemory=1: the container's cgroup enforces memory (docker provider).
	envWorkerCgroupMemory = "HODEI_WORKER_CGROUP_MEMORY"
	envWorkerIdleTimeout  = "HODEI_WORKER_IDLE_TIMEOUT"
	// A reused worker (warm pools): how many jobs it runs, and how long it waits for one.
	envWorkerMaxJobs         = "HODEI_WORKER_MAX_JOBS"
	envWorkerFirstJobTimeout = "HODEI_WORKER_FIRST_JOB_TIMEOUT"
)

// New returns the worker command, named use ("worker" under hodei, "hodei-agent" as a
// binary of its own). Its flags are bound to HODEI_* variables; the caller applies them
// (envflag.ApplyDefaults) before it runs.
func New(use string) *cobra.Command {
	var (
		cfg      agent.Config
		logLevel string
	)
	cmd := &cobra.Command{
		Use:   use,
		Short: "Run the worker agent (started by a provider, not by hand)",
		Long: `Run the worker agent: register with the server using a one-time password, run
the job the server sends, stream its output and report its exit code.

A provider starts it with HODEI_SERVER, HODEI_WORKER_ID and HODEI_ONE_TIME_PASSWORD in
its environment, and for an https:// server the CA bundle that verifies it:
HODEI_CA_CERT (a PEM file) or HODEI_CA_CERT_PEM (the PEM text). The one-time password is read only from the environment (a command
line is visible to every user through ps) and removed from it at once.

With --max-jobs N above 1 (a warm pool's worker) it runs up to N jobs one after
another; between two jobs it kills every process the last one left (also those that
left its process group), removes its directory and keeps none of its environment or
secrets, and waits --first-job-timeout for the next.

Exits 0 when destroyed (SIGTERM: the running job is stopped first) or idle after its
job; non-zero when the server refuses the password or cannot be reached.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := envflag.Require(cmd, "server", "worker-id"); err != nil {
				return err
			}
			cfg.OneTimePassword = os.Getenv(envWorkerOTP)
			if cfg.OneTimePassword == "" {
				return fmt.Errorf("the environment variable %s is required (the worker's one-time password)", envWorkerOTP)
			}
			_ = os.Unsetenv(envWorkerOTP)
			if v := os.Getenv(envWorkerMemoryBytes); v != "" {
				n, err := strconv.ParseInt(v, 10, 64)
				if err != nil || n < 0 {
					return fmt.Errorf("$%s: want a non-negative number of bytes, got %q", envWorkerMemoryBytes, v)
				}
				cfg.MemoryLimitBytes = n
			}
			cfg.CgroupMemory = os.Getenv(envWorkerCgroupMemory) == "1"
			// The CA bundle that verifies an https:// server: a file, or its PEM text.
			if path := os.Getenv(tlsconf.EnvCACert); path != "" {
				pool, err := tlsconf.LoadCertPool(path, "$"+tlsconf.EnvCACert)
				if err != nil {
					return err
				}
				cfg.RootCAs = pool
			} else if pem := os.Getenv(tlsconf.EnvCACertPEM); pem != "" {
				pool, err := tlsconf.ParseCertPool([]byte(pem), "$"+tlsconf.EnvCACertPEM)
				if err != nil {
					return err
				}
				cfg.RootCAs = pool
			}
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level: %w", err)
			}
			logger, err := telemetry.NewLogger(cmd.ErrOrStderr(), telemetry.LogText, level)
			if err != nil {
				return err
			}
			cfg.Logger = logger
			// The agent exports its own spans where the server does (OTEL_* handed over
			// by the provider), in the job's trace (TRACEPARENT).
			cfg.TraceParent = os.Getenv(telemetry.EnvTraceParent)
			stopTracing, err := StartTracing(cmd.Context(), telemetry.WorkerServiceName, logger)
			if err != nil {
				return err
			}
			defer stopTracing()
			return agent.Run(cmd.Context(), cfg)
		},
	}
	envflag.String(cmd, &cfg.ServerURL, "server", envWorkerServer, "",
		"URL of the Hodei server, or several replicas' URLs comma-separated (the worker moves to the next when one is gone)")
	envflag.String(cmd, &cfg.WorkerID, "worker-id", envWorkerID, "", "this worker's id (from the provider)")
	cmd.Flags().DurationVar(&cfg.HeartbeatInterval, "heartbeat-interval", 0,
		"heartbeat period (0: the server's, default 5s)")
	envflag.Bind(cmd, "heartbeat-interval", envWorkerHeartbeat)
	cmd.Flags().DurationVar(&cfg.IdleTimeout, "idle-timeout", 30*time.Second,
		"exit this long after the job's result was acknowledged if not destroyed before")
	envflag.Bind(cmd, "idle-timeout", envWorkerIdleTimeout)
	cmd.Flags().IntVar(&cfg.MaxJobs, "max-jobs", 1,
		"jobs this worker runs one after another (above 1: a reused worker, cleaned between jobs)")
	envflag.Bind(cmd, "max-jobs", envWorkerMaxJobs)
	cmd.Flags().DurationVar(&cfg.FirstJobTimeout, "first-job-timeout", 5*time.Minute,
		"exit if no job arrives this long after start (a reused worker: also while it waits between jobs)")
	envflag.Bind(cmd, "first-job-timeout", envWorkerFirstJobTimeout)
	cmd.Flags().StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	return cmd
}

// StartTracing installs the OTLP trace pipeline from OTEL_* (a no-op when no endpoint
// is set) and returns the function that flushes it at exit.
func StartTracing(ctx context.Context, service string, logger *slog.Logger) (func(), error) {
	tr, err := telemetry.SetupTracing(ctx, service, os.Getenv)
	if err != nil {
		return nil, err
	}
	if tr.Enabled {
		logger.Info("exporting traces over OTLP", "service", service)
	}
	return func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := tr.Shutdown(sctx); err != nil {
			logger.Warn("trace export at shutdown failed", "err", err)
		}
	}, nil
}
