package commandtest_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/command"
	"github.com/hodei-jobs/hodei/command/commandtest"
)

type greet struct {
	Name string    `json:"name"`
	At   time.Time `json:"at"`
}

func (greet) CommandType() string    { return "test.greet" }
func (greet) IdempotencyKey() string { return "" }

type greeting struct {
	Text string `json:"text"`
}

type lossy struct {
	Name   string `json:"name"`
	hidden int    // not encoded: the JSON round trip loses it
}

func (lossy) CommandType() string    { return "test.lossy" }
func (lossy) IdempotencyKey() string { return "" }

type unregistered struct{}

func (unregistered) CommandType() string    { return "test.unregistered" }
func (unregistered) IdempotencyKey() string { return "" }

// impostor claims greet's type name but is another Go type.
type impostor struct{}

func (impostor) CommandType() string    { return "test.greet" }
func (impostor) IdempotencyKey() string { return "" }

func newBus() *command.Bus {
	b := command.NewBus()
	command.Register(b, command.HandlerFunc[greet, greeting](func(_ context.Context, g greet) (greeting, error) {
		return greeting{Text: "hello " + g.Name}, nil
	}))
	command.Register(b, command.HandlerFunc[lossy, int](func(_ context.Context, l lossy) (int, error) {
		return l.hidden, nil
	}))
	return b
}

func TestChecksPass(t *testing.T) {
	b := newBus()
	at := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	commandtest.CheckRegistered(t, b, greet{}, lossy{})
	commandtest.CheckRoundTrip(t, b, greet{Name: "ana", At: at}, greeting{Text: "hello ana"})
	commandtest.CheckTypeMismatch(t, b, greet{Name: "x"})
}

// recorder is a testing.TB that records failures instead of failing the test.
type recorder struct {
	testing.TB
	errs []string
}

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func TestChecksFail(t *testing.T) {
	b := newBus()
	for _, tc := range []struct {
		name  string
		check func(tb testing.TB) bool
		want  string
	}{
		{"unregistered", func(tb testing.TB) bool { return commandtest.CheckRegistered(tb, b, greet{}, unregistered{}) }, "no registered handler"},
		{"impostor", func(tb testing.TB) bool { return commandtest.CheckRegistered(tb, b, impostor{}) }, "handler registered for"},
		{"wrong want", func(tb testing.TB) bool {
			return commandtest.CheckRoundTrip(tb, b, greet{Name: "ana"}, greeting{Text: "bye"})
		}, "want"},
		{"wrong result type", func(tb testing.TB) bool { return commandtest.CheckRoundTrip(tb, b, greet{Name: "ana"}, "hello ana") }, "result type"},
		{"lossy JSON", func(tb testing.TB) bool { return commandtest.CheckRoundTrip(tb, b, lossy{Name: "n", hidden: 7}, 7) }, "decoded command returned 0"},
		{"unregistered round trip", func(tb testing.TB) bool { return commandtest.CheckRoundTrip(tb, b, unregistered{}, 0) }, "no handler"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &recorder{TB: t}
			if tc.check(r) {
				t.Fatal("check passed, want a failure")
			}
			if len(r.errs) == 0 || !strings.Contains(strings.Join(r.errs, "\n"), tc.want) {
				t.Fatalf("failures %q do not mention %q", r.errs, tc.want)
			}
		})
	}
}

func TestCheckTypeMismatchFailsWithoutHandler(t *testing.T) {
	// A bus without the handler gives ErrHandlerNotFound, which is not a type mismatch.
	r := &recorder{TB: t}
	if commandtest.CheckTypeMismatch(r, command.NewBus(), greet{}) {
		t.Fatal("passed on a bus without the handler")
	}
	if len(r.errs) != 1 {
		t.Fatalf("failures = %q", r.errs)
	}
}
