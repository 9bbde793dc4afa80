package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// asStdin runs the CLI against s with token (HODEI_TOKEN; "" sends none) and stdin
// (hodei secret set reads the value from it).
func (s *server) asStdin(token, stdin string, args ...string) cliResult {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, hodeiBin, args...)
	cmd.Env = append(cleanEnv(), "HODEI_SERVER="+s.url, "HODEI_CONFIG="+filepath.Join(s.dataDir, "no-client-config.json"))
	if token != "" {
		cmd.Env = append(cmd.Env, "HODEI_TOKEN="+token)
	}
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := cliResult{args: args, stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ee.Exited():
		r.code = ee.ExitCode()
	default:
		s.t.Fatalf("hodei %s: %v", shellQuote(args), err)
	}
	return r
}

// startAuthServer starts `hodei server --auth` on PostgreSQL with a bootstrap token
// file and more flags, and returns it with the bootstrap admin token.
func startAuthServer(t *testing.T, extra ...string) (*server, string) {
	t.Helper()
	bootFile := filepath.Join(t.TempDir(), "admin.token")
	s := startServerArgs(t, backendPostgres, 2, append([]string{"--auth", "--bootstrap-token-file", bootFile}, extra...)...)
	b, err := os.ReadFile(bootFile)
	if err != nil {
		t.Fatal(err)
	}
	return s, strings.TrimSpace(string(b))
}

// createToken makes a token with the admin token and returns its secret.
func (s *server) createToken(admin string, args ...string) string {
	s.t.Helper()
	tok := strings.TrimSpace(s.mustAs(admin, append([]string{"token", "create"}, args...)...).stdout)
	if !strings.HasPrefix(tok, "hodei_") {
		s.t.Fatalf("token create printed %q", tok)
	}
	return tok
}

// dataDirText is every file under the server's data directory (the embedded NATS
// store with the events and commands that crossed it, worker files) as one text.
func (s *server) dataDirText() string {
	s.t.Helper()
	var all strings.Builder
	err := filepath.WalkDir(s.dataDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !d.Type().IsRegular() {
			return nil // a file removed while walking
		}
		b, err := os.ReadFile(path)
		if err == nil {
			all.Write(b)
		}
		return nil
	})
	if err != nil {
		s.t.Fatal(err)
	}
	return all.String()
}

