package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"connectrpc.com/connect"
)

// Policy is who may call one procedure or route.
type Policy struct {
	// Role is the least role the caller needs; RoleNone refuses everyone.
	Role Role
	// Public: no authentication at all (health probes).
	Public bool
	// Action, when set, names the change a successful call makes ("job.submit"); it
	// is then recorded in the audit trail.
	Action string
}

// Describer tells the audit trail what a successful call acted on: the target (a job
// id, a token name…) and its namespace, from the request and the response messages.
type Describer func(req, res any) (target, namespace string)

// Interceptor returns the connect interceptor that checks every procedure against
// policies (a procedure missing there is refused), puts the Principal in the handler's
// context and audits changes and refusals. It serves handlers (not clients).
func (a *Authenticator) Interceptor(policies map[string]Policy, describe Describer) connect.Interceptor {
	return &interceptor{a: a, policies: policies, describe: describe}
}

type interceptor struct {
	a        *Authenticator
	policies map[string]Policy
	describe Describer
}

func (i *interceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		proc := req.Spec().Procedure
		pol := i.policies[proc]
		p, err := i.a.Authorize(ctx, pol, proc, req.Header(), req.Peer().Addr)
		if err != nil {
			return nil, err
		}
		ctx = WithPrincipal(ctx, p)
		res, err := next(ctx, req)
		i.a.recordRefusal(ctx, p, proc, req.Peer().Addr, err)
		if err == nil && pol.Action != "" {
			var target, ns string
			if i.describe != nil {
				var msg any
				if res != nil {
					msg = res.Any()
				}
				target, ns = i.describe(req.Any(), msg)
			}
			i.a.Record(ctx, Entry{Actor: p.Name, Action: pol.Action, Procedure: proc, Target: target,
				Namespace: ns, Outcome: OutcomeOK, Remote: req.Peer().Addr})
		}
		return res, err
	}
}

func (i *interceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i *interceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		proc := conn.Spec().Procedure
		pol := i.policies[proc]
		if pol.Action != "" {
			return connect.NewError(connect.CodeInternal, fmt.Errorf("auth: streaming procedure %s cannot be audited", proc))
		}
		p, err := i.a.Authorize(ctx, pol, proc, conn.RequestHeader(), conn.Peer().Addr)
		if err != nil {
			return err
		}
		// The stream ends when its token is revoked or expires (Guard).
		gctx, release := i.a.Guard(WithPrincipal(ctx, p), p)
		defer release()
		err = next(gctx, conn)
		i.a.recordRefusal(ctx, p, proc, conn.Peer().Addr, err)
		if ctx.Err() == nil && gctx.Err() != nil {
			cause := context.Cause(gctx)
			i.a.Record(ctx, Entry{Actor: p.Name, Action: "auth.stream_ended", Procedure: proc,
				Outcome: OutcomeUnauthenticated, Remote: conn.Peer().Addr, Detail: connectMessage(cause)})
			return cause
		}
		return err
	}
}

// ErrHidden marks the NotFound answer to a caller who asked for something that exists
// in a namespace it cannot see (Hidden). Test with errors.Is.
var ErrHidden = errors.New("auth: in a namespace the caller cannot see")

// Hidden returns err (the message the caller gets, the same as for something that
// does not exist) marked with ErrHidden, so that the interceptor records the refusal
// in the audit trail.
func Hidden(err error) error { return hiddenError{err} }

type hiddenError struct{ error }

func (e hiddenError) Unwrap() error      { return e.error }
func (hiddenError) Is(target error) bool { return target == ErrHidden }

// recordRefusal audits a handler's refusal of p's call: PermissionDenied (a namespace
// the token may not use) and the NotFound of something hidden from p (ErrHidden).
func (a *Authenticator) recordRefusal(ctx context.Context, p *Principal, proc, remote string, err error) {
	if err == nil {
		return
	}
	outcome := ""
	switch {
	case connect.CodeOf(err) == connect.CodePermissionDenied:
		outcome = OutcomeDenied
	case errors.Is(err, ErrHidden):
		outcome = OutcomeHidden
	default:
		return
	}
	a.Record(ctx, Entry{Actor: p.Name, Action: "auth.refused", Procedure: proc, Outcome: outcome, Remote: remote,
		Detail: connectMessage(err)})
}

// RouteDescriber tells the audit trail what a successful REST call acted on.
type RouteDescriber func(r *http.Request) (target, namespace string)

// Middleware wraps the REST route pattern with its policy: authentication and role
// (errors as JSON {"error": "..."} with 401, 403 or 429), the Principal in the
// request's context, and the audit record of a successful change (status below 400)
// or a refusal.
func (a *Authenticator) Middleware(pattern string, pol Policy, describe RouteDescriber, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := a.Authorize(r.Context(), pol, pattern, r.Header, r.RemoteAddr)
		if err != nil {
			WriteHTTPError(w, err)
			return
		}
		r = r.WithContext(WithPrincipal(r.Context(), p))
		if pol.Action == "" {
			h.ServeHTTP(w, r)
			return
		}
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		h.ServeHTTP(sw, r)
		if sw.status < 400 {
			var target, ns string
			if describe != nil {
				target, ns = describe(r)
			}
			a.Record(r.Context(), Entry{Actor: p.Name, Action: pol.Action, Procedure: pattern, Target: target,
				Namespace: ns, Outcome: OutcomeOK, Remote: r.RemoteAddr})
		}
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

// WriteHTTPError writes an authentication or authorization error as JSON.
func WriteHTTPError(w http.ResponseWriter, err error) {
	status := http.StatusInternalServerError
	switch connect.CodeOf(err) {
	case connect.CodeUnauthenticated:
		status = http.StatusUnauthorized
		w.Header().Set("WWW-Authenticate", `Bearer realm="hodei"`)
	case connect.CodePermissionDenied:
		status = http.StatusForbidden
	case connect.CodeResourceExhausted:
		status = http.StatusTooManyRequests
	case connect.CodeUnavailable:
		status = http.StatusServiceUnavailable
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": connectMessage(err)})
}
