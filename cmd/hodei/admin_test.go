package main

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/command"
	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/internal/pgtest"
	"github.com/hodei-jobs/hodei/jobs"
	"github.com/hodei-jobs/hodei/saga"
	"github.com/hodei-jobs/hodei/store"
	"github.com/hodei-jobs/hodei/store/postgres"
)

// startServer runs `hodei server` in this process on dbURL (an ephemeral port, embedded
// NATS, extra flags appended), stops it when the test ends and returns its URL.
func startServer(t *testing.T, dbURL string, extra ...string) string {
	t.Helper()
	t.Setenv("HODEI_ADMIN_TOKEN", "")
	root := newRootCmd()
	out, logs := &lockedBuffer{}, &lockedBuffer{}
	root.SetOut(out)
	root.SetErr(logs)
	root.SetArgs(append([]string{"server", "--database-url", dbURL, "--listen", "127.0.0.1:0", "--data-dir", t.TempDir(),
		"--nats-url", ""}, extra...))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Error("server did not stop")
		}
	})
	line := regexp.MustCompile(`hodei server listening on (http://127\.0\.0\.1:\d+)`)
	for deadline := time.Now().Add(60 * time.Second); ; {
		if m := line.FindStringSubmatch(out.String()); m != nil {
			return m[1]
		}
		select {
		case err := <-done:
			t.Fatalf("server exited: %v\n%s", err, logs)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no listening line\n%s", logs)
		}
	}
}

