package command_test

import (
	"context"
	"errors"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/hodei-jobs/hodei/command"
)

func TestTracing(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })

	boom := errors.New("boom")
	b := command.NewBus()
	tracing := command.Tracing(tp)
	var d command.Dispatcher
	command.Register(b, command.HandlerFunc[*ping, int](func(ctx context.Context, p *ping) (int, error) {
		if p.N < 0 {
			return 0, command.Transient(boom)
		}
		return p.N, nil
	}))
	command.Register(b, command.HandlerFunc[echo, echoResult](func(ctx context.Context, c echo) (echoResult, error) {
		if !trace.SpanContextFromContext(ctx).IsValid() {
			return echoResult{}, errors.New("handler context has no span")
		}
		n, err := command.Dispatch[int](ctx, d, &ping{N: len(c.Text)}) // nested: a child span
		return echoResult{Text: c.Text, Calls: n}, err
	}))
	d = command.Chain(b, tracing)

	ctx := context.Background()
	if _, err := command.Dispatch[echoResult](ctx, d, echo{Text: "hey", Key: "key-1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := command.Dispatch[int](ctx, d, &ping{N: -1}); !errors.Is(err, boom) {
		t.Fatalf("err = %v, want boom", err)
	}

	spans := rec.Ended()
	if len(spans) != 3 {
		t.Fatalf("got %d spans, want 3", len(spans))
	}
	child, parent, failed := spans[0], spans[1], spans[2]
	if parent.Name() != "command test.echo" || child.Name() != "command test.ping" || failed.Name() != "command test.ping" {
		t.Fatalf("span names %q %q %q", child.Name(), parent.Name(), failed.Name())
	}
	if child.Parent().SpanID() != parent.SpanContext().SpanID() {
		t.Error("nested dispatch is not a child span")
	}
	attrs := attrMap(parent.Attributes())
	if attrs[command.AttrType] != "test.echo" || attrs[command.AttrKey] != "key-1" {
		t.Errorf("parent attributes = %v", attrs)
	}
	if parent.Status().Code != codes.Unset || len(parent.Events()) != 0 {
		t.Errorf("successful span has status %v and %d events", parent.Status(), len(parent.Events()))
	}
	if failed.Status().Code != codes.Error || failed.Status().Description == "" {
		t.Errorf("failed span status = %+v, want Error with a description", failed.Status())
	}
	if a := attrMap(failed.Attributes()); a[command.AttrTransient] != "true" {
		t.Errorf("failed span attributes = %v, want transient=true", a)
	}
	var sawException bool
	for _, ev := range failed.Events() {
		if ev.Name == "exception" {
			sawException = true
		}
	}
	if !sawException {
		t.Error("the error was not recorded as an exception event")
	}
}

func attrMap(kvs []attribute.KeyValue) map[attribute.Key]string {
	m := map[attribute.Key]string{}
	for _, kv := range kvs {
		m[kv.Key] = kv.Value.Emit()
	}
	return m
}
