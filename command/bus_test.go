package command_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/command"
)

// Test commands shared by the tests of this package.

type echo struct {
	Text string `json:"text"`
	Key  string `json:"key,omitempty"`
}

func (echo) CommandType() string      { return "test.echo" }
func (c echo) IdempotencyKey() string { return c.Key }

type echoResult struct {
	Text  string `json:"text"`
	Calls int    `json:"calls"`
}

type ping struct{ N int }

func (*ping) CommandType() string    { return "test.ping" }
func (*ping) IdempotencyKey() string { return "" }

// waitTimeout bounds every wait in these tests; it is generous because a failure, not
// success, is what waits for it.
const waitTimeout = 10 * time.Second

func TestRegisterTwicePanics(t *testing.T) {
	b := command.NewBus()
	h := command.HandlerFunc[echo, echoResult](func(context.Context, echo) (echoResult, error) { return echoResult{}, nil })
	command.Register(b, h)
	defer func() {
		r := recover()
		if r == nil {
			t.Fatal("second Register did not panic")
		}
		if msg := fmt.Sprint(r); !strings.Contains(msg, "test.echo") {
			t.Errorf("panic %q does not name the command type", msg)
		}
	}()
	command.Register(b, h)
}

func TestRegisterPointerCommand(t *testing.T) {
	b := command.NewBus()
	command.Register(b, command.HandlerFunc[*ping, int](func(_ context.Context, p *ping) (int, error) { return p.N + 1, nil }))
	got, err := command.Dispatch[int](context.Background(), b, &ping{N: 41})
	if err != nil || got != 42 {
		t.Fatalf("Dispatch = %d, %v; want 42, nil", got, err)
	}
	c, err := b.Decode("test.ping", []byte(`{"N":7}`))
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := c.(*ping); !ok || p.N != 7 {
		t.Fatalf("Decode = %#v, want &ping{N:7}", c)
	}
	if got := b.Types(); !reflect.DeepEqual(got, []string{"test.ping"}) {
		t.Errorf("Types = %v", got)
	}
}

func TestUnknownCommand(t *testing.T) {
	b := command.NewBus()
	_, err := b.DispatchAny(context.Background(), echo{Text: "x"})
	if !errors.Is(err, command.ErrHandlerNotFound) {
		t.Fatalf("err = %v, want ErrHandlerNotFound", err)
	}
	if _, err := b.Decode("nope", []byte(`{}`)); !errors.Is(err, command.ErrHandlerNotFound) {
		t.Errorf("Decode err = %v, want ErrHandlerNotFound", err)
	}
	if _, err := b.DecodeResult("nope", []byte(`{}`)); !errors.Is(err, command.ErrHandlerNotFound) {
		t.Errorf("DecodeResult err = %v, want ErrHandlerNotFound", err)
	}
	if _, err := b.ResultType("nope"); !errors.Is(err, command.ErrHandlerNotFound) {
		t.Errorf("ResultType err = %v, want ErrHandlerNotFound", err)
	}
}

func newEchoBus(t *testing.T) *command.Bus {
	t.Helper()
	b := command.NewBus()
	command.Register(b, command.HandlerFunc[echo, echoResult](func(_ context.Context, c echo) (echoResult, error) {
		return echoResult{Text: c.Text}, nil
	}))
	return b
}

func TestDispatchTyped(t *testing.T) {
	b := newEchoBus(t)
	got, err := command.Dispatch[echoResult](context.Background(), b, echo{Text: "hi"})
	if err != nil || got.Text != "hi" {
		t.Fatalf("Dispatch = %+v, %v", got, err)
	}
	rt, err := b.ResultType("test.echo")
	if err != nil || rt != reflect.TypeFor[echoResult]() {
		t.Errorf("ResultType = %v, %v", rt, err)
	}
}

func TestDispatchWrongResultType(t *testing.T) {
	b := newEchoBus(t)
	_, err := command.Dispatch[string](context.Background(), b, echo{Text: "hi"})
	if !errors.Is(err, command.ErrTypeMismatch) {
		t.Fatalf("err = %v, want ErrTypeMismatch", err)
	}
	var tm *command.TypeMismatchError
	if !errors.As(err, &tm) {
		t.Fatalf("err %T is not a *TypeMismatchError", err)
	}
	if tm.CommandType != "test.echo" || tm.Want != "string" || tm.Got != "command_test.echoResult" {
		t.Errorf("TypeMismatchError = %+v", tm)
	}
}

func TestDispatchNilResults(t *testing.T) {
	b := command.NewBus()
	command.Register(b, command.HandlerFunc[*ping, *echoResult](func(context.Context, *ping) (*echoResult, error) { return nil, nil }))
	got, err := command.Dispatch[*echoResult](context.Background(), b, &ping{})
	if err != nil || got != nil {
		t.Fatalf("Dispatch[*echoResult] = %v, %v; want nil, nil", got, err)
	}
	// An erased caller asking for any gets the typed nil back unchanged.
	v, err := command.Dispatch[any](context.Background(), b, &ping{})
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := v.(*echoResult); !ok || p != nil {
		t.Fatalf("Dispatch[any] = %#v", v)
	}
	// A nil result asked for as a non-nilable type is a mismatch, not a zero value.
	nilAny := command.DispatcherFunc(func(context.Context, command.Command) (any, error) { return nil, nil })
	if _, err := command.Dispatch[int](context.Background(), nilAny, &ping{}); !errors.Is(err, command.ErrTypeMismatch) {
		t.Fatalf("Dispatch[int] of untyped nil: err = %v, want ErrTypeMismatch", err)
	}
}

