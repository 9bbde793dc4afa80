package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/hodei-jobs/hodei/auth"
	"github.com/hodei-jobs/hodei/gen/hodei/v1/hodeiv1connect"
)

// DefaultMaxMessageBytes is the default size limit of one request message (and of one
// message of a client stream). A larger one is refused with ResourceExhausted naming
// the limit.
const DefaultMaxMessageBytes = 4 << 20

// Check is one readiness probe: Name is shown in /readyz's answer when Check fails.
type Check struct {
	Name  string
	Check func(ctx context.Context) error
}

// MuxConfig assembles the HTTP handler of the API.
type MuxConfig struct {
	Jobs    hodeiv1connect.JobServiceHandler
	Workers hodeiv1connect.WorkerAgentServiceHandler
	// Admin, if set, serves AdminService and the /api/v1/admin/ REST routes (admin.go).
	Admin *AdminService
	// Secrets, if set, serves SecretService (secrets.go).
	Secrets *SecretService
	// Auth checks every JobService and AdminService procedure and every REST route
	// against the policy table (policy.go). Nil: an authenticator that does not
	// require tokens, knows Admin's Token as a bootstrap admin token and nothing else.
	Auth *auth.Authenticator
	// Ready are the probes of GET /readyz (database, NATS). All must pass for 200.
	Ready []Check
	// Replica, if set, reports which replica this is and which leads; /readyz's body
	// shows it (lines "replica: <id>" and "leader: <id>").
	Replica func() ReplicaStatus
	// ReadyTimeout bounds all probes of one /readyz request (default 2s).
	ReadyTimeout time.Duration
	// MaxMessageBytes bounds each message read (default DefaultMaxMessageBytes).
	MaxMessageBytes int
	Logger          *slog.Logger
	// Interceptors run around every procedure of every service, outside the policy
	// check (telemetry: spans and request metrics).
	Interceptors []connect.Interceptor
	// Metrics, if set, is served at GET /metrics to callers with role viewer or more
	// (policy.go): under --auth Prometheus sends a viewer token; without it anyone
	// who may list jobs may scrape.
	Metrics http.Handler
}

