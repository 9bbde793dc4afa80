package command

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hodei-jobs/hodei/store"
)

// RetryConfig configures the Retry middleware. The zero value is usable: setDefaults
// fills every zero field.
type RetryConfig struct {
	// MaxAttempts is the total number of calls, the first included (default 3).
	MaxAttempts int
	// BaseDelay is the delay after the first failure (default 100ms).
	BaseDelay time.Duration
	// MaxDelay caps the exponential delay before jitter (default 10s).
	MaxDelay time.Duration
	// Jitter spreads each delay by ±Jitter as a fraction, in [0, 1] (default 0.1).
	// Zero means the default; a negative value disables jitter.
	Jitter float64
	// Sleep waits d or until ctx ends, returning ctx's error in that case. Default: a
	// timer that respects ctx. Tests inject a recorder so that nothing really sleeps.
	Sleep func(ctx context.Context, d time.Duration) error
	// Rand returns a number in [0, 1) for the jitter. Default: math/rand/v2.
	Rand func() float64
	// RetryAll retries every error, not only those marked Transient (user story 50.7's
	// "retry everything" mode). Off by default: an error that is not Transient is
	// final, and retrying it usually repeats the same failure. Turn it on only for
	// commands whose handlers are idempotent and whose failures are not classified.
	RetryAll bool
}

func (c *RetryConfig) setDefaults() {
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 3
	}
	if c.BaseDelay == 0 {
		c.BaseDelay = 100 * time.Millisecond
	}
	if c.MaxDelay == 0 {
		c.MaxDelay = 10 * time.Second
	}
	if c.Jitter == 0 {
		c.Jitter = 0.1
	} else if c.Jitter < 0 {
		c.Jitter = 0
	}
	if c.Sleep == nil {
		c.Sleep = sleepCtx
	}
}

// Validate reports the first field out of range. It is meant for a config after
// setDefaults (Retry calls both).
func (c *RetryConfig) Validate() error {
	switch {
	case c.MaxAttempts < 1:
		return fmt.Errorf("command: RetryConfig.MaxAttempts must be at least 1, got %d", c.MaxAttempts)
	case c.BaseDelay < 0:
		return fmt.Errorf("command: RetryConfig.BaseDelay must not be negative, got %s", c.BaseDelay)
	case c.MaxDelay < c.BaseDelay:
		return fmt.Errorf("command: RetryConfig.MaxDelay (%s) must be at least BaseDelay (%s)", c.MaxDelay, c.BaseDelay)
	case c.Jitter < 0 || c.Jitter > 1:
		return fmt.Errorf("command: RetryConfig.Jitter must be in [0, 1], got %g", c.Jitter)
	}
	return nil
}

// Retry returns middleware that calls next again, after Backoff(n, BaseDelay,
// MaxDelay, Jitter), when it fails with an error marked Transient (any error with
// RetryAll). Other errors are returned at once. When the attempts are used up it
// returns the last error (wrapped, so errors.Is/As and IsTransient still see it). When
// ctx ends while waiting it stops and returns an error matching both ctx's error and
// the last error.
//
// Retry belongs outside Idempotency and outside any transaction (EdgeChain): each
// attempt then runs in a fresh transaction, since a PostgreSQL transaction that failed
// cannot be reused and a joined idempotency conflict must roll the caller's
// transaction back, not be retried inside it. A dispatch whose ctx carries a
// transaction (store.InTransaction) is therefore refused: Retry returns an error
// matching ErrRetryInTransaction without calling next. Inside a transaction, dispatch
// through InTxChain.
//
// Retry panics if cfg is invalid after defaults: that is a start-up programming error,
// like registering a handler twice.
func Retry(cfg RetryConfig) Middleware {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		panic(err)
	}
	return func(next Dispatcher) Dispatcher {
		return DispatcherFunc(func(ctx context.Context, cmd Command) (any, error) {
			if store.InTransaction(ctx) {
				return nil, fmt.Errorf("command %s: %w", cmd.CommandType(), ErrRetryInTransaction)
			}
			for attempt := 1; ; attempt++ {
				res, err := next.DispatchAny(ctx, cmd)
				if err == nil || !(cfg.RetryAll || IsTransient(err)) {
					return res, err
				}
				if attempt >= cfg.MaxAttempts {
					return nil, fmt.Errorf("command %s: giving up after %d attempts: %w", cmd.CommandType(), attempt, err)
				}
				d := Backoff(attempt-1, cfg.BaseDelay, cfg.MaxDelay, cfg.Jitter, cfg.Rand)
				serr := ctx.Err()
				if serr == nil {
					serr = cfg.Sleep(ctx, d)
				}
				if serr != nil {
					return nil, fmt.Errorf("command %s: retry stopped after %d attempts: %w", cmd.CommandType(), attempt, errors.Join(serr, err))
				}
			}
		})
	}
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
