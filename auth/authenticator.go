package auth

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/hodei-jobs/hodei/store"
)

// TokenReader finds a stored token by the SHA-256 of its secret (store.TokenStore).
type TokenReader interface {
	ByHash(ctx context.Context, hash []byte) (*store.Token, error)
}

// AuditWriter appends to the audit trail (store.AuditStore).
type AuditWriter interface {
	Append(ctx context.Context, r *store.AuditRecord) error
}

// Bootstrap is a token known from configuration rather than the store: an admin over
// every namespace.
type Bootstrap struct {
	Name   string
	Secret string
}

// Config configures an Authenticator. Zero fields get defaults.
type Config struct {
	// Required (--auth): every call needs a valid token, loopback clients too.
	Required bool
	// Tokens finds stored tokens (nil: only bootstrap tokens are known).
	Tokens TokenReader
	// Bootstrap tokens (admin, every namespace).
	Bootstrap []Bootstrap
	// Audit, if set, records changes and refusals.
	Audit AuditWriter
	// MaxFailures failed authentications of one bucket (a stored token, or a client
	// address for calls without a usable token: see Authenticate) within FailureWindow
	// make further such requests ResourceExhausted until the window ends (defaults 20
	// and 1m). The counts live in this process: each replica counts its own.
	MaxFailures   int
	FailureWindow time.Duration
	// RecheckInterval is how often the tokens of open streams are looked up again, so
	// that a revoked token's streams end (Guard; default 500ms).
	RecheckInterval time.Duration
	Now             func() time.Time
	Logger          *slog.Logger
}

// Authenticator authenticates and authorizes requests. Safe for concurrent use.
type Authenticator struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	failures map[string]*failureWindow // by bucket (addrBucket, tokenBucket)

	gmu      sync.Mutex
	guarded  map[*guardedStream]struct{}
	checking bool // the recheck loop runs (while guarded is not empty)
}

type failureWindow struct {
	start time.Time
	n     int
}

