package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/internal/tlstest"
)

// tlsClient is an HTTP client verifying the server with ca, presenting the client
// certificate of certFile/keyFile when set.
func tlsClient(t *testing.T, ca *tlstest.CA, certFile, keyFile string) *http.Client {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.CertPEM)
	cfg := &tls.Config{RootCAs: roots}
	if certFile != "" {
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true, DisableKeepAlives: true}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// tlsFiles issues a server certificate for 127.0.0.1 by a new CA into a temp dir.
func tlsFiles(t *testing.T) (ca *tlstest.CA, certFile, keyFile string) {
	dir := t.TempDir()
	ca = tlstest.NewCA(t, "hodei-test")
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	ca.Issue("hodei-server", certFile, keyFile, "127.0.0.1")
	return ca, certFile, keyFile
}

// TestTLSServer drives `hodei dev --tls-cert --tls-key --tls-worker-ca` as a user
// would: a job runs end to end over HTTPS (its worker verifies the server with the CA
// bundle the provider handed it), plaintext and a client trusting another CA are
// refused, and a renewed certificate (another CA) is served without a restart, and a
// rotated --tls-worker-ca file reaches the workers started afterwards.
func TestTLSServer(t *testing.T) {
	ca, certFile, keyFile := tlsFiles(t)
	s := newServer(t, backendDev, 2, "--tls-cert", certFile, "--tls-key", keyFile, "--tls-worker-ca", ca.CertFile)
	s.client = tlsClient(t, ca, "", "")
	s.cliEnv = []string{"HODEI_CA_CERT=" + ca.CertFile}
	s.startProcess()
	if !strings.HasPrefix(s.url, "https://127.0.0.1:") {
		t.Fatalf("server URL %q, want https://127.0.0.1:…", s.url)
	}

	// A job end to end: the worker dials https:// and verifies the server.
	if r := s.mustHodei("job", "run", "--", "echo", "over tls"); r.stdout != "over tls\n" {
		t.Fatalf("job output %q", r.stdout)
	}
	id := s.submit("--", "true")
	s.waitState(id, time.Minute, "SUCCEEDED")

	// Plaintext is refused: the CLI with http://, and a raw HTTP/1.1 request.
	plain := "http://" + s.listen
	r := s.hodei("job", "list", "--server", plain)
	if r.code == 0 {
		t.Fatalf("job list over plaintext to a TLS server succeeded: %v", r)
	}
	res, err := http.Get(plain + "/healthz")
	if err == nil {
		res.Body.Close()
		if res.StatusCode != http.StatusBadRequest {
			t.Fatalf("plaintext GET /healthz: %s, want 400", res.Status)
		}
	}

	// A client that trusts another CA (or only the system's roots) is refused.
	other := tlstest.NewCA(t, "other")
	r = s.hodei("job", "list", "--ca-cert", other.CertFile)
	if r.code == 0 || !strings.Contains(r.stderr, "certificate") {
		t.Fatalf("job list with the wrong CA: want a certificate error, got %v", r)
	}
	cmd := exec.Command(hodeiBin, "job", "list", "--server", s.url)
	cmd.Env = cleanEnv()
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Fatalf("job list without --ca-cert (system roots) succeeded:\n%s", out)
	}
	if _, err := tlsClient(t, other, "", "").Get(s.url + "/healthz"); err == nil {
		t.Fatal("HTTPS client with the wrong CA got an answer")
	}

	// Renewal: a certificate of another CA, picked up at the next handshake.
	other.Issue("hodei-server-renewed", certFile, keyFile, "127.0.0.1")
	res, err = tlsClient(t, other, "", "").Get(s.url + "/healthz")
	if err != nil {
		t.Fatalf("after renewal, a client of the new CA: %v", err)
	}
	res.Body.Close()
	if cn := res.TLS.PeerCertificates[0].Subject.CommonName; cn != "hodei-server-renewed" {
		t.Fatalf("after renewal the server presents %q", cn)
	}
	if r := s.hodei("job", "list", "--ca-cert", other.CertFile); r.code != 0 {
		t.Fatalf("CLI with the new CA after renewal: %v", r)
	}
	if _, err := tlsClient(t, ca, "", "").Get(s.url + "/healthz"); err == nil {
		t.Fatal("the old CA still verifies the server after renewal")
	}

	// The workers' CA bundle (--tls-worker-ca) rotated too: a worker started now gets
	// the new one (the server reads the file again), verifies the server and runs
	// the job.
	tmp := ca.CertFile + ".new"
	if err := os.WriteFile(tmp, other.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, ca.CertFile); err != nil {
		t.Fatal(err)
	}
	if r := s.mustHodei("job", "run", "--ca-cert", other.CertFile, "--", "echo", "after rotation"); r.stdout != "after rotation\n" {
		t.Fatalf("job output after the CA rotation %q", r.stdout)
	}
}

