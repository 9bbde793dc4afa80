package messaging

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Stream and subject names.
const (
	// EventsStream is the JetStream stream holding every Hodei event.
	EventsStream = "HODEI_EVENTS"
	// EventsSubjectPrefix prefixes every event subject: "hodei.events.<entity>.<type>".
	EventsSubjectPrefix = "hodei.events."
	// DuplicateWindow is how long JetStream remembers a Nats-Msg-Id. It must exceed the
	// outbox lease plus the time the reaper needs to hand a row to another relay.
	DuplicateWindow = 5 * time.Minute
	// PublishAckTimeout bounds the wait for the stream's acknowledgement of an
	// asynchronous publish (Connect's JetStream context). Without it, a publish whose
	// acknowledgement never comes waits forever: a message sent while a restarted
	// cluster has no stream leader yet is dropped by the server without an answer.
	PublishAckTimeout = 10 * time.Second
)

// EventSubject returns the subject of an event type "<entity>.<type>".
func EventSubject(eventType string) string { return EventsSubjectPrefix + eventType }

// Options configures an embedded NATS server.
type Options struct {
	// StoreDir holds JetStream's files. Empty: a new temporary directory, removed at
	// Shutdown.
	StoreDir string
	// Host to listen on. Default 127.0.0.1.
	Host string
	// Port to listen on. 0 or -1: a random free port.
	Port int
	// ReadyTimeout bounds the wait for the server to accept connections. Default 10s.
	ReadyTimeout time.Duration

	// ServerName names the server; in a cluster every node needs its own. Default
	// "hodei-embedded".
	ServerName string
	// ClusterListen, "host:port", makes the server a node of a NATS cluster: other
	// nodes' routes connect there. Empty: a standalone server.
	ClusterListen string
	// ClusterName is the cluster's name, the same on every node. Default "hodei".
	ClusterName string
	// Routes are the other nodes' ClusterListen addresses ("host:port" or
	// "nats-route://host:port"); this node connects to each and they gossip the rest.
	Routes []string
}

func (o *Options) setDefaults() {
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	if o.Port == 0 {
		o.Port = server.RANDOM_PORT
	}
	if o.ReadyTimeout == 0 {
		o.ReadyTimeout = 10 * time.Second
	}
	if o.ServerName == "" {
		o.ServerName = "hodei-embedded"
	}
	if o.ClusterName == "" {
		o.ClusterName = "hodei"
	}
}

