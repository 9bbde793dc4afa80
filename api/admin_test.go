package api_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/hodei-jobs/hodei/api"
	"github.com/hodei-jobs/hodei/domain"
	hodeiv1 "github.com/hodei-jobs/hodei/gen/hodei/v1"
	"github.com/hodei-jobs/hodei/gen/hodei/v1/hodeiv1connect"
	"github.com/hodei-jobs/hodei/jobs"
	"github.com/hodei-jobs/hodei/provider"
	"github.com/hodei-jobs/hodei/server"
	"github.com/hodei-jobs/hodei/store"
)

// adminEnv is env plus a second server whose mux has the admin API (token as given) and
// a JobService that reports sagas.
type adminEnv struct {
	*env
	h      http.Handler
	url    string
	admin  hodeiv1connect.AdminServiceClient
	jobAPI hodeiv1connect.JobServiceClient
}

func newAdminEnv(t *testing.T, run bool, token string) *adminEnv {
	t.Helper()
	e := newEnv(t, run)
	hub, err := api.NewHub(e.nc)
	if err != nil {
		t.Fatal(err)
	}
	jobAPI, err := api.NewJobService(e.st.Jobs(), e.svc, e.svc, api.JobOptions{Errors: server.ErrorCodes(), Sagas: e.svc})
	if err != nil {
		t.Fatal(err)
	}
	workerAPI, err := api.NewWorkerAgentService(e.svc, hub, api.WorkerOptions{Errors: server.ErrorCodes()})
	if err != nil {
		t.Fatal(err)
	}
	adminAPI, err := api.NewAdminService(e.svc, e.st.Outbox(), e.engine, api.AdminOptions{Token: token, Errors: server.ErrorCodes()})
	if err != nil {
		t.Fatal(err)
	}
	h, err := api.NewMux(api.MuxConfig{Jobs: jobAPI, Workers: workerAPI, Admin: adminAPI})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(h)
	t.Cleanup(hs.Close)
	var opts []connect.ClientOption
	if token != "" {
		opts = append(opts, connect.WithInterceptors(bearer(token)))
	}
	return &adminEnv{env: e, h: h, url: hs.URL,
		admin:  hodeiv1connect.NewAdminServiceClient(http.DefaultClient, hs.URL, opts...),
		jobAPI: hodeiv1connect.NewJobServiceClient(http.DefaultClient, hs.URL)}
}

func bearer(tok string) connect.Interceptor {
	return connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set("Authorization", "Bearer "+tok)
			return next(ctx, req)
		}
	})
}

// toReview moves a submitted job PENDING → PROVISIONING (attempt 1) →
// MANUAL_INTERVENTION_REQUIRED through the store.
func (e *adminEnv) toReview(t *testing.T) string {
	t.Helper()
	ctx := t.Context()
	j := e.submit(t, echoSpec(nil))
	if _, err := e.st.Jobs().UpdateState(ctx, j.GetId(), domain.JobProvisioning, time.Now(), func(j *domain.Job) { j.Attempt = 1 }); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.Jobs().UpdateState(ctx, j.GetId(), domain.JobManualInterventionRequired, time.Now(), func(j *domain.Job) {
		j.LastError = "termination not confirmed"
	}); err != nil {
		t.Fatal(err)
	}
	return j.GetId()
}

// do sends a REST request and returns the status and the decoded JSON body.
func (e *adminEnv) do(t *testing.T, method, path, token, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, e.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	out := map[string]any{}
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("%s %s: status %d, body %q is not a JSON object: %v", method, path, res.StatusCode, b, err)
	}
	return res.StatusCode, out
}

