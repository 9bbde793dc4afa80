package natsq

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hodei-jobs/hodei/messaging"
	"github.com/hodei-jobs/hodei/saga"
)

// Defaults of QueueConfig.
const (
	DefaultStream        = "HODEI_SAGA_TASKS"
	DefaultSubjectPrefix = "hodei.saga.tasks"
	DefaultConsumer      = "hodei-saga-runners"
	DefaultAckWait       = 30 * time.Second
	DefaultMaxDeliver    = 5
)

// advisoryPrefix is the subject prefix of JetStream's max-deliveries advisories.
const advisoryPrefix = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES"

// DeadTaskFunc is told about a task that reached MaxDeliver deliveries without an ack.
// It should record the failure (see RecordDeadTask); an error is logged.
type DeadTaskFunc func(ctx context.Context, sagaID string, deliveries int) error

// QueueConfig configures a TaskQueue. Zero fields get defaults.
type QueueConfig struct {
	Stream        string // default HODEI_SAGA_TASKS
	SubjectPrefix string // stream subjects are SubjectPrefix+".>"; default hodei.saga.tasks
	Consumer      string // durable consumer shared by all runners; default hodei-saga-runners
	// AckWait is how long a delivered task may stay unacknowledged before it is
	// redelivered (default 30s).
	AckWait time.Duration
	// MaxDeliver is the number of deliveries after which the server gives up on a task
	// and OnDeadTask is called (default 5).
	MaxDeliver int
	// MaxAckPending bounds tasks delivered and not yet acknowledged, over all runners
	// (default 1000).
	MaxAckPending int
	// PullBatch is how many messages Tasks keeps pulled ahead (default 32).
	PullBatch int
	// DuplicateWindow of the stream (default 2m); see doc.go for the message ids.
	DuplicateWindow time.Duration
	// Storage of the stream (default file storage).
	Storage jetstream.StorageType
	// Replicas of the stream in a NATS cluster (default 1; 3 lets one node of three
	// die). The consumer inherits them; an existing stream is changed to that many.
	Replicas int
	// OnDeadTask records a task that reached MaxDeliver. Nil: the dead task is only
	// logged at Error level.
	OnDeadTask DeadTaskFunc
	Logger     *slog.Logger
}

