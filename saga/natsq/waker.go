package natsq

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/hodei-jobs/hodei/saga"
)

// DefaultWakeSubject is the core NATS subject of saga wake-ups.
const DefaultWakeSubject = "hodei.saga.wake"

// WakerConfig configures a Waker. Zero fields get defaults.
type WakerConfig struct {
	Subject string // default hodei.saga.wake
	// Buffer is the channel size of each Wakeups subscriber; ids arriving while it is
	// full are dropped (the poll finds them). Default 256.
	Buffer int
	Logger *slog.Logger
}

func (c *WakerConfig) setDefaults() {
	if c.Subject == "" {
		c.Subject = DefaultWakeSubject
	}
	if c.Buffer == 0 {
		c.Buffer = 256
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate reports the first invalid field.
func (c *WakerConfig) Validate() error {
	switch {
	case strings.ContainsAny(c.Subject, " *>\t\r\n") || strings.HasPrefix(c.Subject, ".") ||
		strings.HasSuffix(c.Subject, "."):
		return fmt.Errorf("natsq: WakerConfig.Subject %q is not a subject without wildcards", c.Subject)
	case c.Buffer < 1:
		return fmt.Errorf("natsq: WakerConfig.Buffer %d below 1", c.Buffer)
	}
	return nil
}

// Waker is a saga.Waker on a core NATS subject: every subscriber in every process gets
// every id. Safe for concurrent use.
type Waker struct {
	nc  *nats.Conn
	cfg WakerConfig
	log *slog.Logger
}

var _ saga.Waker = (*Waker)(nil)

// NewWaker returns a Waker publishing and subscribing on nc.
func NewWaker(nc *nats.Conn, cfg WakerConfig) (*Waker, error) {
	if nc == nil {
		return nil, errors.New("natsq: NewWaker: nc is nil")
	}
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Waker{nc: nc, cfg: cfg, log: cfg.Logger.With("component", "saga-waker")}, nil
}

// Wake publishes sagaID (fire-and-forget; it does not wait for the server).
func (w *Waker) Wake(_ context.Context, sagaID string) error {
	if sagaID == "" {
		return errors.New("natsq: Wake: sagaID is empty")
	}
	if err := w.nc.Publish(w.cfg.Subject, []byte(sagaID)); err != nil {
		return fmt.Errorf("natsq: wake saga %s: %w", sagaID, err)
	}
	return nil
}

// Wakeups subscribes until ctx ends and then closes the channel. If the subscription
// cannot be made the error is logged and the channel is closed at once (the runner
// still polls).
func (w *Waker) Wakeups(ctx context.Context) <-chan string {
	ids := make(chan string, w.cfg.Buffer)
	msgs := make(chan *nats.Msg, w.cfg.Buffer)
	sub, err := w.nc.ChanSubscribe(w.cfg.Subject, msgs)
	if err == nil {
		err = w.nc.Flush()
	}
	if err != nil {
		w.log.Error("saga wake-up subscription failed; relying on the poll", "subject", w.cfg.Subject, "err", err)
		if sub != nil {
			_ = sub.Unsubscribe()
		}
		close(ids)
		return ids
	}
	go func() {
		defer close(ids)
		defer func() { _ = sub.Unsubscribe() }()
		for {
			select {
			case <-ctx.Done():
				return
			case m := <-msgs:
				select {
				case ids <- string(m.Data):
				default: // the receiver is behind: the poll will find the saga
				}
			}
		}
	}()
	return ids
}
