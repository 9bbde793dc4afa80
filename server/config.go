package server

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/hodei-jobs/hodei/jobs"
	"github.com/hodei-jobs/hodei/provider/kubernetes"
	"github.com/hodei-jobs/hodei/retention"
)

// DefaultListen is the address `hodei server` and `hodei dev` listen on by default.
const DefaultListen = "127.0.0.1:7070"

// Store drivers (Config.Driver).
const (
	// DriverPostgres stores everything in PostgreSQL (Config.DatabaseURL): production,
	// any number of replicas.
	DriverPostgres = "postgres"
	// DriverSQLite stores everything in one SQLite file (Config.SQLitePath): one
	// process on one machine (`hodei dev`); see store/sqlite's package doc.
	DriverSQLite = "sqlite"
)

// SQLiteFile is the name of the SQLite database inside DataDir when Config.SQLitePath
// is empty.
const SQLiteFile = "hodei.db"

// Config configures Run. Zero fields get defaults (setDefaults); Validate names the
// first bad field.
type Config struct {
	// Listen is the API's TCP address (default DefaultListen). Port 0 picks a free port.
	Listen string
	// Driver is the store driver: DriverPostgres (default) or DriverSQLite.
	Driver string
	// DatabaseURL is the PostgreSQL URL (required with DriverPostgres, refused with
	// DriverSQLite). Run migrates the database first.
	DatabaseURL string
	// SQLitePath is the SQLite database file (DriverSQLite only; default
	// DataDir/hodei.db). Open creates it, puts it in WAL mode and migrates it. Only one
	// process may use it at a time: the caller guarantees that (`hodei dev` holds an
	// flock on DataDir/LOCK, LockDataDir).
	SQLitePath string
	// NATSURL of an external NATS server with JetStream. Empty: an embedded server
	// with its store under DataDir/nats.
	NATSURL string
	// NATSClusterListen ("host:port", --nats-cluster-listen) makes the embedded NATS
	// server a node of a NATS cluster formed by the replicas' embedded servers: the
	// other nodes' routes connect there. Refused with NATSURL.
	NATSClusterListen string
	// NATSRoutes (--nats-routes) are the other replicas' NATSClusterListen addresses.
	NATSRoutes []string
	// NATSClusterName names the embedded NATS cluster (default "hodei").
	NATSClusterName string
	// NATSReplicas is the number of JetStream replicas of Hodei's streams (1..5). 0:
	// 3 when the NATS server is part of a cluster, else 1 (messaging.DefaultReplicas).
	NATSReplicas int
	// RetainOutbox (--retain-outbox) is how long finished outbox rows (COMPLETED,
	// CANCELLED) are kept; the leader deletes older ones in small batches every minute.
	// 0: kept forever. At least a minute otherwise.
	RetainOutbox time.Duration
	// RetainSagas, RetainJobs, RetainLogs and RetainIdempotency (--retain-sagas,
	// --retain-jobs, --retain-logs, --retain-idempotency) are the other kinds' retentions
	// (package retention says what each deletes and what it never does); the leader
	// prunes them with the outbox. 0: kept forever; at least a minute otherwise.
	RetainSagas       time.Duration
	RetainJobs        time.Duration
	RetainLogs        time.Duration
	RetainIdempotency time.Duration
	// NATSStartTimeout bounds the wait for JetStream at start (a cluster elects its
	// leaders once a majority of its nodes is up). Default 2m.
	NATSStartTimeout time.Duration
	// DataDir holds the embedded NATS store and the local provider's state (default
	// <user cache dir>/hodei, else <temp dir>/hodei-<uid>).
	DataDir string
	// MaxWorkers is the local provider's capacity (0: its default, max(2, 4·NumCPU)).
	MaxWorkers int
	// ServerURL is the URL workers dial (default http://<listen address>, with an
	// unspecified host such as 0.0.0.0 replaced by 127.0.0.1).
	ServerURL string
	// WorkerServers (--worker-servers) are the URLs the workers this replica starts
	// dial instead of ServerURL: every replica's address, or one name that reaches any
	// of them. A worker whose replica is gone reconnects to the next one; any replica
	// serves any worker's stream. Empty: ServerURL.
	WorkerServers []string
	// Providers are the worker providers to run, in selection order (first-fit):
	// "local", "docker". Default ["local"].
	Providers []string
	// ProviderStrategy chooses among the providers that can run a job and have room:
	// "first-fit" (default: the first in Providers order) or "least-loaded" (the
	// lowest share of its capacity in use); see jobs.Strategy.
	ProviderStrategy string
	// Docker configures the docker provider (when Providers has "docker").
	Docker DockerConfig
	// Kube configures the kubernetes provider (when Providers has "kubernetes").
	Kube KubeConfig
	// WorkerBinary is the `hodei` executable the local provider starts as
	// `<WorkerBinary> worker`, or a hodei-agent binary it starts as it is (default: a
	// hodei-agent next to os.Executable(), else os.Executable(); AgentCommand).
	WorkerBinary string
	// ShutdownTimeout bounds the graceful drain of HTTP requests and of the sagas
	// running when the shutdown begins (default 10s).
	ShutdownTimeout time.Duration
	// AdminToken, when set, is required as "Authorization: Bearer <AdminToken>" on the
	// admin API (AdminService, /api/v1/admin/); when empty, only loopback clients may
	// use it (api.AdminOptions.Token).
	AdminToken string
	// Auth (--auth, HODEI_AUTH) makes every API call need a token, from loopback
	// clients too (package auth). Without it a token is used when sent, and calls
	// without one behave as before tokens existed.
	Auth bool
	// BootstrapTokenFile (--bootstrap-token-file) holds the first admin token: Run
	// reads it (creating it with a new random token, mode 0600, when it does not
	// exist) and stores it as the admin token "bootstrap" unless a token of that name
	// exists (so that `hodei token revoke bootstrap` sticks).
	BootstrapTokenFile string
	// SecretsKeyFile (--secrets-key-file, HODEI_SECRETS_KEY_FILE) holds the 32-byte
	// key job secrets are sealed under (package secrets). Empty: secrets cannot be
	// set or used (an error naming the flag).
	SecretsKeyFile string
	// SecretsOldKeyFiles (--secrets-old-key-file, repeatable) hold earlier keys: they
	// open values until `hodei secret rotate-key` re-seals them under SecretsKeyFile.
	SecretsOldKeyFiles []string
	// Insecure (--insecure) lets the API listen beyond loopback without TLS and
	// authentication; Run logs a warning on every start.
	Insecure bool
	// TLSCert and TLSKey (--tls-cert, --tls-key; both or neither) are the API's PEM
	// certificate (chain) and key. With them the API speaks HTTPS only (HTTP/2 by
	// ALPN, and HTTP/1.1); the files are loaded again when they change.
	TLSCert, TLSKey string
	// TLSClientCA (--tls-client-ca; needs TLSCert) is a PEM CA bundle: every API
	// request must then present a client certificate it signed (mTLS). The worker
	// stream is exempt: workers authenticate with their own credentials.
	TLSClientCA string
	// TLSWorkerCA (--tls-worker-ca; needs TLSCert) is the PEM CA bundle handed to
	// workers to verify the server (default: the TLSCert file, enough for a
	// self-signed certificate or a chain that ends in its root).
	TLSWorkerCA string
	// DataDirLocked tells that the caller holds LockDataDir on DataDir (hodei server and
	// hodei dev take it before Run). The saga engine then claims with a runner id stable
	// across restarts (DataDir/instance-id) and, when it starts, releases the claims its
	// previous run held: after a crash the sagas it was running continue at once instead
	// of when their leases expire (30s).
	DataDirLocked bool
	// RegistrationTimeout is how long provisioning waits for a new worker to register
	// before it destroys it and retries the job (0: jobs.Config's default, 2m).
	RegistrationTimeout time.Duration
	// LeaderTTL is how long the leader's lease lasts without renewal (PostgreSQL only:
	// with SQLite the one process always leads). A leader that dies is replaced within
	// it; the leader renews every LeaderTTL/3. 0: internal/leadership's default, 15s;
	// else within [1s, 10m].
	LeaderTTL time.Duration
	// NodeTimeout bounds a provider operation routed to the replica that owns a worker
	// of a node-local provider (provider/routing); a replica that does not answer within
	// it is unreachable (0: 10s; else within [100ms, 5m]).
	NodeTimeout time.Duration
	// Cleanup tunes the cleanup loop (lost and stuck workers, orphaned jobs); zero
	// fields get jobs.CleanupConfig defaults.
	Cleanup jobs.CleanupConfig
	// MetricsListen, if set, is a second TCP address serving only GET /metrics (the
	// API port serves it too), e.g. for a scraper that must not reach the API.
	MetricsListen string
	// OnReady, if set, is called once with the API's base URL when the server accepts
	// requests.
	OnReady func(url string)
	// WarmWorkers is the size of the default warm pool (--warm-workers,
	// HODEI_WARM_WORKERS): that many idle workers of the first provider (docker: with
	// Docker.DefaultImage) are kept registered for jobs that match them, and up to twice
	// as many go back to the pool after a job (0: none).
	WarmWorkers int
	// WarmMaxJobs is the default pool's max_jobs_per_worker (--warm-max-jobs,
	// HODEI_WARM_MAX_JOBS; 0: 1, a warm worker runs one job).
	WarmMaxJobs int
	// Pools are further warm pools (the config file's pools section).
	Pools []jobs.PoolConfig
}

