package saga

import (
	"context"
	"errors"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/hodei-jobs/hodei/command"
)

// Tracing and metrics of the runner.
//
// A saga belongs to the trace it was started in: Start stores the W3C trace context of
// its ctx on the saga.started event, and every event the runner or a signal appends
// carries the context it was appended in. The fold keeps the first one (sagaState.Trace,
// also in snapshots), and every run of the saga — on any runner, after any restart —
// makes its step spans children of it, so one job's sagas, commands and outbox rows
// form one trace with the request that submitted it.
//
// Each step run (forward, activity or compensation) is a span "saga.step <type>/<step>"
// with the saga id, type, step, attempt and outcome (completed, failed, waiting,
// compensated, compensation_failed), and is reported to Config.Observer with its
// duration; a lost append (store.ErrConflict) is reported as a conflict.

// TracerName is the instrumentation name of the step spans.
const TracerName = "github.com/hodei-jobs/hodei/saga"

// Span attribute keys of step spans.
const (
	AttrSagaID   = attribute.Key("hodei.saga.id")
	AttrSagaType = attribute.Key("hodei.saga.type")
	AttrStep     = attribute.Key("hodei.saga.step")
	AttrAttempt  = attribute.Key("hodei.saga.attempt")
	AttrOutcome  = attribute.Key("hodei.saga.outcome")
)

// Step outcomes as spans and Observer see them.
const (
	OutcomeCompleted          = "completed"
	OutcomeFailed             = "failed"
	OutcomeWaiting            = "waiting"
	OutcomeCompensated        = "compensated"
	OutcomeCompensationFailed = "compensation_failed"
)

// Observer is told of the runner's work (telemetry.Metrics implements it). Its methods
// must be safe for concurrent use and must not block.
type Observer interface {
	// SagaStep is one run of a step or compensation, with its outcome and duration.
	SagaStep(sagaType, step, outcome string, d time.Duration)
	// SagaConflict is an append that lost to a concurrent one.
	SagaConflict(sagaType string)
}

func newTracer(tp trace.TracerProvider) trace.Tracer {
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	return tp.Tracer(TracerName)
}

// traceContext returns ctx's W3C trace context, or nil when ctx has no valid span.
func traceContext(ctx context.Context) map[string]string {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return nil
	}
	c := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, c)
	return c
}

// stampTrace sets ctx's trace context on p's events that have none.
func stampTrace(ctx context.Context, p *pending) {
	tc := traceContext(ctx)
	if tc == nil {
		return
	}
	for i, ev := range p.events {
		if ev.TraceContext == nil {
			ev.TraceContext = tc
			p.decs[i].TraceContext = tc
		}
	}
}

// inSagaTrace returns ctx with the saga's trace (st.Trace) as its remote parent, unless
// ctx already has a span of its own.
func inSagaTrace(ctx context.Context, st *sagaState) context.Context {
	if len(st.Trace) == 0 || trace.SpanContextFromContext(ctx).IsValid() {
		return ctx
	}
	return propagation.TraceContext{}.Extract(ctx, propagation.MapCarrier(st.Trace))
}

// stepRun is one traced, observed run of a step.
type stepRun struct {
	e        *Engine
	span     trace.Span
	sagaType string
	step     string
	comp     bool
	start    time.Time
}

// startStep starts the span of a run of step (attempt; comp: its compensation).
func (e *Engine) startStep(ctx context.Context, sagaID, sagaType, step string, attempt int, comp bool) (context.Context, *stepRun) {
	name := "saga.step " + sagaType + "/" + step
	if comp {
		name = "saga.compensate " + sagaType + "/" + step
	}
	ctx, span := e.tracer.Start(ctx, name, trace.WithAttributes(AttrSagaID.String(sagaID), AttrSagaType.String(sagaType),
		AttrStep.String(step), AttrAttempt.Int(attempt)))
	return ctx, &stepRun{e: e, span: span, sagaType: sagaType, step: step, comp: comp, start: time.Now()}
}

// end ends the run with the step's error (nil: it completed).
func (r *stepRun) end(err error) {
	outcome := OutcomeCompleted
	switch {
	case err == nil && r.comp:
		outcome = OutcomeCompensated
	case err == nil:
	case errors.Is(err, ErrWaiting) && !r.comp:
		outcome = OutcomeWaiting
	case r.comp:
		outcome = OutcomeCompensationFailed
	default:
		outcome = OutcomeFailed
	}
	r.span.SetAttributes(AttrOutcome.String(outcome))
	if outcome == OutcomeFailed || outcome == OutcomeCompensationFailed {
		r.span.RecordError(err)
		r.span.SetAttributes(command.AttrTransient.Bool(command.IsTransient(err)))
		r.span.SetStatus(codes.Error, err.Error())
	}
	r.span.End()
	if o := r.e.cfg.Observer; o != nil {
		o.SagaStep(r.sagaType, r.step, outcome, time.Since(r.start))
	}
}

// conflict reports a lost append of a saga of sagaType.
func (e *Engine) conflict(sagaType string) {
	if e.cfg.Observer != nil {
		e.cfg.Observer.SagaConflict(sagaType)
	}
}