// clusterOpts turns ClusterListen and Routes into the server's options.
func (o Options) clusterOpts() (server.ClusterOpts, []*url.URL, error) {
	if o.ClusterListen == "" {
		if len(o.Routes) > 0 {
			return server.ClusterOpts{}, nil, errors.New("messaging: Options.Routes given without Options.ClusterListen")
		}
		return server.ClusterOpts{}, nil, nil
	}
	host, portStr, err := net.SplitHostPort(o.ClusterListen)
	if err != nil {
		return server.ClusterOpts{}, nil, fmt.Errorf("messaging: Options.ClusterListen %q: %w", o.ClusterListen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 1 || port > 65535 {
		return server.ClusterOpts{}, nil, fmt.Errorf("messaging: Options.ClusterListen %q: port must be 1..65535", o.ClusterListen)
	}
	var routes []*url.URL
	for _, r := range o.Routes {
		raw := r
		if !strings.Contains(raw, "://") {
			raw = "nats-route://" + raw
		}
		u, err := url.Parse(raw)
		if err != nil || u.Host == "" || u.Port() == "" {
			return server.ClusterOpts{}, nil, fmt.Errorf("messaging: Options.Routes: %q is not host:port", r)
		}
		routes = append(routes, u)
	}
	return server.ClusterOpts{Name: o.ClusterName, Host: host, Port: port}, routes, nil
}

// Validate reports the first invalid field.
func (o Options) Validate() error {
	if o.Port < -1 || o.Port > 65535 {
		return fmt.Errorf("messaging: Options.Port %d out of range (-1..65535)", o.Port)
	}
	if o.ReadyTimeout < 0 {
		return fmt.Errorf("messaging: Options.ReadyTimeout %s must not be negative", o.ReadyTimeout)
	}
	if _, _, err := o.clusterOpts(); err != nil {
		return err
	}
	return nil
}

// Embedded is a running in-process nats-server with JetStream.
type Embedded struct {
	srv     *server.Server
	tempDir string
}

// StartEmbedded starts a nats-server with JetStream in this process and waits until it
// accepts connections.
func StartEmbedded(ctx context.Context, opts Options) (*Embedded, error) {
	opts.setDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	e := &Embedded{}
	dir := opts.StoreDir
	if dir == "" {
		d, err := os.MkdirTemp("", "hodei-nats-")
		if err != nil {
			return nil, fmt.Errorf("messaging: temp store dir: %w", err)
		}
		dir, e.tempDir = d, d
	}
	cluster, routes, err := opts.clusterOpts()
	if err != nil {
		e.cleanup()
		return nil, err
	}
	srv, err := server.NewServer(&server.Options{
		ServerName: opts.ServerName,
		Host:       opts.Host,
		Port:       opts.Port,
		JetStream:  true,
		StoreDir:   dir,
		NoSigs:     true,
		NoLog:      true,
		Cluster:    cluster,
		Routes:     routes,
	})
	if err != nil {
		e.cleanup()
		return nil, fmt.Errorf("messaging: new embedded server: %w", err)
	}
	e.srv = srv
	srv.Start()
	deadline := time.Now().Add(opts.ReadyTimeout)
	for !srv.ReadyForConnections(100 * time.Millisecond) {
		if err := ctx.Err(); err != nil {
			e.Shutdown()
			return nil, fmt.Errorf("messaging: waiting for embedded server: %w", err)
		}
		if time.Now().After(deadline) {
			e.Shutdown()
			return nil, fmt.Errorf("messaging: embedded server not ready after ReadyTimeout %s", opts.ReadyTimeout)
		}
	}
	return e, nil
}

// ClientURL is the nats:// URL clients connect to.
func (e *Embedded) ClientURL() string { return e.srv.ClientURL() }

// Shutdown stops the server and waits for it; a temporary store dir is removed.
func (e *Embedded) Shutdown() {
	if e.srv != nil {
		e.srv.Shutdown()
		e.srv.WaitForShutdown()
	}
	e.cleanup()
}

func (e *Embedded) cleanup() {
	if e.tempDir != "" {
		_ = os.RemoveAll(e.tempDir)
		e.tempDir = ""
	}
}

// Connect opens a NATS connection (reconnecting forever) and a JetStream context whose
// asynchronous publishes fail with jetstream.ErrAsyncPublishTimeout after
// PublishAckTimeout without an acknowledgement.
func Connect(ctx context.Context, url string) (*nats.Conn, jetstream.JetStream, error) {
	if url == "" {
		return nil, nil, errors.New("messaging: Connect: url is empty")
	}
	timeout := 5 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(d))
	}
	nc, err := nats.Connect(url,
		nats.Name("hodei"),
		nats.Timeout(timeout),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500*time.Millisecond),
	)
	if err != nil {
		return nil, nil, fmt.Errorf("messaging: connect %s: %w", url, err)
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(PublishAckTimeout))
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("messaging: jetstream: %w", err)
	}
	return nc, js, nil
}

// EventsStreamConfig is the configuration EnsureStreams applies to HODEI_EVENTS (one
// replica; EnsureEventsStream sets Replicas).
func EventsStreamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Replicas:    1,
		Name:        EventsStream,
		Description: "Hodei events, published by the outbox relay",
		Subjects:    []string{EventsSubjectPrefix + ">"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Duplicates:  DuplicateWindow,
		MaxAge:      7 * 24 * time.Hour,
	}
}

// EnsureStreams creates HODEI_EVENTS or updates it to EventsStreamConfig, with one
// replica (a single NATS server).
func EnsureStreams(ctx context.Context, js jetstream.JetStream) error {
	return EnsureEventsStream(ctx, js, 1)
}

// EnsureEventsStream creates HODEI_EVENTS or updates it to EventsStreamConfig with the
// given number of replicas (3 in a NATS cluster, so that one node of three may die; an
// existing stream is changed to that many). Its consumers inherit the replicas.
func EnsureEventsStream(ctx context.Context, js jetstream.JetStream, replicas int) error {
	if replicas < 1 || replicas > 5 {
		return fmt.Errorf("messaging: stream replicas %d out of range [1, 5]", replicas)
	}
	cfg := EventsStreamConfig()
	cfg.Replicas = replicas
	if _, err := EnsureStream(ctx, js, cfg); err != nil {
		return fmt.Errorf("messaging: ensure stream %s (replicas %d): %w", EventsStream, replicas, err)
	}
	return nil
}

// EnsureStream creates the stream cfg names, or updates it when its configuration
// differs from cfg in a field cfg sets (name, description, subjects, retention,
// storage, replicas, duplicate window, max age). A stream that already matches is not
// updated: in a cluster with a node down, an update may wait for that node, while a
// replica that (re)starts then must go on.
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	s, err := js.Stream(ctx, cfg.Name)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		return js.CreateStream(ctx, cfg)
	case err != nil:
		return nil, err
	}
	if streamMatches(s.CachedInfo().Config, cfg) {
		return s, nil
	}
	return js.UpdateStream(ctx, cfg)
}