// warmPools returns the job service's pools: Pools (so that pools[i] in an error is
// the file's), then the default one (WarmWorkers).
func (c *Config) warmPools() []jobs.PoolConfig {
	out := slices.Clone(c.Pools)
	if c.WarmWorkers > 0 {
		// Up to twice as many idle workers may return to the pool after their jobs (the
		// pool refills while its workers are busy); idle_ttl retires the extra ones.
		p := jobs.PoolConfig{Name: "default", Provider: "local", MinIdle: c.WarmWorkers, MaxIdle: 2 * c.WarmWorkers,
			MaxJobsPerWorker: c.WarmMaxJobs}
		if len(c.Providers) > 0 {
			p.Provider = c.Providers[0]
		}
		// No image: a docker pool's workers then run Docker.DefaultImage, and match the
		// jobs that name no image.
		out = append(out, p)
	}
	return out
}

func (c *Config) setDefaults() {
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.DataDir == "" {
		c.DataDir = defaultDataDir()
	}
	if c.Driver == "" {
		c.Driver = DriverPostgres
	}
	if c.Driver == DriverSQLite && c.SQLitePath == "" {
		c.SQLitePath = filepath.Join(c.DataDir, SQLiteFile)
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 10 * time.Second
	}
	if c.NodeTimeout == 0 {
		c.NodeTimeout = 10 * time.Second
	}
}