func TestAdminResumeREST(t *testing.T) {
	e := newAdminEnv(t, false, "")
	ctx := t.Context()

	for _, tc := range []struct {
		resolution string
		want       domain.JobState
	}{
		{jobs.ResolutionRetry, domain.JobPending},
		{jobs.ResolutionManuallyFixed, domain.JobFailed},
		{jobs.ResolutionCancelled, domain.JobCancelled},
	} {
		id := e.toReview(t)
		code, body := e.do(t, "POST", "/api/v1/admin/jobs/"+id+"/resume", "",
			`{"resolution":"`+tc.resolution+`","notes":"checked by hand"}`)
		if code != http.StatusOK || body["state"] != string(tc.want) {
			t.Fatalf("resume %s: %d %v, want 200 and state %s", tc.resolution, code, body, tc.want)
		}
		j, err := e.st.Jobs().Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if j.State != tc.want || j.Resolution != tc.resolution || j.Notes != "checked by hand" {
			t.Fatalf("job after %s = %+v", tc.resolution, j)
		}
		// Resuming twice: the job left MANUAL_INTERVENTION_REQUIRED → 409.
		code, body = e.do(t, "POST", "/api/v1/admin/jobs/"+id+"/resume", "", `{"resolution":"cancelled"}`)
		if code != http.StatusConflict || !strings.Contains(body["error"].(string), "MANUAL_INTERVENTION_REQUIRED") {
			t.Fatalf("second resume: %d %v, want 409 naming the state", code, body)
		}
	}

	// The retry resume started a fresh execution saga for attempt 2 and wrote job.resumed.
	id := e.toReview(t)
	if _, err := e.svc.ResumeJob(ctx, id, jobs.ResolutionRetry, ""); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := e.st.Pool().QueryRow(ctx, "SELECT count(*) FROM outbox WHERE type = 'job.resumed' AND idempotency_key LIKE '%'||$1||'%'", id).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("job.resumed rows for %s = %d, want 1", id, n)
	}
	got, err := e.jobAPI.GetJob(ctx, connect.NewRequest(&hodeiv1.GetJobRequest{Id: id}))
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, s := range got.Msg.GetSagas() {
		ids = append(ids, s.GetId())
	}
	if len(ids) != 2 || ids[0] != jobs.ExecutionSagaID(id) || ids[1] != jobs.RetryExecutionSagaID(id, 2) {
		t.Fatalf("sagas of retried job = %v, want the first execution saga and the retry's", ids)
	}

	// Bad requests: unknown resolution, unknown JSON field, empty body, unknown job.
	id = e.toReview(t)
	for _, tc := range []struct {
		path, body string
		code       int
		msg        string
	}{
		{"/api/v1/admin/jobs/" + id + "/resume", `{"resolution":"undo"}`, 400, "resolution"},
		{"/api/v1/admin/jobs/" + id + "/resume", `{"resolution":"retry","force":true}`, 400, `"force"`},
		{"/api/v1/admin/jobs/" + id + "/resume", ``, 400, "body"},
		{"/api/v1/admin/jobs/" + id + "/resume", `{"resolution":"retry","notes":"` + strings.Repeat("x", 70<<10) + `"}`, 413, "65536"},
		{"/api/v1/admin/jobs/no-such-job/resume", `{"resolution":"retry"}`, 404, "not found"},
	} {
		code, body := e.do(t, "POST", tc.path, "", tc.body)
		msg, _ := body["error"].(string)
		if code != tc.code || !strings.Contains(msg, tc.msg) {
			t.Errorf("POST %s %.60s: %d %q, want %d mentioning %s", tc.path, tc.body, code, msg, tc.code, tc.msg)
		}
	}
	if j, _ := e.st.Jobs().Get(ctx, id); j.State != domain.JobManualInterventionRequired {
		t.Fatalf("a refused resume changed the job: %s", j.State)
	}

	// The same operation as an RPC: FailedPrecondition / InvalidArgument.
	_, err = e.admin.ResumeJob(ctx, connect.NewRequest(&hodeiv1.ResumeJobRequest{JobId: id, Resolution: "bogus"}))
	if c := codeOf(t, err); c != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "resolution") {
		t.Fatalf("RPC bad resolution: %v", err)
	}
	res, err := e.admin.ResumeJob(ctx, connect.NewRequest(&hodeiv1.ResumeJobRequest{JobId: id, Resolution: "cancelled"}))
	if err != nil || res.Msg.GetJob().GetState() != "CANCELLED" {
		t.Fatalf("RPC resume: %v %v", res, err)
	}
	_, err = e.admin.ResumeJob(ctx, connect.NewRequest(&hodeiv1.ResumeJobRequest{JobId: id, Resolution: "cancelled"}))
	if c := codeOf(t, err); c != connect.CodeFailedPrecondition {
		t.Fatalf("RPC resume of a CANCELLED job: %v", err)
	}

	// Without a token, only loopback clients: a request from elsewhere gets 403.
	req := httptest.NewRequest("GET", "/api/v1/admin/outbox/dead-letters", nil)
	req.RemoteAddr = "192.0.2.7:4000"
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, req)
	if rec.Code != http.StatusForbidden || !strings.Contains(rec.Body.String(), "admin-token") {
		t.Fatalf("non-loopback without token: %d %s", rec.Code, rec.Body)
	}
}

