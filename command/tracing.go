package command

import (
	"context"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// TracerName is the instrumentation name of the spans the Tracing middleware starts.
const TracerName = "github.com/hodei-jobs/hodei/command"

// Span attribute keys set by the Tracing middleware.
const (
	AttrType      = attribute.Key("hodei.command.type")
	AttrKey       = attribute.Key("hodei.command.key")
	AttrTransient = attribute.Key("hodei.command.transient")
)

// Tracing returns middleware that wraps each dispatch in a span named
// "command <type>" (kind internal) with the command type and idempotency key as
// attributes. A failing dispatch records the error as a span event, sets the span status
// to Error and marks whether the error was Transient; a successful one leaves the status
// Unset, as the OpenTelemetry guidance for instrumentation asks. The span's context is
// passed on, so nested dispatches become child spans.
//
// Only the OpenTelemetry API is used; exporting is configured by whoever builds tp. A
// nil tp uses the global provider (otel.GetTracerProvider), a no-op unless set.
func Tracing(tp trace.TracerProvider) Middleware {
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	tracer := tp.Tracer(TracerName)
	return func(next Dispatcher) Dispatcher {
		return DispatcherFunc(func(ctx context.Context, cmd Command) (any, error) {
			ctx, span := tracer.Start(ctx, "command "+cmd.CommandType(),
				trace.WithSpanKind(trace.SpanKindInternal),
				trace.WithAttributes(
					AttrType.String(cmd.CommandType()),
					AttrKey.String(cmd.IdempotencyKey()),
				))
			defer span.End()
			res, err := next.DispatchAny(ctx, cmd)
			if err != nil {
				span.RecordError(err)
				span.SetAttributes(AttrTransient.Bool(IsTransient(err)))
				span.SetStatus(codes.Error, err.Error())
			}
			return res, err
		})
	}
}
