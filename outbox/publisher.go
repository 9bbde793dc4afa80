package outbox

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hodei-jobs/hodei/messaging"
	"github.com/hodei-jobs/hodei/store"
)

// EventPublisher publishes event rows. Publish returns one error (nil on success) per
// message, in input order; a message reported nil is durably stored by the transport.
type EventPublisher interface {
	Publish(ctx context.Context, msgs []*store.OutboxMessage) []error
}

// Headers set on every published event besides the trace context.
const (
	// HeaderOutboxKey carries the row's idempotency key.
	HeaderOutboxKey = "Hodei-Outbox-Key"
)

// JetStreamPublisher publishes events to JetStream on "hodei.events.<type>" with the
// outbox id as Nats-Msg-Id, so that a row published and then re-published (the relay
// crashed before marking it, the lease expired, another relay took it) is stored once:
// the stream's duplicate window drops the second copy and acknowledges it.
//
// A batch waits at most AckTimeout for its acknowledgements; the events not
// acknowledged by then fail (the relay retries them). Without that bound one
// acknowledgement that never comes (a message published while a restarted NATS cluster
// had no stream leader yet is dropped without an answer) would hold the relay forever.
type JetStreamPublisher struct {
	js jetstream.JetStream
	// AckTimeout bounds the wait for a batch's acknowledgements (default
	// messaging.PublishAckTimeout).
	AckTimeout time.Duration
}

// NewJetStreamPublisher returns a publisher on js. The HODEI_EVENTS stream must exist
// (messaging.EnsureStreams).
func NewJetStreamPublisher(js jetstream.JetStream) *JetStreamPublisher {
	return &JetStreamPublisher{js: js, AckTimeout: messaging.PublishAckTimeout}
}

// Publish sends the whole batch asynchronously, then waits for every acknowledgement (or
// ctx's end, or AckTimeout): one round trip for the batch rather than one per event.
func (p *JetStreamPublisher) Publish(ctx context.Context, msgs []*store.OutboxMessage) []error {
	if p.AckTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.AckTimeout)
		defer cancel()
	}
	errs := make([]error, len(msgs))
	futures := make([]jetstream.PubAckFuture, len(msgs))
	for i, m := range msgs {
		nm := nats.NewMsg(messaging.EventSubject(m.Type))
		nm.Data = m.Payload
		nm.Header.Set(jetstream.MsgIDHeader, strconv.FormatInt(m.ID, 10))
		nm.Header.Set(HeaderOutboxKey, m.IdempotencyKey)
		for k, v := range m.TraceContext {
			nm.Header.Set(k, v)
		}
		f, err := p.js.PublishMsgAsync(nm, jetstream.WithExpectStream(messaging.EventsStream))
		if err != nil {
			errs[i] = fmt.Errorf("outbox: publish event %d (%s): %w", m.ID, m.Type, err)
			continue
		}
		futures[i] = f
	}
	for i, f := range futures {
		if f == nil {
			continue
		}
		select {
		case <-f.Ok():
		case err := <-f.Err():
			errs[i] = fmt.Errorf("outbox: publish event %d (%s): %w", msgs[i].ID, msgs[i].Type, err)
		case <-ctx.Done():
			errs[i] = fmt.Errorf("outbox: publish event %d (%s): waiting for ack: %w", msgs[i].ID, msgs[i].Type, ctx.Err())
		}
	}
	return errs
}

var errNoPublisher = errors.New("outbox: no EventPublisher configured for event rows")