func (c *MuxConfig) setDefaults() {
	if c.ReadyTimeout == 0 {
		c.ReadyTimeout = 2 * time.Second
	}
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate reports the first invalid field.
func (c *MuxConfig) Validate() error {
	switch {
	case c.Jobs == nil:
		return errors.New("api: MuxConfig.Jobs is nil")
	case c.Workers == nil:
		return errors.New("api: MuxConfig.Workers is nil")
	case c.ReadyTimeout <= 0:
		return fmt.Errorf("api: MuxConfig.ReadyTimeout %s must be positive", c.ReadyTimeout)
	case c.MaxMessageBytes < 1024:
		return fmt.Errorf("api: MuxConfig.MaxMessageBytes %d below 1024", c.MaxMessageBytes)
	}
	for i, ch := range c.Ready {
		if ch.Name == "" || ch.Check == nil {
			return fmt.Errorf("api: MuxConfig.Ready[%d] needs a Name and a Check", i)
		}
	}
	return nil
}

// ReplicaStatus is this replica's view of the leadership.
type ReplicaStatus struct {
	// ID of this replica.
	ID string `json:"replica"`
	// Leading: this replica leads (it runs the scheduler and the cleanup scan).
	Leading bool `json:"leading"`
	// Leader is the id of the replica that leads, as far as this one knows ("" when
	// it knows of none).
	Leader string `json:"leader"`
	// LeaderUntil is when the leader's lease expires as last seen (zero when unknown).
	LeaderUntil time.Time `json:"leader_until,omitzero"`
}

// lines is the status as /readyz shows it.
func (r ReplicaStatus) lines() string {
	leader := r.Leader
	if leader == "" {
		leader = "(none known)"
	}
	return "replica: " + r.ID + "\nleader: " + leader + "\n"
}

// NewMux returns the API's HTTP handler: both Connect services (Connect, gRPC and
// gRPC-Web protocols), GET /healthz (200 "ok" while the process serves) and GET /readyz
// (200 "ok" when every probe passes, else 503 naming the failed probes; then, with
// MuxConfig.Replica, this replica's id and the leader's).
func NewMux(cfg MuxConfig) (http.Handler, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	opts := []connect.HandlerOption{
		connect.WithReadMaxBytes(cfg.MaxMessageBytes),
		connect.WithRecover(func(_ context.Context, spec connect.Spec, _ http.Header, p any) error {
			cfg.Logger.Error("api: handler panicked", "procedure", spec.Procedure, "panic", p)
			return connect.NewError(connect.CodeInternal, fmt.Errorf("internal error in %s", spec.Procedure))
		}),
	}
	if len(cfg.Interceptors) > 0 {
		opts = append(opts, connect.WithInterceptors(cfg.Interceptors...))
	}
	authn := cfg.Auth
	if authn == nil {
		var boot []auth.Bootstrap
		if cfg.Admin != nil && cfg.Admin.opts.Token != "" {
			boot = append(boot, auth.Bootstrap{Name: "admin-token", Secret: cfg.Admin.opts.Token})
		}
		var err error
		if authn, err = auth.New(auth.Config{Bootstrap: boot, Logger: cfg.Logger}); err != nil {
			return nil, fmt.Errorf("api: %w", err)
		}
	}
	mux := http.NewServeMux()
	// The worker stream authenticates with the workers' own credentials (workers.go).
	mux.Handle(hodeiv1connect.NewWorkerAgentServiceHandler(cfg.Workers, opts...))
	// Everything else goes through the one policy table (policy.go).
	guarded := append(opts[:len(opts):len(opts)],
		connect.WithInterceptors(authn.Interceptor(procedurePolicies(), describeCall)))
	mux.Handle(hodeiv1connect.NewJobServiceHandler(cfg.Jobs, guarded...))
	if cfg.Secrets != nil {
		mux.Handle(hodeiv1connect.NewSecretServiceHandler(cfg.Secrets, guarded...))
	}
	served := []string{hodeiv1connect.JobServiceName}
	if cfg.Secrets != nil {
		served = append(served, hodeiv1connect.SecretServiceName)
	}
	if cfg.Admin != nil {
		served = append(served, hodeiv1connect.AdminServiceName)
	}
	mountGRPCConventions(mux, authn, served, cfg.Ready, cfg.ReadyTimeout, opts) // grpcconv.go
	routes := routePolicies()
	route := func(pattern string, h http.HandlerFunc) error {
		pol, ok := routes[pattern]
		if !ok {
			return fmt.Errorf("api: REST route %q has no policy in routePolicies", pattern)
		}
		mux.Handle(pattern, authn.Middleware(pattern, pol, describeRoute, h))
		return nil
	}
	if cfg.Admin != nil {
		if err := cfg.Admin.mount(mux, guarded, route); err != nil {
			return nil, err
		}
	}
	if err := route(routeHealthz, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	}); err != nil {
		return nil, err
	}
	if cfg.Metrics != nil {
		if err := route(routeMetrics, cfg.Metrics.ServeHTTP); err != nil {
			return nil, err
		}
	}
	if err := route(routeReadyz, func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), cfg.ReadyTimeout)
		defer cancel()
		var failed []string
		for _, ch := range cfg.Ready {
			if err := ch.Check(ctx); err != nil {
				failed = append(failed, ch.Name+": "+err.Error())
			}
		}
		var replica string
		if cfg.Replica != nil {
			replica = cfg.Replica().lines()
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if len(failed) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("not ready: " + strings.Join(failed, "; ") + "\n" + replica))
			return
		}
		_, _ = w.Write([]byte("ok\n" + replica))
	}); err != nil {
		return nil, err
	}
	return mux, nil
}

// Protocols is what the API server speaks on one plain-TCP port: HTTP/1.1 (Connect
// unary, gRPC-Web) and HTTP/2 without TLS (h2c: gRPC and bidirectional streams).
func Protocols() *http.Protocols {
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	return &p
}

// NewHTTPServer returns an http.Server for h speaking Protocols. base, if not nil, is
// the parent context of every request: cancelling it ends the long-lived streams
// (WatchJob, StreamLogs, worker Connect), which http.Server.Shutdown does not do by
// itself, so that a graceful shutdown does not wait for them.
func NewHTTPServer(h http.Handler, base context.Context) *http.Server {
	srv := &http.Server{
		Handler:           h,
		Protocols:         Protocols(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
	if base != nil {
		// The base travels in the request context too, so that a handler can tell a
		// server shutdown from a client that went away (serverShuttingDown).
		withBase := context.WithValue(base, baseContextKey{}, base)
		srv.BaseContext = func(net.Listener) context.Context { return withBase }
	}
	return srv
}

type baseContextKey struct{}

// serverShuttingDown reports whether ctx is a request of a server made by
// NewHTTPServer whose base context ended (shutdown began).
func serverShuttingDown(ctx context.Context) bool {
	base, ok := ctx.Value(baseContextKey{}).(context.Context)
	return ok && base.Err() != nil
}