func TestHandlerError(t *testing.T) {
	boom := errors.New("boom")
	b := command.NewBus()
	command.Register(b, command.HandlerFunc[echo, echoResult](func(context.Context, echo) (echoResult, error) {
		return echoResult{}, command.Transient(boom)
	}))
	_, err := command.Dispatch[echoResult](context.Background(), b, echo{Text: "x", Key: "k1"})
	var he *command.HandlerError
	if !errors.As(err, &he) {
		t.Fatalf("err %T (%v) is not a *HandlerError", err, err)
	}
	if he.CommandType != "test.echo" || he.Key != "k1" {
		t.Errorf("HandlerError = %+v", he)
	}
	if !errors.Is(err, boom) {
		t.Error("HandlerError does not unwrap to the handler's error")
	}
	if !command.IsTransient(err) {
		t.Error("the Transient mark is lost through HandlerError")
	}
	if command.IsTransient(errors.New("x")) || command.Transient(nil) != nil {
		t.Error("Transient/IsTransient misbehave on plain or nil errors")
	}
}

// TestDispatchesRunConcurrently: each handler blocks until all n have started. With a
// lock held around handlers only one could start and the barrier would time out.
func TestDispatchesRunConcurrently(t *testing.T) {
	const n = 8
	var arrived sync.WaitGroup
	arrived.Add(n)
	all := make(chan struct{})
	go func() { arrived.Wait(); close(all) }()

	b := command.NewBus()
	command.Register(b, command.HandlerFunc[echo, echoResult](func(ctx context.Context, c echo) (echoResult, error) {
		arrived.Done()
		select {
		case <-all:
			return echoResult{Text: c.Text}, nil
		case <-time.After(waitTimeout):
			return echoResult{}, errors.New("not all dispatches started: handlers are serialised")
		}
	}))
	errs := make(chan error, n)
	for i := range n {
		go func() {
			_, err := command.Dispatch[echoResult](context.Background(), b, echo{Text: fmt.Sprint(i)})
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

// TestNestedDispatch: a handler dispatches another command on the same bus, which
// deadlocks if the bus holds its lock while a handler runs. The handler also waits for a
// concurrent Register to finish, which would block on any lock (even a read lock) held
// around the handler.
func TestNestedDispatch(t *testing.T) {
	b := command.NewBus()
	command.Register(b, command.HandlerFunc[*ping, int](func(_ context.Context, p *ping) (int, error) { return p.N * 2, nil }))
	command.Register(b, command.HandlerFunc[echo, echoResult](func(ctx context.Context, c echo) (echoResult, error) {
		registered := make(chan struct{})
		go func() {
			defer close(registered)
			command.Register(b, command.HandlerFunc[other, int](func(context.Context, other) (int, error) { return 0, nil }))
		}()
		select {
		case <-registered:
		case <-time.After(waitTimeout):
			return echoResult{}, errors.New("Register blocked while a handler runs: the bus holds its lock")
		}
		n, err := command.Dispatch[int](ctx, b, &ping{N: len(c.Text)})
		return echoResult{Text: c.Text, Calls: n}, err
	}))
	done := make(chan struct{})
	var (
		got echoResult
		err error
	)
	go func() {
		defer close(done)
		got, err = command.Dispatch[echoResult](context.Background(), b, echo{Text: "abc"})
	}()
	select {
	case <-done:
	case <-time.After(2 * waitTimeout):
		t.Fatal("nested dispatch deadlocked")
	}
	if err != nil || got.Calls != 6 {
		t.Fatalf("nested = %+v, %v; want Calls 6", got, err)
	}
}

type other struct{}

func (other) CommandType() string    { return "test.other" }
func (other) IdempotencyKey() string { return "" }

func TestChainOrder(t *testing.T) {
	var order []string
	mark := func(name string) command.Middleware {
		return func(next command.Dispatcher) command.Dispatcher {
			return command.DispatcherFunc(func(ctx context.Context, c command.Command) (any, error) {
				order = append(order, name+">")
				defer func() { order = append(order, "<"+name) }()
				return next.DispatchAny(ctx, c)
			})
		}
	}
	d := command.Chain(newEchoBus(t), mark("a"), mark("b"))
	if _, err := d.DispatchAny(context.Background(), echo{}); err != nil {
		t.Fatal(err)
	}
	if want := []string{"a>", "b>", "<b", "<a"}; !reflect.DeepEqual(order, want) {
		t.Errorf("order = %v, want %v", order, want)
	}
}