// TestMTLSServer: with --tls-client-ca every API request needs a client certificate
// of that CA (refused without one, or with one of another CA); the worker stream keeps
// its own credentials, so jobs still run. The CLI's certificate also comes from a
// context.
func TestMTLSServer(t *testing.T) {
	ca, certFile, keyFile := tlsFiles(t)
	clients := tlstest.NewCA(t, "clients")
	dir := t.TempDir()
	ccert, ckey := filepath.Join(dir, "alice.crt"), filepath.Join(dir, "alice.key")
	clients.Issue("alice", ccert, ckey)
	// No --tls-worker-ca: workers get the --tls-cert file itself, the leaf as their
	// only trusted certificate.
	s := newServer(t, backendDev, 2, "--tls-cert", certFile, "--tls-key", keyFile,
		"--tls-client-ca", clients.CertFile)
	s.client = tlsClient(t, ca, ccert, ckey)
	s.startProcess()

	// Without a client certificate: refused (HTTP and CLI).
	res, err := tlsClient(t, ca, "", "").Get(s.url + "/healthz")
	if err == nil {
		res.Body.Close()
		if res.StatusCode != http.StatusUnauthorized {
			t.Fatalf("GET /healthz without a client certificate: %s, want 401", res.Status)
		}
	}
	s.cliEnv = []string{"HODEI_CA_CERT=" + ca.CertFile}
	r := s.hodei("job", "list")
	if r.code == 0 || !strings.Contains(r.stderr, "client certificate required") {
		t.Fatalf("job list without a client certificate: want a refusal, got %v", r)
	}
	// A certificate of another CA is not one.
	mallory, mkey := filepath.Join(dir, "mallory.crt"), filepath.Join(dir, "mallory.key")
	ca.Issue("mallory", mallory, mkey)
	if r := s.hodei("job", "list", "--client-cert", mallory, "--client-key", mkey); r.code == 0 {
		t.Fatalf("job list with a client certificate of another CA: %v", r)
	}

	// With the certificate (environment), a job runs end to end.
	s.cliEnv = append(s.cliEnv, "HODEI_CLIENT_CERT="+ccert, "HODEI_CLIENT_KEY="+ckey)
	if r := s.mustHodei("job", "run", "--", "echo", "mutual"); r.stdout != "mutual\n" {
		t.Fatalf("job output %q", r.stdout)
	}

	// The same from a context that stores the files.
	cfgFile := filepath.Join(dir, "config.json")
	s.cliEnv = []string{"HODEI_CONFIG=" + cfgFile}
	s.mustHodei("context", "add", "secure", "--server", s.url, "--ca-cert", ca.CertFile,
		"--client-cert", ccert, "--client-key", ckey)
	cmd := exec.Command(hodeiBin, "job", "list")
	cmd.Env = append(cleanEnv(), "HODEI_CONFIG="+cfgFile)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("job list through the context: %v\n%s", err, out)
	}
}
