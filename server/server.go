package server

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"golang.org/x/sync/errgroup"

	"github.com/hodei-jobs/hodei/api"
	"github.com/hodei-jobs/hodei/command"
	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/internal/leadership"
	"github.com/hodei-jobs/hodei/jobs"
	"github.com/hodei-jobs/hodei/messaging"
	"github.com/hodei-jobs/hodei/outbox"
	"github.com/hodei-jobs/hodei/provider"
	"github.com/hodei-jobs/hodei/provider/docker"
	"github.com/hodei-jobs/hodei/provider/kubernetes"
	"github.com/hodei-jobs/hodei/provider/local"
	"github.com/hodei-jobs/hodei/provider/routing"
	"github.com/hodei-jobs/hodei/retention"
	"github.com/hodei-jobs/hodei/saga"
	"github.com/hodei-jobs/hodei/saga/natsq"
	"github.com/hodei-jobs/hodei/secrets"
	"github.com/hodei-jobs/hodei/store"
	"github.com/hodei-jobs/hodei/store/postgres"
	"github.com/hodei-jobs/hodei/store/sqlite"
	"github.com/hodei-jobs/hodei/telemetry"
)

// Run assembles and runs a control-plane replica until ctx ends, then shuts it down
// gracefully and returns nil (or the first error that stopped it). See doc.go.
func Run(ctx context.Context, cfg Config, logger *slog.Logger) (err error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	if logger == nil {
		logger = slog.Default()
	}
	log := logger.With("component", "server")
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("server: create data dir (Config.DataDir %s): %w", cfg.DataDir, err)
	}

	// Database.
	st, err := openStore(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer st.Close()
	secretMgr, err := newSecrets(st, cfg)
	if err != nil {
		return err
	}

	// NATS.
	natsURL := cfg.NATSURL
	if natsURL == "" {
		emb, release, err := startEmbeddedNATS(ctx, cfg, log)
		if err != nil {
			return err
		}
		defer release()
		defer emb.Shutdown()
		natsURL = emb.ClientURL()
	}
	nc, js, err := messaging.Connect(ctx, natsURL)
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	defer nc.Close()
	if err := messaging.CheckServer(nc); err != nil {
		return fmt.Errorf("server: %w", err)
	}
	replicas := cfg.NATSReplicas
	if replicas == 0 {
		replicas = messaging.DefaultReplicas(nc)
	}
	if err := waitJetStream(ctx, cfg.NATSStartTimeout, log, func(ctx context.Context) error {
		return messaging.EnsureEventsStream(ctx, js, replicas)
	}); err != nil {
		return fmt.Errorf("server: %w (with --nats-replicas %d; a NATS cluster needs at least that many nodes, a majority of them up)", err, replicas)
	}

	// Command bus, saga engine.
	bus := command.NewBus()
	reg := saga.NewRegistry()
	if err := jobs.RegisterSagas(reg); err != nil {
		return fmt.Errorf("server: register sagas: %w", err)
	}
	// Saga steps run inside their step group's transaction: they dispatch without
	// retry (the runner retries the step). Everything outside a transaction (the
	// relay, the job service's API-facing methods) dispatches through the edge chain.
	// Tracing uses the global OpenTelemetry provider: a no-op unless one is installed.
	chainCfg := command.ChainConfig{Idempotency: command.StoreDeps(st), Logger: logger}
	inTx := command.InTxChain(bus, chainCfg)
	edge := command.EdgeChain(bus, chainCfg)
	var engine *saga.Engine
	var queue *natsq.TaskQueue
	err = waitJetStream(ctx, cfg.NATSStartTimeout, log, func(ctx context.Context) (err error) {
		queue, err = natsq.NewTaskQueue(ctx, js, natsq.QueueConfig{
			Logger: logger, Replicas: replicas,
			OnDeadTask: func(ctx context.Context, sagaID string, n int) error {
				return natsq.RecordDeadTask(ctx, engine, sagaID, n)
			},
		})
		return err
	})
	if err != nil {
		return fmt.Errorf("server: saga task queue: %w", err)
	}
	waker, err := natsq.NewWaker(nc, natsq.WakerConfig{Logger: logger})
	if err != nil {
		return fmt.Errorf("server: saga waker: %w", err)
	}
	// The activities' commands run outside any transaction: no idempotency middleware
	// (it opens one), and no retry (the saga step's retry policy retries them).
	activities := command.ActivityChain(bus, chainCfg)
	// Metrics (telemetry.Metrics): counted by the job logic, the saga runner and the
	// API, and read from the database at scrape time.
	metrics := telemetry.NewMetrics()
	metrics.InitSeries(jobs.SagaTypes()...)
	// On shutdown the sagas running finish their steps within ShutdownTimeout.
	sagaCfg := saga.Config{Waker: waker, Queue: queue, Logger: logger, ActivityDispatcher: activities, Observer: metrics,
		DrainTimeout: cfg.ShutdownTimeout}
	// The node id names this replica: its saga runner, and the owner of the workers it
	// creates with node-local providers (stable across restarts with a locked data dir).
	node := "hodei-" + uuid.NewString()
	if cfg.DataDirLocked {
		id, err := instanceID(cfg.DataDir)
		if err != nil {
			return err
		}
		node = "hodei-" + id
		sagaCfg.ReleaseOnStart = true
	}
	elector, err := newElector(st, cfg, node, logger)
	if err != nil {
		return err
	}
	sagaCfg.RunnerID = node
	engine, err = saga.New(st, reg, inTx, sagaCfg)
	if err != nil {
		return fmt.Errorf("server: saga engine: %w", err)
	}

	// TLS: the API's certificate (reloaded when its files change), the client CAs
	// (mTLS) and the CA bundle handed to workers.
	apiTLS, workerCA, err := serverTLS(cfg, logger)
	if err != nil {
		return err
	}

	// Providers, in selection order. Those on shared infrastructure (a Docker Engine)
	// tag what they create with the installation id and see only what carries it.
	installation, err := st.InstallationID(ctx)
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	providers := provider.NewRegistry()
	names := cfg.Providers
	if len(names) == 0 {
		names = []string{local.Name}
	}
	var capacities []string // "local:8" in selection order
	// Workers export their spans where this server does (nil when tracing is off).
	workerEnv := telemetry.WorkerEnv(os.Environ(), os.Getenv)
	maxWorkers := 0
	for _, name := range names {
		var p provider.Provider
		switch name {
		case local.Name:
			bin, args := AgentCommand(cfg.WorkerBinary)
			lp, err := local.New(local.Config{
				Binary:     bin,
				Args:       args,
				StateDir:   filepath.Join(cfg.DataDir, "workers"),
				MaxWorkers: cfg.MaxWorkers,
				Logger:     logger,
				Env:        workerEnv,
			})
			if err != nil {
				return fmt.Errorf("server: local provider: %w", err)
			}
			p = lp
		case docker.Name:
			agentBin := cfg.Docker.AgentBinary
			if agentBin == "" {
				agentBin = cfg.WorkerBinary
			}
			dp, err := docker.New(ctx, docker.Config{Host: cfg.Docker.Host, MaxWorkers: cfg.Docker.MaxWorkers,
				Network: cfg.Docker.Network, AgentBinary: agentBin, DefaultImage: cfg.Docker.DefaultImage,
				Labels: cfg.Docker.Labels, Owner: node, Installation: installation, Logger: logger, Env: workerEnv})
			if err != nil {
				return fmt.Errorf("server: docker provider: %w", err)
			}
			defer dp.Close()
			p = dp
		case kubernetes.Name:
			k := cfg.Kube
			kp, err := kubernetes.New(ctx, kubernetes.Config{Kubeconfig: k.Kubeconfig, Namespace: k.Namespace,
				MaxWorkers: k.MaxWorkers, ServerURL: k.ServerURL, AgentImage: k.AgentImage, DefaultImage: k.DefaultImage,
				ServiceAccount: k.ServiceAccount, UnschedulableTimeout: k.UnschedulableTimeout, HostNetwork: k.HostNetwork,
				RequestPercent: k.RequestPercent, Labels: k.Labels, NodeSelector: k.NodeSelector,
				Tolerations: k.Tolerations, PodLabels: k.PodLabels, Security: k.Security,
				Owner: node, Installation: installation, Logger: logger, Env: workerEnv})
			if err != nil {
				return fmt.Errorf("server: kubernetes provider: %w", err)
			}
			defer kp.Close()
			p = kp
		default:
			return fmt.Errorf("server: unknown provider %q (want local, docker or kubernetes)", name)
		}
		if err := providers.Register(name, p); err != nil {
			return fmt.Errorf("server: %w", err)
		}
		capacities = append(capacities, fmt.Sprintf("%s:%d", name, p.Capabilities().MaxWorkers))
		maxWorkers += p.Capabilities().MaxWorkers
	}
	// Operations on workers of node-local providers run on the node that owns them.
	router, err := routing.New(nc, node, providers, routing.Config{Timeout: cfg.NodeTimeout, Logger: logger})
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	stopRouting, err := router.Start(ctx)
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	defer stopRouting()

	// Listen before building the job logic: workers need the real address.
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("server: listen on %s (Config.Listen): %w", cfg.Listen, err)
	}
	defer ln.Close()
	baseURL := advertisedURL(ln.Addr(), cfg.TLS())
	serverURL := cfg.workerURL(baseURL)

	hub, err := api.NewHub(nc)
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	svc, err := jobs.New(st, bus, engine, providers, hub, jobs.Config{ServerURL: serverURL, WorkerCACertPEM: workerCA, Logger: logger,
		ProviderStrategy:    jobs.Strategy(cfg.ProviderStrategy),
		RegistrationTimeout: cfg.RegistrationTimeout, Workers: router, Leader: elector, Dispatcher: edge, TxDispatcher: inTx,
		Observer: metrics, Pools: cfg.warmPools(), IdleStaleAfter: 2 * cfg.Cleanup.HeartbeatInterval})
	if err != nil {
		return fmt.Errorf("server: job service: %w", err)
	}
	orch, err := jobs.NewOrchestrator(js, svc.OrchestratorRoutes(), jobs.OrchestratorConfig{Logger: logger})
	if err != nil {
		return fmt.Errorf("server: orchestrator: %w", err)
	}
	relay, err := outbox.NewRelay(st.Outbox(), outbox.BusSink{Bus: bus, Dispatcher: edge},
		outbox.NewJetStreamPublisher(js), outbox.Config{Logger: logger,
			// Stable per data directory (its lock guarantees the previous run is dead):
			// a restarted replica takes its leased rows back at once.
			RelayID: node, ReleaseOnStart: cfg.DataDirLocked})
	if err != nil {
		return fmt.Errorf("server: outbox relay: %w", err)
	}

	// API.
	notifier := api.NewNotifier()
	errorCodes := ErrorCodes()
	// Every job transition publishes a job event that wakes the streams (Notifier.Listen),
	// so the poll is only the safety net.
	jobAPI, err := api.NewJobService(st.Jobs(), svc, svc, api.JobOptions{
		Notifier: notifier, PollInterval: 500 * time.Millisecond, Errors: errorCodes, Sagas: svc, Secrets: secretMgr, Logger: logger,
		Explain: func(ctx context.Context, j *domain.Job) (string, string, []string, error) {
			e, err := svc.Explain(ctx, j)
			if err != nil {
				return "", "", nil, err
			}
			return e.State, e.Summary, e.Details, nil
		},
		WorkerProvider: func(ctx context.Context, workerID string) (string, error) {
			w, err := st.Workers().Get(ctx, workerID)
			if err != nil {
				return "", err
			}
			return w.Provider, nil
		}})
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	workerAPI, err := api.NewWorkerAgentService(svc, hub, api.WorkerOptions{
		Notifier: notifier, Errors: errorCodes, Logger: logger, HeartbeatInterval: cfg.Cleanup.HeartbeatInterval,
		Secrets: secretResolver(secretMgr)})
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	replica := replicaStatus(elector)
	adminAPI, err := api.NewAdminService(svc, st.Outbox(), engine, api.AdminOptions{Errors: errorCodes,
		Tokens: st.Tokens(), Audit: st.Audit(), Namespaces: st.Namespaces(),
		Replica: replica, Logger: logger, ListSagas: engine.List})
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	secretAPI, err := api.NewSecretService(secretAdmin{secretMgr}, errorCodes, logger)
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	authn, err := newAuthenticator(ctx, st, cfg, logger)
	if err != nil {
		return err
	}
	gauges := telemetry.GaugeSources{Outbox: st.Outbox(), Leading: func() bool { return elector.Status().Leading }}
	if gr, ok := st.(store.GaugeReader); ok {
		gauges.Store = gr
	}
	if err := metrics.RegisterGauges(gauges); err != nil {
		return fmt.Errorf("server: metrics: %w", err)
	}
	handler, err := api.NewMux(api.MuxConfig{
		Auth:    authn,
		Jobs:    jobAPI,
		Workers: workerAPI,
		Admin:   adminAPI,
		Secrets: secretAPI,
		Ready: []api.Check{
			{Name: "database", Check: st.Ping},
			{Name: "nats", Check: natsReady(nc)},
		},
		Replica:      replica,
		Logger:       logger,
		Interceptors: []connect.Interceptor{telemetry.Interceptor(metrics, nil)},
		Metrics:      metrics.Handler(),
	})
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}

	// Run everything. streams is the parent of every request: cancelled when shutdown
	// begins so that long-lived streams end and the drain does not wait for them.
	g, gctx := errgroup.WithContext(ctx)
	streams, endStreams := context.WithCancel(context.WithoutCancel(ctx))
	defer endStreams()
	if cfg.TLSClientCA != "" {
		handler = requireClientCert(handler)
	}
	srv := api.NewHTTPServer(handler, streams)
	if apiTLS != nil {
		// HTTPS only: HTTP/2 by ALPN and HTTP/1.1; a plaintext request is refused.
		var p http.Protocols
		p.SetHTTP1(true)
		p.SetHTTP2(true)
		srv.Protocols, srv.TLSConfig = &p, apiTLS
	}
	if cfg.MetricsListen != "" {
		msrv, mln, err := metricsServer(cfg.MetricsListen, metrics)
		if err != nil {
			return err
		}
		defer mln.Close()
		g.Go(func() error {
			if err := msrv.Serve(mln); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("server: metrics http: %w", err)
			}
			return nil
		})
		g.Go(func() error {
			<-gctx.Done()
			return msrv.Close()
		})
		// Unauthenticated by design (README "Metrics"): for scrapers on a private address.
		if cfg.Auth && !ListenIsLoopback(cfg.MetricsListen) {
			log.Warn("metrics listening without authentication on a non-loopback address (--metrics-listen): keep it reachable by the scrapers only",
				"url", "http://"+mln.Addr().String()+"/metrics")
		} else {
			log.Info("metrics listening", "url", "http://"+mln.Addr().String()+"/metrics", "authentication", "none")
		}
	}
	g.Go(func() error { return loop("leader election", elector.Run(gctx)) })
	// A job submitted on another replica wakes the leader's scheduler (its job.queued
	// event); the scheduler's poll is the safety net.
	queued, err := nc.Subscribe(messaging.EventSubject(domain.EventJobQueued), func(*nats.Msg) { svc.WakeScheduler() })
	if err != nil {
		return fmt.Errorf("server: subscribe to job.queued: %w", err)
	}
	defer func() { _ = queued.Unsubscribe() }()
	g.Go(func() error { return loop("saga engine", engine.Run(gctx)) })
	g.Go(func() error { return loop("outbox relay", relay.Run(gctx)) })
	if r := cfg.retentions(); r.Any() {
		pruner, err := retention.NewPruner(st, retention.Config{Retain: r, Leader: elector, Logger: logger})
		if err != nil {
			return fmt.Errorf("server: retention pruner (--retain-*): %w", err)
		}
		g.Go(func() error { return loop("retention pruner", pruner.Run(gctx)) })
	}
	g.Go(func() error { return loop("scheduler", svc.RunScheduler(gctx)) })
	g.Go(func() error { return loop("cleanup", svc.RunCleanup(gctx, cfg.Cleanup)) }) // lost workers, recovery
	g.Go(func() error { return loop("orchestrator", orch.Run(gctx)) })
	g.Go(func() error { return loop("job event listener", notifier.Listen(gctx, nc, logger)) })
	g.Go(func() error {
		serve := func() error { return srv.Serve(ln) }
		if apiTLS != nil {
			serve = func() error { return srv.ServeTLS(ln, "", "") } // the certificate comes from TLSConfig
		}
		if err := serve(); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("server: http: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		log.Info("shutting down: draining HTTP requests", "timeout", cfg.ShutdownTimeout)
		endStreams()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(gctx), cfg.ShutdownTimeout)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			log.Warn("HTTP drain incomplete; closing remaining connections", "err", err)
			_ = srv.Close()
		}
		return nil
	})
	log.Info("server ready", "replica", node, "url", baseURL, "worker_url", serverURL, "data_dir", cfg.DataDir, "driver", cfg.Driver,
		"nats", natsURL, "providers", strings.Join(capacities, ","), "provider_strategy", cmp.Or(cfg.ProviderStrategy, string(jobs.StrategyFirstFit)), "max_workers", maxWorkers, "tls", cfg.TLS(), "mtls", cfg.TLSClientCA != "")
	if cfg.OnReady != nil {
		cfg.OnReady(baseURL)
	}
	err = g.Wait()
	log.Info("server stopped", "err", err)
	return err
}

