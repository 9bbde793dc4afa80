package command

import (
	"context"
	"errors"
	"log/slog"
	"time"
)

// Log attribute keys written by the Logging middleware.
const (
	LogKeyType     = "command.type"
	LogKeyKey      = "command.key"
	LogKeyDuration = "duration"
	LogKeyOutcome  = "outcome"
	LogKeyError    = "err" // the one key of errors in every log record of Hodei
)

// Logging returns middleware that writes one record per dispatch with the command type,
// its idempotency key, the duration and the outcome:
//
//   - success: level Debug, outcome "ok" (Debug because the relay dispatches tens of
//     thousands of commands a second; enable Debug to see them);
//   - a Transient error or ctx ending: level Warn, outcome "error", with the error;
//   - any other error: level Error, outcome "error", with the error.
//
// A nil logger uses slog.Default().
func Logging(logger *slog.Logger) Middleware {
	if logger == nil {
		logger = slog.Default()
	}
	return func(next Dispatcher) Dispatcher {
		return DispatcherFunc(func(ctx context.Context, cmd Command) (any, error) {
			start := time.Now()
			res, err := next.DispatchAny(ctx, cmd)
			elapsed := time.Since(start)
			if err == nil {
				logger.LogAttrs(ctx, slog.LevelDebug, "command dispatched",
					slog.String(LogKeyType, cmd.CommandType()),
					slog.String(LogKeyKey, cmd.IdempotencyKey()),
					slog.Duration(LogKeyDuration, elapsed),
					slog.String(LogKeyOutcome, "ok"))
				return res, nil
			}
			level := slog.LevelError
			if IsTransient(err) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
				level = slog.LevelWarn
			}
			logger.LogAttrs(ctx, level, "command failed",
				slog.String(LogKeyType, cmd.CommandType()),
				slog.String(LogKeyKey, cmd.IdempotencyKey()),
				slog.Duration(LogKeyDuration, elapsed),
				slog.String(LogKeyOutcome, "error"),
				slog.String(LogKeyError, err.Error()))
			return res, err
		})
	}
}