func TestAdminTokenAndDeadLetters(t *testing.T) {
	const tok = "s3cret-token"
	e := newAdminEnv(t, false, tok)
	ctx := t.Context()

	// A dead letter: insert, claim, fail for good.
	ids, err := e.st.Outbox().Insert(ctx, &store.OutboxMessage{Kind: store.KindEvent, Type: "test.dead",
		IdempotencyKey: "admin-test/dead", Payload: json.RawMessage(`{"x":1}`), MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.Outbox().Claim(ctx, "t", 100, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := e.st.Outbox().Fail(ctx, "t", ids[0], "broker said no", time.Now(), true); err != nil {
		t.Fatal(err)
	}

	// 401 without a token, with a wrong one, with a malformed header; REST and RPC.
	for _, h := range []string{"", "wrong"} {
		code, body := e.do(t, "GET", "/api/v1/admin/outbox/dead-letters", h, "")
		if code != http.StatusUnauthorized || body["error"] == nil {
			t.Fatalf("token %q: %d %v, want 401", h, code, body)
		}
		code, _ = e.do(t, "POST", "/api/v1/admin/outbox/1/requeue", h, "")
		if code != http.StatusUnauthorized {
			t.Fatalf("requeue with token %q: %d, want 401", h, code)
		}
	}
	noTok := hodeiv1connect.NewAdminServiceClient(http.DefaultClient, e.url)
	if _, err := noTok.ListDeadLetters(ctx, connect.NewRequest(&hodeiv1.ListDeadLettersRequest{})); codeOf(t, err) != connect.CodeUnauthenticated {
		t.Fatalf("RPC without token: %v", err)
	}
	wrong := hodeiv1connect.NewAdminServiceClient(http.DefaultClient, e.url, connect.WithInterceptors(bearer("nope")))
	if _, err := wrong.ResumeJob(ctx, connect.NewRequest(&hodeiv1.ResumeJobRequest{JobId: "x", Resolution: "retry"})); codeOf(t, err) != connect.CodeUnauthenticated {
		t.Fatalf("RPC with a wrong token: %v", err)
	}

	// Listed (REST and RPC), then requeued.
	code, body := e.do(t, "GET", "/api/v1/admin/outbox/dead-letters", tok, "")
	msgs, _ := body["messages"].([]any)
	if code != 200 || len(msgs) != 1 {
		t.Fatalf("dead letters: %d %v", code, body)
	}
	m := msgs[0].(map[string]any)
	if m["type"] != "test.dead" || m["last_error"] != "broker said no" || m["payload"] != `{"x": 1}` && m["payload"] != `{"x":1}` {
		t.Fatalf("dead letter = %v", m)
	}
	res, err := e.admin.ListDeadLetters(ctx, connect.NewRequest(&hodeiv1.ListDeadLettersRequest{Limit: 10}))
	if err != nil || len(res.Msg.GetMessages()) != 1 || res.Msg.GetMessages()[0].GetId() != ids[0] {
		t.Fatalf("RPC list: %v %v", res, err)
	}
	if code, body := e.do(t, "GET", "/api/v1/admin/outbox/dead-letters?limit=5000", tok, ""); code != 400 || !strings.Contains(body["error"].(string), "limit") {
		t.Fatalf("limit 5000: %d %v", code, body)
	}
	path := "/api/v1/admin/outbox/" + jsonNum(ids[0]) + "/requeue"
	if code, body := e.do(t, "POST", path, tok, ""); code != 200 {
		t.Fatalf("requeue: %d %v", code, body)
	}
	row, err := e.st.Outbox().Get(ctx, ids[0])
	if err != nil || row.Status != store.OutboxPending || row.Attempts != 0 {
		t.Fatalf("requeued row = %+v, %v", row, err)
	}
	if code, body := e.do(t, "POST", path, tok, ""); code != http.StatusConflict {
		t.Fatalf("requeue twice: %d %v, want 409", code, body)
	}
	if code, body := e.do(t, "POST", "/api/v1/admin/outbox/999999/requeue", tok, ""); code != http.StatusNotFound {
		t.Fatalf("requeue unknown: %d %v, want 404", code, body)
	}
	if code, body := e.do(t, "POST", "/api/v1/admin/outbox/abc/requeue", tok, ""); code != 400 || !strings.Contains(body["error"].(string), "id") {
		t.Fatalf("requeue abc: %d %v, want 400", code, body)
	}
}

func jsonNum(n int64) string { b, _ := json.Marshal(n); return string(b) }

// TestAdminRetryRunsAgain: a job that went to MANUAL_INTERVENTION_REQUIRED while
// provisioning is resumed with retry; the scheduler starts attempt 2, whose worker gets
// the job from the retry's execution saga and finishes it.
func TestAdminRetryRunsAgain(t *testing.T) {
	e := newAdminEnv(t, true, "")
	ctx, cancel := context.WithTimeout(t.Context(), 45*time.Second)
	defer cancel()

	job := e.submit(t, echoSpec(nil))
	takeSpec := func(what string) provider.WorkerSpec {
		t.Helper()
		select {
		case s := <-e.provider.specs:
			return s
		case <-ctx.Done():
			t.Fatalf("the provider was never asked for %s", what)
			return provider.WorkerSpec{}
		}
	}
	first := takeSpec("the first worker")
	// The platform could not confirm what happened: an operator must decide.
	if _, err := e.st.Jobs().UpdateState(ctx, job.GetId(), domain.JobManualInterventionRequired, time.Now(), nil); err != nil {
		t.Fatal(err)
	}
	if code, body := e.do(t, "POST", "/api/v1/admin/jobs/"+job.GetId()+"/resume", "", `{"resolution":"retry"}`); code != 200 {
		t.Fatalf("resume: %d %v", code, body)
	}
	second := takeSpec("the retry's worker")
	if second.WorkerID == first.WorkerID || second.JobID != job.GetId() {
		t.Fatalf("retry worker %+v (first %+v)", second, first)
	}
	reg, err := e.workers.Register(ctx, connect.NewRequest(&hodeiv1.RegisterRequest{WorkerId: second.WorkerID, OneTimePassword: second.OneTimePassword}))
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	streamCtx, endStream := context.WithTimeout(context.Background(), 40*time.Second)
	defer endStream()
	w := e.connectWorker(t, streamCtx, reg.Msg.GetSessionToken())
	w.send(&hodeiv1.WorkerMessage{MessageId: "hb1", Payload: &hodeiv1.WorkerMessage_Heartbeat{Heartbeat: &hodeiv1.Heartbeat{}}})
	run := w.next("RunJob", func(m *hodeiv1.ServerMessage) bool { return m.GetRunJob() != nil })
	if run.GetRunJob().GetJobId() != job.GetId() || run.GetRunJob().GetAttempt() != 2 {
		t.Fatalf("RunJob %v, want attempt 2 of %s", run, job.GetId())
	}
	w.send(&hodeiv1.WorkerMessage{MessageId: "s1", Payload: &hodeiv1.WorkerMessage_Started{Started: &hodeiv1.JobStarted{JobId: job.GetId()}}})
	w.ack("s1")
	w.send(&hodeiv1.WorkerMessage{MessageId: "r1", Payload: &hodeiv1.WorkerMessage_Result{Result: &hodeiv1.JobResult{JobId: job.GetId()}}})
	w.ack("r1")
	for {
		got, err := e.jobAPI.GetJob(ctx, connect.NewRequest(&hodeiv1.GetJobRequest{Id: job.GetId()}))
		if err != nil {
			t.Fatal(err)
		}
		j := got.Msg.GetJob()
		if j.GetState() == "SUCCEEDED" {
			if j.GetAttempt() != 2 || j.GetResolution() != "retry" {
				t.Fatalf("finished job %v", j)
			}
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("job never SUCCEEDED: %v", j)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
