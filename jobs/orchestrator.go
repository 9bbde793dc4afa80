package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/propagation"

	"github.com/hodei-jobs/hodei/command"
	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/internal/backoff"
	"github.com/hodei-jobs/hodei/messaging"
)

// EventJobWorkerLost is written by the cleanup run for each job whose worker is lost
// or gone; the orchestrator starts the job's RecoverySaga from it.
const EventJobWorkerLost = "job.worker_lost"

// workerLostData is the Data of EventJobWorkerLost.
type workerLostData struct {
	WorkerID string `json:"worker_id"`
	Attempt  int    `json:"attempt"`
	Reason   string `json:"reason"`
}

// Route tells the Orchestrator what an event type starts. Start must be idempotent: the
// same event may be delivered twice (it starts its saga through the saga's one starter,
// a command whose saga id is deterministic), and report whether it created a saga.
type Route struct {
	EventType string
	Start     func(ctx context.Context, ev domain.Event) (created bool, err error)
}

// OrchestratorRoutes returns the routes of the job path: job.worker_lost → recovery,
// through StartRecovery, the recovery saga's one starter (the same command, input and
// checks as the cleanup run and the exit and disconnect checks use).
func (s *Service) OrchestratorRoutes() []Route {
	return []Route{{
		EventType: EventJobWorkerLost,
		Start: func(ctx context.Context, ev domain.Event) (bool, error) {
			var d workerLostData
			if err := json.Unmarshal(ev.Data, &d); err != nil {
				return false, fmt.Errorf("decode %s data: %w", ev.Type, err)
			}
			if ev.EntityID == "" || d.WorkerID == "" || d.Attempt < 1 {
				return false, fmt.Errorf("%s event: entity_id, worker_id and attempt are required", ev.Type)
			}
			// A key of this delivery's own: a redelivered event must find that the
			// saga exists (Started false), not replay the first delivery's outcome.
			out, err := command.Dispatch[RecoveryOutcome](ctx, s.d, StartRecovery{
				Key:   "orchestrator/" + ev.EntityID + "/" + strconv.Itoa(d.Attempt) + "/" + uuid.NewString(),
				JobID: ev.EntityID, WorkerID: d.WorkerID, Reason: d.Reason})
			return out.Started, err
		},
	}}
}

// OrchestratorConfig tunes an Orchestrator (setDefaults, Validate).
type OrchestratorConfig struct {
	// Durable is the JetStream consumer's durable name (default "hodei-orchestrator");
	// every replica uses the same one, so each event goes to one of them.
	Durable string
	// AckWait before JetStream redelivers an unacknowledged event (default 30s).
	AckWait time.Duration
	// RetryDelay before a failed event is redelivered (default 1s).
	RetryDelay time.Duration
	Logger     *slog.Logger
}

