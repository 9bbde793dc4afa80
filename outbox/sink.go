package outbox

import (
	"context"
	"errors"
	"fmt"

	"github.com/hodei-jobs/hodei/command"
)

// CommandSink executes a command stored in the outbox. The relay calls it once per
// claimed command row; it must be safe for concurrent use.
type CommandSink interface {
	DispatchEncoded(ctx context.Context, cmdType string, payload []byte) error
}

// CommandSinkFunc adapts a function to a CommandSink.
type CommandSinkFunc func(ctx context.Context, cmdType string, payload []byte) error

// DispatchEncoded calls f.
func (f CommandSinkFunc) DispatchEncoded(ctx context.Context, cmdType string, payload []byte) error {
	return f(ctx, cmdType, payload)
}

// BusSink decodes stored commands with Bus and dispatches them through Dispatcher —
// normally the Bus wrapped in middleware (logging, tracing, retry, idempotency), never a
// dispatcher that writes outbox rows, or commands would go round in circles. The command's
// idempotency key travels inside its payload, so the idempotency middleware sees the key
// the command was enqueued with. A nil Dispatcher dispatches on Bus directly.
type BusSink struct {
	Bus        *command.Bus
	Dispatcher command.Dispatcher
}

// DispatchEncoded decodes and dispatches one command. An unknown type or an undecodable
// payload is a Permanent error (the relay dead-letters it at once).
func (s BusSink) DispatchEncoded(ctx context.Context, cmdType string, payload []byte) error {
	if s.Bus == nil {
		return errors.New("outbox: BusSink.Bus is nil")
	}
	cmd, err := s.Bus.Decode(cmdType, payload)
	if err != nil {
		return Permanent(fmt.Errorf("outbox: decode command %s: %w", cmdType, err))
	}
	d := s.Dispatcher
	if d == nil {
		d = s.Bus
	}
	if _, err := d.DispatchAny(ctx, cmd); err != nil {
		return err
	}
	return nil
}

// permanentError marks an error that no retry can fix.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent marks err so that the relay moves the row straight to DEAD_LETTER instead of
// retrying it. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// IsPermanent reports whether err is final for the relay: marked Permanent, or a
// command whose type has no handler (command.ErrHandlerNotFound).
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p) || errors.Is(err, command.ErrHandlerNotFound)
}
