package server

import (
	"errors"
	"strings"
	"testing"
)

// TestExposureNeedsTLSAndAuth: beyond loopback the server starts only with both TLS
// and --auth, or --insecure; each refusal names what is missing.
func TestExposureNeedsTLSAndAuth(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want []string // "" entries: starts
	}{
		{"loopback", Config{Listen: "127.0.0.1:0"}, nil},
		{"neither", Config{Listen: "0.0.0.0:7070"}, []string{"--auth", "--tls-cert", "--insecure"}},
		{"auth only", Config{Listen: "0.0.0.0:7070", Auth: true}, []string{"TLS is not", "--tls-cert", "--insecure"}},
		{"tls only", Config{Listen: "0.0.0.0:7070", TLSCert: "c", TLSKey: "k"}, []string{"--auth is not", "--insecure"}},
		{"both", Config{Listen: "0.0.0.0:7070", Auth: true, TLSCert: "c", TLSKey: "k"}, nil},
		{"insecure", Config{Listen: "0.0.0.0:7070", Insecure: true}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.checkExposure()
			if tc.want == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrExposed) {
				t.Fatalf("got %v, want ErrExposed", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("refusal %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestTLSFlagsGoTogether(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{TLSCert: "c"}, "--tls-cert and --tls-key"},
		{Config{TLSKey: "k"}, "--tls-cert and --tls-key"},
		{Config{TLSClientCA: "ca"}, "--tls-client-ca needs"},
		{Config{TLSWorkerCA: "ca"}, "--tls-worker-ca needs"},
	} {
		if err := tc.cfg.checkTLS(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.cfg, err, tc.want)
		}
	}
	if err := (&Config{TLSCert: "c", TLSKey: "k", TLSClientCA: "a", TLSWorkerCA: "b"}).checkTLS(); err != nil {
		t.Errorf("complete TLS config refused: %v", err)
	}
}
