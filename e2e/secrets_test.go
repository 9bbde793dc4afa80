package e2e

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// hodeiStdin is hodei with stdin (hodei secret set reads the value from it).
func (s *server) hodeiStdin(stdin string, args ...string) cliResult {
	s.t.Helper()
	return s.asStdin("", stdin, args...)
}

// dumpDatabase returns every row of every table of the server's PostgreSQL database
// as text (a full dump of the data, whatever the schema).
func (s *server) dumpDatabase() string {
	s.t.Helper()
	db, err := s.openDB()
	if err != nil {
		s.t.Fatal(err)
	}
	defer db.Close()
	ctx := s.t.Context()
	rows, err := db.QueryContext(ctx, `SELECT quote_ident(table_schema) || '.' || quote_ident(table_name)
		FROM information_schema.tables WHERE table_type = 'BASE TABLE'
		AND table_schema NOT IN ('pg_catalog', 'information_schema')`)
	if err != nil {
		s.t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			s.t.Fatal(err)
		}
		tables = append(tables, n)
	}
	rows.Close()
	var dump strings.Builder
	for _, tbl := range tables {
		rs, err := db.QueryContext(ctx, `SELECT t::text FROM `+tbl+` t`)
		if err != nil {
			s.t.Fatalf("dump %s: %v", tbl, err)
		}
		for rs.Next() {
			var line string
			if err := rs.Scan(&line); err != nil {
				s.t.Fatal(err)
			}
			dump.WriteString(tbl + " " + line + "\n")
		}
		rs.Close()
	}
	if !strings.Contains(dump.String(), "secrets") {
		s.t.Fatalf("database dump has no secrets table:\n%s", tail(dump.String(), 2000))
	}
	return dump.String()
}