func (c *QueueConfig) setDefaults() {
	if c.Stream == "" {
		c.Stream = DefaultStream
	}
	if c.SubjectPrefix == "" {
		c.SubjectPrefix = DefaultSubjectPrefix
	}
	if c.Consumer == "" {
		c.Consumer = DefaultConsumer
	}
	if c.AckWait == 0 {
		c.AckWait = DefaultAckWait
	}
	if c.MaxDeliver == 0 {
		c.MaxDeliver = DefaultMaxDeliver
	}
	if c.MaxAckPending == 0 {
		c.MaxAckPending = 1000
	}
	if c.PullBatch == 0 {
		c.PullBatch = 32
	}
	if c.DuplicateWindow == 0 {
		c.DuplicateWindow = 2 * time.Minute
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate reports the first invalid field.
func (c *QueueConfig) Validate() error {
	switch {
	case strings.ContainsAny(c.Stream, " .*>\t\r\n"):
		return fmt.Errorf("natsq: QueueConfig.Stream %q must not contain spaces, '.', '*' or '>'", c.Stream)
	case c.SubjectPrefix == "" || strings.ContainsAny(c.SubjectPrefix, " *>\t\r\n") ||
		strings.HasPrefix(c.SubjectPrefix, ".") || strings.HasSuffix(c.SubjectPrefix, "."):
		return fmt.Errorf("natsq: QueueConfig.SubjectPrefix %q is not a subject without wildcards", c.SubjectPrefix)
	case strings.ContainsAny(c.Consumer, " .*>\t\r\n"):
		return fmt.Errorf("natsq: QueueConfig.Consumer %q must not contain spaces, '.', '*' or '>'", c.Consumer)
	case c.AckWait < 10*time.Millisecond:
		return fmt.Errorf("natsq: QueueConfig.AckWait %s below 10ms", c.AckWait)
	case c.MaxDeliver < 1:
		return fmt.Errorf("natsq: QueueConfig.MaxDeliver %d below 1", c.MaxDeliver)
	case c.MaxAckPending < 1:
		return fmt.Errorf("natsq: QueueConfig.MaxAckPending %d below 1", c.MaxAckPending)
	case c.PullBatch < 1 || c.PullBatch > 10000:
		return fmt.Errorf("natsq: QueueConfig.PullBatch %d out of range [1, 10000]", c.PullBatch)
	case c.DuplicateWindow < time.Second:
		return fmt.Errorf("natsq: QueueConfig.DuplicateWindow %s below 1s", c.DuplicateWindow)
	case c.Replicas < 1 || c.Replicas > 5:
		return fmt.Errorf("natsq: QueueConfig.Replicas %d out of range [1, 5]", c.Replicas)
	}
	return nil
}

// TaskQueue is a saga.TaskQueue on a JetStream work-queue stream (see doc.go). Safe for
// concurrent use.
type TaskQueue struct {
	js       jetstream.JetStream
	nc       *nats.Conn
	stream   jetstream.Stream
	consumer jetstream.Consumer
	cfg      QueueConfig
	log      *slog.Logger
	subject  string
	instance string        // random id of this TaskQueue, part of each Nats-Msg-Id
	counter  atomic.Uint64 // makes each Nats-Msg-Id unique

	advMu  sync.Mutex
	advSub *nats.Subscription // max-deliveries advisory subscription, shared by Tasks calls
	advRef int
}

var _ saga.TaskQueue = (*TaskQueue)(nil)

// NewTaskQueue creates (or updates) the stream and the durable consumer and returns the
// queue. js must come from jetstream.New on a *nats.Conn.
func NewTaskQueue(ctx context.Context, js jetstream.JetStream, cfg QueueConfig) (*TaskQueue, error) {
	if js == nil {
		return nil, errors.New("natsq: NewTaskQueue: js is nil")
	}
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	stream, err := messaging.EnsureStream(ctx, js, jetstream.StreamConfig{
		Name:        cfg.Stream,
		Description: "Hodei saga tasks: ids of runnable sagas for the runners",
		Subjects:    []string{cfg.SubjectPrefix + ".>"},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     cfg.Storage,
		Duplicates:  cfg.DuplicateWindow,
		Replicas:    cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("natsq: ensure stream %s: %w", cfg.Stream, err)
	}
	cons, err := messaging.EnsureConsumer(ctx, js, cfg.Stream, jetstream.ConsumerConfig{
		Durable:       cfg.Consumer,
		Description:   "Hodei saga runners",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       cfg.AckWait,
		MaxDeliver:    cfg.MaxDeliver,
		MaxAckPending: cfg.MaxAckPending,
		FilterSubject: cfg.SubjectPrefix + ".>",
	})
	if err != nil {
		return nil, fmt.Errorf("natsq: ensure consumer %s on %s: %w", cfg.Consumer, cfg.Stream, err)
	}
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("natsq: instance id: %w", err)
	}
	return &TaskQueue{js: js, nc: js.Conn(), stream: stream, consumer: cons, cfg: cfg,
		log:      cfg.Logger.With("component", "saga-natsq", "stream", cfg.Stream),
		subject:  cfg.SubjectPrefix + ".run",
		instance: hex.EncodeToString(b[:])}, nil
}

// Enqueue publishes a task for sagaID and waits for the stream's acknowledgement.
func (q *TaskQueue) Enqueue(ctx context.Context, sagaID string) error {
	if sagaID == "" {
		return errors.New("natsq: Enqueue: sagaID is empty")
	}
	msg := nats.NewMsg(q.subject)
	msg.Data = []byte(sagaID)
	msg.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("%s/%s/%d", sagaID, q.instance, q.counter.Add(1)))
	if _, err := q.js.PublishMsg(ctx, msg); err != nil {
		return fmt.Errorf("natsq: enqueue saga %s on %s: %w", sagaID, q.cfg.Stream, err)
	}
	return nil
}

// task is one delivery.
type task struct {
	msg jetstream.Msg
	id  string
}

func (t *task) SagaID() string { return t.id }

func (t *task) Ack(context.Context) error {
	if err := t.msg.Ack(); err != nil {
		return fmt.Errorf("natsq: ack task of saga %s: %w", t.id, err)
	}
	return nil
}

func (t *task) Nak(_ context.Context, delay time.Duration) error {
	var err error
	if delay > 0 {
		err = t.msg.NakWithDelay(delay)
	} else {
		err = t.msg.Nak()
	}
	if err != nil {
		return fmt.Errorf("natsq: nak task of saga %s: %w", t.id, err)
	}
	return nil
}

// Deliveries returns how many times this task has been delivered (1 the first time).
func (t *task) Deliveries() int {
	md, err := t.msg.Metadata()
	if err != nil {
		return 0
	}
	return int(md.NumDelivered)
}

// Tasks pulls tasks from the durable consumer until ctx ends, then closes the channel.
// It also handles max-deliveries advisories while ctx lasts (see doc.go).
func (q *TaskQueue) Tasks(ctx context.Context) (<-chan saga.Task, error) {
	if err := q.watchDead(); err != nil {
		return nil, err
	}
	it, err := q.consumer.Messages(jetstream.PullMaxMessages(q.cfg.PullBatch))
	if err != nil {
		q.unwatchDead()
		return nil, fmt.Errorf("natsq: pull from consumer %s: %w", q.cfg.Consumer, err)
	}
	out := make(chan saga.Task)
	// Drain, not Stop: the tasks already pulled into the iterator's buffer come out of
	// Next and are returned below (Stop would discard them, and they would wait for
	// AckWait before another runner got them).
	stop := context.AfterFunc(ctx, it.Drain)
	go func() {
		defer close(out)
		defer q.unwatchDead()
		defer stop()
		defer it.Stop()
		for {
			msg, err := it.Next()
			if err == nil && ctx.Err() != nil {
				_ = msg.Nak() // pulled, never handed out: another runner has it now
				continue
			}
			if err != nil {
				if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
					return
				}
				q.log.Warn("saga task pull failed; retrying", "err", err)
				select {
				case <-ctx.Done():
					return
				case <-time.After(100 * time.Millisecond):
				}
				continue
			}
			id := string(msg.Data())
			if id == "" {
				q.log.Error("saga task without a saga id; dropping it", "subject", msg.Subject())
				_ = msg.Term()
				continue
			}
			select {
			case out <- &task{msg: msg, id: id}:
			case <-ctx.Done():
				// Not handed out: let another runner have it now (and the rest of the
				// buffer with it, above).
				_ = msg.Nak()
			}
		}
	}()
	return out, nil
}

