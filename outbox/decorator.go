package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hodei-jobs/hodei/command"
	"github.com/hodei-jobs/hodei/store"
)

// Inserter writes outbox rows in ctx's transaction; store.OutboxStore satisfies it.
type Inserter interface {
	Insert(ctx context.Context, msgs ...*store.OutboxMessage) ([]int64, error)
}

// DecoratorOptions tunes a Decorator.
type DecoratorOptions struct {
	// MaxAttempts written on each row (0: the store's default, 5).
	MaxAttempts int
	// Delay postpones the first attempt (scheduled_at = now + Delay). Default 0.
	Delay time.Duration
	// Now is the clock used with Delay (default time.Now).
	Now func() time.Time
}

func (o *DecoratorOptions) setDefaults() {
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Validate reports the first invalid field.
func (o *DecoratorOptions) Validate() error {
	switch {
	case o.MaxAttempts < 0:
		return fmt.Errorf("outbox: DecoratorOptions.MaxAttempts %d is negative", o.MaxAttempts)
	case o.Delay < 0:
		return fmt.Errorf("outbox: DecoratorOptions.Delay %s is negative", o.Delay)
	}
	return nil
}

// Enqueued is the result of dispatching through a Decorator: the command was written to
// the outbox (row ID) and will be executed by a relay after the transaction commits.
type Enqueued struct {
	ID int64
}

// Decorator is a command.Dispatcher that does not execute commands but writes them to
// the outbox, in the transaction ctx carries (or in one of its own). A saga step that
// dispatches through it inside InTx therefore commits its own writes and the command it
// causes together, or neither. The same idempotency key twice gives one row.
type Decorator struct {
	ins  Inserter
	opts DecoratorOptions
}

var _ command.Dispatcher = (*Decorator)(nil)

// NewDecorator returns a Decorator writing through ins (normally st.Outbox()).
func NewDecorator(ins Inserter, opts DecoratorOptions) (*Decorator, error) {
	if ins == nil {
		return nil, errors.New("outbox: NewDecorator: Inserter is nil")
	}
	opts.setDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	return &Decorator{ins: ins, opts: opts}, nil
}

// DispatchAny enqueues cmd and returns Enqueued. cmd must carry an idempotency key: the
// relay may execute a row more than once (at-least-once), and the key is what makes that
// safe.
func (d *Decorator) DispatchAny(ctx context.Context, cmd command.Command) (any, error) {
	if cmd == nil {
		return nil, errors.New("outbox: enqueue: command is nil")
	}
	typ := cmd.CommandType()
	key := cmd.IdempotencyKey()
	if key == "" {
		return nil, fmt.Errorf("outbox: enqueue %s: IdempotencyKey is empty; commands sent through the outbox need one", typ)
	}
	payload, err := json.Marshal(cmd)
	if err != nil {
		return nil, fmt.Errorf("outbox: enqueue %s (key %q): encode: %w", typ, key, err)
	}
	m := &store.OutboxMessage{
		Kind:           store.KindCommand,
		Type:           typ,
		IdempotencyKey: key,
		Payload:        payload,
		MaxAttempts:    d.opts.MaxAttempts,
		TraceContext:   injectTrace(ctx),
	}
	if d.opts.Delay > 0 {
		m.ScheduledAt = d.opts.Now().Add(d.opts.Delay)
	}
	ids, err := d.ins.Insert(ctx, m)
	if err != nil {
		return nil, fmt.Errorf("outbox: enqueue %s (key %q): %w", typ, key, err)
	}
	return Enqueued{ID: ids[0]}, nil
}

// PublishEvent writes an event row (type "<entity>.<eventType>", published on subject
// "hodei.events.<entity>.<eventType>") in ctx's transaction. key deduplicates: the same
// key twice gives one row, and so one event. It returns the row id.
func PublishEvent(ctx context.Context, ins Inserter, entity, eventType, key string, data any) (int64, error) {
	if err := checkToken("entity", entity, false); err != nil {
		return 0, err
	}
	if err := checkToken("eventType", eventType, true); err != nil {
		return 0, err
	}
	if key == "" {
		return 0, fmt.Errorf("outbox: publish event %s.%s: key is empty", entity, eventType)
	}
	payload, err := json.Marshal(data)
	if err != nil {
		return 0, fmt.Errorf("outbox: publish event %s.%s (key %q): encode: %w", entity, eventType, key, err)
	}
	ids, err := ins.Insert(ctx, &store.OutboxMessage{
		Kind:           store.KindEvent,
		Type:           entity + "." + eventType,
		IdempotencyKey: key,
		Payload:        payload,
		TraceContext:   injectTrace(ctx),
	})
	if err != nil {
		return 0, fmt.Errorf("outbox: publish event %s.%s (key %q): %w", entity, eventType, key, err)
	}
	return ids[0], nil
}

// checkToken validates part of a NATS subject: not empty, no wildcards or whitespace, and
// (unless dots is set) no dots.
func checkToken(field, s string, dots bool) error {
	if s == "" {
		return fmt.Errorf("outbox: event %s is empty", field)
	}
	if strings.ContainsAny(s, "*> \t\r\n") || (!dots && strings.Contains(s, ".")) ||
		strings.HasPrefix(s, ".") || strings.HasSuffix(s, ".") || strings.Contains(s, "..") {
		return fmt.Errorf("outbox: event %s %q is not a valid subject token", field, s)
	}
	return nil
}

// ListDeadLetters returns up to limit DEAD_LETTER rows, oldest first (limit 0: 100).
func ListDeadLetters(ctx context.Context, st store.OutboxStore, limit int) ([]*store.OutboxMessage, error) {
	msgs, err := st.ListByStatus(ctx, store.OutboxDeadLetter, limit)
	if err != nil {
		return nil, fmt.Errorf("outbox: list dead letters: %w", err)
	}
	return msgs, nil
}

// Requeue returns dead letter id to PENDING with zero attempts; relays pick it up at
// once. store.ErrConflict if the row is not a dead letter, store.ErrNotFound if absent.
func Requeue(ctx context.Context, st store.OutboxStore, id int64) error {
	if err := st.Requeue(ctx, id); err != nil {
		return fmt.Errorf("outbox: requeue %d: %w", id, err)
	}
	return nil
}
