package main

import (
	"strings"
	"testing"

	"github.com/hodei-jobs/hodei/internal/pgtest"
)

// TestNamespaceCLI: `hodei namespace set` needs the admin token and names its flags;
// `namespace list` shows the limit; --max-running 0 removes it.
func TestNamespaceCLI(t *testing.T) {
	const tok = "ns-admin-token"
	url := startServer(t, pgtest.NewDatabase(t), "--admin-token", tok)

	if _, err := runHodei(t, "namespace", "set", "team-a", "--max-running", "20", "--server", url); err == nil ||
		!strings.Contains(err.Error(), "--admin-token") {
		t.Fatalf("set without a token: %v", err)
	}
	if _, err := runHodei(t, "namespace", "set", "team-a", "--server", url, "--admin-token", tok); err == nil ||
		!strings.Contains(err.Error(), "--max-running is required") {
		t.Fatalf("set without --max-running: %v", err)
	}
	if _, err := runHodei(t, "namespace", "set", "Team_A", "--max-running", "2", "--server", url, "--admin-token", tok); err == nil ||
		!strings.Contains(err.Error(), "name:") {
		t.Fatalf("set with an invalid name: %v", err)
	}
	o, err := runHodei(t, "namespace", "set", "team-a", "--max-running", "20", "--server", url, "--admin-token", tok)
	if err != nil || !strings.Contains(o, "team-a") || !strings.Contains(o, "20") {
		t.Fatalf("set: %v\n%s", err, o)
	}
	o, err = runHodei(t, "namespace", "list", "-o", "json", "--server", url, "--admin-token", tok)
	if err != nil || !strings.Contains(o, `"name":"team-a"`) || !strings.Contains(o, `"maxRunning":20`) {
		t.Fatalf("list: %v\n%s", err, o)
	}
	if _, err := runHodei(t, "namespace", "set", "team-a", "--max-running", "0", "--server", url, "--admin-token", tok); err != nil {
		t.Fatal(err)
	}
	o, err = runHodei(t, "namespace", "list", "--server", url, "--admin-token", tok)
	if err != nil || strings.Contains(o, "team-a") {
		t.Fatalf("list after removing the only limit (no jobs): %v\n%s", err, o)
	}
}
