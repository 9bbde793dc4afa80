package tlsconf_test

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hodei-jobs/hodei/internal/tlsconf"
	"github.com/hodei-jobs/hodei/internal/tlstest"
)

// serve runs an HTTPS server on loopback with cfg; it answers the CommonName of the
// client certificate it verified, or "-".
func serve(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := "-"
		if len(r.TLS.VerifiedChains) > 0 {
			name = r.TLS.VerifiedChains[0][0].Subject.CommonName
		}
		_, _ = io.WriteString(w, name)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "https://" + ln.Addr().String()
}

// get fetches url over a new connection verifying the server with roots; it returns
// the body and the server certificate's CommonName.
func get(t *testing.T, url string, cfg *tls.Config) (string, string, error) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}}
	res, err := c.Get(url)
	if err != nil {
		return "", "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return string(b), res.TLS.PeerCertificates[0].Subject.CommonName, err
}

func pool(t *testing.T, ca *tlstest.CA) *x509.CertPool {
	t.Helper()
	p, err := tlsconf.ParseCertPool(ca.CertPEM, "test")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestReloaderPicksUpRenewedCertificate(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	ca1, ca2 := tlstest.NewCA(t, "one"), tlstest.NewCA(t, "two")
	ca1.Issue("server-1", certFile, keyFile, "127.0.0.1")
	r, err := tlsconf.NewReloader(certFile, keyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	url := serve(t, tlsconf.ServerConfig(r, nil))
	c1, _ := tlsconf.ClientConfig(pool(t, ca1), "", "")
	c2, _ := tlsconf.ClientConfig(pool(t, ca2), "", "")
	if _, cn, err := get(t, url, c1); err != nil || cn != "server-1" {
		t.Fatalf("first certificate: %q, %v", cn, err)
	}
	// A client trusting another CA is refused.
	if _, _, err := get(t, url, c2); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("client with the wrong CA: %v, want a certificate error", err)
	}

	// Renewal by another CA: the next handshake serves the new certificate.
	ca2.Issue("server-2", certFile, keyFile, "127.0.0.1")
	if _, cn, err := get(t, url, c2); err != nil || cn != "server-2" {
		t.Fatalf("after renewal: %q, %v", cn, err)
	}
	if _, _, err := get(t, url, c1); err == nil {
		t.Fatal("the old CA still verifies the server after renewal")
	}

	// Half-written renewal (a key that does not match): the previous certificate stays.
	ca1.Issue("server-3", filepath.Join(dir, "other.crt"), keyFile, "127.0.0.1")
	if _, cn, err := get(t, url, c2); err != nil || cn != "server-2" {
		t.Fatalf("after a mismatched key: %q, %v; want server-2 still served", cn, err)
	}
}

func TestClientCertificates(t *testing.T) {
	dir := t.TempDir()
	ca := tlstest.NewCA(t, "ca")
	clients := tlstest.NewCA(t, "clients")
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	ca.Issue("server", certFile, keyFile, "127.0.0.1")
	ccert, ckey := filepath.Join(dir, "c.crt"), filepath.Join(dir, "c.key")
	clients.Issue("alice", ccert, ckey)
	r, err := tlsconf.NewReloader(certFile, keyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	url := serve(t, tlsconf.ServerConfig(r, pool(t, clients)))
	without, _ := tlsconf.ClientConfig(pool(t, ca), "", "")
	if body, _, err := get(t, url, without); err != nil || body != "-" {
		t.Fatalf("without a client certificate: %q, %v (the handler decides)", body, err)
	}
	with, err := tlsconf.ClientConfig(pool(t, ca), ccert, ckey)
	if err != nil {
		t.Fatal(err)
	}
	if body, _, err := get(t, url, with); err != nil || body != "alice" {
		t.Fatalf("with a client certificate: %q, %v", body, err)
	}
	// A client certificate of another CA is never verified (Go's client does not even
	// send one the server's CA list does not name).
	ca.Issue("mallory", ccert, ckey)
	bad, _ := tlsconf.ClientConfig(pool(t, ca), ccert, ckey)
	if body, _, err := get(t, url, bad); err == nil && body != "-" {
		t.Fatalf("a client certificate of an unknown CA was verified: %q", body)
	}
}

func TestErrorsNameTheFlag(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		err  error
		want string
	}{
		{func() error {
			_, err := tlsconf.NewReloader(filepath.Join(dir, "no.crt"), filepath.Join(dir, "no.key"), nil)
			return err
		}(), "--tls-cert"},
		{func() error { _, err := tlsconf.ClientConfig(nil, "a.crt", ""); return err }(), "--client-cert and --client-key"},
		{func() error { _, err := tlsconf.LoadCertPool(filepath.Join(dir, "none.pem"), "--ca-cert"); return err }(), "--ca-cert"},
		{func() error { _, err := tlsconf.ParseCertPool([]byte("not pem"), "$HODEI_CA_CERT_PEM"); return err }(), "$HODEI_CA_CERT_PEM: no PEM certificate"},
	} {
		if tc.err == nil || !strings.Contains(tc.err.Error(), tc.want) {
			t.Errorf("error %v does not name %q", tc.err, tc.want)
		}
	}
}

// TestPEMFileFollowsRotation: the workers' CA bundle is read again when its file is
// replaced; a replacement without a certificate keeps the previous bundle; a missing
// file at start is an error naming the flag.
func TestPEMFileFollowsRotation(t *testing.T) {
	a, b := tlstest.NewCA(t, "ca-a"), tlstest.NewCA(t, "ca-b")
	path := filepath.Join(t.TempDir(), "workers-ca.pem")
	replace := func(content []byte) {
		t.Helper()
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, content, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil { // another file: noticed whatever the clock
			t.Fatal(err)
		}
	}
	if _, err := tlsconf.NewPEMFile(path, "--tls-worker-ca", nil); err == nil || !strings.Contains(err.Error(), "--tls-worker-ca") {
		t.Fatalf("missing file: %v, want an error naming --tls-worker-ca", err)
	}
	replace(a.CertPEM)
	f, err := tlsconf.NewPEMFile(path, "--tls-worker-ca", nil)
	if err != nil {
		t.Fatal(err)
	}
	if f.Current() != string(a.CertPEM) {
		t.Fatal("Current is not the file's bundle")
	}
	replace(append(append([]byte(nil), a.CertPEM...), b.CertPEM...)) // both during a rotation
	if f.Current() != string(a.CertPEM)+string(b.CertPEM) {
		t.Fatal("Current did not follow the replaced file")
	}
	replace(b.CertPEM)
	if f.Current() != string(b.CertPEM) {
		t.Fatal("Current did not follow the rotation")
	}
	replace([]byte("-----BEGIN CERT"))
	if f.Current() != string(b.CertPEM) {
		t.Fatal("a half-written bundle replaced the previous one")
	}
}
