package command

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"sync"
)

// Command is a request to change the world. Implementations are plain structs that
// marshal to JSON (the outbox stores them that way).
type Command interface {
	// CommandType names the command, e.g. "job.complete". Unique per Go type.
	CommandType() string
	// IdempotencyKey identifies this request; the same key means the same effect.
	// Saga steps use "saga id/step/attempt". Empty disables idempotency.
	IdempotencyKey() string
}

// Handler handles commands of type C and returns a result of type R.
// Handlers must be safe for concurrent use and may dispatch other commands.
type Handler[C Command, R any] interface {
	Handle(ctx context.Context, cmd C) (R, error)
}

// HandlerFunc adapts a function to a Handler.
type HandlerFunc[C Command, R any] func(ctx context.Context, cmd C) (R, error)

// Handle calls f.
func (f HandlerFunc[C, R]) Handle(ctx context.Context, cmd C) (R, error) { return f(ctx, cmd) }

// Dispatcher is the erased dispatch path. Middleware wraps a Dispatcher.
// Implementations must be safe for concurrent use.
type Dispatcher interface {
	DispatchAny(ctx context.Context, cmd Command) (any, error)
}

// DispatcherFunc adapts a function to a Dispatcher.
type DispatcherFunc func(ctx context.Context, cmd Command) (any, error)

// DispatchAny calls f.
func (f DispatcherFunc) DispatchAny(ctx context.Context, cmd Command) (any, error) {
	return f(ctx, cmd)
}

// Middleware decorates a Dispatcher.
type Middleware func(next Dispatcher) Dispatcher

// Chain applies middleware so that the first one listed is the outermost.
func Chain(d Dispatcher, mw ...Middleware) Dispatcher {
	for i := len(mw) - 1; i >= 0; i-- {
		d = mw[i](d)
	}
	return d
}

// Dispatch sends cmd through d and returns its result as R. A result of another type
// is an ErrTypeMismatch error (the handler's value is not lost: it is in the error).
func Dispatch[R any](ctx context.Context, d Dispatcher, cmd Command) (R, error) {
	var zero R
	v, err := d.DispatchAny(ctx, cmd)
	if err != nil {
		return zero, err
	}
	if v == nil && isNilable(reflect.TypeFor[R]()) {
		return zero, nil // a nil pointer, map, slice… result
	}
	r, ok := v.(R)
	if !ok {
		return zero, &TypeMismatchError{CommandType: cmd.CommandType(), Want: reflect.TypeFor[R]().String(), Got: fmt.Sprintf("%T", v)}
	}
	return r, nil
}

func isNilable(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Pointer, reflect.Interface, reflect.Map, reflect.Slice, reflect.Func, reflect.Chan:
		return true
	}
	return false
}

// entry is one registered handler in erased form.
type entry struct {
	cmdType    reflect.Type
	resultType reflect.Type
	handle     func(ctx context.Context, cmd Command) (any, error)
	decode     func(payload []byte) (Command, error)
	decodeRes  func(payload []byte) (any, error)
}

// Bus is the in-process command bus: a registry of handlers keyed by command type.
// Registration happens at start-up; dispatch takes only a read lock to find the handler
// and holds no lock while the handler runs, so dispatches run concurrently and a handler
// may dispatch another command.
type Bus struct {
	mu       sync.RWMutex
	handlers map[string]*entry
}

// NewBus returns an empty bus.
func NewBus() *Bus { return &Bus{handlers: map[string]*entry{}} }

// Register adds h as the handler of C. It panics if C's type already has a handler,
// because two handlers for one command is a programming error found at start-up.
// CommandType is called on C's zero value (a new T when C is *T), so it must return a
// constant.
func Register[C Command, R any](b *Bus, h Handler[C, R]) {
	typ := commandTypeOf[C]()
	e := &entry{
		cmdType:    reflect.TypeFor[C](),
		resultType: reflect.TypeFor[R](),
		handle: func(ctx context.Context, cmd Command) (any, error) {
			c, ok := cmd.(C)
			if !ok {
				return nil, &TypeMismatchError{CommandType: typ, Want: reflect.TypeFor[C]().String(), Got: fmt.Sprintf("%T", cmd)}
			}
			r, err := h.Handle(ctx, c)
			if err != nil {
				return nil, &HandlerError{CommandType: typ, Key: cmd.IdempotencyKey(), Err: err}
			}
			return r, nil
		},
		decode: func(payload []byte) (Command, error) {
			var c C
			if err := json.Unmarshal(payload, &c); err != nil {
				return nil, fmt.Errorf("command: decode %s: %w", typ, err)
			}
			return c, nil
		},
		decodeRes: func(payload []byte) (any, error) {
			var r R
			if err := json.Unmarshal(payload, &r); err != nil {
				return nil, fmt.Errorf("command: decode result of %s: %w", typ, err)
			}
			return r, nil
		},
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, dup := b.handlers[typ]; dup {
		panic(fmt.Sprintf("command: handler for %q registered twice", typ))
	}
	b.handlers[typ] = e
}

// commandTypeOf returns the CommandType of C's zero value, allocating one when C is a
// pointer type so that a pointer receiver is never nil.
func commandTypeOf[C Command]() string {
	var zero C
	if t := reflect.TypeFor[C](); t.Kind() == reflect.Pointer {
		zero = reflect.New(t.Elem()).Interface().(C)
	}
	return zero.CommandType()
}

func (b *Bus) lookup(typ string) (*entry, error) {
	b.mu.RLock()
	e, ok := b.handlers[typ]
	b.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrHandlerNotFound, typ)
	}
	return e, nil
}

// DispatchAny runs the handler registered for cmd's type.
func (b *Bus) DispatchAny(ctx context.Context, cmd Command) (any, error) {
	e, err := b.lookup(cmd.CommandType())
	if err != nil {
		return nil, err
	}
	return e.handle(ctx, cmd)
}

// Decode turns a stored payload back into the registered command type (used by the
// outbox relay).
func (b *Bus) Decode(cmdType string, payload []byte) (Command, error) {
	e, err := b.lookup(cmdType)
	if err != nil {
		return nil, err
	}
	return e.decode(payload)
}

// DecodeResult turns a stored result back into the handler's result type (used by the
// idempotency middleware to answer a repeated key).
func (b *Bus) DecodeResult(cmdType string, payload []byte) (any, error) {
	e, err := b.lookup(cmdType)
	if err != nil {
		return nil, err
	}
	return e.decodeRes(payload)
}

// Types lists the registered command types, sorted.
func (b *Bus) Types() []string {
	b.mu.RLock()
	defer b.mu.RUnlock()
	out := make([]string, 0, len(b.handlers))
	for t := range b.handlers {
		out = append(out, t)
	}
	slices.Sort(out)
	return out
}

// ResultType returns the Go type a handler of cmdType returns.
func (b *Bus) ResultType(cmdType string) (reflect.Type, error) {
	e, err := b.lookup(cmdType)
	if err != nil {
		return nil, err
	}
	return e.resultType, nil
}
