package api_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/hodei-jobs/hodei/auth"
	"github.com/hodei-jobs/hodei/domain"
	hodeiv1 "github.com/hodei-jobs/hodei/gen/hodei/v1"
	"github.com/hodei-jobs/hodei/store"
)

// withToken returns a request for msg carrying the bearer token.
func withToken[T any](msg *T, token string) *connect.Request[T] {
	r := connect.NewRequest(msg)
	r.Header().Set("Authorization", "Bearer "+token)
	return r
}

// TestStreamsEndWhenTokenRevokedOrExpires: open WatchJob and StreamLogs streams end
// with Unauthenticated when their token is revoked in the store or expires; another
// token's stream on the same job goes on. A job of a namespace the caller cannot see
// is NotFound like a missing one, and the refusal is in the audit trail.
func TestStreamsEndWhenTokenRevokedOrExpires(t *testing.T) {
	e := newEnvWith(t, false, envHooks{auth: func(st store.Store) *auth.Authenticator {
		a, err := auth.New(auth.Config{Required: true, Tokens: st.Tokens(), Audit: st.Audit(),
			RecheckInterval: 100 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		return a
	}})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	token := func(name, role, ns string, expiresIn time.Duration) string {
		t.Helper()
		spec := auth.TokenSpec{Name: name, Role: role, ExpiresIn: expiresIn}
		if ns != "" {
			spec.Namespaces = []string{ns}
		}
		tok, secret, err := auth.NewToken(spec, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if err := e.st.Tokens().Create(ctx, tok); err != nil {
			t.Fatal(err)
		}
		return secret
	}
	admin := token("admin", "admin", "", 0)
	viewerA := token("viewer-a", "viewer", "team-a", 0)
	keep := token("keep", "viewer", "team-a", 0)
	viewerB := token("viewer-b", "viewer", "team-b", 0)

	spec := echoSpec(nil)
	spec.Namespace = "team-a"
	res, err := e.jobs.SubmitJob(ctx, withToken(&hodeiv1.SubmitJobRequest{Spec: spec}, admin))
	if err != nil {
		t.Fatal(err)
	}
	id := res.Msg.GetJob().GetId()
	appendLines(t, e.st, id, 1, 2)

	watch := func(tok string) *connect.ServerStreamForClient[hodeiv1.WatchJobResponse] {
		t.Helper()
		s, err := e.jobs.WatchJob(ctx, withToken(&hodeiv1.WatchJobRequest{Id: id}, tok))
		if err != nil {
			t.Fatal(err)
		}
		if !s.Receive() {
			t.Fatalf("WatchJob: no first message: %v", s.Err())
		}
		return s
	}
	watchA, kept := watch(viewerA), watch(keep)
	logsA, err := e.jobs.StreamLogs(ctx, withToken(&hodeiv1.StreamLogsRequest{Id: id, Follow: true}, viewerA))
	if err != nil {
		t.Fatal(err)
	}
	if !logsA.Receive() {
		t.Fatalf("StreamLogs: no first message: %v", logsA.Err())
	}
	short := token("short", "viewer", "team-a", 1500*time.Millisecond)
	watchShort := watch(short)

	if _, err := e.st.Tokens().Revoke(ctx, "viewer-a", time.Now()); err != nil {
		t.Fatal(err)
	}
	ended := func(what string, receive func() bool, streamErr func() error, want error) {
		t.Helper()
		for receive() {
		}
		err := streamErr()
		if connect.CodeOf(err) != connect.CodeUnauthenticated || !strings.Contains(err.Error(), want.Error()) {
			t.Fatalf("%s ended with %v, want Unauthenticated: %v", what, err, want)
		}
	}
	ended("WatchJob of the revoked token", watchA.Receive, watchA.Err, auth.ErrRevoked)
	ended("StreamLogs of the revoked token", logsA.Receive, logsA.Err, auth.ErrRevoked)
	ended("WatchJob of the expired token", watchShort.Receive, watchShort.Err, auth.ErrExpired)
	// The other token's stream is still open: it sees the next change.
	forceState(t, e.st, id, domain.JobProvisioning)
	if !kept.Receive() || kept.Msg().GetJob().GetState() != "PROVISIONING" {
		t.Fatalf("the kept token's stream: %v", kept.Err())
	}

	// Another namespace's job: NotFound, word for word like a missing job, audited.
	_, errHidden := e.jobs.GetJob(ctx, withToken(&hodeiv1.GetJobRequest{Id: id}, viewerB))
	const missing = "01900000-0000-7000-8000-000000000000"
	_, errMissing := e.jobs.GetJob(ctx, withToken(&hodeiv1.GetJobRequest{Id: missing}, viewerB))
	if connect.CodeOf(errHidden) != connect.CodeNotFound ||
		strings.ReplaceAll(errHidden.Error(), id, "ID") != strings.ReplaceAll(errMissing.Error(), missing, "ID") {
		t.Fatalf("hidden job: %v; missing job: %v", errHidden, errMissing)
	}
	recs, err := e.st.Audit().List(ctx, store.AuditFilter{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var hidden, streamEnded int
	for _, r := range recs {
		switch {
		case r.Actor == "viewer-b" && r.Outcome == auth.OutcomeHidden && strings.Contains(r.Detail, id):
			hidden++
		case r.Actor == "viewer-b":
			t.Errorf("unexpected audit record of viewer-b: %+v", r)
		case r.Action == "auth.stream_ended" && (r.Actor == "viewer-a" || r.Actor == "short"):
			streamEnded++
		}
	}
	if hidden != 1 || streamEnded != 3 {
		t.Fatalf("audit: %d hidden refusals of viewer-b (want 1), %d ended streams (want 3): %+v", hidden, streamEnded, recs)
	}
}
