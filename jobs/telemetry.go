package jobs

import (
	"context"
	"strings"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/hodei-jobs/hodei/domain"
)

// Observer is told of what the job logic does, for metrics (telemetry.Metrics
// implements it). Calls come after the change committed; they must not block.
type Observer interface {
	JobSubmitted()
	// JobStarted: a job reached RUNNING latency after its submission.
	JobStarted(latency time.Duration)
	// JobFinished: a job reached end state state (or MANUAL_INTERVENTION_REQUIRED) on a
	// worker of provider ("" when it had none) after running for run (0: it never ran).
	JobFinished(state, provider string, run time.Duration)
	// WorkerLost: a worker with a job was found lost by rule (exited, disconnected,
	// heartbeat, assign).
	WorkerLost(rule string)
}

// TracerName is the instrumentation name of the job logic's spans.
const TracerName = "github.com/hodei-jobs/hodei/jobs"

// traceParent returns ctx's W3C traceparent ("" when ctx has no valid span).
func traceParent(ctx context.Context) string {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return ""
	}
	c := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, c)
	return c["traceparent"]
}

// inJobTrace returns ctx with j's trace (the request that submitted it) as the remote
// parent, so that sagas started for j by loops that have no trace of their own (the
// scheduler) join it. ctx is returned as is when it has a span or j has no trace.
func inJobTrace(ctx context.Context, j *domain.Job) context.Context {
	if j == nil || j.Spec.TraceParent == "" || trace.SpanContextFromContext(ctx).IsValid() {
		return ctx
	}
	return propagation.TraceContext{}.Extract(ctx, propagation.MapCarrier{"traceparent": j.Spec.TraceParent})
}

// providerSpan starts the span of a provider call (op create or destroy) and returns
// the function that ends it with the call's error.
func providerSpan(ctx context.Context, op, providerName, workerID string) (context.Context, func(error)) {
	ctx, span := otel.Tracer(TracerName).Start(ctx, "provider."+op+" "+providerName, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("hodei.provider", providerName), attribute.String("hodei.worker.id", workerID)))
	return ctx, func(err error) {
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}
}

// observeMove tells the Observer, once ctx's transaction commits, that j reached
// RUNNING (start latency) or an end state (with its worker's provider and run time).
func (s *Service) observeMove(ctx context.Context, j *domain.Job) {
	o := s.cfg.Observer
	if o == nil {
		return
	}
	switch {
	case j.State == domain.JobRunning:
		latency := j.StartedAt.Sub(j.CreatedAt)
		s.afterCommit(ctx, func() { o.JobStarted(latency) })
	case j.State.IsTerminal() || j.State.RequiresManualReview():
		state, workerID, provider := string(j.State), j.WorkerID, j.Spec.Provider
		var run time.Duration
		if !j.StartedAt.IsZero() && !j.FinishedAt.IsZero() {
			run = j.FinishedAt.Sub(j.StartedAt)
		} else if !j.StartedAt.IsZero() {
			run = j.UpdatedAt.Sub(j.StartedAt)
		}
		s.afterCommit(ctx, func() {
			if provider == "" && workerID != "" {
				// Not ctx: it carries the committed transaction, which takes no queries.
				gctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				if w, err := s.st.Workers().Get(gctx, workerID); err == nil {
					provider = w.Provider
				}
				cancel()
			}
			o.JobFinished(state, provider, run)
		})
	}
}

// observeLoss tells the Observer that a worker was found lost, by the rule named by
// the recovery key's prefix.
func (s *Service) observeLoss(ctx context.Context, key string) {
	o := s.cfg.Observer
	if o == nil {
		return
	}
	rule, _, _ := strings.Cut(key, "/")
	switch rule {
	case "cleanup":
		rule = "heartbeat"
	case "disconnect":
		rule = "disconnected"
	}
	s.afterCommit(ctx, func() { o.WorkerLost(rule) })
}
