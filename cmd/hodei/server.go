package main

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/spf13/cobra"

	"github.com/hodei-jobs/hodei/server"
	"github.com/hodei-jobs/hodei/telemetry"
)

// Environment variables of `hodei server`.
const (
	envListen      = "HODEI_LISTEN"
	envNATSURL     = "HODEI_NATS_URL"
	envDataDir     = "HODEI_DATA_DIR"
	envMaxWorkers  = "HODEI_MAX_WORKERS"
	envLeaderTTL   = "HODEI_LEADER_TTL"
	envNodeTimeout = "HODEI_NODE_TIMEOUT"

	envNATSClusterListen = "HODEI_NATS_CLUSTER_LISTEN"
	envNATSRoutes        = "HODEI_NATS_ROUTES"
	envNATSClusterName   = "HODEI_NATS_CLUSTER_NAME"
	envNATSReplicas      = "HODEI_NATS_REPLICAS"
	envRetainOutbox      = "HODEI_RETAIN_OUTBOX"
	envWorkerServers     = "HODEI_WORKER_SERVERS"
	envRetainSagas       = "HODEI_RETAIN_SAGAS"
	envRetainJobs        = "HODEI_RETAIN_JOBS"
	envRetainLogs        = "HODEI_RETAIN_LOGS"
	envRetainIdempotency = "HODEI_RETAIN_IDEMPOTENCY"
)

func newServerCmd() *cobra.Command {
	var (
		cfg      server.Config
		logLevel string
		logFmt   string
		pf       providerFlags
	)
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the Hodei control plane (API, sagas, outbox relay, scheduler, local workers)",
		Long: `Run a Hodei control-plane replica on one port: the Connect API (gRPC, gRPC-Web and
Connect JSON over HTTP/1.1 and h2c), GET /healthz and GET /readyz. It migrates the
database, connects to NATS (or runs it embedded), and starts workers on demand with the
local provider (one "hodei worker" process per job).

On SIGTERM or Ctrl-C it stops accepting requests and claiming work, drains the
requests, lets the sagas running finish their steps (10s at most), ends the workers'
streams and exits 0. Workers are not killed: they keep running their jobs and
reconnect to another replica of --worker-servers, or to the next server that comes up
on the same address.

Several replicas share one PostgreSQL database and one NATS cluster: either an external
cluster (--nats-url with its nodes' URLs, comma-separated) or the replicas' embedded
servers joined with --nats-cluster-listen and --nats-routes. In a cluster Hodei's
JetStream streams are replicated over 3 nodes (--nats-replicas), so one node of three
may die. nats-server 2.9 or later is needed.`,
		Example: `  hodei server --database-url postgres://hodei:secret@localhost:5432/hodei
  hodei server --database-url postgres://db/hodei --nats-url nats://n1:4222,nats://n2:4222,nats://n3:4222
  hodei server --database-url postgres://db/hodei --nats-cluster-listen 10.0.0.1:6222 --nats-routes 10.0.0.2:6222,10.0.0.3:6222
  HODEI_DATABASE_URL=postgres://localhost/hodei hodei server --listen 0.0.0.0:7070 --max-workers 8`,
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
			if err := requireFlags(cmd, "database-url"); err != nil {
				return err
			}
			if cfg.MaxWorkers < 0 {
				return fmt.Errorf("--max-workers: must not be negative, got %d", cfg.MaxWorkers)
			}
			if err := checkLivenessFlags(&cfg); err != nil {
				return err
			}
			if err := pf.apply(cmd, &cfg); err != nil {
				return err
			}
			if cfg.LeaderTTL < time.Second || cfg.LeaderTTL > 10*time.Minute {
				return fmt.Errorf("--leader-ttl: %s out of range [1s, 10m]", cfg.LeaderTTL)
			}
			if cfg.NodeTimeout < 100*time.Millisecond || cfg.NodeTimeout > 5*time.Minute {
				return fmt.Errorf("--node-timeout: %s out of range [100ms, 5m]", cfg.NodeTimeout)
			}
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level: %w", err)
			}
			// One process per data directory (its embedded NATS store, its workers' pid
			// records, its saga runner id): the lock comes before anything is opened.
			if cfg.DataDir == "" {
				cfg.DataDir = server.DefaultDataDir()
			}
			lock, err := server.LockDataDir(cfg.DataDir)
			if err != nil {
				return err
			}
			defer func() { _ = lock.Release() }()
			cfg.DataDir, cfg.DataDirLocked = lock.Dir(), true
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
			cfg.OnReady = func(url string) { fmt.Fprintf(out, "hodei server listening on %s\n", url) }
			return server.Run(cmd.Context(), cfg, logger)
		},
	}
	stringFlagEnv(cmd, &cfg.Listen, "listen", envListen, server.DefaultListen,
		"TCP address of the API (host:port; port 0 picks a free one)")
	databaseURLFlag(cmd, &cfg.DatabaseURL)
	stringFlagEnv(cmd, &cfg.NATSURL, "nats-url", envNATSURL, "",
		"NATS server(s) with JetStream, e.g. nats://localhost:4222, or a cluster's comma-separated URLs (empty: run NATS embedded, storing under --data-dir)")
	stringFlagEnv(cmd, &cfg.NATSClusterListen, "nats-cluster-listen", envNATSClusterListen, "",
		"host:port where the embedded NATS server takes routes from the other replicas' embedded servers, forming a NATS cluster (empty: a standalone server)")
	cmd.Flags().StringSliceVar(&cfg.NATSRoutes, "nats-routes", nil,
		"the other replicas' --nats-cluster-listen addresses, host:port (repeatable or comma-separated)")
	bindEnv(cmd, "nats-routes", envNATSRoutes)
	stringFlagEnv(cmd, &cfg.NATSClusterName, "nats-cluster-name", envNATSClusterName, "hodei",
		"name of the embedded NATS cluster, the same on every replica")
	cmd.Flags().IntVar(&cfg.NATSReplicas, "nats-replicas", 0,
		"JetStream replicas of Hodei's streams, 1-5 (0: 3 when NATS is a cluster, so that one node of three may die; else 1)")
	bindEnv(cmd, "nats-replicas", envNATSReplicas)
	stringFlagEnv(cmd, &cfg.DataDir, "data-dir", envDataDir, "",
		"directory for the embedded NATS store and the local workers' state (default "+server.DefaultDataDir()+")")
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
	cmd.Flags().DurationVar(&cfg.LeaderTTL, "leader-ttl", 15*time.Second,
		"lifetime of the leader's lease: the replicas on one database elect one leader (it runs the scheduler and the cleanup scan), renewed every third of it; a dead leader is replaced within it")
	bindEnv(cmd, "leader-ttl", envLeaderTTL)
	cmd.Flags().DurationVar(&cfg.NodeTimeout, "node-timeout", 10*time.Second,
		"how long a replica waits for another one to stop or inspect a local worker that replica started; one that does not answer in time is unreachable (a timed-out job whose worker cannot be confirmed stopped then needs a human)")
	bindEnv(cmd, "node-timeout", envNodeTimeout)
	cmd.Flags().StringSliceVar(&cfg.WorkerServers, "worker-servers", nil,
		"URLs the workers this replica starts dial: every replica's (comma-separated) or one name that reaches any; a worker whose replica is gone moves to the next (default: this replica's address)")
	bindEnv(cmd, "worker-servers", envWorkerServers)
	retentionFlags(cmd, &cfg.RetainOutbox, &cfg.RetainSagas, &cfg.RetainJobs, &cfg.RetainLogs, &cfg.RetainIdempotency, true)
	cmd.Flags().StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	return cmd
}
