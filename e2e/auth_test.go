package e2e

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/internal/pgtest"
)

// as runs the CLI against s with token (HODEI_TOKEN; "" sends none).
func (s *server) as(token string, args ...string) cliResult {
	s.t.Helper()
	return s.asStdin(token, "", args...)
}

func (s *server) mustAs(token string, args ...string) cliResult {
	s.t.Helper()
	r := s.as(token, args...)
	if r.code != 0 {
		s.t.Fatalf("%v", r)
	}
	return r
}

// refused checks that r failed with a message containing want.
func refused(t *testing.T, r cliResult, want string) {
	t.Helper()
	if r.code == 0 || !strings.Contains(r.stderr, want) {
		t.Fatalf("want a refusal containing %q, got %v", want, r)
	}
}

// TestAuthTokensRolesNamespaces drives `hodei server --auth` with the CLI as an operator
// and users would: the bootstrap admin token from --bootstrap-token-file, tokens per
// role and namespace, a viewer that submits, a submitter reading another namespace's
// job, revocation and expiry taking effect within a second, no token at all, a token
// written straight into the database, the audit trail, and the rate limit.
func TestAuthTokensRolesNamespaces(t *testing.T) {
	bootFile := filepath.Join(t.TempDir(), "admin.token")
	s := startServerArgs(t, backendPostgres, 2, "--auth", "--bootstrap-token-file", bootFile)
	b, err := os.ReadFile(bootFile)
	if err != nil {
		t.Fatal(err)
	}
	admin := strings.TrimSpace(string(b))
	if fi, err := os.Stat(bootFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("bootstrap token file: %v %v, want mode 0600", fi.Mode(), err)
	}

	// No token at all: refused, from loopback too (CLI and HTTP).
	refused(t, s.as("", "job", "list"), "not authenticated")
	res, err := http.Get(s.url + "/api/v1/admin/status")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("admin REST without a token: %s, want 401", res.Status)
	}
	refused(t, s.as("hodei_not-a-real-token-at-all", "job", "list"), "unknown API token")

	create := func(args ...string) string {
		t.Helper()
		r := s.mustAs(admin, append([]string{"token", "create"}, args...)...)
		tok := strings.TrimSpace(r.stdout)
		if !strings.HasPrefix(tok, "hodei_") || strings.Contains(tok, "\n") {
			t.Fatalf("token create printed %q", r.stdout)
		}
		return tok
	}
	viewerA := create("--name", "viewer-a", "--role", "viewer", "--namespace", "team-a")
	subA := create("--name", "sub-a", "--role", "submitter", "--namespace", "team-a")
	subB := create("--name", "sub-b", "--role", "submitter", "--namespace", "team-b")
	// Bad input names the flag.
	refused(t, s.as(admin, "token", "create", "--name", "x", "--role", "boss", "--namespace", "a"), "role")
	refused(t, s.as(admin, "token", "create", "--name", "y", "--role", "viewer", "--namespace", "Team_A"), "--namespace")
	// Non-admins cannot manage tokens.
	refused(t, s.as(subA, "token", "list"), "not allowed")

	// A viewer that tries to submit: PermissionDenied.
	refused(t, s.as(viewerA, "job", "submit", "--", "true"), "not allowed")

	// sub-b submits into its only namespace; sub-a cannot see the job: NotFound, and
	// the same answer as for a job that does not exist.
	idB := strings.TrimSpace(s.mustAs(subB, "job", "submit", "--", "true").stdout)
	got := s.mustAs(subB, "job", "get", idB).stdout
	if !strings.Contains(got, "team-b") {
		t.Fatalf("job get by its submitter:\n%s", got)
	}
	rA := s.as(subA, "job", "get", idB)
	refused(t, rA, "not found")
	rNone := s.as(subA, "job", "get", "01900000-0000-7000-8000-000000000000")
	if strings.ReplaceAll(rA.stderr, idB, "ID") != strings.ReplaceAll(rNone.stderr, "01900000-0000-7000-8000-000000000000", "ID") {
		t.Fatalf("another namespace's job and a missing job answer differently:\n%s\n%s", rA.stderr, rNone.stderr)
	}
	refused(t, s.as(subA, "job", "cancel", idB), "not found")
	refused(t, s.as(subA, "job", "logs", idB), "not found")
	refused(t, s.as(subA, "job", "submit", "--namespace", "team-b", "--", "true"), "not allowed")
	idA := strings.TrimSpace(s.mustAs(subA, "job", "run", "--", "echo", "from-a").stdout)
	_ = idA
	if l := s.mustAs(subA, "job", "list").stdout; strings.Contains(l, idB) || !strings.Contains(l, "team-a") {
		t.Fatalf("sub-a's list shows team-b's job or misses its own:\n%s", l)
	}
	if l := s.mustAs(viewerA, "job", "list").stdout; strings.Contains(l, idB) || !strings.Contains(l, "team-a") {
		t.Fatalf("viewer-a's list:\n%s", l)
	}
	if l := s.mustAs(admin, "job", "list").stdout; !strings.Contains(l, idB) || !strings.Contains(l, "team-a") {
		t.Fatalf("admin's list does not show every namespace:\n%s", l)
	}

	// Revocation takes effect within a second.
	s.mustAs(admin, "token", "revoke", "sub-b")
	time.Sleep(time.Second)
	refused(t, s.as(subB, "job", "list"), "revoked")

	// Expiry.
	short := create("--name", "short", "--role", "viewer", "--namespace", "team-a", "--expires", "1s")
	s.mustAs(short, "job", "list")
	time.Sleep(1500 * time.Millisecond)
	refused(t, s.as(short, "job", "list"), "expired")

	// The first admin token written straight into the database.
	r := s.mustAs("", "token", "create", "--database-url", s.dbURL, "--name", "ops", "--role", "admin")
	ops := strings.TrimSpace(r.stdout)
	s.mustAs(ops, "job", "get", idB)
	if l := s.mustAs(ops, "token", "list").stdout; !strings.Contains(l, "sub-b") || !strings.Contains(l, "revoked") ||
		strings.Contains(l, subA) || strings.Contains(l, admin) {
		t.Fatalf("token list:\n%s", l)
	}

	// The audit trail: changes and refusals, who, what, from where.
	var audit struct {
		Records []struct {
			Actor, Action, Outcome, Target, Namespace, Remote string
		} `json:"records"`
	}
	out := s.mustAs(admin, "audit", "list", "--limit", "1000", "-o", "json").stdout
	if err := json.Unmarshal([]byte(out), &audit); err != nil {
		t.Fatalf("audit list -o json: %v\n%s", err, out)
	}
	has := func(actor, action, outcome, target string) bool {
		for _, rec := range audit.Records {
			if rec.Actor == actor && rec.Action == action && rec.Outcome == outcome &&
				(target == "" || rec.Target == target) && rec.Remote == "127.0.0.1" {
				return true
			}
		}
		return false
	}
	for _, c := range [][4]string{
		{"sub-b", "job.submit", "ok", idB},
		{"bootstrap", "token.create", "ok", "viewer-a"},
		{"bootstrap", "token.revoke", "ok", "sub-b"},
		{"viewer-a", "auth.refused", "permission_denied", ""},
		// Refused by the handler: sub-a reading team-b's job (answered NotFound,
		// recorded as hidden).
		{"sub-a", "auth.refused", "hidden", ""},
		{"", "auth.refused", "unauthenticated", ""},
	} {
		if !has(c[0], c[1], c[2], c[3]) {
			t.Errorf("audit trail has no %v:\n%s", c, out)
		}
	}
	if strings.Contains(out, admin) || strings.Contains(s.log.String(), subA) || strings.Contains(s.log.String(), admin) {
		t.Error("a token's secret appears in the audit trail or the server log")
	}
	if l := s.mustAs(admin, "audit", "list", "--actor", "sub-b", "--since", "1h").stdout; !strings.Contains(l, "job.submit") ||
		strings.Contains(l, "viewer-a") {
		t.Errorf("audit list --actor sub-b:\n%s", l)
	}

	// Failed authentications are rate-limited: calls without a usable token per client
	// address, a revoked or expired token per token. A valid token is never locked out
	// by others' failures from its address (here every caller is on loopback).
	untilLimited := func(token string) {
		t.Helper()
		for range 30 {
			req, _ := http.NewRequest(http.MethodGet, s.url+"/api/v1/admin/status", nil)
			req.Header.Set("Authorization", "Bearer "+token)
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode == http.StatusTooManyRequests {
				return
			}
			if res.StatusCode != http.StatusUnauthorized {
				t.Fatalf("bad token: %s", res.Status)
			}
		}
		t.Fatal("30 failed authentications were not rate-limited")
	}
	untilLimited("hodei_wrong")
	refused(t, s.as("", "job", "list"), "too many failed authentications")
	refused(t, s.as("hodei_another-token-nobody-issued", "job", "list"), "too many failed authentications")
	s.mustAs(admin, "job", "list")
	s.mustAs(subA, "job", "list")
	untilLimited(subB) // revoked
	refused(t, s.as(subB, "job", "list"), "too many failed authentications")
	s.mustAs(subA, "job", "list")
}