// New returns an Authenticator.
func New(cfg Config) (*Authenticator, error) {
	if cfg.MaxFailures == 0 {
		cfg.MaxFailures = 20
	}
	if cfg.FailureWindow == 0 {
		cfg.FailureWindow = time.Minute
	}
	if cfg.RecheckInterval == 0 {
		cfg.RecheckInterval = 500 * time.Millisecond
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxFailures < 1 || cfg.FailureWindow < time.Millisecond {
		return nil, fmt.Errorf("auth: Config.MaxFailures %d and FailureWindow %s must be positive", cfg.MaxFailures, cfg.FailureWindow)
	}
	if cfg.RecheckInterval < time.Millisecond {
		return nil, fmt.Errorf("auth: Config.RecheckInterval %s must be at least 1ms", cfg.RecheckInterval)
	}
	for i, b := range cfg.Bootstrap {
		if b.Name == "" || b.Secret == "" {
			return nil, fmt.Errorf("auth: Config.Bootstrap[%d] needs a name and a secret", i)
		}
	}
	return &Authenticator{cfg: cfg, log: cfg.Logger.With("component", "auth"), failures: map[string]*failureWindow{},
		guarded: map[*guardedStream]struct{}{}}, nil
}

// Required reports whether every call needs a token.
func (a *Authenticator) Required() bool { return a.cfg.Required }

// Errors of authentication (wrapped in connect errors). Test with errors.Is.
var (
	ErrNoToken      = errors.New("no API token: this server requires one (Authorization: Bearer <token>; hodei --token, HODEI_TOKEN or a context)")
	ErrUnknownToken = errors.New("unknown API token")
	ErrExpired      = errors.New("API token expired")
	ErrRevoked      = errors.New("API token revoked")
	ErrRateLimited  = errors.New("too many failed authentications from this address; try again later")
)

// host is the client address without its port.
func host(remote string) string {
	h, _, err := net.SplitHostPort(remote)
	if err != nil {
		return remote
	}
	return h
}

func isLoopback(remote string) bool {
	ip := net.ParseIP(host(remote))
	return ip != nil && ip.IsLoopback()
}

// Authenticate returns the caller of a request with headers h from remote.
//
// Failed authentications are counted per bucket (Config.MaxFailures per
// Config.FailureWindow, then ResourceExhausted until the window ends): a stored token
// that is revoked or expired counts against that token; a call without a token, with a
// malformed header or with a token nobody issued counts against the client address.
// A valid token is never refused because of others' failures, so clients sharing an
// address (loopback, a NAT, a proxy) do not lock each other out.
func (a *Authenticator) Authenticate(ctx context.Context, h http.Header, remote string) (*Principal, error) {
	addr := addrBucket(remote)
	tok, err := ParseBearer(h.Get("Authorization"))
	if err != nil {
		return nil, a.fail(addr, remote, connect.NewError(connect.CodeUnauthenticated, err))
	}
	if tok == "" {
		if a.cfg.Required {
			return nil, a.fail(addr, remote, connect.NewError(connect.CodeUnauthenticated, ErrNoToken))
		}
		if a.limited(addr) {
			return nil, errRateLimited()
		}
		p := &Principal{Name: Anonymous, Role: RoleSubmitter, Namespaces: []string{AllNamespaces}, Anonymous: true}
		if len(a.cfg.Bootstrap) == 0 && isLoopback(remote) {
			p.Role = RoleAdmin
		}
		return p, nil
	}
	for _, b := range a.cfg.Bootstrap {
		if subtle.ConstantTimeCompare([]byte(tok), []byte(b.Secret)) == 1 {
			return &Principal{Name: b.Name, Role: RoleAdmin, Namespaces: []string{AllNamespaces}}, nil
		}
	}
	if a.cfg.Tokens == nil {
		return nil, a.fail(addr, remote, connect.NewError(connect.CodeUnauthenticated, ErrUnknownToken))
	}
	hash := HashSecret(tok)
	t, err := a.cfg.Tokens.ByHash(ctx, hash)
	if errors.Is(err, store.ErrNotFound) {
		return nil, a.fail(addr, remote, connect.NewError(connect.CodeUnauthenticated, ErrUnknownToken))
	}
	if err != nil {
		return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("auth: look up token: %w", err))
	}
	if err := a.tokenError(t); err != nil {
		return nil, a.fail(tokenBucket(t.Name), remote, err)
	}
	role, err := ParseRole(t.Role)
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("auth: token %q: %w", t.Name, err))
	}
	return &Principal{Name: t.Name, Role: role, Namespaces: t.Namespaces, hash: hash, expiresAt: t.ExpiresAt}, nil
}

// tokenError is the Unauthenticated error of a stored token that is revoked or
// expired now, or nil.
func (a *Authenticator) tokenError(t *store.Token) *connect.Error {
	now := a.cfg.Now()
	switch {
	case !t.RevokedAt.IsZero() && !now.Before(t.RevokedAt):
		return connect.NewError(connect.CodeUnauthenticated, fmt.Errorf("%w (token %q)", ErrRevoked, t.Name))
	case !t.ExpiresAt.IsZero() && !now.Before(t.ExpiresAt):
		return connect.NewError(connect.CodeUnauthenticated, fmt.Errorf("%w (token %q, at %s)", ErrExpired, t.Name, t.ExpiresAt.Format(time.RFC3339)))
	}
	return nil
}

// Failure buckets: one per client address, one per stored token.
func addrBucket(remote string) string { return "addr " + host(remote) }
func tokenBucket(name string) string  { return "token " + name }

func errRateLimited() error { return connect.NewError(connect.CodeResourceExhausted, ErrRateLimited) }

// limited reports whether bucket used up its failures in the current window.
func (a *Authenticator) limited(bucket string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	w := a.failures[bucket]
	if w == nil {
		return false
	}
	if a.cfg.Now().Sub(w.start) >= a.cfg.FailureWindow {
		delete(a.failures, bucket)
		return false
	}
	return w.n >= a.cfg.MaxFailures
}

