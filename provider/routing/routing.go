package routing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/hodei-jobs/hodei/provider"
)

// ErrOwnerUnreachable matches the error of an operation on a node-local worker whose
// owning node did not answer.
var ErrOwnerUnreachable = errors.New("routing: the node that owns the worker does not answer")

// Subject returns the request subject of node, "hodei.node.<node>.provider".
func Subject(node string) string { return "hodei.node." + node + ".provider" }

// Target names a worker and where it lives.
type Target struct {
	WorkerID string
	Provider string // registered provider name
	// Owner is the node that created the worker; "" for rows written before owners
	// were recorded (treated as this node).
	Owner string
}

// Config tunes a Router.
type Config struct {
	// Timeout bounds one routed request when the caller's context has no earlier
	// deadline (default 30s: a Destroy may wait out a grace period).
	Timeout time.Duration
	Logger  *slog.Logger
}

func (c *Config) setDefaults() {
	if c.Timeout == 0 {
		c.Timeout = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate reports the first invalid field.
func (c *Config) Validate() error {
	if c.Timeout < time.Millisecond || c.Timeout > time.Hour {
		return fmt.Errorf("routing: Config.Timeout %s out of range [1ms, 1h]", c.Timeout)
	}
	return nil
}

// Router runs Destroy and Status where they may run. Safe for concurrent use.
type Router struct {
	nc   *nats.Conn // nil: single node, nothing is routed
	node string
	reg  *provider.Registry
	cfg  Config
	log  *slog.Logger
}

// New returns the Router of node. nc may be nil for a single-node installation: then an
// operation on another node's worker fails with ErrOwnerUnreachable.
func New(nc *nats.Conn, node string, reg *provider.Registry, cfg Config) (*Router, error) {
	if node == "" || strings.ContainsAny(node, ".*> ") {
		return nil, fmt.Errorf("routing: node id %q must be non-empty without '.', '*', '>' or spaces", node)
	}
	if reg == nil {
		return nil, errors.New("routing: New needs a provider registry")
	}
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Router{nc: nc, node: node, reg: reg, cfg: cfg, log: cfg.Logger.With("component", "routing", "node", node)}, nil
}

// Node is this node's id: the owner recorded on the workers it creates.
func (r *Router) Node() string { return r.node }

// Local reports whether t's operations run on this node: its provider is shared, or
// this node owns it.
func (r *Router) Local(t Target) (bool, error) {
	p, err := r.reg.Get(t.Provider)
	if err != nil {
		return false, err
	}
	return p.Capabilities().Shared || t.Owner == "" || t.Owner == r.node, nil
}

// Destroy ends t's infrastructure (provider Destroy) where that may run.
func (r *Router) Destroy(ctx context.Context, t Target) error {
	ctx, span := otel.Tracer(TracerName).Start(ctx, "provider.destroy "+t.Provider, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("hodei.provider", t.Provider), attribute.String("hodei.worker.id", t.WorkerID),
			attribute.String("hodei.worker.owner", t.Owner)))
	defer span.End()
	_, err := r.do(ctx, opDestroy, t)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	return err
}

// TracerName is the instrumentation name of the provider.destroy spans.
const TracerName = "github.com/hodei-jobs/hodei/provider/routing"

// Status asks t's provider about it where that may run.
func (r *Router) Status(ctx context.Context, t Target) (provider.Status, error) {
	return r.do(ctx, opStatus, t)
}

const (
	opDestroy = "destroy"
	opStatus  = "status"
)

type request struct {
	Op       string `json:"op"`
	Provider string `json:"provider"`
	WorkerID string `json:"worker_id"`
}

type reply struct {
	Status provider.Status `json:"status,omitempty"`
	Error  string          `json:"error,omitempty"`
}

func (r *Router) do(ctx context.Context, op string, t Target) (provider.Status, error) {
	local, err := r.Local(t)
	if err != nil {
		return "", err
	}
	if local {
		return r.run(ctx, request{Op: op, Provider: t.Provider, WorkerID: t.WorkerID})
	}
	if r.nc == nil {
		return "", fmt.Errorf("%w: worker %s is owned by node %s and this node %s has no message bus",
			ErrOwnerUnreachable, t.WorkerID, t.Owner, r.node)
	}
	data, err := json.Marshal(request{Op: op, Provider: t.Provider, WorkerID: t.WorkerID})
	if err != nil {
		return "", err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.cfg.Timeout)
		defer cancel()
	}
	msg, err := r.nc.RequestWithContext(ctx, Subject(t.Owner), data)
	if err != nil {
		return "", fmt.Errorf("%w: %s of worker %s on node %s: %w", ErrOwnerUnreachable, op, t.WorkerID, t.Owner, err)
	}
	var rep reply
	if err := json.Unmarshal(msg.Data, &rep); err != nil {
		return "", fmt.Errorf("routing: %s of worker %s on node %s: decode reply: %w", op, t.WorkerID, t.Owner, err)
	}
	if rep.Error != "" {
		return "", fmt.Errorf("routing: %s of worker %s on node %s: %s", op, t.WorkerID, t.Owner, rep.Error)
	}
	return rep.Status, nil
}

// run performs req on this node's provider.
func (r *Router) run(ctx context.Context, req request) (provider.Status, error) {
	p, err := r.reg.Get(req.Provider)
	if err != nil {
		return "", err
	}
	switch req.Op {
	case opDestroy:
		return "", p.Destroy(ctx, req.WorkerID)
	case opStatus:
		return p.Status(ctx, req.WorkerID)
	}
	return "", fmt.Errorf("routing: unknown operation %q", req.Op)
}

// Serve answers the requests other nodes route to this node until ctx ends (Start,
// then wait).
func (r *Router) Serve(ctx context.Context) error {
	stop, err := r.Start(ctx)
	if err != nil {
		return err
	}
	<-ctx.Done()
	stop()
	return nil
}

// Start subscribes to this node's subject (the server has the subscription when it
// returns) and answers requests until stop is called or ctx ends. Each request runs on
// its own goroutine (a Destroy may wait out a grace period).
func (r *Router) Start(ctx context.Context) (stop func(), err error) {
	if r.nc == nil {
		return func() {}, nil
	}
	sub, err := r.nc.Subscribe(Subject(r.node), func(m *nats.Msg) {
		go r.answer(ctx, m)
	})
	if err != nil {
		return nil, fmt.Errorf("routing: subscribe %s: %w", Subject(r.node), err)
	}
	fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := r.nc.FlushWithContext(fctx); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("routing: subscribe %s: flush: %w", Subject(r.node), err)
	}
	return func() { _ = sub.Unsubscribe() }, nil
}

func (r *Router) answer(ctx context.Context, m *nats.Msg) {
	var req request
	var rep reply
	if err := json.Unmarshal(m.Data, &req); err != nil {
		rep.Error = "decode request: " + err.Error()
	} else {
		rctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
		st, err := r.run(rctx, req)
		cancel()
		rep.Status = st
		if err != nil {
			rep.Error = err.Error()
			r.log.Warn("routed provider operation failed", "op", req.Op, "worker", req.WorkerID, "err", err)
		}
	}
	data, err := json.Marshal(rep)
	if err == nil {
		err = m.Respond(data)
	}
	if err != nil {
		r.log.Warn("routed provider operation: reply failed", "op", req.Op, "worker", req.WorkerID, "err", err)
	}
}