// TestSecretsUnderAuth drives job secrets on `hodei server --auth` with tokens of two
// namespaces: only an admin sets and deletes them; a submitter of another namespace
// does not see the secret, cannot use it (the same answer as for a secret that
// exists nowhere), cannot see the job that used it; the job of the right namespace
// gets the value and prints it whole and base64-encoded, which its logs show masked.
// The value is then nowhere else: job get, logs (as viewer), saga history, audit
// trail, the database (every table), the server log, the data directory (NATS store:
// events and commands).
func TestSecretsUnderAuth(t *testing.T) {
	keyFile, _ := secretsKeyFile(t)
	s, admin := startAuthServer(t, "--secrets-key-file", keyFile)
	rnd := make([]byte, 12)
	_, _ = rand.Read(rnd)
	value := "sv-" + hex.EncodeToString(rnd) // 27 bytes: whole base64 groups
	sum := sha256.Sum256([]byte(value))
	forms := []string{value, hex.EncodeToString([]byte(value)), base64.StdEncoding.EncodeToString([]byte(value))}
	leaks := func(where, text string) {
		t.Helper()
		for _, f := range forms {
			if strings.Contains(text, f) {
				t.Fatalf("%s holds the secret value (%q)", where, f)
			}
		}
	}
	subA := s.createToken(admin, "--name", "sub-a", "--role", "submitter", "--namespace", "team-a")
	viewerA := s.createToken(admin, "--name", "viewer-a", "--role", "viewer", "--namespace", "team-a")
	var created struct {
		Token struct {
			Name       string   `json:"name"`
			Namespaces []string `json:"namespaces"`
		} `json:"token"`
		Secret string `json:"secret"`
	}
	out := s.mustAs(admin, "token", "create", "--name", "sub-b", "--role", "submitter", "--namespace", "team-b", "-o", "json").stdout
	if err := json.Unmarshal([]byte(out), &created); err != nil || created.Token.Name != "sub-b" ||
		len(created.Token.Namespaces) != 1 || created.Token.Namespaces[0] != "team-b" || !strings.HasPrefix(created.Secret, "hodei_") {
		t.Fatalf("token create -o json: %v\n%s", err, out)
	}
	subB := created.Secret

	r := s.asStdin(admin, value+"\n", "secret", "set", "DB_PASS", "--namespace", "team-a", "-o", "json")
	var set struct {
		Secret struct{ Name, Namespace string } `json:"secret"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &set); r.code != 0 || err != nil || set.Secret.Name != "DB_PASS" || set.Secret.Namespace != "team-a" {
		t.Fatalf("secret set -o json by admin: %v (%v)", r, err)
	}
	leaks("secret set's output", r.stdout+r.stderr)
	// Submitters neither set nor delete secrets, even in their namespace.
	refused(t, s.asStdin(subA, "x\n", "secret", "set", "OTHER", "--namespace", "team-a"), "not allowed")
	refused(t, s.as(subA, "secret", "delete", "DB_PASS", "--namespace", "team-a"), "not allowed")
	if l := s.mustAs(subA, "secret", "list").stdout; !strings.Contains(l, "DB_PASS") {
		t.Fatalf("sub-a's secret list misses its namespace's secret:\n%s", l)
	}

	// Team b's submitter: team-a's secrets are not listed, and naming one answers
	// exactly like naming a secret that exists nowhere.
	refused(t, s.as(subB, "secret", "list", "--namespace", "team-a"), "may not use namespace")
	if l := s.mustAs(subB, "secret", "list", "-o", "json").stdout; strings.Contains(l, "DB_PASS") {
		t.Fatalf("sub-b's secret list shows team-a's secret:\n%s", l)
	}
	rExists := s.as(subB, "job", "submit", "--secret", "DB_PASS", "--", "true")
	rNone := s.as(subB, "job", "submit", "--secret", "NO_SUCH", "--", "true")
	refused(t, rExists, `no secret "DB_PASS" in namespace "team-b"`)
	if strings.ReplaceAll(rExists.stderr, "DB_PASS", "X") != strings.ReplaceAll(rNone.stderr, "NO_SUCH", "X") {
		t.Fatalf("another namespace's secret and a missing one answer differently:\n%s\n%s", rExists.stderr, rNone.stderr)
	}
	refused(t, s.as(subB, "job", "submit", "--namespace", "team-a", "--secret", "DB_PASS", "--", "true"), "may not use namespace")
	leaks("sub-b's refusals", rExists.stderr+rNone.stderr)

	// Team a's job gets the value and prints it; its logs show it masked.
	script := filepath.Join(t.TempDir(), "job.sh")
	if err := os.WriteFile(script, []byte(`printf 'raw=%s\n' "$DB_PASS"
echo "$DB_PASS" | base64
printf %s "$DB_PASS" | sha256sum | cut -d' ' -f1
`), 0o600); err != nil {
		t.Fatal(err)
	}
	r = s.mustAs(subA, "job", "run", "--label", "case=secrets-auth", "--secret", "DB_PASS", "--script", script)
	want := "raw=***\n***Cg==\n" + hex.EncodeToString(sum[:]) + "\n"
	if r.stdout != want {
		t.Fatalf("job run output %q, want %q", r.stdout, want)
	}
	var list struct {
		Jobs []struct{ ID string } `json:"jobs"`
	}
	out = s.mustAs(subA, "job", "list", "--label", "case=secrets-auth", "-o", "json").stdout
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list.Jobs) != 1 {
		t.Fatalf("job list -o json: %v\n%s", err, out)
	}
	id := list.Jobs[0].ID

	// Team b cannot see the job; team a's viewer sees it and its masked logs.
	refused(t, s.as(subB, "job", "get", id), "not found")
	refused(t, s.as(subB, "job", "logs", id), "not found")
	if r := s.mustAs(viewerA, "job", "logs", id); r.stdout != want {
		t.Fatalf("viewer's job logs %q, want %q", r.stdout, want)
	}
	leaks("job get -o json", s.mustAs(viewerA, "job", "get", id, "-o", "json").stdout)
	leaks("saga show -o json", s.mustAs(admin, "saga", "show", "--job", id, "-o", "json").stdout)
	leaks("audit list -o json", s.mustAs(admin, "audit", "list", "--limit", "1000", "-o", "json").stdout)
	leaks("the database", s.dumpDatabase())
	leaks("the server log", s.log.String())
	dd := s.dataDirText()
	if !strings.Contains(dd, id) {
		t.Fatal("the data directory holds nothing of the job (no NATS store?): its grep would prove nothing")
	}
	leaks("the data directory (NATS store)", dd)

	// The audit trail records who set the secret, not its value.
	if a := s.mustAs(admin, "audit", "list", "--actor", "bootstrap").stdout; !strings.Contains(a, "secret.set") ||
		!strings.Contains(a, "DB_PASS") {
		t.Fatalf("audit list --actor bootstrap has no secret.set of DB_PASS:\n%s", a)
	}
	if d := s.mustAs(admin, "secret", "delete", "DB_PASS", "--namespace", "team-a", "-o", "json").stdout; !strings.Contains(d, `"DB_PASS"`) {
		t.Fatalf("secret delete -o json: %s", d)
	}
	if a := s.mustAs(admin, "audit", "list", "--actor", "bootstrap").stdout; !strings.Contains(a, "secret.delete") {
		t.Fatalf("audit list has no secret.delete:\n%s", a)
	}
}

// follower is a `hodei job logs --follow` (or other streaming CLI call) running in
// the background.
type follower struct {
	cmd            *exec.Cmd
	stdout, stderr *lockedBuffer
	done           chan struct{}
	exited         time.Time
}

func (s *server) startAs(token string, args ...string) *follower {
	s.t.Helper()
	f := &follower{stdout: &lockedBuffer{}, stderr: &lockedBuffer{}, done: make(chan struct{})}
	f.cmd = exec.Command(hodeiBin, args...)
	f.cmd.Env = append(cleanEnv(), "HODEI_SERVER="+s.url, "HODEI_CONFIG="+filepath.Join(s.dataDir, "no-client-config.json"),
		"HODEI_TOKEN="+token)
	f.cmd.Stdout, f.cmd.Stderr = f.stdout, f.stderr
	if err := f.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	go func() { _ = f.cmd.Wait(); f.exited = time.Now(); close(f.done) }()
	s.t.Cleanup(func() {
		select {
		case <-f.done:
		default:
			_ = f.cmd.Process.Kill()
			<-f.done
		}
	})
	return f
}

// waitOutput waits until the follower printed want.
func (f *follower) waitOutput(t *testing.T, want string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(f.stdout.String(), want) {
		select {
		case <-f.done:
			t.Fatalf("hodei %s exited before printing %q: stdout %q stderr %q", shellQuote(f.cmd.Args[1:]), want, f.stdout, f.stderr)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("hodei %s did not print %q within a minute", shellQuote(f.cmd.Args[1:]), want)
		}
	}
}

// waitEnded waits (at most limit) for the follower to exit with an error containing
// want, and returns when it exited.
func (f *follower) waitEnded(t *testing.T, limit time.Duration, want string) time.Time {
	t.Helper()
	select {
	case <-f.done:
	case <-time.After(limit):
		t.Fatalf("hodei %s still streams %s later, want it ended with %q", shellQuote(f.cmd.Args[1:]), limit, want)
	}
	if f.cmd.ProcessState.Success() || !strings.Contains(f.stderr.String(), want) {
		t.Fatalf("hodei %s: exit %v, stderr %q; want an error containing %q", shellQuote(f.cmd.Args[1:]),
			f.cmd.ProcessState, f.stderr, want)
	}
	return f.exited
}

// TestStreamsEndWhenTokenRevokedOrExpires: open streams of the CLI (`job logs
// --follow` on StreamLogs, `job run` on WatchJob and StreamLogs) end with
// "not authenticated" when their token is revoked or expires, while the job runs on;
// another token's stream on the same job goes on.
func TestStreamsEndWhenTokenRevokedOrExpires(t *testing.T) {
	s, admin := startAuthServer(t)
	subA := s.createToken(admin, "--name", "sub-a", "--role", "submitter", "--namespace", "team-a")
	viewer := s.createToken(admin, "--name", "viewer-a", "--role", "viewer", "--namespace", "team-a")

	run := s.startAs(subA, "job", "run", "--label", "case=streams", "--", "sh", "-c", "echo started; sleep 300")
	run.waitOutput(t, "started")
	var list struct {
		Jobs []struct{ ID string } `json:"jobs"`
	}
	out := s.mustAs(admin, "job", "list", "--label", "case=streams", "-o", "json").stdout
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list.Jobs) != 1 {
		t.Fatalf("job list -o json: %v\n%s", err, out)
	}
	id := list.Jobs[0].ID
	follow := s.startAs(subA, "job", "logs", "--follow", id)
	follow.waitOutput(t, "started")
	kept := s.startAs(viewer, "job", "logs", "--follow", id)
	kept.waitOutput(t, "started")

	// Revocation: both of sub-a's streams end; the viewer's goes on.
	revoked := time.Now()
	if out := s.mustAs(admin, "token", "revoke", "sub-a", "-o", "json").stdout; !strings.Contains(out, `"revokedAt"`) {
		t.Fatalf("token revoke -o json: %s", out)
	}
	e1 := follow.waitEnded(t, 10*time.Second, "revoked")
	e2 := run.waitEnded(t, 10*time.Second, "revoked")
	t.Logf("streams ended %s and %s after `token revoke` was started (its own run included)", e1.Sub(revoked), e2.Sub(revoked))
	select {
	case <-kept.done:
		t.Fatalf("another token's stream ended: %q", kept.stderr)
	default:
	}

	// Expiry: a token that expires while its stream is open.
	created := time.Now()
	short := s.createToken(admin, "--name", "short", "--role", "viewer", "--namespace", "team-a", "--expires", "4s")
	exp := s.startAs(short, "job", "logs", "--follow", id)
	exp.waitOutput(t, "started")
	select {
	case <-exp.done:
		t.Fatalf("stream of a token ended before its expiry: %q", exp.stderr)
	case <-time.After(time.Until(created.Add(3 * time.Second))):
	}
	e3 := exp.waitEnded(t, 10*time.Second, "expired")
	t.Logf("stream of the expiring token ended %s after the token was created with --expires 4s", e3.Sub(created))

	// The job itself was not affected: it still runs, then is cancelled by the admin.
	if st := s.mustAs(admin, "job", "get", id, "-o", "json").stdout; !strings.Contains(st, "RUNNING") {
		t.Fatalf("job after its watchers' tokens ended:\n%s", st)
	}
	s.mustAs(admin, "job", "cancel", id)
	select {
	case <-kept.done: // it follows until the job ends
	case <-time.After(time.Minute):
		t.Fatal("the viewer's stream did not end with the cancelled job")
	}
}

// TestNamespaceRunningLimit: `hodei namespace set team-a --max-running 1` holds team-a
// to one job with a worker at a time while team-b's job starts and ends beside it;
// the limit change is in the audit trail.
func TestNamespaceRunningLimit(t *testing.T) {
	s, admin := startAuthServer(t)
	s.mustAs(admin, "namespace", "set", "team-a", "--max-running", "1")
	a1 := strings.TrimSpace(s.mustAs(admin, "job", "submit", "--namespace", "team-a", "--", "sleep", "4").stdout)
	a2 := strings.TrimSpace(s.mustAs(admin, "job", "submit", "--namespace", "team-a", "--", "sleep", "4").stdout)
	b1 := strings.TrimSpace(s.mustAs(admin, "job", "submit", "--namespace", "team-b", "--", "true").stdout)
	state := func(id string) string {
		t.Helper()
		var j struct{ State string }
		out := s.mustAs(admin, "job", "get", id, "-o", "json").stdout
		if err := json.Unmarshal([]byte(out), &j); err != nil || j.State == "" {
			t.Fatalf("job get -o json: %v\n%s", err, out)
		}
		return j.State
	}
	holds := func(st string) bool {
		return strings.Contains(st, "PROVISIONING") || strings.Contains(st, "ASSIGNED") || strings.Contains(st, "RUNNING")
	}
	// bothHold reads the jobs holding a worker in one list (one query: one instant;
	// two job gets could see a1 before it ended and a2 after it started).
	bothHold := func() bool {
		t.Helper()
		l := s.mustAs(admin, "job", "list", "--state", "PROVISIONING,ASSIGNED,RUNNING", "-o", "json").stdout
		return strings.Contains(l, a1) && strings.Contains(l, a2)
	}
	for deadline := time.Now().Add(time.Minute); !strings.Contains(state(b1), "SUCCEEDED"); {
		if time.Now().After(deadline) {
			t.Fatalf("team-b's job is %s after a minute", state(b1))
		}
		if bothHold() {
			t.Fatal("both team-a jobs hold a worker with --max-running 1")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// team-b's job ended while team-a's second job still waited.
	if st1, st2 := state(a1), state(a2); !(holds(st1) && strings.Contains(st2, "PENDING")) && !(holds(st2) && strings.Contains(st1, "PENDING")) {
		t.Fatalf("team-a's jobs are %s and %s once team-b's ended; want one holding a worker and one PENDING", st1, st2)
	}
	for deadline := time.Now().Add(2 * time.Minute); !strings.Contains(state(a1), "SUCCEEDED") || !strings.Contains(state(a2), "SUCCEEDED"); {
		if time.Now().After(deadline) {
			t.Fatalf("team-a's jobs are %s and %s after two minutes", state(a1), state(a2))
		}
		if bothHold() {
			t.Fatal("both team-a jobs hold a worker with --max-running 1")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if a := s.mustAs(admin, "audit", "list", "--actor", "bootstrap").stdout; !strings.Contains(a, "namespace.set") {
		t.Fatalf("audit list has no namespace.set:\n%s", a)
	}
}
