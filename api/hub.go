package api

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	hodeiv1 "github.com/hodei-jobs/hodei/gen/hodei/v1"
)

// WorkerInboxSubject returns the core NATS subject of a worker's inbox,
// "hodei.worker.<workerID>.inbox". The replica holding the worker's Connect stream
// subscribes to it and forwards every message on the stream.
func WorkerInboxSubject(workerID string) string { return "hodei.worker." + workerID + ".inbox" }

// Hub delivers server messages to connected workers, whichever replica holds their
// stream: Send publishes the proto-encoded hodeiv1.ServerMessage on the worker's inbox
// subject and the Connect handler of the worker's stream forwards it. It implements
// jobs.WorkerChannel. Safe for concurrent use.
//
// Delivery is at most once (core NATS): a message for a worker that is not connected
// at that moment is lost. That is why a connecting worker is also sent its pending
// RunJob (WorkerLogic.PendingRun) and why the agent ignores a RunJob it already has.
type Hub struct {
	nc *nats.Conn
}

// NewHub returns a hub publishing and subscribing on nc.
func NewHub(nc *nats.Conn) (*Hub, error) {
	if nc == nil {
		return nil, errors.New("api: NewHub: nc is nil")
	}
	return &Hub{nc: nc}, nil
}

// Send publishes msg to workerID's inbox. A message without a message_id gets a random
// one (msg itself is not modified).
func (h *Hub) Send(ctx context.Context, workerID string, msg *hodeiv1.ServerMessage) error {
	if err := validWorkerID(workerID); err != nil {
		return fmt.Errorf("api: hub send: %w", err)
	}
	if msg == nil {
		return errors.New("api: hub send: message is nil")
	}
	if msg.GetMessageId() == "" {
		msg = proto.CloneOf(msg)
		msg.MessageId = uuid.NewString()
	}
	data, err := proto.Marshal(msg)
	if err != nil {
		return fmt.Errorf("api: hub send to worker %s: encode: %w", workerID, err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := h.nc.Publish(WorkerInboxSubject(workerID), data); err != nil {
		return fmt.Errorf("api: hub send to worker %s: %w", workerID, err)
	}
	return nil
}

// subscribe opens workerID's inbox: messages arrive on the returned channel (buffer
// size buf; when it is full NATS drops messages for this subscription, a slow-consumer
// error). The subscription is registered with the server before subscribe returns, so a
// message published afterwards by any replica is delivered.
func (h *Hub) subscribe(ctx context.Context, workerID string, buf int) (*nats.Subscription, <-chan *nats.Msg, error) {
	ch := make(chan *nats.Msg, buf)
	sub, err := h.nc.ChanSubscribe(WorkerInboxSubject(workerID), ch)
	if err != nil {
		return nil, nil, fmt.Errorf("api: subscribe to worker %s inbox: %w", workerID, err)
	}
	// FlushWithContext needs a deadline; a stream's context usually has none.
	fctx, cancel := context.WithTimeout(ctx, flushTimeout)
	defer cancel()
	if err := h.nc.FlushWithContext(fctx); err != nil {
		_ = sub.Unsubscribe()
		return nil, nil, fmt.Errorf("api: subscribe to worker %s inbox: flush: %w", workerID, err)
	}
	return sub, ch, nil
}

// flushTimeout bounds the round trip that confirms a subscription.
const flushTimeout = 5 * time.Second

// validWorkerID checks a worker id: a valid id that is also one NATS subject token.
func validWorkerID(id string) error {
	if err := validID("worker_id", id); err != nil {
		return err
	}
	if strings.ContainsAny(id, ".*>") {
		return invalidArg("worker_id", "must not contain '.', '*' or '>'")
	}
	return nil
}
