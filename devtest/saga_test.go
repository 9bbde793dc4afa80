package devtest

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

// sagaView is the part of `hodei saga show -o json` the test reads.
type sagaView struct {
	ID      string `json:"id"`
	Type    string `json:"type"`
	State   string `json:"state"`
	LastSeq int64  `json:"last_seq"`
	Events  []struct {
		Seq      int64           `json:"seq"`
		Type     string          `json:"type"`
		Category string          `json:"category"`
		Step     string          `json:"step"`
		Payload  json.RawMessage `json:"payload"`
	} `json:"events"`
}

// TestDevSagaShow: against `hodei dev` (SQLite, no --database-url), `hodei saga show
// --job` prints the sagas of a job that ran, with a category for every event, and
// `hodei saga show ID` one saga; the admin token is required when dev has one.
func TestDevSagaShow(t *testing.T) {
	const tok = "dev-saga-token"
	d := startDev(t, filepath.Join(t.TempDir(), "dev"), "127.0.0.1:0", "--admin-token", tok)
	if r := mustCLI(t, "job", "run", "--server", d.url, "--", "echo", "hello"); r.stdout != "hello\n" {
		t.Fatalf("job run printed %q (stderr %q)", r.stdout, r.stderr)
	}
	jobs := listJobs(t, d.url)
	if len(jobs) != 1 {
		t.Fatalf("jobs: %+v", jobs)
	}
	id := jobs[0].ID

	r := mustCLI(t, "saga", "show", "--job", id, "--server", d.url, "--admin-token", tok, "-o", "json")
	var views []sagaView
	if err := json.Unmarshal([]byte(r.stdout), &views); err != nil {
		t.Fatalf("saga show --job -o json: %v\n%s", err, r.stdout)
	}
	types := map[string]sagaView{}
	for _, v := range views {
		types[v.Type] = v
		if len(v.Events) == 0 || v.Events[len(v.Events)-1].Seq != v.LastSeq {
			t.Errorf("saga %s (%s): %d events, last seq %d", v.ID, v.Type, len(v.Events), v.LastSeq)
		}
		for _, ev := range v.Events {
			if ev.Category == "" || !json.Valid(ev.Payload) {
				t.Errorf("saga %s event %d %s: category %q, payload %s", v.Type, ev.Seq, ev.Type, ev.Category, ev.Payload)
			}
		}
	}
	exec, ok := types["execution"]
	if !ok || exec.State != "COMPLETED" {
		t.Fatalf("sagas of job %s: %+v, want a COMPLETED execution saga", id, views)
	}
	if _, ok := types["provisioning"]; !ok {
		t.Errorf("sagas of job %s: no provisioning saga in %+v", id, views)
	}

	// Text: one saga with the category column; --category filters.
	r = mustCLI(t, "saga", "show", exec.ID, "--server", d.url, "--admin-token", tok)
	for _, want := range []string{"Saga:", exec.ID, "execution v", "CATEGORY", "lifecycle", "saga.completed", "step.completed"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("saga show lacks %q:\n%s", want, r.stdout)
		}
	}
	r = mustCLI(t, "saga", "show", exec.ID, "--server", d.url, "--admin-token", tok, "--category", "lifecycle", "-o", "json")
	var only sagaView
	if err := json.Unmarshal([]byte(r.stdout), &only); err != nil {
		t.Fatal(err)
	}
	if len(only.Events) < 2 || only.LastSeq != exec.LastSeq {
		t.Fatalf("--category lifecycle: %+v", only)
	}
	for _, ev := range only.Events {
		if ev.Category != "lifecycle" {
			t.Fatalf("--category lifecycle printed a %s event (%s)", ev.Category, ev.Type)
		}
	}

	// Refusals: no token, an unknown saga (NotFound, named).
	if r := cli(t, "saga", "show", exec.ID, "--server", d.url); r.code == 0 || !strings.Contains(r.stderr, "--admin-token") {
		t.Errorf("saga show without the token: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := cli(t, "saga", "show", "no-such-saga", "--server", d.url, "--admin-token", tok); r.code == 0 ||
		!strings.Contains(r.stderr, `no saga "no-such-saga"`) {
		t.Errorf("saga show of an unknown saga: exit %d, stderr %q", r.code, r.stderr)
	}
}
