package outbox

import (
	"context"

	"go.opentelemetry.io/otel/propagation"
)

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
