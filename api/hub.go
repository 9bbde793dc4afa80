package api

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/hodei-jobs/hodei/domain"
	hodeiv1 "github.com/hodei-jobs/hodei/gen/hodei/v1"
	"github.com/hodei-jobs/hodei/internal/protoconv"
)

// WorkerInboxSubject returns the core NATS subject of a worker's inbox,
// "hodei.worker.<workerID>.inbox". The replica holding the worker's Connect stream
// subscribes to it and forwards every message on the stream.
func WorkerInboxSubject(workerID string) string { return "hodei.worker." + workerID + ".inbox" }

// Hub delivers server messages to connected workers, whichever replica holds their
// stream, and waits for the agent's acknowledgement. It implements jobs.WorkerChannel
// and owns the server→worker message ids (RunMessageID, CancelMessageID). Safe for
// concurrent use.
//
// Delivery is a NATS request on the worker's inbox subject: the Connect handler of the
// replica holding the worker's stream forwards the message and answers the request when
// the agent acks that message id. No stream anywhere (no responder), or no ack within
// the caller's deadline, is an error, and the caller sends again; the agent drops a
// message whose id it has seen, so a re-sent message acts once.
type Hub struct {
	nc *nats.Conn
}

// ErrNotConnected matches the error of a delivery to a worker whose stream no replica
// holds.
var ErrNotConnected = errors.New("api: worker is not connected")

// NewHub returns a hub publishing and subscribing on nc.
func NewHub(nc *nats.Conn) (*Hub, error) {
	if nc == nil {
		return nil, errors.New("api: NewHub: nc is nil")
	}
	return &Hub{nc: nc}, nil
}

// RunMessageID is the id of the RunJob of job jobID's attempt.
func RunMessageID(jobID string, attempt int) string {
	return "run/" + jobID + "/" + strconv.Itoa(attempt)
}

// CancelMessageID is the id of round round of the CancelJob of job jobID's attempt.
func CancelMessageID(jobID string, attempt, round int) string {
	return "cancel/" + jobID + "/" + strconv.Itoa(attempt) + "/" + strconv.Itoa(round)
}

// runJobMessage is j's RunJob, carrying the trace context of ctx (the delivering saga
// step) or, without one, j's own trace (a RunJob sent again on reconnect).
func runJobMessage(ctx context.Context, j *domain.Job) *hodeiv1.ServerMessage {
	tc := map[string]string{}
	propagation.TraceContext{}.Inject(ctx, propagation.MapCarrier(tc))
	if len(tc) == 0 && j.Spec.TraceParent != "" {
		tc["traceparent"] = j.Spec.TraceParent
	}
	if len(tc) == 0 {
		tc = nil
	}
	return &hodeiv1.ServerMessage{MessageId: RunMessageID(j.ID, j.Attempt), Payload: &hodeiv1.ServerMessage_RunJob{
		RunJob: &hodeiv1.RunJob{JobId: j.ID, Spec: protoconv.SpecToProto(j.Spec), Attempt: int32(j.Attempt), TraceContext: tc}}}
}

func cancelJobMessage(c domain.CancelRequest) *hodeiv1.ServerMessage {
	return &hodeiv1.ServerMessage{MessageId: CancelMessageID(c.JobID, c.Attempt, c.Round),
		Payload: &hodeiv1.ServerMessage_Cancel{Cancel: &hodeiv1.CancelJob{JobId: c.JobID, Reason: c.Reason,
			GracePeriod: durationpb.New(c.Grace)}}}
}

// RunJob delivers job j's current attempt to workerID and returns once the agent acked it.
func (h *Hub) RunJob(ctx context.Context, workerID string, j *domain.Job) error {
	if j == nil {
		return errors.New("api: hub RunJob: job is nil")
	}
	return h.deliver(ctx, workerID, runJobMessage(ctx, j))
}

// CancelJob delivers a CancelJob to workerID and returns once the agent acked it.
func (h *Hub) CancelJob(ctx context.Context, workerID string, c domain.CancelRequest) error {
	return h.deliver(ctx, workerID, cancelJobMessage(c))
}

// deliver sends msg to workerID's stream and waits for the agent's ack of its id.
func (h *Hub) deliver(ctx context.Context, workerID string, msg *hodeiv1.ServerMessage) error {
	if err := validWorkerID(workerID); err != nil {
		return fmt.Errorf("api: deliver: %w", err)
	}
	data, err := proto.Marshal(msg)
	if err != nil {
		return fmt.Errorf("api: deliver %s to worker %s: encode: %w", msg.GetMessageId(), workerID, err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, deliverTimeout)
		defer cancel()
	}
	if _, err := h.nc.RequestWithContext(ctx, WorkerInboxSubject(workerID), data); err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return fmt.Errorf("api: deliver %s: %w: %s", msg.GetMessageId(), ErrNotConnected, workerID)
		}
		return fmt.Errorf("api: deliver %s to worker %s: no ack: %w", msg.GetMessageId(), workerID, err)
	}
	return nil
}

// deliverTimeout bounds a delivery whose context has no deadline.
const deliverTimeout = 10 * time.Second

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
