package agent

import (
	"context"
	"net/http"
	"strconv"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	hodeiv1 "github.com/hodei-jobs/hodei/gen/hodei/v1"
)

// TracerName is the instrumentation name of the agent's spans.
const TracerName = "github.com/hodei-jobs/hodei/agent"

// The agent's spans: "agent.register" (a child of Config.TraceParent, the job's trace
// handed over by the provider; the server's Register span is its child through the
// traceparent header) and "agent.run_job" (a child of RunJob.trace_context, from start
// to the end of the job's process). They go to the global tracer provider.

func (a *agent) startSpan(ctx context.Context, name string) (context.Context, trace.Span) {
	return otel.Tracer(TracerName).Start(ctx, name, trace.WithAttributes(attribute.String("hodei.worker.id", a.cfg.WorkerID)))
}

// withTraceParent returns ctx with traceparent as its remote parent ("" or invalid:
// ctx).
func withTraceParent(ctx context.Context, traceparent string) context.Context {
	if traceparent == "" {
		return ctx
	}
	return propagation.TraceContext{}.Extract(ctx, propagation.MapCarrier{"traceparent": traceparent})
}

// injectTrace sets ctx's trace context on the request headers h.
func injectTrace(ctx context.Context, h http.Header) {
	propagation.TraceContext{}.Inject(ctx, propagation.HeaderCarrier(h))
}

func endSpan(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// startJobSpan starts the span of running job id (ended by endJobSpan).
func (a *agent) startJobSpan(id string, r *hodeiv1.RunJob) {
	ctx := propagation.TraceContext{}.Extract(context.Background(), propagation.MapCarrier(r.GetTraceContext()))
	_, span := a.startSpan(ctx, "agent.run_job")
	span.SetAttributes(attribute.String("hodei.job.id", id), attribute.Int("hodei.job.attempt", int(r.GetAttempt())))
	a.spans[id] = span
}

// endJobSpan ends the span of job id with its result.
func (a *agent) endJobSpan(id string, r execResult) {
	span, ok := a.spans[id]
	if !ok {
		return
	}
	delete(a.spans, id)
	span.SetAttributes(attribute.Int("hodei.job.exit_code", r.ExitCode), attribute.Bool("hodei.job.cancelled", r.Cancelled))
	if r.Err != "" || r.ExitCode != 0 {
		span.SetStatus(codes.Error, "exit code "+strconv.Itoa(r.ExitCode)+" "+r.Err)
	}
	span.End()
}
