// Package commandtest holds contract checks for command types, in the style of
// net/http/httptest. Every package that defines commands calls them from its tests with a
// Bus wired like production (handlers over test stores):
//
//	commandtest.CheckRegistered(t, bus, StartJob{}, CancelJob{})
//	commandtest.CheckRoundTrip(t, bus, StartJob{ID: "j1", Key: "k"}, StartJobResult{ID: "j1"})
//	commandtest.CheckTypeMismatch(t, bus, StartJob{ID: "j2"})
//
// CheckEveryCommand runs the round-trip and type-mismatch checks over every command a
// production bus has a handler for, one commandtest.For[C, R]() case per type with
// every field filled (Fill), and fails for a registered command without a case:
//
//	commandtest.CheckEveryCommand(t, bus, commandtest.For[StartJob, StartJobResult](), …)
//
// The checks report with t.Errorf and return whether they passed, so one test can list
// every command and see every failure.
package commandtest

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"github.com/hodei-jobs/hodei/command"
)

// CheckRegistered checks that every given command's type has a handler on b, and that
// the handler was registered for the command's Go type (decoding its JSON gives back the
// same Go type).
func CheckRegistered(t testing.TB, b *command.Bus, cmds ...command.Command) bool {
	t.Helper()
	ok := true
	for _, c := range cmds {
		typ := c.CommandType()
		payload, err := json.Marshal(c)
		if err != nil {
			t.Errorf("command %s (%T): encode: %v", typ, c, err)
			ok = false
			continue
		}
		got, err := b.Decode(typ, payload)
		switch {
		case errors.Is(err, command.ErrHandlerNotFound):
			t.Errorf("command %s (%T) has no registered handler", typ, c)
			ok = false
		case err != nil:
			t.Errorf("command %s (%T): decode: %v", typ, c, err)
			ok = false
		case reflect.TypeOf(got) != reflect.TypeOf(c):
			t.Errorf("command %s: handler registered for %T, but the command is a %T", typ, got, c)
			ok = false
		}
	}
	return ok
}

// CheckRoundTrip checks one command end to end through the erased path:
//
//   - the registered result type is R;
//   - b.DispatchAny(cmd) succeeds with a result of type R equal to want (reflect.DeepEqual);
//   - cmd encodes to JSON, b.Decode gives back the same command (same Go type, same JSON),
//     and dispatching the decoded command with command.Dispatch[R] gives want again (the
//     path the outbox relay takes);
//   - want survives b.DecodeResult of its JSON (the path the idempotency middleware takes
//     to answer a repeated key).
//
// The handler runs twice, so give cmd an empty idempotency key or a bus without the
// idempotency middleware, and handlers whose second run gives the same result.
func CheckRoundTrip[R any](t testing.TB, b *command.Bus, cmd command.Command, want R) bool {
	t.Helper()
	typ := cmd.CommandType()
	ctx := context.Background()
	ok := true
	fail := func(format string, args ...any) {
		t.Helper()
		t.Errorf("command %s: "+format, append([]any{typ}, args...)...)
		ok = false
	}

	rt, err := b.ResultType(typ)
	if err != nil {
		fail("%v", err)
		return false
	}
	if wantType := reflect.TypeFor[R](); rt != wantType {
		fail("registered result type is %v, want %v", rt, wantType)
	}

	got, err := b.DispatchAny(ctx, cmd)
	if err != nil {
		fail("dispatch: %v", err)
		return false
	}
	if r, isR := got.(R); !isR && got != nil {
		fail("erased dispatch returned %T, want %v", got, reflect.TypeFor[R]())
	} else if !reflect.DeepEqual(r, want) {
		fail("erased dispatch returned %#v, want %#v", got, want)
	}

	payload, err := json.Marshal(cmd)
	if err != nil {
		fail("encode: %v", err)
		return false
	}
	decoded, err := b.Decode(typ, payload)
	if err != nil {
		fail("decode: %v", err)
		return false
	}
	if reflect.TypeOf(decoded) != reflect.TypeOf(cmd) {
		fail("decoded to %T, want %T", decoded, cmd)
		return false
	}
	if again, err := json.Marshal(decoded); err != nil || string(again) != string(payload) {
		fail("JSON round trip changed the command: %s, then %s (err %v)", payload, again, err)
	}
	if decoded.IdempotencyKey() != cmd.IdempotencyKey() {
		fail("JSON round trip changed the idempotency key: %q, then %q", cmd.IdempotencyKey(), decoded.IdempotencyKey())
	}
	typed, err := command.Dispatch[R](ctx, b, decoded)
	if err != nil {
		fail("typed dispatch of the decoded command: %v", err)
	} else if !reflect.DeepEqual(typed, want) {
		fail("typed dispatch of the decoded command returned %#v, want %#v", typed, want)
	}

	resPayload, err := json.Marshal(want)
	if err != nil {
		fail("encode result: %v", err)
		return false
	}
	res, err := b.DecodeResult(typ, resPayload)
	if err != nil {
		fail("decode result: %v", err)
	} else if !reflect.DeepEqual(res, any(want)) && !(res == nil && isNil(want)) {
		fail("result JSON round trip gave %#v, want %#v", res, want)
	}
	return ok
}

// notAResult is a type no handler returns.
type notAResult struct{ _ [0]func() }

// CheckTypeMismatch checks that asking for the wrong result type is an
// command.ErrTypeMismatch error carrying a *command.TypeMismatchError (the handler runs
// once).
func CheckTypeMismatch(t testing.TB, b *command.Bus, cmd command.Command) bool {
	t.Helper()
	_, err := command.Dispatch[notAResult](context.Background(), b, cmd)
	var tm *command.TypeMismatchError
	switch {
	case err == nil:
		t.Errorf("command %s: Dispatch with a wrong result type succeeded", cmd.CommandType())
		return false
	case !errors.Is(err, command.ErrTypeMismatch) || !errors.As(err, &tm):
		t.Errorf("command %s: Dispatch with a wrong result type: err = %v, want a *TypeMismatchError", cmd.CommandType(), err)
		return false
	}
	return true
}

func isNil(v any) bool {
	if v == nil {
		return true
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Pointer, reflect.Interface, reflect.Map, reflect.Slice, reflect.Func, reflect.Chan:
		return rv.IsNil()
	}
	return false
}
