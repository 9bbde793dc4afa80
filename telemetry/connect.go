package telemetry

import (
	"context"
	"errors"
	"strings"
	"time"

	"connectrpc.com/connect"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// TracerName is the instrumentation name of the spans this package starts.
const TracerName = "github.com/hodei-jobs/hodei/telemetry"

// Interceptor returns the API's Connect interceptor: every unary call is a server span
// named by its procedure (its parent is the caller's traceparent header, if any) and
// every call, unary or streaming, is counted in m by procedure and code, unary ones with
// their duration. Streams get no span: they last as long as a worker or a watcher.
// tp nil is the global provider; m nil counts nothing.
func Interceptor(m *Metrics, tp trace.TracerProvider) connect.Interceptor {
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	return &interceptor{m: m, tracer: tp.Tracer(TracerName)}
}

type interceptor struct {
	m      *Metrics
	tracer trace.Tracer
}

// codeOf is the code label of err: "ok", or the Connect (= gRPC) code's name.
func codeOf(err error) string {
	if err == nil {
		return "ok"
	}
	return connect.CodeOf(err).String()
}

func (i *interceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IsClient {
			return next(ctx, req)
		}
		proc := req.Spec().Procedure
		start := time.Now()
		ctx = propagation.TraceContext{}.Extract(ctx, propagation.HeaderCarrier(req.Header()))
		service, method := splitProcedure(proc)
		ctx, span := i.tracer.Start(ctx, strings.TrimPrefix(proc, "/"), trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(attribute.String("rpc.system", "connect_rpc"),
				attribute.String("rpc.service", service), attribute.String("rpc.method", method)))
		res, err := next(ctx, req)
		code := codeOf(err)
		span.SetAttributes(attribute.String("rpc.connect_rpc.error_code", code))
		if err != nil {
			span.RecordError(err)
			if serverFault(err) {
				span.SetStatus(codes.Error, err.Error())
			}
		}
		span.End()
		i.m.APIRequest(proc, code, max(time.Since(start), time.Nanosecond))
		return res, err
	}
}

func (i *interceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i *interceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		err := next(ctx, conn)
		i.m.APIRequest(conn.Spec().Procedure, codeOf(err), 0)
		return err
	}
}

// serverFault reports whether err is the server's fault (the span's status is Error
// for those only, as the RPC semantic conventions ask of servers).
func serverFault(err error) bool {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return true
	}
	switch ce.Code() {
	case connect.CodeUnknown, connect.CodeDeadlineExceeded, connect.CodeUnimplemented, connect.CodeInternal,
		connect.CodeUnavailable, connect.CodeDataLoss:
		return true
	}
	return false
}

// splitProcedure splits "/pkg.Service/Method".
func splitProcedure(p string) (service, method string) {
	p = strings.TrimPrefix(p, "/")
	service, method, _ = strings.Cut(p, "/")
	return service, method
}

// ClientInterceptor returns a Connect client interceptor that sends ctx's trace
// context as the traceparent header of every call (unary and streaming).
func ClientInterceptor() connect.Interceptor { return clientInterceptor{} }

type clientInterceptor struct{}

func (clientInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IsClient {
			propagation.TraceContext{}.Inject(ctx, propagation.HeaderCarrier(req.Header()))
		}
		return next(ctx, req)
	}
}

func (clientInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		propagation.TraceContext{}.Inject(ctx, propagation.HeaderCarrier(conn.RequestHeader()))
		return conn
	}
}

func (clientInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}
