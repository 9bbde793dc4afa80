package command_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/hodei-jobs/hodei/command"
)

func TestLogging(t *testing.T) {
	var buf bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	final := errors.New("disk full")
	d := command.Logging(logger)(command.DispatcherFunc(func(_ context.Context, c command.Command) (any, error) {
		switch c.(echo).Text {
		case "fail":
			return nil, final
		case "flaky":
			return nil, command.Transient(errors.New("timeout"))
		}
		return "ok", nil
	}))
	ctx := context.Background()
	if _, err := d.DispatchAny(ctx, echo{Text: "fine", Key: "k-ok"}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.DispatchAny(ctx, echo{Text: "fail", Key: "k-fail"}); !errors.Is(err, final) {
		t.Fatalf("err = %v, want the handler's error unchanged", err)
	}
	if _, err := d.DispatchAny(ctx, echo{Text: "flaky", Key: "k-flaky"}); !command.IsTransient(err) {
		t.Fatalf("err = %v, want transient", err)
	}

	var recs []map[string]any
	for line := range strings.SplitSeq(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		recs = append(recs, m)
	}
	if len(recs) != 3 {
		t.Fatalf("got %d records, want 3:\n%s", len(recs), buf.String())
	}
	want := []struct{ level, key, outcome, err string }{
		{"DEBUG", "k-ok", "ok", ""},
		{"ERROR", "k-fail", "error", "disk full"},
		{"WARN", "k-flaky", "error", "timeout"},
	}
	for i, w := range want {
		r := recs[i]
		if r["level"] != w.level || r[command.LogKeyType] != "test.echo" || r[command.LogKeyKey] != w.key || r[command.LogKeyOutcome] != w.outcome {
			t.Errorf("record %d = %v, want level %s type test.echo key %s outcome %s", i, r, w.level, w.key, w.outcome)
		}
		if _, ok := r[command.LogKeyDuration].(float64); !ok {
			t.Errorf("record %d has no numeric %s: %v", i, command.LogKeyDuration, r)
		}
		gotErr, _ := r[command.LogKeyError].(string)
		if w.err == "" && gotErr != "" || w.err != "" && !strings.Contains(gotErr, w.err) {
			t.Errorf("record %d error = %q, want %q", i, gotErr, w.err)
		}
	}
}

func TestLoggingLevelFilters(t *testing.T) {
	// At the default Info level a success writes nothing; a failure still does.
	var buf bytes.Buffer
	d := command.Logging(slog.New(slog.NewTextHandler(&buf, nil)))(newEchoBus(t))
	if _, err := d.DispatchAny(context.Background(), echo{Text: "x"}); err != nil {
		t.Fatal(err)
	}
	if buf.Len() != 0 {
		t.Fatalf("success logged at Info: %s", buf.String())
	}
	if _, err := d.DispatchAny(context.Background(), other{}); err == nil {
		t.Fatal("unregistered command succeeded")
	}
	if !strings.Contains(buf.String(), "test.other") {
		t.Fatalf("failure not logged: %q", buf.String())
	}
}