// Validate reports the first invalid field.
func (c *Config) Validate() error {
	if err := checkWorkerServers(c.WorkerServers, c.TLS()); err != nil {
		return err
	}
	switch c.Driver {
	case DriverPostgres, "":
		if c.DatabaseURL == "" {
			return errors.New("server: Config.DatabaseURL is required (--database-url or HODEI_DATABASE_URL)")
		}
		if c.SQLitePath != "" {
			return fmt.Errorf("server: Config.SQLitePath is only for Config.Driver %q, not %q", DriverSQLite, c.Driver)
		}
	case DriverSQLite:
		if c.DatabaseURL != "" {
			return fmt.Errorf("server: Config.DatabaseURL is only for Config.Driver %q, not %q", DriverPostgres, c.Driver)
		}
	default:
		return fmt.Errorf("server: Config.Driver %q is not %q or %q", c.Driver, DriverPostgres, DriverSQLite)
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("server: Config.Listen %q is not host:port: %w", c.Listen, err)
	}
	if err := c.checkNATS(); err != nil {
		return err
	}
	if err := c.checkTLS(); err != nil {
		return err
	}
	if err := c.checkExposure(); err != nil {
		return err
	}
	for i, p := range c.Providers {
		if p != "local" && p != "docker" && p != "kubernetes" {
			return fmt.Errorf("server: Config.Providers[%d] %q: want local, docker or kubernetes", i, p)
		}
		if slices.Contains(c.Providers[:i], p) {
			return fmt.Errorf("server: Config.Providers: %q given twice", p)
		}
	}
	switch jobs.Strategy(c.ProviderStrategy) {
	case "", jobs.StrategyFirstFit, jobs.StrategyLeastLoaded:
	default:
		return fmt.Errorf("server: Config.ProviderStrategy %q: want %s or %s (--provider-strategy)", c.ProviderStrategy, jobs.StrategyFirstFit, jobs.StrategyLeastLoaded)
	}
	if c.Kube.MaxWorkers < 0 {
		return fmt.Errorf("server: Config.Kube.MaxWorkers (--kube-max-workers) must not be negative, got %d", c.Kube.MaxWorkers)
	}
	if c.Kube.UnschedulableTimeout < 0 {
		return fmt.Errorf("server: Config.Kube.UnschedulableTimeout (--kube-unschedulable-timeout) must not be negative, got %s", c.Kube.UnschedulableTimeout)
	}
	if c.Kube.RequestPercent < 0 || c.Kube.RequestPercent > 100 {
		return fmt.Errorf("server: Config.Kube.RequestPercent (--kube-request-percent) %d out of range [0, 100] (0: 100)", c.Kube.RequestPercent)
	}
	if u := c.Kube.ServerURL; u != "" {
		if pu, err := url.Parse(u); err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
			return fmt.Errorf("server: Config.Kube.ServerURL (--kube-server-url) %q: want http:// or https://host:port", u)
		}
	}
	if slices.Contains(c.Providers, "kubernetes") && c.Kube.AgentImage == "" {
		return errors.New("server: Config.Kube.AgentImage (--kube-agent-image) is required with --provider kubernetes: an image holding the static agent (make agent-image)")
	}
	if c.Docker.MaxWorkers < 0 {
		return fmt.Errorf("server: Config.Docker.MaxWorkers must not be negative, got %d", c.Docker.MaxWorkers)
	}
	if c.WarmWorkers < 0 || c.WarmWorkers > 10_000 {
		return fmt.Errorf("server: Config.WarmWorkers %d out of range [0, 10000] (--warm-workers)", c.WarmWorkers)
	}
	if c.WarmMaxJobs < 0 || c.WarmMaxJobs > 1_000_000 {
		return fmt.Errorf("server: Config.WarmMaxJobs %d out of range [0, 1000000] (--warm-max-jobs)", c.WarmMaxJobs)
	}
	if c.MaxWorkers < 0 {
		return fmt.Errorf("server: Config.MaxWorkers must not be negative, got %d", c.MaxWorkers)
	}
	cleanup := c.Cleanup
	cleanup.SetDefaults()
	if err := cleanup.Validate(); err != nil {
		return fmt.Errorf("server: Config.Cleanup: %w", err)
	}
	if c.LeaderTTL != 0 && (c.LeaderTTL < time.Second || c.LeaderTTL > 10*time.Minute) {
		return fmt.Errorf("server: Config.LeaderTTL %s out of range [1s, 10m]", c.LeaderTTL)
	}
	if c.NodeTimeout != 0 && (c.NodeTimeout < 100*time.Millisecond || c.NodeTimeout > 5*time.Minute) {
		return fmt.Errorf("server: Config.NodeTimeout %s out of range [100ms, 5m]", c.NodeTimeout)
	}
	if c.RegistrationTimeout < 0 {
		return fmt.Errorf("server: Config.RegistrationTimeout must not be negative, got %s", c.RegistrationTimeout)
	}
	if c.ShutdownTimeout < 0 {
		return fmt.Errorf("server: Config.ShutdownTimeout must not be negative, got %s", c.ShutdownTimeout)
	}
	if c.WorkerBinary != "" && !filepath.IsAbs(c.WorkerBinary) {
		return fmt.Errorf("server: Config.WorkerBinary %q is not an absolute path", c.WorkerBinary)
	}
	return nil
}

