package command

import (
	"errors"
	"fmt"

	"github.com/hodei-jobs/hodei/store"
)

// ErrHandlerNotFound: no handler is registered for the command's type.
var ErrHandlerNotFound = errors.New("command: no handler registered")

// ErrRetryInTransaction: a dispatch through the Retry middleware whose context carries
// a transaction. Retrying inside a transaction would reuse a transaction that may have
// failed; the dispatcher was wired wrongly (use InTxChain inside transactions).
var ErrRetryInTransaction = errors.New("command: retry middleware called inside a transaction (dispatch through InTxChain there)")

// ErrTypeMismatch is matched (errors.Is) by every *TypeMismatchError.
var ErrTypeMismatch = errors.New("command: type mismatch")

// TypeMismatchError: a command or result had another Go type than expected.
type TypeMismatchError struct {
	CommandType string
	Want, Got   string
}

func (e *TypeMismatchError) Error() string {
	return fmt.Sprintf("command: type mismatch for %s: want %s, got %s", e.CommandType, e.Want, e.Got)
}

// Is makes errors.Is(err, ErrTypeMismatch) true.
func (e *TypeMismatchError) Is(target error) bool { return target == ErrTypeMismatch }

// HandlerError wraps the error a handler returned.
type HandlerError struct {
	CommandType string
	Key         string
	Err         error
}

func (e *HandlerError) Error() string {
	return fmt.Sprintf("command %s (key %q): %v", e.CommandType, e.Key, e.Err)
}

func (e *HandlerError) Unwrap() error { return e.Err }

// transientError marks an error as worth retrying.
type transientError struct{ err error }

func (e *transientError) Error() string { return e.err.Error() }
func (e *transientError) Unwrap() error { return e.err }

// Transient marks err as transient: the retry middleware (and the outbox relay and saga
// runner) retry it; other errors are final. Transient(nil) is nil.
func Transient(err error) error {
	if err == nil {
		return nil
	}
	return &transientError{err: err}
}

// IsTransient reports whether err or anything it wraps was marked Transient, or is a
// transaction that lost a race in the database (store.LostRace: a deadlock or a
// serialization failure, retried in a fresh transaction).
func IsTransient(err error) bool {
	var t *transientError
	return errors.As(err, &t) || store.LostRace(err)
}