// secretsKeyFile writes a new random secrets key (32 bytes, mode 0600) for
// --secrets-key-file and returns its path and the key.
func secretsKeyFile(t *testing.T) (string, []byte) {
	t.Helper()
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	path := filepath.Join(t.TempDir(), "secrets.key")
	if err := os.WriteFile(path, key, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, key
}

// TestJobSecrets sets a secret with the CLI, runs a job that uses it on a real
// `hodei server` on PostgreSQL, and greps everything outside the job for the value:
// the database (every table), the server's log, the API's answers and the worker
// process's command line and environment. The job proves it saw the right value
// (its SHA-256) and its logs show *** where it printed the value, whole and in two
// writes with a pause between them.
func TestJobSecrets(t *testing.T) {
	keyFile, key := secretsKeyFile(t)
	s := startServerArgs(t, backendPostgres, 2, "--secrets-key-file", keyFile)
	rnd := make([]byte, 12)
	_, _ = rand.Read(rnd)
	value := "sv-" + hex.EncodeToString(rnd) // unique: found only where it leaked
	sum := sha256.Sum256([]byte(value))
	leaks := func(where, text string) {
		t.Helper()
		if strings.Contains(text, value) || strings.Contains(text, hex.EncodeToString([]byte(value))) {
			t.Fatalf("%s holds the secret value", where)
		}
	}

	r := s.hodeiStdin(value+"\n", "secret", "set", "DEPLOY_TOKEN", "--namespace", "default")
	if r.code != 0 || !strings.Contains(r.stdout, "secret DEPLOY_TOKEN set in namespace default") {
		t.Fatalf("secret set: %v", r)
	}
	leaks("secret set's output", r.stdout+r.stderr)
	r = s.mustHodei("secret", "list")
	if !strings.Contains(r.stdout, "DEPLOY_TOKEN") {
		t.Fatalf("secret list: %v", r)
	}
	leaks("secret list", r.stdout)
	r = s.mustHodei("secret", "list", "-o", "json")
	leaks("secret list -o json", r.stdout)
	// An empty value and a secret that does not exist are refused, naming what is wrong.
	refused(t, s.hodeiStdin("", "secret", "set", "EMPTY"), "empty value")
	refused(t, s.hodei("job", "submit", "--secret", "NOPE", "--", "true"), "NOPE")

	script := filepath.Join(t.TempDir(), "job.sh")
	if err := os.WriteFile(script, []byte(`sleep 2
printf 'whole=%s\n' "$S"
printf 'split=%s' "${S%????}"; sleep 0.2; printf '%s\n' "${S#${S%????}}"
printf %s "$S" | sha256sum | cut -d' ' -f1
echo "to-stderr $S" >&2
`), 0o600); err != nil {
		t.Fatal(err)
	}
	id := s.submit("--label", "secret=e2e", "--secret", "DEPLOY_TOKEN=S", "--script", script)

	// While the job sleeps, its worker process is up: neither its command line nor its
	// environment (the local provider's view of the worker) holds the value.
	deadline := time.Now().Add(30 * time.Second)
	checked := 0
	for checked == 0 && time.Now().Before(deadline) {
		for _, w := range workerProcs(s.url) {
			for _, f := range []string{"cmdline", "environ"} {
				b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(w.pid), f))
				if err != nil {
					continue
				}
				leaks("worker /proc/"+strconv.Itoa(w.pid)+"/"+f, string(b))
				checked++
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if checked == 0 {
		t.Fatal("no worker process seen while the job ran")
	}

	jobs := s.waitJobs(map[string]string{"secret": "e2e"}, 1, 60*time.Second)
	if jobs[0].GetState() != "SUCCEEDED" {
		t.Fatalf("job = %v, want SUCCEEDED", jobs[0])
	}
	r = s.mustHodei("job", "logs", id)
	want := "whole=***\nsplit=***\n" + hex.EncodeToString(sum[:]) + "\n"
	if r.stdout != want || r.stderr != "to-stderr ***\n" {
		t.Fatalf("job logs: %v\nwant stdout %q and stderr %q", r, want, "to-stderr ***\n")
	}
	leaks("job logs", r.stdout+r.stderr)
	r = s.mustHodei("job", "logs", "--follow", id)
	leaks("job logs --follow", r.stdout+r.stderr)
	r = s.mustHodei("job", "get", id, "-o", "json")
	if !strings.Contains(r.stdout, "DEPLOY_TOKEN") {
		t.Fatalf("job get -o json does not name the secret: %s", r.stdout)
	}
	leaks("job get -o json", r.stdout)
	r = s.mustHodei("job", "get", id)
	leaks("job get", r.stdout)
	r = s.mustHodei("job", "run", "--secret", "DEPLOY_TOKEN", "--", "sh", "-c", `echo "run sees $DEPLOY_TOKEN"`)
	if r.stdout != "run sees ***\n" {
		t.Fatalf("job run --secret: %v", r)
	}

	leaks("the database", s.dumpDatabase())
	leaks("the server log", s.log.String())

	// Key rotation: restart with a new key and the old one as an old key; rotate-key
	// re-encrypts the value, and after a restart with the new key only, jobs still get it.
	newKey := filepath.Join(t.TempDir(), "secrets-new.key")
	if err := os.WriteFile(newKey, []byte(hex.EncodeToString(key[:16])+hex.EncodeToString(sum[:16])+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.stop()
	s.extraArgs = []string{"--secrets-key-file", newKey, "--secrets-old-key-file", keyFile}
	s.startProcess()
	r = s.mustHodei("secret", "rotate-key")
	if !strings.Contains(r.stdout, "1 secrets re-encrypted, 0 already under it") {
		t.Fatalf("secret rotate-key: %v", r)
	}
	s.stop()
	s.extraArgs = []string{"--secrets-key-file", newKey}
	s.startProcess()
	r = s.mustHodei("job", "run", "--secret", "DEPLOY_TOKEN=T", "--", "sh", "-c", `printf %s "$T" | sha256sum | cut -d' ' -f1`)
	if r.stdout != hex.EncodeToString(sum[:])+"\n" {
		t.Fatalf("after rotation the job saw another value: %v", r)
	}
	r = s.mustHodei("secret", "delete", "DEPLOY_TOKEN")
	refused(t, s.hodei("job", "submit", "--secret", "DEPLOY_TOKEN", "--", "true"), "DEPLOY_TOKEN")
	leaks("the database after rotation", s.dumpDatabase())
	leaks("the server log", s.log.String())
}