// defaultDataDir is <user cache dir>/hodei, or <temp dir>/hodei-<uid> without one.
func defaultDataDir() string {
	if d, err := os.UserCacheDir(); err == nil && d != "" {
		return filepath.Join(d, "hodei")
	}
	return filepath.Join(os.TempDir(), "hodei-"+strconv.Itoa(os.Getuid()))
}

// DefaultDataDir returns the data directory used when Config.DataDir is empty.
func DefaultDataDir() string { return defaultDataDir() }

// TLS reports whether the API serves HTTPS (Config.TLSCert).
func (c *Config) TLS() bool { return c.TLSCert != "" }

// checkTLS names the first TLS flag given without what it needs.
func (c *Config) checkTLS() error {
	switch {
	case (c.TLSCert == "") != (c.TLSKey == ""):
		return errors.New("server: --tls-cert and --tls-key go together (Config.TLSCert, Config.TLSKey)")
	case c.TLSClientCA != "" && !c.TLS():
		return errors.New("server: --tls-client-ca needs --tls-cert and --tls-key (Config.TLSClientCA)")
	case c.TLSWorkerCA != "" && !c.TLS():
		return errors.New("server: --tls-worker-ca needs --tls-cert and --tls-key (Config.TLSWorkerCA)")
	}
	return nil
}