// watchDead subscribes (once per TaskQueue, in a queue group shared by all processes)
// to the consumer's max-deliveries advisories.
func (q *TaskQueue) watchDead() error {
	q.advMu.Lock()
	defer q.advMu.Unlock()
	if q.advRef > 0 {
		q.advRef++
		return nil
	}
	subj := advisoryPrefix + "." + q.cfg.Stream + "." + q.cfg.Consumer
	sub, err := q.nc.QueueSubscribe(subj, "hodei-saga-dead-tasks", func(m *nats.Msg) {
		q.handleAdvisory(m.Data)
	})
	if err != nil {
		return fmt.Errorf("natsq: subscribe to %s: %w", subj, err)
	}
	// Make sure the server knows the subscription before tasks flow.
	if err := q.nc.Flush(); err != nil {
		_ = sub.Unsubscribe()
		return fmt.Errorf("natsq: subscribe to %s: %w", subj, err)
	}
	q.advSub, q.advRef = sub, 1
	return nil
}

func (q *TaskQueue) unwatchDead() {
	q.advMu.Lock()
	defer q.advMu.Unlock()
	q.advRef--
	if q.advRef == 0 && q.advSub != nil {
		_ = q.advSub.Unsubscribe()
		q.advSub = nil
	}
}

// maxDeliverAdvisory is the part of JetStream's io.nats.jetstream.advisory.v1.max_deliver
// event that the queue reads.
type maxDeliverAdvisory struct {
	Type       string `json:"type"`
	Stream     string `json:"stream"`
	Consumer   string `json:"consumer"`
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries uint64 `json:"deliveries"`
}