// TestAdminCLI runs `hodei server --admin-token` and drives `hodei admin` against it:
// token refused/accepted, dead letters listed and requeued, a job resumed.
func TestAdminCLI(t *testing.T) {
	const tok = "cli-admin-token"
	dbURL := pgtest.NewDatabase(t)
	url := startServer(t, dbURL, "--admin-token", tok)

	st, err := postgres.Open(t.Context(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ids, err := st.Outbox().Insert(t.Context(), &store.OutboxMessage{Kind: store.KindEvent, Type: "test.dead",
		IdempotencyKey: "cli/dead", Payload: json.RawMessage(`{}`), MaxAttempts: 1, ScheduledAt: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Pool().Exec(t.Context(), "UPDATE outbox SET status = 'DEAD_LETTER', last_error = 'nope' WHERE id = $1", ids[0]); err != nil {
		t.Fatal(err)
	}

	if _, err := runHodei(t, "admin", "dead-letters", "list", "--server", url); err == nil ||
		!strings.Contains(err.Error(), "--admin-token") {
		t.Fatalf("list without token: %v", err)
	}
	o, err := runHodei(t, "admin", "dead-letters", "list", "--server", url, "--admin-token", tok)
	if err != nil || !strings.Contains(o, "test.dead") || !strings.Contains(o, "nope") {
		t.Fatalf("list: %v\n%s", err, o)
	}
	o, err = runHodei(t, "admin", "dead-letters", "requeue", fmt.Sprint(ids[0]), "--server", url, "--admin-token", tok)
	if err != nil || !strings.Contains(o, "requeued") {
		t.Fatalf("requeue: %v\n%s", err, o)
	}

	// The only replica leads; admin status says so, under the admin token.
	if _, err := runHodei(t, "admin", "status", "--server", url); err == nil || !strings.Contains(err.Error(), "--admin-token") {
		t.Fatalf("status without token: %v", err)
	}
	var rs struct {
		Replica string `json:"replica"`
		Leading bool   `json:"leading"`
		Leader  string `json:"leader"`
	}
	for deadline := time.Now().Add(20 * time.Second); !rs.Leading; time.Sleep(50 * time.Millisecond) {
		o, err = runHodei(t, "admin", "status", "--server", url, "--admin-token", tok, "-o", "json")
		if err != nil {
			t.Fatalf("status: %v", err)
		}
		if err := json.Unmarshal([]byte(o), &rs); err != nil {
			t.Fatalf("status -o json printed %q: %v", o, err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the only replica does not lead: %s", o)
		}
	}
	if !strings.HasPrefix(rs.Replica, "hodei-") || rs.Leader != rs.Replica {
		t.Fatalf("status %+v: want the replica (hodei-…) leading", rs)
	}
	o, err = runHodei(t, "admin", "status", "--server", url, "--admin-token", tok)
	if err != nil || !regexp.MustCompile(`(?m)^replica\s+`+rs.Replica+`\n^leading\s+yes\n^leader\s+`+rs.Replica).MatchString(o) {
		t.Fatalf("status: %v\n%s", err, o)
	}

	// A job that needs an operator (written straight into that state).
	j := &domain.Job{ID: "cli-review-job", Spec: domain.JobSpec{Command: []string{"true"}}.WithDefaults(),
		State: domain.JobManualInterventionRequired, Attempt: 1, LastError: "lost"}
	if err := st.Jobs().Create(t.Context(), j); err != nil {
		t.Fatal(err)
	}
	if _, err := runHodei(t, "admin", "job", "resume", j.ID, "--resolution", "undo", "--server", url, "--admin-token", tok); err == nil ||
		!strings.Contains(err.Error(), "resolution") {
		t.Fatalf("bad resolution: %v", err)
	}
	o, err = runHodei(t, "admin", "job", "resume", j.ID, "--resolution", "manually_fixed", "--notes", "fixed by hand",
		"--server", url, "--admin-token", tok)
	if err != nil || !strings.Contains(o, "now FAILED") {
		t.Fatalf("resume: %v\n%s", err, o)
	}
	if _, err := runHodei(t, "admin", "job", "resume", j.ID, "--resolution", "retry", "--server", url, "--admin-token", tok); err == nil ||
		!strings.Contains(err.Error(), "MANUAL_INTERVENTION_REQUIRED") {
		t.Fatalf("resume twice: %v", err)
	}
	o, err = runHodei(t, "job", "get", j.ID, "--server", url)
	if err != nil || !strings.Contains(o, "FAILED") || !strings.Contains(o, "attempt") {
		t.Fatalf("job get: %v\n%s", err, o)
	}
	if _, err := runHodei(t, "saga", "show", "--job", j.ID, "--server", url, "--admin-token", tok); err == nil ||
		!strings.Contains(err.Error(), "no sagas") {
		t.Fatalf("saga show --job of a job without sagas: %v", err)
	}
	// A job with an execution saga (started here, run by the server's engine: it waits
	// for a worker): `job get` and `saga show --job` show it.
	reg := saga.NewRegistry()
	if err := jobs.RegisterSagas(reg); err != nil {
		t.Fatal(err)
	}
	eng, err := saga.New(st, reg, command.NewBus(), saga.Config{})
	if err != nil {
		t.Fatal(err)
	}
	j2 := &domain.Job{ID: "cli-saga-job", Spec: j.Spec, State: domain.JobManualInterventionRequired, Attempt: 1}
	if err := st.Jobs().Create(t.Context(), j2); err != nil {
		t.Fatal(err)
	}
	if _, _, err := eng.Start(t.Context(), jobs.SagaExecution, jobs.ExecutionSagaID(j2.ID), map[string]string{"job_id": j2.ID}); err != nil {
		t.Fatal(err)
	}
	o, err = runHodei(t, "job", "get", j2.ID, "--server", url)
	if err != nil || !strings.Contains(o, jobs.ExecutionSagaID(j2.ID)) || !strings.Contains(o, "await-worker") {
		t.Fatalf("job get with a saga: %v\n%s", err, o)
	}
	// Its timeout saga is listed too (every saga type of a job is).
	if _, _, err := eng.Start(t.Context(), jobs.SagaTimeout, jobs.TimeoutSagaID(j2.ID), map[string]string{"job_id": j2.ID}); err != nil {
		t.Fatal(err)
	}
	if _, err := runHodei(t, "saga", "show", "--job", j2.ID, "--server", url); err == nil || !strings.Contains(err.Error(), "--admin-token") {
		t.Fatalf("saga show --job without the admin token: %v", err)
	}
	o, err = runHodei(t, "saga", "show", "--job", j2.ID, "--server", url, "--admin-token", tok)
	if err != nil || !strings.Contains(o, "Saga:") || !strings.Contains(o, jobs.ExecutionSagaID(j2.ID)) || !strings.Contains(o, "execution v2") ||
		!strings.Contains(o, jobs.TimeoutSagaID(j2.ID)) || !strings.Contains(o, "timeout v2") {
		t.Fatalf("saga show --job: %v\n%s", err, o)
	}
	if _, err := runHodei(t, "saga", "show", "--server", url); err == nil || !strings.Contains(err.Error(), "--job") {
		t.Fatalf("saga show without an id: %v", err)
	}
}
