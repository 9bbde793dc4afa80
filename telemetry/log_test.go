package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/trace"
)

// A JSON logger's records are one JSON object per line; those logged with a context
// holding a span carry its trace_id and span_id, the others none.
func TestNewLoggerJSONCarriesTrace(t *testing.T) {
	var buf bytes.Buffer
	log, err := NewLogger(&buf, LogJSON, slog.LevelInfo)
	if err != nil {
		t.Fatal(err)
	}
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	ctx := trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled}))
	log.With("component", "test").InfoContext(ctx, "in a span", "n", 1)
	log.Info("outside")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2: %q", len(lines), buf.String())
	}
	var in, out map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &in); err != nil {
		t.Fatalf("line 1 is not JSON: %v", err)
	}
	if err := json.Unmarshal([]byte(lines[1]), &out); err != nil {
		t.Fatalf("line 2 is not JSON: %v", err)
	}
	if in["trace_id"] != tid.String() || in["span_id"] != sid.String() || in["component"] != "test" || in["msg"] != "in a span" {
		t.Errorf("record in a span: %v", in)
	}
	if _, ok := out["trace_id"]; ok {
		t.Errorf("record without a span has a trace_id: %v", out)
	}
}

// The text format carries them too; an unknown format is refused naming the flag.
func TestNewLoggerTextAndBadFormat(t *testing.T) {
	var buf bytes.Buffer
	log, err := NewLogger(&buf, LogText, slog.LevelInfo)
	if err != nil {
		t.Fatal(err)
	}
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	ctx := trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid}))
	log.InfoContext(ctx, "x")
	if got := buf.String(); !strings.Contains(got, "trace_id="+tid.String()) || !strings.Contains(got, "span_id="+sid.String()) {
		t.Errorf("text record %q lacks trace_id and span_id", got)
	}
	if _, err := NewLogger(&buf, "yaml", slog.LevelInfo); err == nil || !strings.Contains(err.Error(), "--log-format") {
		t.Errorf("NewLogger(yaml) = %v, want an error naming --log-format", err)
	}
}