func (c *OrchestratorConfig) setDefaults() {
	if c.Durable == "" {
		c.Durable = "hodei-orchestrator"
	}
	if c.AckWait == 0 {
		c.AckWait = 30 * time.Second
	}
	if c.RetryDelay == 0 {
		c.RetryDelay = time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate reports the first invalid field.
func (c *OrchestratorConfig) Validate() error {
	switch {
	case c.AckWait < 100*time.Millisecond || c.AckWait > time.Hour:
		return fmt.Errorf("jobs: OrchestratorConfig.AckWait %s out of range [100ms, 1h]", c.AckWait)
	case c.RetryDelay < time.Millisecond || c.RetryDelay > time.Hour:
		return fmt.Errorf("jobs: OrchestratorConfig.RetryDelay %s out of range [1ms, 1h]", c.RetryDelay)
	}
	return nil
}

// Orchestrator is a durable JetStream consumer on HODEI_EVENTS that starts the saga of
// each routed event (through the route's idempotent starter: a duplicate starts nothing).
type Orchestrator struct {
	js      jetstream.JetStream
	routes  map[string]Route
	cfg     OrchestratorConfig
	handled atomic.Int64
	started atomic.Int64
}

// NewOrchestrator builds an Orchestrator for routes.
func NewOrchestrator(js jetstream.JetStream, routes []Route, cfg OrchestratorConfig) (*Orchestrator, error) {
	if js == nil || len(routes) == 0 {
		return nil, errors.New("jobs: NewOrchestrator needs JetStream and at least one route")
	}
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	o := &Orchestrator{js: js, routes: map[string]Route{}, cfg: cfg}
	for _, r := range routes {
		if r.EventType == "" || r.Start == nil {
			return nil, fmt.Errorf("jobs: orchestrator route %q: EventType and Start are required", r.EventType)
		}
		o.routes[r.EventType] = r
	}
	return o, nil
}

// Stats returns how many events were handled and how many sagas they created.
func (o *Orchestrator) Stats() (handled, started int64) { return o.handled.Load(), o.started.Load() }

// Handle starts the saga of one event (encoded domain.Event); an event type without a
// route is ignored. created reports whether a new saga was created.
func (o *Orchestrator) Handle(ctx context.Context, data []byte) (created bool, err error) {
	var ev domain.Event
	if err := json.Unmarshal(data, &ev); err != nil {
		return false, fmt.Errorf("jobs: orchestrator: decode event: %w", err)
	}
	r, ok := o.routes[ev.Type]
	if !ok {
		return false, nil
	}
	created, err = r.Start(ctx, ev)
	if err != nil {
		return false, fmt.Errorf("jobs: orchestrator: %s of %s: %w", ev.Type, ev.EntityID, err)
	}
	return created, nil
}

// Run consumes HODEI_EVENTS (the routed subjects) until ctx ends, then returns nil.
// Creating its durable consumer is retried with backoff while NATS does not answer. An
// event is acknowledged once its saga exists; a failure is redelivered after
// RetryDelay; an undecodable event is terminated (logged).
func (o *Orchestrator) Run(ctx context.Context) error {
	subjects := make([]string, 0, len(o.routes))
	for t := range o.routes {
		subjects = append(subjects, messaging.EventSubject(t))
	}
	cc := jetstream.ConsumerConfig{
		Durable: o.cfg.Durable, FilterSubjects: subjects, AckPolicy: jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy, AckWait: o.cfg.AckWait}
	if !messaging.ServerHasMultiFilter(o.js.Conn()) {
		// nats-server 2.9 has one filter subject per consumer: take every event and
		// acknowledge those without a route (Handle ignores them).
		cc.FilterSubjects, cc.FilterSubject = nil, messaging.EventsSubjectPrefix+">"
	}
	log := o.cfg.Logger.With("component", "orchestrator")
	// The consumer is retried until it exists: a NATS cluster electing a new stream
	// leader (a node died, the cluster restarts) answers nothing for a few seconds, and
	// that must not stop this replica (the events wait in the stream meanwhile).
	var cons jetstream.Consumer
	pace := backoff.Pacer{Base: 200 * time.Millisecond, Max: 5 * time.Second}
	for {
		var err error
		if cons, err = messaging.EnsureConsumer(ctx, o.js, messaging.EventsStream, cc); err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		delay := pace.Next()
		log.Warn("event consumer not ready; trying again", "consumer", o.cfg.Durable, "err", err, "retry_in", delay)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
	}
	consuming, err := cons.Consume(func(m jetstream.Msg) {
		// The event's trace context (outbox.JetStreamPublisher copies it into the
		// headers): the saga it starts joins the trace of the code that wrote it.
		hctx := propagation.TraceContext{}.Extract(ctx, propagation.HeaderCarrier(m.Headers()))
		created, err := o.Handle(hctx, m.Data())
		o.handled.Add(1)
		var syntax *json.SyntaxError
		switch {
		case errors.As(err, &syntax):
			log.Error("undecodable event dropped", "subject", m.Subject(), "err", err)
			_ = m.Term()
		case err != nil:
			log.Warn("event not handled; redelivering", "subject", m.Subject(), "err", err)
			_ = m.NakWithDelay(o.cfg.RetryDelay)
		default:
			if created {
				o.started.Add(1)
			}
			_ = m.Ack()
		}
	})
	if err != nil {
		return fmt.Errorf("jobs: orchestrator: consume: %w", err)
	}
	<-ctx.Done()
	consuming.Stop()
	return nil
}