// metricsServer listens on addr (Config.MetricsListen) and serves GET /metrics only.
func metricsServer(addr string, m *telemetry.Metrics) (*http.Server, net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("server: listen on %s (Config.MetricsListen): %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	return &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}, ln, nil
}

// openStore opens (and migrates) the store of cfg.Driver.
func openStore(ctx context.Context, cfg Config, logger *slog.Logger) (store.Store, error) {
	log := logger.With("component", "server")
	switch cfg.Driver {
	case DriverSQLite:
		start := time.Now()
		st, err := sqlite.Open(ctx, cfg.SQLitePath)
		if err != nil {
			return nil, fmt.Errorf("server: open SQLite database (Config.SQLitePath %s): %w", cfg.SQLitePath, err)
		}
		log.Info("SQLite database open", "path", cfg.SQLitePath, "took", time.Since(start))
		return st, nil
	default:
		applied, err := postgres.Migrate(ctx, cfg.DatabaseURL)
		if err != nil {
			return nil, fmt.Errorf("server: migrate: %w", err)
		}
		if len(applied) > 0 {
			log.Info("database migrated", "applied", applied)
		}
		st, err := postgres.Open(ctx, cfg.DatabaseURL, postgres.WithLogger(logger))
		if err != nil {
			return nil, fmt.Errorf("server: open database: %w", err)
		}
		return st, nil
	}
}

// newElector returns the leader election of this replica: a lease on PostgreSQL, always
// leader on SQLite (one process).
func newElector(st store.Store, cfg Config, id string, logger *slog.Logger) (*leadership.Elector, error) {
	var (
		e   *leadership.Elector
		err error
	)
	if cfg.Driver == DriverSQLite {
		e, err = leadership.NewAlwaysLeader(id)
	} else {
		e, err = leadership.New(st.Leader(), leadership.Config{ID: id, TTL: cfg.LeaderTTL, Logger: logger})
	}
	if err != nil {
		return nil, fmt.Errorf("server: leader election: %w", err)
	}
	return e, nil
}

// replicaStatus is the elector's view as the API shows it.
func replicaStatus(e *leadership.Elector) func() api.ReplicaStatus {
	return func() api.ReplicaStatus {
		s := e.Status()
		return api.ReplicaStatus{ID: s.ID, Leading: s.Leading, Leader: s.Leader, LeaderUntil: s.Until}
	}
}

// loop labels the error of a loop; a loop that returns nil (its context ended) is fine.
func loop(name string, err error) error {
	if err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("server: %s: %w", name, err)
	}
	return nil
}

