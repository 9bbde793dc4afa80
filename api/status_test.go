package api_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/hodei-jobs/hodei/api"
	"github.com/hodei-jobs/hodei/server"
)

// TestReplicaStatusInReadyzAndAdmin: /readyz's body names this replica and the leader,
// and GET /api/v1/admin/status answers the same as JSON under the admin policy.
func TestReplicaStatusInReadyzAndAdmin(t *testing.T) {
	e := newEnv(t, false)
	hub, err := api.NewHub(e.nc)
	if err != nil {
		t.Fatal(err)
	}
	jobAPI, err := api.NewJobService(e.st.Jobs(), e.svc, e.svc, api.JobOptions{Errors: server.ErrorCodes()})
	if err != nil {
		t.Fatal(err)
	}
	workerAPI, err := api.NewWorkerAgentService(e.svc, hub, api.WorkerOptions{Errors: server.ErrorCodes()})
	if err != nil {
		t.Fatal(err)
	}
	status := api.ReplicaStatus{ID: "hodei-a", Leader: "hodei-b"}
	replica := func() api.ReplicaStatus { return status }
	for _, token := range []string{"", "secret"} {
		adminAPI, err := api.NewAdminService(e.svc, e.st.Outbox(), e.engine, api.AdminOptions{Token: token, Replica: replica})
		if err != nil {
			t.Fatal(err)
		}
		h, err := api.NewMux(api.MuxConfig{Jobs: jobAPI, Workers: workerAPI, Admin: adminAPI, Replica: replica})
		if err != nil {
			t.Fatal(err)
		}
		hs := httptest.NewServer(h)
		defer hs.Close()
		ae := &adminEnv{env: e, h: h, url: hs.URL}

		res, err := http.Get(hs.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK || string(body) != "ok\nreplica: hodei-a\nleader: hodei-b\n" {
			t.Fatalf("/readyz: %s %q", res.Status, body)
		}

		if token != "" {
			if code, out := ae.do(t, "GET", "/api/v1/admin/status", "", ""); code != http.StatusUnauthorized {
				t.Fatalf("status without the token: %d %v", code, out)
			}
			if code, out := ae.do(t, "GET", "/api/v1/admin/status", "wrong", ""); code != http.StatusUnauthorized ||
				!strings.Contains(out["error"].(string), "token") {
				t.Fatalf("status with a wrong token: %d %v", code, out)
			}
		}
		code, out := ae.do(t, "GET", "/api/v1/admin/status", token, "")
		if code != http.StatusOK || out["replica"] != "hodei-a" || out["leader"] != "hodei-b" || out["leading"] != false {
			t.Fatalf("status (token %q): %d %v", token, code, out)
		}
	}
	// No leader known: /readyz says so.
	status = api.ReplicaStatus{ID: "hodei-a"}
	h, err := api.NewMux(api.MuxConfig{Jobs: jobAPI, Workers: workerAPI, Replica: replica})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	if got := rec.Body.String(); got != "ok\nreplica: hodei-a\nleader: (none known)\n" {
		t.Fatalf("/readyz without a leader: %q", got)
	}
}