// advertisedURL turns the listener's address into a URL a local worker can dial
// (https:// when tls).
func advertisedURL(addr net.Addr, tls bool) string {
	scheme := "http://"
	if tls {
		scheme = "https://"
	}
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return scheme + addr.String()
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		if ip != nil && ip.To4() == nil {
			host = "::1"
		} else {
			host = "127.0.0.1"
		}
	}
	return scheme + net.JoinHostPort(host, port)
}

// ErrExposed: the API would listen beyond loopback without TLS and authentication.
var ErrExposed = errors.New("refusing to serve the API beyond loopback without TLS and authentication")

// checkExposure refuses a Listen address that is not loopback unless both TLS and
// authentication are on, or Insecure: without TLS tokens cross the network in clear
// text, without authentication anyone who reaches the port runs code.
func (c *Config) checkExposure() error {
	if c.Insecure || ListenIsLoopback(c.Listen) || (c.TLS() && c.Auth) {
		return nil
	}
	var missing string
	switch {
	case !c.TLS() && !c.Auth:
		missing = "start it with --auth and --tls-cert/--tls-key"
	case !c.TLS():
		missing = "--auth is on but TLS is not: add --tls-cert and --tls-key, or tokens cross the network in clear text"
	default:
		missing = "TLS is on but --auth is not: add --auth, or anyone who reaches the port can run jobs"
	}
	return fmt.Errorf("server: --listen %s is not a loopback address: %w; %s. Or listen on 127.0.0.1, or pass --insecure to start anyway",
		c.Listen, ErrExposed, missing)
}

