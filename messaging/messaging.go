package messaging

import (
	"context"
	"errors"
	"fmt"
	"os"
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
}

// Validate reports the first invalid field.
func (o Options) Validate() error {
	if o.Port < -1 || o.Port > 65535 {
		return fmt.Errorf("messaging: Options.Port %d out of range (-1..65535)", o.Port)
	}
	if o.ReadyTimeout < 0 {
		return fmt.Errorf("messaging: Options.ReadyTimeout %s must not be negative", o.ReadyTimeout)
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
	srv, err := server.NewServer(&server.Options{
		ServerName: "hodei-embedded",
		Host:       opts.Host,
		Port:       opts.Port,
		JetStream:  true,
		StoreDir:   dir,
		NoSigs:     true,
		NoLog:      true,
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

// Connect opens a NATS connection (reconnecting forever) and a JetStream context.
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
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("messaging: jetstream: %w", err)
	}
	return nc, js, nil
}

// EventsStreamConfig is the configuration EnsureStreams applies to HODEI_EVENTS.
func EventsStreamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        EventsStream,
		Description: "Hodei events, published by the outbox relay",
		Subjects:    []string{EventsSubjectPrefix + ">"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Duplicates:  DuplicateWindow,
		MaxAge:      7 * 24 * time.Hour,
	}
}

// EnsureStreams creates HODEI_EVENTS or updates it to EventsStreamConfig.
func EnsureStreams(ctx context.Context, js jetstream.JetStream) error {
	if _, err := js.CreateOrUpdateStream(ctx, EventsStreamConfig()); err != nil {
		return fmt.Errorf("messaging: ensure stream %s: %w", EventsStream, err)
	}
	return nil
}