// ErrorCodes maps the job logic's errors to API codes.
func ErrorCodes() []api.ErrorCode {
	return []api.ErrorCode{
		{Err: jobs.ErrOTPReused, Code: connect.CodePermissionDenied},
		{Err: jobs.ErrInvalidCredentials, Code: connect.CodeUnauthenticated},
		{Err: jobs.ErrNotAssigned, Code: connect.CodePermissionDenied},
		{Err: jobs.ErrInvalidInput, Code: connect.CodeInvalidArgument},
		{Err: secrets.ErrNoKey, Code: connect.CodeFailedPrecondition},
		{Err: secrets.ErrUnknownKey, Code: connect.CodeFailedPrecondition},
	}
}

// natsReady checks that the connection is up and answers a round trip.
func natsReady(nc *nats.Conn) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		if s := nc.Status(); s != nats.CONNECTED {
			return fmt.Errorf("connection %s", s)
		}
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
		}
		return nc.FlushWithContext(ctx)
	}
}

// startEmbeddedNATS starts NATS with its JetStream store in dataDir/nats, locked
// (flock) by this process. When another process holds the lock (two servers sharing a
// data dir), a temporary store is used instead and a warning logged: the database is
// the source of truth, the embedded store only holds events and saga task hints.
func startEmbeddedNATS(ctx context.Context, cfg Config, log *slog.Logger) (*messaging.Embedded, func(), error) {
	dataDir := cfg.DataDir
	dir := filepath.Join(dataDir, "nats")
	release := func() {}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("server: create NATS store dir %s: %w", dir, err)
	}
	lock, err := os.OpenFile(filepath.Join(dataDir, "nats.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("server: open NATS store lock: %w", err)
	}
	if err := flock(lock); err != nil {
		_ = lock.Close()
		log.Warn("NATS store dir in use by another process; using a temporary store", "dir", dir)
		dir = ""
	} else {
		release = func() { _ = lock.Close() } // closing releases the flock
	}
	start := time.Now()
	opts := messaging.Options{StoreDir: dir, ClusterListen: cfg.NATSClusterListen, Routes: cfg.NATSRoutes,
		ClusterName: cfg.NATSClusterName}
	if cfg.NATSClusterListen != "" {
		// Every node of a cluster needs its own name, stable across restarts (its
		// JetStream peer id follows from it).
		name := "hodei-" + uuid.NewString()
		if cfg.DataDirLocked {
			id, err := instanceID(dataDir)
			if err != nil {
				release()
				return nil, nil, err
			}
			name = "hodei-" + id
		}
		opts.ServerName = name
	}
	emb, err := messaging.StartEmbedded(ctx, opts)
	if err != nil {
		release()
		return nil, nil, fmt.Errorf("server: embedded NATS: %w", err)
	}
	log.Info("embedded NATS started", "url", emb.ClientURL(), "store", dir, "cluster", cfg.NATSClusterListen,
		"routes", cfg.NATSRoutes, "took", time.Since(start))
	return emb, release, nil
}

// waitJetStream calls fn (each try bounded by 3s) until it succeeds, ctx ends or
// timeout passes (0: 2m): JetStream in a cluster answers once a majority of the nodes
// is up and has elected its leaders, and a replica may start before that.
func waitJetStream(ctx context.Context, timeout time.Duration, log *slog.Logger, fn func(context.Context) error) error {
	if timeout == 0 {
		timeout = 2 * time.Minute
	}
	deadline := time.Now().Add(timeout)
	for attempt := 1; ; attempt++ {
		tctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		err := fn(tctx)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return err
		}
		log.Warn("JetStream not ready; retrying", "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(min(time.Duration(attempt)*250*time.Millisecond, 2*time.Second)):
		}
	}
}