// fail returns ResourceExhausted when bucket is limited already; otherwise it counts a
// failed authentication against bucket, logs it (never the token) and returns err.
func (a *Authenticator) fail(bucket, remote string, err *connect.Error) error {
	if a.limited(bucket) {
		return errRateLimited()
	}
	now := a.cfg.Now()
	a.mu.Lock()
	w := a.failures[bucket]
	if w == nil || now.Sub(w.start) >= a.cfg.FailureWindow {
		if len(a.failures) >= 10000 { // bound memory: drop windows that ended
			for k, v := range a.failures {
				if now.Sub(v.start) >= a.cfg.FailureWindow {
					delete(a.failures, k)
				}
			}
		}
		w = &failureWindow{start: now}
		a.failures[bucket] = w
	}
	w.n++
	n := w.n
	a.mu.Unlock()
	a.log.Warn("authentication failed", "remote", remote, "bucket", bucket, "reason", err.Message(), "failures_in_window", n)
	return err
}

// Authorize authenticates a request and checks it against policy; on success it
// returns the principal. A refusal is audited.
func (a *Authenticator) Authorize(ctx context.Context, policy Policy, procedure string, h http.Header, remote string) (*Principal, error) {
	if policy.Public {
		return &Principal{Name: Anonymous, Anonymous: true}, nil
	}
	if policy.Role == RoleNone {
		err := connect.NewError(connect.CodePermissionDenied, fmt.Errorf("%s has no access policy", procedure))
		a.Record(ctx, Entry{Procedure: procedure, Action: "auth.refused", Outcome: OutcomeDenied, Remote: remote, Detail: err.Message()})
		return nil, err
	}
	p, err := a.Authenticate(ctx, h, remote)
	if err != nil {
		outcome := OutcomeUnauthenticated
		switch connect.CodeOf(err) {
		case connect.CodeResourceExhausted:
			outcome = OutcomeRateLimited
		case connect.CodeUnavailable, connect.CodeInternal:
			return nil, err
		}
		a.Record(ctx, Entry{Procedure: procedure, Action: "auth.refused", Outcome: outcome, Remote: remote, Detail: connectMessage(err)})
		return nil, err
	}
	if p.Role < policy.Role {
		var err *connect.Error
		outcome := OutcomeDenied
		switch {
		case !p.Anonymous:
			err = connect.NewError(connect.CodePermissionDenied,
				fmt.Errorf("token %q has role %s; %s needs %s", p.Name, p.Role, procedure, policy.Role))
		case len(a.cfg.Bootstrap) > 0 || a.cfg.Tokens != nil:
			// A token would help: the caller sent none.
			outcome = OutcomeUnauthenticated
			err = connect.NewError(connect.CodeUnauthenticated,
				fmt.Errorf("%s needs a token with role %s (Authorization: Bearer <token>)", procedure, policy.Role))
		default:
			err = connect.NewError(connect.CodePermissionDenied,
				fmt.Errorf("%s needs role %s: without tokens (start the server with --admin-token or --auth) it is served to loopback clients only", procedure, policy.Role))
		}
		a.Record(ctx, Entry{Actor: p.Name, Procedure: procedure, Action: "auth.refused", Outcome: outcome, Remote: remote, Detail: err.Message()})
		return nil, err
	}
	return p, nil
}

func connectMessage(err error) string {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Message()
	}
	return err.Error()
}

// Audit outcomes.
const (
	OutcomeOK              = "ok"
	OutcomeUnauthenticated = "unauthenticated"
	OutcomeDenied          = "permission_denied"
	OutcomeRateLimited     = "rate_limited"
	// OutcomeHidden: answered NotFound because the target is in a namespace the
	// caller cannot see (recorded for the audit trail only; the caller cannot tell).
	OutcomeHidden = "hidden"
)

// Entry is one audit record to write.
type Entry struct {
	Actor, Action, Procedure, Target, Namespace, Outcome, Remote, Detail string
}

// Record appends e to the audit trail (when one is configured). A failure to write is
// logged: the request it records has already been answered or refused.
func (a *Authenticator) Record(ctx context.Context, e Entry) {
	if a.cfg.Audit == nil {
		return
	}
	r := &store.AuditRecord{Time: a.cfg.Now().UTC(), Actor: e.Actor, Action: e.Action, Procedure: e.Procedure,
		Target: e.Target, Namespace: e.Namespace, Outcome: e.Outcome, Remote: host(e.Remote), Detail: e.Detail}
	// The request's context may be cancelled already (a refused stream); the record
	// must still be written.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := a.cfg.Audit.Append(wctx, r); err != nil {
		a.log.Error("audit record not written", "action", e.Action, "actor", e.Actor, "err", err)
	}
}
