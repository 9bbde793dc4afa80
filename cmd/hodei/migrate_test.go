package main

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/hodei-jobs/hodei/internal/pgtest"
	"github.com/hodei-jobs/hodei/store/postgres"
)

func embeddedVersions(t *testing.T) []string {
	t.Helper()
	migs, err := postgres.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	var vs []string
	for _, m := range migs {
		vs = append(vs, m.Version)
	}
	if len(vs) == 0 {
		t.Fatal("no embedded migrations")
	}
	return vs
}

func TestMigrateJSONThenUpToDate(t *testing.T) {
	url := pgtest.NewDatabase(t)
	want := embeddedVersions(t)

	out, err := runHodei(t, "migrate", "--database-url", url, "-o", "json")
	if err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	var res migrateResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("output is not one JSON object: %v\n%s", err, out)
	}
	if !slices.Equal(res.Applied, want) || res.UpToDate {
		t.Errorf("first run = %+v, want applied %v", res, want)
	}

	out, err = runHodei(t, "migrate", "--database-url", url, "-o", "json")
	if err != nil {
		t.Fatalf("second migrate: %v\n%s", err, out)
	}
	if strings.TrimSpace(out) != `{"applied":[],"up_to_date":true}` {
		t.Errorf("second run printed %q, want applied [] and up_to_date true", out)
	}
}

func TestMigrateTextFromEnv(t *testing.T) {
	url := pgtest.NewDatabase(t)
	t.Setenv(envDatabaseURL, url)

	out, err := runHodei(t, "migrate")
	if err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	for _, v := range embeddedVersions(t) {
		if !strings.Contains(out, "applied "+v+"\n") {
			t.Errorf("output %q does not list %s", out, v)
		}
	}
	out, err = runHodei(t, "migrate")
	if err != nil || out != "database schema is up to date\n" {
		t.Errorf("second run = %q, %v; want the up-to-date line", out, err)
	}
}

func TestMigrateErrors(t *testing.T) {
	t.Setenv(envDatabaseURL, "")
	_, err := runHodei(t, "migrate")
	if err == nil || !strings.Contains(err.Error(), "--database-url") || !strings.Contains(err.Error(), envDatabaseURL) {
		t.Errorf("missing URL: err = %v, want one naming --database-url and %s", err, envDatabaseURL)
	}

	_, err = runHodei(t, "migrate", "--database-url", "postgres://x@127.0.0.1:1/x", "-o", "yaml")
	if err == nil || !strings.Contains(err.Error(), "--output") {
		t.Errorf("bad output format: err = %v, want one naming --output", err)
	}

	// Nothing listens on port 1: the error comes from connecting, wrapped by migrate.
	_, err = runHodei(t, "migrate", "--database-url", "postgres://x@127.0.0.1:1/x?connect_timeout=2")
	if err == nil || !strings.HasPrefix(err.Error(), "migrate: ") {
		t.Errorf("unreachable database: err = %v, want a migrate: error", err)
	}
}
