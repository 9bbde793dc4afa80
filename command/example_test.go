package command_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/hodei-jobs/hodei/command"
)

// Greet is a command: a plain JSON-encodable struct naming its type and key.
type Greet struct {
	Name string `json:"name"`
	Key  string `json:"key"`
}

func (Greet) CommandType() string      { return "example.greet" }
func (g Greet) IdempotencyKey() string { return g.Key }

// Example registers a typed handler, wraps the bus in middleware and dispatches with a
// typed result. The handler fails once with a transient error; Retry runs it again, and
// Logging, the outermost layer, records the final outcome. In production Idempotency
// (over a store.Store) and Tracing join the chain: logging, tracing, retry, idempotency.
func Example() {
	bus := command.NewBus()
	calls := 0
	command.Register(bus, command.HandlerFunc[Greet, string](func(ctx context.Context, g Greet) (string, error) {
		calls++
		if calls == 1 {
			return "", command.Transient(errors.New("greeter busy"))
		}
		return "hello " + g.Name, nil
	}))

	logger := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
		Level: slog.LevelDebug,
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr { // stable output
			if a.Key == slog.TimeKey || a.Key == command.LogKeyDuration {
				return slog.Attr{}
			}
			return a
		},
	}))
	noSleep := func(context.Context, time.Duration) error { return nil }
	d := command.Chain(bus,
		command.Logging(logger), // outermost: one record per dispatch
		command.Retry(command.RetryConfig{MaxAttempts: 3, Sleep: noSleep}),
	)

	got, err := command.Dispatch[string](context.Background(), d, Greet{Name: "Ana", Key: "greet-1"})
	fmt.Println(got, err, "after", calls, "calls")

	_, err = command.Dispatch[int](context.Background(), d, Greet{Name: "Bo"})
	fmt.Println(errors.Is(err, command.ErrTypeMismatch))
	// Output:
	// level=DEBUG msg="command dispatched" command.type=example.greet command.key=greet-1 outcome=ok
	// hello Ana <nil> after 2 calls
	// level=DEBUG msg="command dispatched" command.type=example.greet command.key="" outcome=ok
	// true
}
