package auth_test

import (
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/hodei-jobs/hodei/auth"
	"github.com/hodei-jobs/hodei/store/sqlite"
)

func TestParseBearer(t *testing.T) {
	for _, c := range []struct {
		in, want string
		bad      bool
	}{
		{"", "", false}, {"Bearer abc", "abc", false}, {"bearer abc", "abc", false},
		{"Basic abc", "", true}, {"Bearer ", "", true}, {"Bearer a b", "", true},
		{"Bearer " + strings.Repeat("x", 300), "", true}, {"Bearer é", "", true},
	} {
		got, err := auth.ParseBearer(c.in)
		if got != c.want || (err != nil) != c.bad {
			t.Errorf("ParseBearer(%q) = %q, %v", c.in, got, err)
		}
	}
}

func TestNewTokenValidates(t *testing.T) {
	for _, c := range []struct {
		spec  auth.TokenSpec
		field string
	}{
		{auth.TokenSpec{Name: "", Role: "viewer", Namespaces: []string{"a"}}, "name"},
		{auth.TokenSpec{Name: "ci", Role: "root", Namespaces: []string{"a"}}, "role"},
		{auth.TokenSpec{Name: "ci", Role: "viewer"}, "namespaces"},
		{auth.TokenSpec{Name: "ci", Role: "viewer", Namespaces: []string{"Bad_NS"}}, "namespaces[0]"},
		{auth.TokenSpec{Name: "ci", Role: "viewer", Namespaces: []string{"a"}, ExpiresIn: -time.Second}, "expires_in"},
	} {
		if _, _, err := auth.NewToken(c.spec, time.Now()); err == nil || !strings.HasPrefix(err.Error(), c.field+":") {
			t.Errorf("NewToken(%+v) = %v, want an error naming %s", c.spec, err, c.field)
		}
	}
	tok, secret, err := auth.NewToken(auth.TokenSpec{Name: "root", Role: "admin"}, time.Now())
	if err != nil || !strings.HasPrefix(secret, auth.SecretPrefix) || len(tok.Hash) != 32 ||
		tok.Namespaces[0] != auth.AllNamespaces || strings.Contains(string(tok.Hash), secret) {
		t.Fatalf("NewToken admin = %+v, %q, %v", tok, secret, err)
	}
}

// TestAuthenticateExpiryRevocationAndRateLimit runs against a real SQLite store with
// an injected clock.
func TestAuthenticateExpiryRevocationAndRateLimit(t *testing.T) {
	ctx := t.Context()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "a.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	a, err := auth.New(auth.Config{Required: true, Tokens: st.Tokens(), Audit: st.Audit(), MaxFailures: 3,
		FailureWindow: time.Minute, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	tok, secret, err := auth.NewToken(auth.TokenSpec{Name: "ci", Role: "submitter", Namespaces: []string{"team-a"}, ExpiresIn: time.Hour}, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Tokens().Create(ctx, tok); err != nil {
		t.Fatal(err)
	}
	hdr := func(s string) http.Header {
		h := http.Header{}
		if s != "" {
			h.Set("Authorization", "Bearer "+s)
		}
		return h
	}
	p, err := a.Authenticate(ctx, hdr(secret), "10.0.0.1:5000")
	if err != nil || p.Name != "ci" || p.Role != auth.RoleSubmitter || !p.CanSee("team-a") || p.CanSee("team-b") ||
		p.DefaultNamespace() != "team-a" {
		t.Fatalf("Authenticate = %+v, %v", p, err)
	}
	// Viewer-level call allowed, admin call refused and audited.
	if _, err := a.Authorize(ctx, auth.Policy{Role: auth.RoleAdmin}, "/x/Admin", hdr(secret), "10.0.0.1:5000"); connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Fatalf("admin call by a submitter: %v", err)
	}
	other, otherSecret, err := auth.NewToken(auth.TokenSpec{Name: "ops", Role: "viewer", Namespaces: []string{"team-a"}}, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Tokens().Create(ctx, other); err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Hour)
	// An expired token counts against itself: its third failure in the window is the
	// last Unauthenticated, then ResourceExhausted from any address.
	for i, addr := range []string{"10.0.0.1:5000", "10.0.0.3:1", "10.0.0.4:1"} {
		if _, err := a.Authenticate(ctx, hdr(secret), addr); !errors.Is(err, auth.ErrExpired) {
			t.Fatalf("expired token, failure %d: %v", i+1, err)
		}
	}
	if _, err := a.Authenticate(ctx, hdr(secret), "10.0.0.5:1"); connect.CodeOf(err) != connect.CodeResourceExhausted {
		t.Fatalf("expired token after 3 failures: %v, want ResourceExhausted", err)
	}
	// ...which leaves that address's other calls alone.
	if _, err := a.Authenticate(ctx, hdr(otherSecret), "10.0.0.1:5000"); err != nil {
		t.Fatalf("valid token from the address of an expired one: %v", err)
	}
	// Calls without a usable token count against the client address (host, not port).
	if _, err := a.Authenticate(ctx, hdr(""), "127.0.0.1:1"); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("no token with Required: %v", err)
	}
	for _, port := range []string{"2", "3"} {
		if _, err := a.Authenticate(ctx, hdr("hodei_wrong"), "127.0.0.1:"+port); !errors.Is(err, auth.ErrUnknownToken) {
			t.Fatalf("unknown token: %v", err)
		}
	}
	if _, err := a.Authenticate(ctx, hdr("hodei_wrong"), "127.0.0.1:4"); connect.CodeOf(err) != connect.CodeResourceExhausted {
		t.Fatalf("unknown token after 3 failures: %v, want ResourceExhausted", err)
	}
	if _, err := a.Authenticate(ctx, hdr(""), "127.0.0.1:5"); connect.CodeOf(err) != connect.CodeResourceExhausted {
		t.Fatalf("no token after 3 failures: %v, want ResourceExhausted", err)
	}
	// A valid token from the same address is not locked out by others' failures.
	if p, err := a.Authenticate(ctx, hdr(otherSecret), "127.0.0.1:6"); err != nil || p.Name != "ops" {
		t.Fatalf("valid token from a rate-limited address: %+v, %v", p, err)
	}
	if _, err := a.Authenticate(ctx, hdr("hodei_wrong"), "10.0.0.2:7000"); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("another address: %v", err)
	}
	now = now.Add(time.Minute)
	if _, err := a.Authenticate(ctx, hdr("hodei_wrong"), "127.0.0.1:7000"); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("after the window: %v, want Unauthenticated again", err)
	}
	recs, err := st.Audit().List(ctx, storeFilter())
	if err != nil || len(recs) == 0 || recs[0].Outcome != auth.OutcomeDenied || recs[0].Actor != "ci" {
		t.Fatalf("audit = %+v, %v", recs, err)
	}
}
