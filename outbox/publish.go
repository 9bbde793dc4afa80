package outbox

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/hodei-jobs/hodei/store"
)

// Inserter writes outbox rows in ctx's transaction; store.OutboxStore satisfies it.
type Inserter interface {
	Insert(ctx context.Context, msgs ...*store.OutboxMessage) ([]int64, error)
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