// ListenIsLoopback reports whether a host:port listen address only accepts
// connections from this machine: a loopback IP or "localhost" ("" and 0.0.0.0 mean
// every interface).
func ListenIsLoopback(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// DockerConfig is the docker provider's part of Config (see provider/docker.Config).
type DockerConfig struct {
	// Host is the engine's address (default DOCKER_HOST or the local socket).
	Host string
	// MaxWorkers is its capacity (0: max(2, 4·NumCPU)).
	MaxWorkers int
	// Network is the containers' network mode (default host).
	Network string
	// AgentBinary is the static hodei binary mounted into containers (default
	// WorkerBinary, else this executable); it must be built with CGO_ENABLED=0.
	AgentBinary string
	// DefaultImage runs jobs that name no image ("" : such jobs go to other providers).
	DefaultImage string
	// Labels are matched by jobs' selectors.
	Labels map[string]string
}

// retentions are the retention fields.
func (c *Config) retentions() retention.Retentions {
	return retention.Retentions{Outbox: c.RetainOutbox, Sagas: c.RetainSagas, Jobs: c.RetainJobs, Logs: c.RetainLogs,
		Idempotency: c.RetainIdempotency}
}

// KubeConfig is the kubernetes provider's part of Config (see
// provider/kubernetes.Config, which checks the rest).
type KubeConfig struct {
	// Kubeconfig is a kubeconfig file ("": in-cluster, then $KUBECONFIG).
	Kubeconfig string
	// Namespace of the worker pods (default "default").
	Namespace string
	// MaxWorkers is its capacity (0: 16).
	MaxWorkers int
	// ServerURL is the control plane's URL as the pods reach it (default ServerURL).
	ServerURL string
	// AgentImage holds the static agent; required.
	AgentImage string
	// DefaultImage runs jobs that name no image ("": such jobs go to other providers).
	DefaultImage string
	// ServiceAccount of the worker pods ("": the namespace's default).
	ServiceAccount string
	// UnschedulableTimeout (0: 2m) before an unschedulable pod fails provisioning.
	UnschedulableTimeout time.Duration
	// HostNetwork runs the pods in their node's network namespace.
	HostNetwork bool
	// RequestPercent is the share of the limits requested (0: 100).
	RequestPercent int
	// Labels are matched by jobs' selectors.
	Labels map[string]string
	// NodeSelector, Tolerations, PodLabels and Security: the config file's kube
	// section (file-only keys).
	NodeSelector map[string]string
	Tolerations  []corev1.Toleration
	PodLabels    map[string]string
	Security     kubernetes.Security
}

// checkNATS validates the NATS cluster fields (and the retentions).
func (c *Config) checkNATS() error {
	if err := c.retentions().Validate(retention.MinFlagRetain); err != nil {
		return fmt.Errorf("server: Config retention (%w)", err)
	}
	switch {
	case c.NATSURL != "" && (c.NATSClusterListen != "" || len(c.NATSRoutes) > 0):
		return errors.New("server: Config.NATSClusterListen and NATSRoutes (--nats-cluster-listen, --nats-routes) are for the embedded NATS server; they cannot be used with Config.NATSURL (--nats-url)")
	case len(c.NATSRoutes) > 0 && c.NATSClusterListen == "":
		return errors.New("server: Config.NATSRoutes (--nats-routes) needs Config.NATSClusterListen (--nats-cluster-listen)")
	case c.NATSReplicas < 0 || c.NATSReplicas > 5:
		return fmt.Errorf("server: Config.NATSReplicas (--nats-replicas) %d out of range [0, 5]", c.NATSReplicas)
	case c.NATSStartTimeout < 0:
		return fmt.Errorf("server: Config.NATSStartTimeout %s must not be negative", c.NATSStartTimeout)
	}
	if c.NATSClusterListen != "" {
		if _, port, err := net.SplitHostPort(c.NATSClusterListen); err != nil || port == "" || port == "0" {
			return fmt.Errorf("server: Config.NATSClusterListen (--nats-cluster-listen) %q is not host:port with a fixed port", c.NATSClusterListen)
		}
	}
	for _, r := range c.NATSRoutes {
		if _, _, err := net.SplitHostPort(strings.TrimPrefix(r, "nats-route://")); err != nil {
			return fmt.Errorf("server: Config.NATSRoutes (--nats-routes) %q is not host:port: %w", r, err)
		}
	}
	return nil
}

// checkWorkerServers checks Config.WorkerServers: http:// or https:// URLs with a host,
// https:// when the API serves TLS, http:// when it does not.
func checkWorkerServers(urls []string, tls bool) error {
	want := "http"
	if tls {
		want = "https"
	}
	for _, raw := range urls {
		u, err := url.Parse(raw)
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") || strings.Contains(raw, ",") {
			return fmt.Errorf("server: Config.WorkerServers (--worker-servers): %q is not an http:// or https:// URL with a host", raw)
		}
		if u.Scheme != want {
			return fmt.Errorf("server: Config.WorkerServers (--worker-servers): %q must be %s:// (the API serves %s)", raw, want, want)
		}
	}
	return nil
}

// workerURL is what the workers this replica starts dial (HODEI_SERVER): WorkerServers
// comma-separated, else ServerURL, else own (this replica's address).
func (c *Config) workerURL(own string) string {
	switch {
	case len(c.WorkerServers) > 0:
		return strings.Join(c.WorkerServers, ",")
	case c.ServerURL != "":
		return c.ServerURL
	}
	return own
}
