package auth

import (
	"context"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"

	"github.com/hodei-jobs/hodei/store"
)

// guardedStream is one open stream whose token is watched.
type guardedStream struct {
	hash   string // SHA-256 of the token secret
	cancel context.CancelCauseFunc
	expiry *time.Timer // nil when the token never expires
}

// Guard returns the context in which a long-lived call of p (a server stream) runs:
// it ends when ctx does, and also when p's token stops being valid, with an
// Unauthenticated *connect.Error as its context.Cause. release must be called when
// the call ends.
//
// An expiry is noticed at its instant (a timer). A revocation, or a token removed from
// the store, is noticed by looking up again the token of every open stream every
// Config.RecheckInterval: one lookup per distinct token per interval, and none while no
// stream is open. So a stream of a revoked token ends within about one interval
// (500ms by default) of the revocation reaching the store, on every replica. Tokens
// that are not stored (bootstrap tokens from the configuration, anonymous callers)
// are not watched: they stay valid as long as the process runs.
func (a *Authenticator) Guard(ctx context.Context, p *Principal) (context.Context, func()) {
	if p == nil || p.hash == nil || a.cfg.Tokens == nil {
		return ctx, func() {}
	}
	gctx, cancel := context.WithCancelCause(ctx)
	g := &guardedStream{hash: string(p.hash), cancel: cancel}
	if !p.expiresAt.IsZero() {
		name, at := p.Name, p.expiresAt
		g.expiry = time.AfterFunc(at.Sub(a.cfg.Now()), func() {
			cancel(connect.NewError(connect.CodeUnauthenticated,
				fmt.Errorf("%w (token %q, at %s)", ErrExpired, name, at.Format(time.RFC3339))))
		})
	}
	a.gmu.Lock()
	a.guarded[g] = struct{}{}
	if !a.checking {
		a.checking = true
		go a.recheckLoop()
	}
	a.gmu.Unlock()
	return gctx, func() {
		a.gmu.Lock()
		delete(a.guarded, g)
		a.gmu.Unlock()
		if g.expiry != nil {
			g.expiry.Stop()
		}
		cancel(context.Canceled)
	}
}

// recheckLoop looks up the tokens of the guarded streams every RecheckInterval and
// ends the streams of tokens that are no longer valid. It returns when no stream is
// guarded (Guard starts it again).
func (a *Authenticator) recheckLoop() {
	t := time.NewTicker(a.cfg.RecheckInterval)
	defer t.Stop()
	for range t.C {
		byHash := a.guardedByHash()
		if byHash == nil {
			return
		}
		for hash, streams := range byHash {
			cause := a.recheck(hash)
			if cause == nil {
				continue
			}
			for _, g := range streams {
				g.cancel(cause)
			}
		}
	}
}

// guardedByHash groups the guarded streams by token, or returns nil (and marks the
// loop stopped) when there are none.
func (a *Authenticator) guardedByHash() map[string][]*guardedStream {
	a.gmu.Lock()
	defer a.gmu.Unlock()
	if len(a.guarded) == 0 {
		a.checking = false
		return nil
	}
	m := map[string][]*guardedStream{}
	for g := range a.guarded {
		m[g.hash] = append(m[g.hash], g)
	}
	return m
}

// recheck returns why the token with hash is no longer valid, or nil. A store that
// cannot answer keeps the streams open (new calls are refused meanwhile: Unavailable).
func (a *Authenticator) recheck(hash string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*a.cfg.RecheckInterval)
	defer cancel()
	t, err := a.cfg.Tokens.ByHash(ctx, []byte(hash))
	switch {
	case errors.Is(err, store.ErrNotFound):
		return connect.NewError(connect.CodeUnauthenticated, ErrUnknownToken)
	case err != nil:
		a.log.Warn("open streams' token not checked again", "err", err)
		return nil
	}
	if e := a.tokenError(t); e != nil {
		return e
	}
	return nil
}
