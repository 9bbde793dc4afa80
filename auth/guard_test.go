package auth_test

import (
	"context"
	"errors"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/hodei-jobs/hodei/auth"
	"github.com/hodei-jobs/hodei/store/sqlite"
)

// TestGuardEndsStreamsOfRevokedAndExpiredTokens: the context of an open stream ends
// with Unauthenticated when its token is revoked in the store or expires, and not
// before; other tokens' streams and bootstrap tokens' stay open. Real SQLite store,
// real clock.
func TestGuardEndsStreamsOfRevokedAndExpiredTokens(t *testing.T) {
	ctx := t.Context()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "a.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	a, err := auth.New(auth.Config{Required: true, Tokens: st.Tokens(), RecheckInterval: 50 * time.Millisecond,
		Bootstrap: []auth.Bootstrap{{Name: "boot", Secret: "hodei_bootstrap-secret"}}})
	if err != nil {
		t.Fatal(err)
	}
	principal := func(name string, expiresIn time.Duration) *auth.Principal {
		t.Helper()
		var secret string
		if name == "boot" {
			secret = "hodei_bootstrap-secret"
		} else {
			tok, s, err := auth.NewToken(auth.TokenSpec{Name: name, Role: "viewer", Namespaces: []string{"a"}, ExpiresIn: expiresIn}, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if err := st.Tokens().Create(ctx, tok); err != nil {
				t.Fatal(err)
			}
			secret = s
		}
		h := http.Header{}
		h.Set("Authorization", "Bearer "+secret)
		p, err := a.Authenticate(ctx, h, "127.0.0.1:1")
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	revoked, rel1 := a.Guard(ctx, principal("revoked", 0))
	defer rel1()
	expiring, rel2 := a.Guard(ctx, principal("expiring", time.Second))
	defer rel2()
	kept, rel3 := a.Guard(ctx, principal("kept", time.Hour))
	defer rel3()
	boot, rel4 := a.Guard(ctx, principal("boot", 0))
	defer rel4()

	time.Sleep(200 * time.Millisecond) // several rechecks
	for name, c := range map[string]context.Context{"revoked": revoked, "expiring": expiring, "kept": kept, "boot": boot} {
		if c.Err() != nil {
			t.Fatalf("stream of %s ended before anything happened: %v", name, context.Cause(c))
		}
	}
	if _, err := st.Tokens().Revoke(ctx, "revoked", time.Now()); err != nil {
		t.Fatal(err)
	}
	ended := func(c context.Context, want error) {
		t.Helper()
		select {
		case <-c.Done():
		case <-time.After(10 * time.Second):
			t.Fatalf("stream still open, want it ended with %v", want)
		}
		cause := context.Cause(c)
		if connect.CodeOf(cause) != connect.CodeUnauthenticated || !errors.Is(cause, want) {
			t.Fatalf("stream ended with %v, want Unauthenticated %v", cause, want)
		}
	}
	ended(revoked, auth.ErrRevoked)
	ended(expiring, auth.ErrExpired)
	if kept.Err() != nil || boot.Err() != nil {
		t.Fatalf("valid tokens' streams ended: %v, %v", context.Cause(kept), context.Cause(boot))
	}
	rel3()
	if !errors.Is(context.Cause(kept), context.Canceled) {
		t.Fatalf("released stream: %v", context.Cause(kept))
	}
}
