package auth_test

import (
	"strings"
	"testing"

	"github.com/hodei-jobs/hodei/auth"
)

// FuzzParseBearer fuzzes the Authorization header parser: a token it returns is
// non-empty printable ASCII without spaces, parses back from "Bearer <token>", and
// an empty header is no token.
func FuzzParseBearer(f *testing.F) {
	for _, s := range []string{"", "Bearer hodei_abc", "bearer x", "Basic dXNlcjpwYXNz", "Bearer ", "Bearer  a b",
		"Bearer \x7f", "Bearer hodei_" + strings.Repeat("A", 600), "BEARER\ttok", "Bearer\u00a0x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, header string) {
		tok, err := auth.ParseBearer(header)
		if err != nil {
			if tok != "" {
				t.Fatalf("%q: token %q with error %v", header, tok, err)
			}
			return
		}
		if header == "" {
			if tok != "" {
				t.Fatalf("empty header gave token %q", tok)
			}
			return
		}
		if tok == "" {
			t.Fatalf("%q accepted without a token", header)
		}
		for _, r := range tok {
			if r <= ' ' || r >= 0x7f {
				t.Fatalf("%q: token %q holds %q", header, tok, r)
			}
		}
		again, err := auth.ParseBearer("Bearer " + tok)
		if err != nil || again != tok {
			t.Fatalf("%q: token %q does not parse back: %q, %v", header, tok, again, err)
		}
	})
}