// EnsureConsumer creates the durable consumer cfg names on stream, or updates it when
// its configuration differs from cfg in a field cfg sets (as EnsureStream).
func EnsureConsumer(ctx context.Context, js jetstream.JetStream, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	c, err := js.Consumer(ctx, stream, cfg.Durable)
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		return js.CreateOrUpdateConsumer(ctx, stream, cfg)
	case err != nil:
		return nil, err
	}
	if consumerMatches(c.CachedInfo().Config, cfg) {
		return c, nil
	}
	return js.CreateOrUpdateConsumer(ctx, stream, cfg)
}

func consumerMatches(have, want jetstream.ConsumerConfig) bool {
	sorted := func(s []string) []string { s = slices.Clone(s); slices.Sort(s); return s }
	return have.Description == want.Description && have.AckPolicy == want.AckPolicy &&
		have.DeliverPolicy == want.DeliverPolicy && have.FilterSubject == want.FilterSubject &&
		slices.Equal(sorted(have.FilterSubjects), sorted(want.FilterSubjects)) &&
		(want.AckWait == 0 || have.AckWait == want.AckWait) &&
		(want.MaxDeliver == 0 || have.MaxDeliver == want.MaxDeliver) &&
		(want.MaxAckPending == 0 || have.MaxAckPending == want.MaxAckPending)
}

func streamMatches(have, want jetstream.StreamConfig) bool {
	replicas := func(n int) int { return max(n, 1) }
	return have.Description == want.Description && slices.Equal(have.Subjects, want.Subjects) &&
		have.Retention == want.Retention && have.Storage == want.Storage &&
		replicas(have.Replicas) == replicas(want.Replicas) &&
		(want.Duplicates == 0 || have.Duplicates == want.Duplicates) && have.MaxAge == want.MaxAge
}

// MinServerVersion is the oldest nats-server Hodei works with (Debian bookworm's
// package is 2.9.10). Consumers with several filter subjects need 2.10; on older
// servers Hodei's consumers use one wildcard filter instead (ServerHasMultiFilter).
const MinServerVersion = "2.9.0"

// CheckServer returns an error naming MinServerVersion when the server nc is
// connected to is older, or when it does not run JetStream.
func CheckServer(nc *nats.Conn) error {
	v := nc.ConnectedServerVersion()
	ok, err := versionAtLeast(v, MinServerVersion)
	if err != nil {
		return fmt.Errorf("messaging: nats-server at %s reports version %q: %w", nc.ConnectedUrlRedacted(), v, err)
	}
	if !ok {
		return fmt.Errorf("messaging: nats-server %s at %s is too old: Hodei needs nats-server %s or later with JetStream",
			v, nc.ConnectedUrlRedacted(), MinServerVersion)
	}
	if js, _ := nc.ConnectedServerJetStream(); !js {
		return fmt.Errorf("messaging: nats-server %s at %s does not run JetStream (start it with -js, or jetstream {} in its config)",
			v, nc.ConnectedUrlRedacted())
	}
	return nil
}

// ServerHasMultiFilter reports whether the connected server supports consumers with
// several filter subjects (nats-server 2.10 and later).
func ServerHasMultiFilter(nc *nats.Conn) bool {
	ok, err := versionAtLeast(nc.ConnectedServerVersion(), "2.10.0")
	return err == nil && ok
}

// DefaultReplicas is the number of JetStream replicas for Hodei's streams when none is
// configured: 3 when the connected server is part of a cluster (so one node of three
// may die at any moment), else 1.
func DefaultReplicas(nc *nats.Conn) int {
	if nc.ConnectedClusterName() != "" {
		return 3
	}
	return 1
}

// versionAtLeast compares "MAJOR.MINOR.PATCH[-suffix]" versions (a leading v allowed).
func versionAtLeast(have, want string) (bool, error) {
	h, err := parseVersion(have)
	if err != nil {
		return false, err
	}
	w, err := parseVersion(want)
	if err != nil {
		return false, err
	}
	for i := range h {
		if h[i] != w[i] {
			return h[i] > w[i], nil
		}
	}
	return true, nil
}

func parseVersion(v string) ([3]int, error) {
	var out [3]int
	v = strings.TrimPrefix(v, "v")
	if i := strings.IndexAny(v, "-+"); i >= 0 {
		v = v[:i]
	}
	parts := strings.Split(v, ".")
	if len(parts) != 3 {
		return out, fmt.Errorf("version %q is not MAJOR.MINOR.PATCH", v)
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return out, fmt.Errorf("version %q is not MAJOR.MINOR.PATCH", v)
		}
		out[i] = n
	}
	return out, nil
}
