package telemetry

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Env is how the process reads its environment (os.Getenv in production).
type Env func(string) string

// TracingEnabled reports whether the OTEL_* variables of env ask for traces: an OTLP
// endpoint is set, and neither OTEL_SDK_DISABLED=true nor OTEL_TRACES_EXPORTER=none.
func TracingEnabled(env Env) bool {
	if strings.EqualFold(env("OTEL_SDK_DISABLED"), "true") || strings.EqualFold(env("OTEL_TRACES_EXPORTER"), "none") {
		return false
	}
	return env("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// Tracing is a process's trace pipeline. Provider is a no-op when tracing is off.
type Tracing struct {
	Provider trace.TracerProvider
	// Enabled says an exporter is installed.
	Enabled  bool
	shutdown func(context.Context) error
}

// Shutdown flushes the spans not yet exported and stops the exporter. It is a no-op
// when tracing is off.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t == nil || t.shutdown == nil {
		return nil
	}
	return t.shutdown(ctx)
}

// SetupTracing builds the trace pipeline the OTEL_* variables of env describe (see the
// package doc), with service as the service.name unless OTEL_SERVICE_NAME sets another,
// and installs it, with the W3C trace context and baggage propagators, as the
// OpenTelemetry globals. When tracing is off it installs only the propagators and
// returns a Tracing whose Provider is a no-op.
func SetupTracing(ctx context.Context, service string, env Env) (*Tracing, error) {
	if env == nil {
		env = os.Getenv
	}
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	if !TracingEnabled(env) {
		return &Tracing{Provider: noop.NewTracerProvider()}, nil
	}
	proto := env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if proto == "" {
		proto = env("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	var (
		exp *otlptrace.Exporter
		err error
	)
	switch proto {
	case "", "http/protobuf":
		exp, err = otlptracehttp.New(ctx)
	case "grpc":
		exp, err = otlptracegrpc.New(ctx)
	default:
		return nil, fmt.Errorf("telemetry: OTEL_EXPORTER_OTLP_PROTOCOL %q: want http/protobuf or grpc", proto)
	}
	if err != nil {
		return nil, fmt.Errorf("telemetry: OTLP trace exporter: %w", err)
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", service)),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES win
		resource.WithTelemetrySDK(),
		resource.WithHost(),
		resource.WithProcessPID(),
	)
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, fmt.Errorf("telemetry: resource: %w", err)
	}
	// The sampler comes from OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG (default
	// parentbased_always_on), read by the SDK.
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	return &Tracing{Provider: tp, Enabled: true, shutdown: tp.Shutdown}, nil
}

// WorkerEnv returns the OTEL_* variables of env as KEY=VALUE entries for the workers a
// server starts (environ is os.Environ()), so that their agents export to the same
// endpoint with the same settings, under the service name hodei-worker. It returns nil
// when tracing is off.
func WorkerEnv(environ []string, env Env) []string {
	if env == nil {
		env = os.Getenv
	}
	if !TracingEnabled(env) {
		return nil
	}
	var out []string
	for _, kv := range environ {
		k, _, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(k, "OTEL_") || k == "OTEL_SERVICE_NAME" {
			continue
		}
		out = append(out, kv)
	}
	return append(out, "OTEL_SERVICE_NAME="+WorkerServiceName)
}

// Service names of the two kinds of process.
const (
	ServerServiceName = "hodei"
	WorkerServiceName = "hodei-worker"
)

// EnvTraceParent is the environment variable that hands a worker the trace context of
// the job it was created for (W3C traceparent), so that its registration joins the
// job's trace.
const EnvTraceParent = "TRACEPARENT"

// Inject returns ctx's W3C trace context as a map (traceparent, tracestate), or nil
// when ctx carries no valid span context.
func Inject(ctx context.Context) map[string]string {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return nil
	}
	c := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, c)
	if len(c) == 0 {
		return nil
	}
	return c
}

// Extract returns ctx with the trace context tc as its remote parent (ctx itself when
// tc is empty or invalid).
func Extract(ctx context.Context, tc map[string]string) context.Context {
	if len(tc) == 0 {
		return ctx
	}
	return propagation.TraceContext{}.Extract(ctx, propagation.MapCarrier(tc))
}

// TraceID returns the trace id of ctx's span, or "" when it has none.
func TraceID(ctx context.Context) string {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return ""
	}
	return sc.TraceID().String()
}

// NewTraceParent returns a new W3C traceparent (random trace and span ids, sampled)
// and its trace id: a client that has no tracer of its own (the CLI) sends it so that
// the server's spans of its request start a trace whose id the client knows.
func NewTraceParent() (traceparent, traceID string, err error) {
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", "", fmt.Errorf("telemetry: new trace id: %w", err)
	}
	tid, sid := hex.EncodeToString(b[:16]), hex.EncodeToString(b[16:])
	return "00-" + tid + "-" + sid + "-01", tid, nil
}
