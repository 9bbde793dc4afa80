package command_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/command"
)

// sleeps records the delays Retry asks for without sleeping.
type sleeps struct{ got []time.Duration }

func (s *sleeps) sleep(ctx context.Context, d time.Duration) error {
	s.got = append(s.got, d)
	return ctx.Err()
}

// flaky fails with the given errors in turn, then succeeds.
type flaky struct {
	errs  []error
	calls int
}

func (f *flaky) DispatchAny(_ context.Context, c command.Command) (any, error) {
	f.calls++
	if f.calls <= len(f.errs) {
		return nil, f.errs[f.calls-1]
	}
	return "done", nil
}

func TestRetryTransientThenSuccess(t *testing.T) {
	var s sleeps
	f := &flaky{errs: []error{command.Transient(errors.New("a")), command.Transient(errors.New("b"))}}
	d := command.Retry(command.RetryConfig{MaxAttempts: 5, BaseDelay: time.Second, MaxDelay: time.Minute, Jitter: -1, Sleep: s.sleep})(f)
	got, err := d.DispatchAny(context.Background(), echo{})
	if err != nil || got != "done" {
		t.Fatalf("DispatchAny = %v, %v", got, err)
	}
	if f.calls != 3 {
		t.Errorf("handler called %d times, want 3", f.calls)
	}
	if want := []time.Duration{time.Second, 2 * time.Second}; !equalDurations(s.got, want) {
		t.Errorf("sleeps = %v, want %v", s.got, want)
	}
}

func TestRetryNonTransientNotRetried(t *testing.T) {
	var s sleeps
	final := errors.New("final")
	f := &flaky{errs: []error{final}}
	d := command.Retry(command.RetryConfig{Sleep: s.sleep})(f)
	_, err := d.DispatchAny(context.Background(), echo{})
	if !errors.Is(err, final) || f.calls != 1 || len(s.got) != 0 {
		t.Fatalf("err %v, calls %d, sleeps %v; want final error, 1 call, no sleep", err, f.calls, s.got)
	}
}

func TestRetryExhausted(t *testing.T) {
	var s sleeps
	first, last := errors.New("first"), errors.New("last")
	f := &flaky{errs: []error{command.Transient(first), command.Transient(errors.New("mid")), command.Transient(last), nil}}
	d := command.Retry(command.RetryConfig{MaxAttempts: 3, Sleep: s.sleep})(f)
	_, err := d.DispatchAny(context.Background(), echo{})
	if !errors.Is(err, last) || errors.Is(err, first) {
		t.Fatalf("err = %v, want the last error", err)
	}
	if !command.IsTransient(err) {
		t.Error("the exhausted error lost its Transient mark (outer retry layers need it)")
	}
	if !strings.Contains(err.Error(), "3 attempts") {
		t.Errorf("err %q does not say how many attempts were made", err)
	}
	if f.calls != 3 || len(s.got) != 2 {
		t.Errorf("calls %d, sleeps %d; want 3 and 2", f.calls, len(s.got))
	}
}

func TestRetryStopsOnContextCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var s sleeps
	calls := 0
	boom := errors.New("boom")
	d := command.Retry(command.RetryConfig{MaxAttempts: 10, Sleep: s.sleep})(command.DispatcherFunc(
		func(context.Context, command.Command) (any, error) {
			calls++
			if calls == 2 {
				cancel()
			}
			return nil, command.Transient(boom)
		}))
	_, err := d.DispatchAny(ctx, echo{})
	if !errors.Is(err, context.Canceled) || !errors.Is(err, boom) {
		t.Fatalf("err = %v, want one matching context.Canceled and the last error", err)
	}
	if calls != 2 {
		t.Errorf("handler called %d times after cancel, want 2", calls)
	}
}

func TestRetryDefaultSleepRespectsContext(t *testing.T) {
	// The default Sleep must return when ctx ends, not after the (one hour) delay.
	ctx, cancel := context.WithCancel(context.Background())
	d := command.Retry(command.RetryConfig{BaseDelay: time.Hour, MaxDelay: time.Hour})(command.DispatcherFunc(
		func(context.Context, command.Command) (any, error) {
			cancel()
			return nil, command.Transient(errors.New("x"))
		}))
	done := make(chan error, 1)
	go func() { _, err := d.DispatchAny(ctx, echo{}); done <- err }()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("Retry slept through a cancelled context")
	}
}

func TestRetryConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg   command.RetryConfig
		field string
	}{
		{command.RetryConfig{MaxAttempts: -1}, "MaxAttempts"},
		{command.RetryConfig{BaseDelay: -time.Second}, "BaseDelay"},
		{command.RetryConfig{BaseDelay: time.Minute, MaxDelay: time.Second}, "MaxDelay"},
		{command.RetryConfig{Jitter: 1.5}, "Jitter"},
	} {
		func() {
			defer func() {
				r := recover()
				if r == nil || !strings.Contains(fmtAny(r), tc.field) {
					t.Errorf("Retry(%+v) panic = %v, want one naming %s", tc.cfg, r, tc.field)
				}
			}()
			command.Retry(tc.cfg)
		}()
	}
	// The zero value is valid.
	command.Retry(command.RetryConfig{})
}

func fmtAny(v any) string {
	if err, ok := v.(error); ok {
		return err.Error()
	}
	if s, ok := v.(string); ok {
		return s
	}
	return ""
}

func equalDurations(a, b []time.Duration) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestRetryAllRetriesEveryError(t *testing.T) {
	var s sleeps
	plain := errors.New("connection reset")
	f := &flaky{errs: []error{plain, plain}}
	d := command.Retry(command.RetryConfig{MaxAttempts: 3, BaseDelay: time.Second, MaxDelay: time.Minute, Jitter: -1,
		Sleep: s.sleep, RetryAll: true})(f)
	got, err := d.DispatchAny(context.Background(), echo{})
	if err != nil || got != "done" || f.calls != 3 {
		t.Fatalf("RetryAll: DispatchAny = %v, %v after %d calls; want done, nil, 3", got, err, f.calls)
	}
	if want := []time.Duration{time.Second, 2 * time.Second}; !equalDurations(s.got, want) {
		t.Errorf("sleeps = %v, want %v", s.got, want)
	}

	// Exhausted: the last plain error comes back, wrapped, not marked Transient.
	f = &flaky{errs: []error{plain, plain, plain}}
	d = command.Retry(command.RetryConfig{MaxAttempts: 3, Sleep: (&sleeps{}).sleep, RetryAll: true})(f)
	_, err = d.DispatchAny(context.Background(), echo{})
	if !errors.Is(err, plain) || command.IsTransient(err) || f.calls != 3 {
		t.Fatalf("RetryAll exhausted: err %v (transient %v) after %d calls; want the plain error after 3",
			err, command.IsTransient(err), f.calls)
	}

	// Off by default: the same error is final.
	f = &flaky{errs: []error{plain}}
	d = command.Retry(command.RetryConfig{Sleep: (&sleeps{}).sleep})(f)
	if _, err := d.DispatchAny(context.Background(), echo{}); !errors.Is(err, plain) || f.calls != 1 {
		t.Fatalf("default mode: err %v after %d calls; want the error after 1 call", err, f.calls)
	}
}