// TestServerRefusesNonLoopback: `hodei server --listen 0.0.0.0:…` without TLS and
// --auth both on (none, only --auth, only TLS) and without --insecure exits naming the
// flags; with --insecure it starts and warns; with TLS and --auth it starts without a
// warning. No traffic is sent to it.
func TestServerRefusesNonLoopback(t *testing.T) {
	db := ""
	_, certFile, keyFile := tlsFiles(t)
	for _, args := range [][]string{{}, {"--auth"}, {"--tls-cert", certFile, "--tls-key", keyFile}} {
		db = filepathDB(t, db)
		cmd := exec.Command(hodeiBin, append([]string{"server", "--listen", "0.0.0.0:0", "--database-url", db,
			"--data-dir", t.TempDir()}, args...)...)
		cmd.Env = cleanEnv()
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Fatalf("hodei server --listen 0.0.0.0:0 %v started:\n%s", args, out)
		}
		for _, want := range []string{"0.0.0.0:0 is not a loopback address", "--insecure", "--auth", "TLS"} {
			if !strings.Contains(string(out), want) {
				t.Errorf("refusal %v does not mention %q:\n%s", args, want, out)
			}
		}
	}

	cmd := exec.Command(hodeiBin, "server", "--listen", "0.0.0.0:0", "--database-url", db,
		"--data-dir", t.TempDir(), "--insecure")
	cmd.Env = cleanEnv()
	stdout, _ := cmd.StdoutPipe()
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "hodei server listening on ") {
				lines <- sc.Text()
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case <-lines:
	case <-time.After(60 * time.Second):
		t.Fatalf("hodei server --insecure did not start:\n%s", stderr.String())
	}
	// stderr is copied by another goroutine than stdout: wait for the warning, do not
	// read the log at the instant the address appeared.
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(stderr.String(), "INSECURE"); {
		if time.Now().After(deadline) {
			t.Errorf("no warning on an --insecure start:\n%s", stderr.String())
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = cmd.Process.Signal(os.Interrupt)

	// With TLS and --auth both on it starts, without a warning.
	secure := exec.Command(hodeiBin, "server", "--listen", "0.0.0.0:0", "--database-url", db,
		"--data-dir", t.TempDir(), "--auth", "--tls-cert", certFile, "--tls-key", keyFile)
	secure.Env = cleanEnv()
	var out lockedBuffer
	secure.Stdout, secure.Stderr = &out, &out
	if err := secure.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = secure.Process.Kill(); _ = secure.Wait() }()
	for deadline := time.Now().Add(60 * time.Second); !strings.Contains(out.String(), "hodei server listening on https://"); {
		if time.Now().After(deadline) {
			t.Fatalf("hodei server --listen 0.0.0.0:0 --auth --tls-cert … did not start:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if strings.Contains(out.String(), "INSECURE") {
		t.Errorf("warning on a start with TLS and --auth:\n%s", out.String())
	}
	_ = secure.Process.Signal(os.Interrupt)
}

// filepathDB returns db, or a new PostgreSQL database when it is empty.
func filepathDB(t *testing.T, db string) string {
	if db != "" {
		return db
	}
	return pgtest.NewDatabase(t)
}
