package devtest

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDevSagaList: against `hodei dev` (no --database-url), `hodei saga list` lists a
// job's sagas, filters by type and state, finds a WAITING saga unchanged for a while,
// and refuses a state that does not exist, naming the field.
func TestDevSagaList(t *testing.T) {
	d := startDev(t, filepath.Join(t.TempDir(), "dev"), "127.0.0.1:0")
	r := mustCLI(t, "job", "submit", "--server", d.url, "--", "sh", "-c", "sleep 30")
	id := strings.TrimSpace(r.stdout)
	waitState(t, d, id, "RUNNING", time.Minute)

	type list struct {
		Sagas []struct {
			ID    string `json:"id"`
			Type  string `json:"type"`
			State string `json:"state"`
		} `json:"sagas"`
	}
	get := func(args ...string) list {
		t.Helper()
		r := mustCLI(t, append([]string{"saga", "list", "--server", d.url, "-o", "json"}, args...)...)
		var l list
		if err := json.Unmarshal([]byte(r.stdout), &l); err != nil {
			t.Fatalf("saga list -o json: %v\n%s", err, r.stdout)
		}
		return l
	}
	// The execution saga parks (WAITING for the result) right after the job started.
	deadline := time.Now().Add(30 * time.Second)
	for {
		byJob := get("--job", id)
		types := map[string]string{}
		for _, s := range byJob.Sagas {
			types[s.Type] = s.State
		}
		if types["execution"] == "WAITING" && types["provisioning"] != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sagas of the running job: %+v, want a WAITING execution saga and a provisioning saga", byJob)
		}
		time.Sleep(100 * time.Millisecond)
	}
	exec := get("--type", "execution", "--state", "WAITING")
	if len(exec.Sagas) != 1 || exec.Sagas[0].Type != "execution" {
		t.Errorf("execution WAITING: %+v", exec)
	}
	time.Sleep(1500 * time.Millisecond)
	if l := get("--state", "WAITING", "--unchanged-for", "1s"); len(l.Sagas) != 1 {
		t.Errorf("WAITING unchanged for 1s: %+v, want the execution saga", l)
	}
	if l := get("--state", "WAITING", "--unchanged-for", "1h"); len(l.Sagas) != 0 {
		t.Errorf("WAITING unchanged for 1h: %+v, want none", l)
	}
	text := mustCLI(t, "saga", "list", "--server", d.url, "--type", "execution")
	if !strings.Contains(text.stdout, "UNCHANGED FOR") || !strings.Contains(text.stdout, "await-result") {
		t.Errorf("saga list text:\n%s", text.stdout)
	}
	if r := cli(t, "saga", "list", "--server", d.url, "--state", "SLEEPING"); r.code == 0 || !strings.Contains(r.stderr, "state") {
		t.Errorf("unknown state: exit %d, stderr %q", r.code, r.stderr)
	}
	mustCLI(t, "job", "cancel", "--server", d.url, id)
}
