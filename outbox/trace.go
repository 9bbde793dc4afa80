package outbox

import (
	"context"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/hodei-jobs/hodei/store"
)

// TracerName is the instrumentation name of the relay's spans.
const TracerName = "github.com/hodei-jobs/hodei/outbox"

// dispatchSpan starts the span of the relay's dispatch of command row m: a child of
// the trace stored on the row (the code that wrote it), so a command the relay runs
// minutes later or on another replica stays in its job's trace. It uses the global
// tracer provider (a no-op unless one is installed).
func dispatchSpan(ctx context.Context, m *store.OutboxMessage) (context.Context, trace.Span) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return ctx, trace.SpanFromContext(ctx) // an untraced row: no span, no cost
	}
	return otel.Tracer(TracerName).Start(ctx, "outbox.dispatch "+m.Type, trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(attribute.Int64("hodei.outbox.id", m.ID), attribute.String("hodei.outbox.type", m.Type),
			attribute.Int("hodei.outbox.attempts", m.Attempts)))
}

// publishSpan starts the span of the relay's publication of event row m, a child of
// the trace stored on the row like dispatchSpan's, so that a job's trace shows when
// each of its events left the outbox. Untraced rows get no span.
func publishSpan(ctx context.Context, m *store.OutboxMessage) trace.Span {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return trace.SpanFromContext(ctx)
	}
	_, span := otel.Tracer(TracerName).Start(ctx, "outbox.publish "+m.Type, trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(attribute.Int64("hodei.outbox.id", m.ID), attribute.String("hodei.outbox.type", m.Type),
			attribute.Int("hodei.outbox.attempts", m.Attempts)))
	return span
}

// endSpan ends span with err as its status.
func endSpan(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// traceProp carries the W3C trace context (traceparent, tracestate) from the code that
// enqueues a row to the relay that executes it.
var traceProp = propagation.TraceContext{}

// injectTrace returns ctx's trace context as a map, or nil when ctx has no span.
func injectTrace(ctx context.Context) map[string]string {
	c := propagation.MapCarrier{}
	traceProp.Inject(ctx, c)
	if len(c) == 0 {
		return nil
	}
	return c
}

// extractTrace returns ctx carrying the stored trace context as its remote parent.
func extractTrace(ctx context.Context, tc map[string]string) context.Context {
	if len(tc) == 0 {
		return ctx
	}
	return traceProp.Extract(ctx, propagation.MapCarrier(tc))
}