// handleAdvisory records a task that the server gave up on and removes its message.
// It runs on the subscription's goroutine, so advisories are handled one at a time.
func (q *TaskQueue) handleAdvisory(data []byte) {
	var adv maxDeliverAdvisory
	if err := json.Unmarshal(data, &adv); err != nil || adv.StreamSeq == 0 {
		q.log.Error("undecodable max-deliveries advisory", "err", err, "advisory", string(data))
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	raw, err := q.stream.GetMsg(ctx, adv.StreamSeq)
	if err != nil {
		q.log.Error("saga task reached its delivery limit but its message is gone; the database poll still has the saga",
			"stream_seq", adv.StreamSeq, "deliveries", adv.Deliveries, "err", err)
		return
	}
	id := string(raw.Data)
	q.log.Error("saga task reached its delivery limit without an ack; recording it (the database poll keeps the saga going)",
		"saga", id, "deliveries", adv.Deliveries, "stream_seq", adv.StreamSeq)
	if q.cfg.OnDeadTask != nil {
		if err := q.cfg.OnDeadTask(ctx, id, int(adv.Deliveries)); err != nil {
			q.log.Error("recording a dead saga task failed", "saga", id, "err", err)
		}
	}
	if err := q.stream.DeleteMsg(ctx, adv.StreamSeq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		q.log.Warn("deleting a dead saga task failed", "saga", id, "stream_seq", adv.StreamSeq, "err", err)
	}
}

// DeadTaskIncident is the incident kind RecordDeadTask records.
const DeadTaskIncident = "task_dead"

// IncidentRecorder records an incident in a saga's history without changing the saga;
// *saga.Engine implements it.
type IncidentRecorder interface {
	RecordIncident(ctx context.Context, sagaID, kind, detail string) error
}

// DeadTask describes a dead task (the detail of a DeadTaskIncident is its JSON form).
type DeadTask struct {
	Deliveries int       `json:"deliveries"`
	At         time.Time `json:"at"`
}

// RecordDeadTask records in the saga's history, as an incident of kind DeadTaskIncident
// whose detail is the JSON form of DeadTask, that its task was delivered deliveries
// times without an ack. The incident does not wake or change the saga: the database
// poll keeps it going. Wire it once the engine exists, e.g.
//
//	var eng *saga.Engine
//	q, _ := natsq.NewTaskQueue(ctx, js, natsq.QueueConfig{OnDeadTask: func(ctx context.Context, id string, n int) error {
//		return natsq.RecordDeadTask(ctx, eng, id, n)
//	}})
//	eng, _ = saga.New(st, reg, d, saga.Config{Queue: q})
func RecordDeadTask(ctx context.Context, r IncidentRecorder, sagaID string, deliveries int) error {
	if r == nil {
		return errors.New("natsq: RecordDeadTask: no IncidentRecorder (engine) wired")
	}
	detail, err := json.Marshal(DeadTask{Deliveries: deliveries, At: time.Now().UTC()})
	if err != nil {
		return fmt.Errorf("natsq: record dead task of saga %s: %w", sagaID, err)
	}
	if err := r.RecordIncident(ctx, sagaID, DeadTaskIncident, string(detail)); err != nil {
		return fmt.Errorf("natsq: record dead task of saga %s: %w", sagaID, err)
	}
	return nil
}
