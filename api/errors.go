package api

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"connectrpc.com/connect"

	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/store"
)

// ErrorCode maps errors matching Err (errors.Is) to Code. Lists of them let the server
// map errors of packages the API does not import (jobs' credential errors, for one)
// without a dependency from api on them.
type ErrorCode struct {
	Err  error
	Code connect.Code
}

// toConnect converts an error of the logic or the store into a connect error:
//
//	domain.ValidationErrors / *ValidationError  InvalidArgument (every field named)
//	store.ErrNotFound                           NotFound
//	domain.ErrIllegalTransition                 FailedPrecondition
//	store.ErrConflict                           Aborted
//	an entry of extra                           its Code
//	context.Canceled / DeadlineExceeded         Canceled / DeadlineExceeded
//	a *connect.Error                            unchanged
//	anything else                               Internal
func toConnect(err error, extra []ErrorCode) error {
	if err == nil {
		return nil
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce
	}
	for _, e := range extra {
		if errors.Is(err, e.Err) {
			return connect.NewError(e.Code, err)
		}
	}
	switch {
	case errors.Is(err, domain.ErrInvalidSpec):
		return connect.NewError(connect.CodeInvalidArgument, err)
	case errors.Is(err, store.ErrNotFound):
		return connect.NewError(connect.CodeNotFound, err)
	case errors.Is(err, domain.ErrIllegalTransition):
		return connect.NewError(connect.CodeFailedPrecondition, err)
	case errors.Is(err, store.ErrConflict):
		return connect.NewError(connect.CodeAborted, err)
	case errors.Is(err, context.Canceled):
		return connect.NewError(connect.CodeCanceled, err)
	case errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeDeadlineExceeded, err)
	}
	return connect.NewError(connect.CodeInternal, err)
}

// invalidArg returns an InvalidArgument error naming field.
func invalidArg(field, format string, args ...any) error {
	return connect.NewError(connect.CodeInvalidArgument,
		fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
}

// permanent reports whether re-sending the same worker message cannot succeed (the
// worker should be told it was handled and stop re-sending it).
func permanent(code connect.Code) bool {
	switch code {
	case connect.CodeInvalidArgument, connect.CodeNotFound, connect.CodeFailedPrecondition,
		connect.CodePermissionDenied, connect.CodeAlreadyExists, connect.CodeOutOfRange:
		return true
	}
	return false
}

// validID checks a client-supplied id: not empty, bounded, printable ASCII without
// spaces (ids are UUIDs; worker ids also become NATS subject tokens).
func validID(field, id string) error {
	if id == "" {
		return invalidArg(field, "is required")
	}
	if len(id) > maxIDLen {
		return invalidArg(field, "is %d bytes, the limit is %d", len(id), maxIDLen)
	}
	if strings.IndexFunc(id, func(r rune) bool { return r <= ' ' || r >= 0x7f }) >= 0 {
		return invalidArg(field, "must be printable ASCII without spaces")
	}
	return nil
}

// maxIDLen bounds job and worker ids accepted from clients.
const maxIDLen = domain.MaxIDBytes
