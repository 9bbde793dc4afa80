package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/hodei-jobs/hodei/command"
	hodeiv1 "github.com/hodei-jobs/hodei/gen/hodei/v1"
	"github.com/hodei-jobs/hodei/gen/hodei/v1/hodeiv1connect"
	"github.com/hodei-jobs/hodei/saga"
	"github.com/hodei-jobs/hodei/store"
)

// runHistorySaga runs a saga through a transient failure, a timer, a signal and an
// incident on st, with its own engine (steps that touch nothing; events in the proto
// codec, which the API must decode like JSON), and returns its id. The admin API reads
// it through the server's engine: reading needs no definition.
func runHistorySaga(t *testing.T, st store.Store) string {
	t.Helper()
	ctx := t.Context()
	clock := saga.NewManualClock(time.Date(2031, 1, 2, 3, 4, 5, 0, time.UTC))
	reg := saga.NewRegistry()
	failed := false
	if err := reg.Register(saga.Definition{Name: "history", Version: 3, Steps: []saga.Step{
		{Name: "first", Do: func(context.Context, *saga.StepContext) (any, error) {
			return map[string]string{"made": "thing-1"}, nil
		}},
		{Name: "second", Do: func(_ context.Context, sc *saga.StepContext) (any, error) {
			if !failed {
				failed = true
				return nil, command.Transient(errors.New("flaky neighbour"))
			}
			p, err := sc.AwaitSignalTimeout("go", time.Hour)
			if err != nil {
				return nil, err
			}
			return json.RawMessage(p), nil
		}, Retry: saga.RetryPolicy{MaxAttempts: 3, Initial: time.Second, Max: time.Second}},
	}}); err != nil {
		t.Fatal(err)
	}
	eng, err := saga.New(st, reg, command.NewBus(), saga.Config{RunnerID: "history-test", Clock: clock,
		Rand: func() float64 { return 0.5 }})
	if err != nil {
		t.Fatal(err)
	}
	id := saga.IDFor("history", t.Name())
	if _, _, err := eng.Start(ctx, "history", id, nil); err != nil {
		t.Fatal(err)
	}
	run := func() {
		t.Helper()
		if _, err := eng.RunOnce(ctx); err != nil {
			t.Fatal(err)
		}
	}
	run() // first completes, second fails (transient)
	clock.Advance(2 * time.Second)
	run() // second waits for the signal
	if err := eng.Signal(ctx, id, "go", map[string]int{"n": 7}); err != nil {
		t.Fatal(err)
	}
	run()
	if err := eng.RecordIncident(ctx, id, "test.incident", "looked odd"); err != nil {
		t.Fatal(err)
	}
	if info, err := eng.Get(ctx, id); err != nil || info.State != saga.StateCompleted {
		t.Fatalf("history saga = %+v, %v; want COMPLETED", info, err)
	}
	return id
}

func TestAdminGetSagaHistory(t *testing.T) {
	e := newAdminEnv(t, false, "")
	ctx := t.Context()
	id := runHistorySaga(t, e.st)

	res, err := e.admin.GetSagaHistory(ctx, connect.NewRequest(&hodeiv1.GetSagaHistoryRequest{SagaId: id}))
	if err != nil {
		t.Fatal(err)
	}
	m := res.Msg
	s := m.GetSaga()
	if s.GetId() != id || s.GetType() != "history" || m.GetVersion() != 3 || s.GetState() != "COMPLETED" ||
		s.GetCurrentStep() != 2 || m.GetRunnableAt() != nil {
		t.Fatalf("saga = %v (version %d, runnable at %v)", s, m.GetVersion(), m.GetRunnableAt())
	}
	evs := m.GetEvents()
	if len(evs) == 0 || evs[len(evs)-1].GetSeq() != m.GetLastSeq() {
		t.Fatalf("events end at %v, last seq %d", evs, m.GetLastSeq())
	}
	cats := map[string]bool{}
	var types []string
	for i, ev := range evs {
		if ev.GetSeq() != int64(i+1) {
			t.Fatalf("event %d has seq %d", i, ev.GetSeq())
		}
		if want := string(saga.CategoryOf(ev.GetType())); ev.GetCategory() != want || want == "" {
			t.Errorf("%s: category %q, want %q", ev.GetType(), ev.GetCategory(), want)
		}
		if ev.GetCodec() != "json" || !json.Valid([]byte(ev.GetPayload())) || ev.GetTime().AsTime().IsZero() {
			t.Errorf("event %v: want codec json, a JSON payload and a time", ev)
		}
		cats[ev.GetCategory()] = true
		types = append(types, ev.GetType()+":"+ev.GetStep())
	}
	for _, c := range []string{"lifecycle", "step", "timer", "signal", "incident"} {
		if !cats[c] {
			t.Errorf("no %s event in %v", c, types)
		}
	}
	for _, want := range []string{"step.completed:first", "step.failed:second", "step.waiting:second",
		"timer.created:second", "timer.cancelled:second", "signal.received:", "step.completed:second", "saga.completed:", "incident.recorded:"} {
		if !slices.Contains(types, want) {
			t.Errorf("history lacks %s: %v", want, types)
		}
	}
	// Payloads: the step output inline, the transient error, the signal's payload.
	payload := func(typ, step string) map[string]any {
		t.Helper()
		for _, ev := range evs {
			if ev.GetType() == typ && ev.GetStep() == step {
				var p map[string]any
				if err := json.Unmarshal([]byte(ev.GetPayload()), &p); err != nil {
					t.Fatalf("%s payload %q: %v", typ, ev.GetPayload(), err)
				}
				return p
			}
		}
		t.Fatalf("no %s:%s event", typ, step)
		return nil
	}
	if out, _ := payload(saga.EventStepCompleted, "first")["output"].(map[string]any); out["made"] != "thing-1" {
		t.Errorf("step.completed:first payload = %v", payload(saga.EventStepCompleted, "first"))
	}
	if p := payload(saga.EventStepFailed, "second"); !strings.Contains(p["error"].(string), "flaky neighbour") || p["final"] != nil {
		t.Errorf("step.failed payload = %v", p)
	}
	if p := payload(saga.EventSignalReceived, ""); p["name"] != "go" || p["output"].(map[string]any)["n"] != float64(7) {
		t.Errorf("signal.received payload = %v", p)
	}

	// Filter by category: only those events, last_seq still the history's.
	res, err = e.admin.GetSagaHistory(ctx, connect.NewRequest(&hodeiv1.GetSagaHistoryRequest{SagaId: id,
		Categories: []string{"signal", "incident"}}))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ev := range res.Msg.GetEvents() {
		got = append(got, ev.GetType())
	}
	if !slices.Equal(got, []string{saga.EventSignalReceived, saga.EventIncidentRecorded}) || res.Msg.GetLastSeq() != m.GetLastSeq() {
		t.Fatalf("filtered events = %v (last seq %d)", got, res.Msg.GetLastSeq())
	}

	// Bad input names the field; an unknown saga is NotFound.
	for _, tc := range []struct {
		req  *hodeiv1.GetSagaHistoryRequest
		code connect.Code
		msg  string
	}{
		{&hodeiv1.GetSagaHistoryRequest{}, connect.CodeInvalidArgument, "saga_id: is required"},
		{&hodeiv1.GetSagaHistoryRequest{SagaId: strings.Repeat("a", 200)}, connect.CodeInvalidArgument, "saga_id: is 200 bytes"},
		{&hodeiv1.GetSagaHistoryRequest{SagaId: "has space"}, connect.CodeInvalidArgument, "saga_id"},
		{&hodeiv1.GetSagaHistoryRequest{SagaId: id, Categories: []string{"step", "bogus"}}, connect.CodeInvalidArgument, `categories[1]: "bogus" is not one of lifecycle`},
		{&hodeiv1.GetSagaHistoryRequest{SagaId: saga.IDFor("history", "nobody")}, connect.CodeNotFound, "saga_id: no saga"},
	} {
		_, err := e.admin.GetSagaHistory(ctx, connect.NewRequest(tc.req))
		if codeOf(t, err) != tc.code || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("GetSagaHistory(%.80v) = %v, want %s mentioning %q", tc.req, err, tc.code, tc.msg)
		}
	}

	// REST: the same, as protobuf JSON with snake_case names.
	code, body := e.do(t, "GET", "/api/v1/admin/sagas/"+id+"?category=step", "", "")
	if code != http.StatusOK || body["last_seq"] == nil || body["saga"].(map[string]any)["id"] != id {
		t.Fatalf("REST saga: %d %v", code, body)
	}
	for _, ev := range body["events"].([]any) {
		if c := ev.(map[string]any)["category"]; c != "step" {
			t.Fatalf("REST ?category=step returned a %v event", c)
		}
	}
	if code, body := e.do(t, "GET", "/api/v1/admin/sagas/"+saga.IDFor("x", "y"), "", ""); code != http.StatusNotFound ||
		!strings.Contains(body["error"].(string), "saga_id") {
		t.Fatalf("REST unknown saga: %d %v", code, body)
	}
	if code, body := e.do(t, "GET", "/api/v1/admin/sagas/"+id+"?category=nope", "", ""); code != http.StatusBadRequest ||
		!strings.Contains(body["error"].(string), "categories[0]") {
		t.Fatalf("REST bad category: %d %v", code, body)
	}

	// Without a token configured, a client that is not on loopback is refused.
	req := httptest.NewRequest("GET", "/api/v1/admin/sagas/"+id, nil)
	req.RemoteAddr = "192.0.2.7:4000"
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, req)
	if rec.Code != http.StatusForbidden {
		t.Fatalf("non-loopback REST without token: %d %s", rec.Code, rec.Body)
	}
}

func TestAdminGetSagaHistoryNeedsTheToken(t *testing.T) {
	const tok = "saga-history-token"
	e := newAdminEnv(t, false, tok)
	ctx := t.Context()
	id := runHistorySaga(t, e.st)
	for _, c := range []hodeiv1connect.AdminServiceClient{
		hodeiv1connect.NewAdminServiceClient(http.DefaultClient, e.url),
		hodeiv1connect.NewAdminServiceClient(http.DefaultClient, e.url, connect.WithInterceptors(bearer("wrong"))),
	} {
		_, err := c.GetSagaHistory(ctx, connect.NewRequest(&hodeiv1.GetSagaHistoryRequest{SagaId: id}))
		if codeOf(t, err) != connect.CodeUnauthenticated {
			t.Fatalf("GetSagaHistory without the token: %v, want Unauthenticated", err)
		}
	}
	if code, _ := e.do(t, "GET", "/api/v1/admin/sagas/"+id, "", ""); code != http.StatusUnauthorized {
		t.Fatalf("REST without the token: %d, want 401", code)
	}
	res, err := e.admin.GetSagaHistory(ctx, connect.NewRequest(&hodeiv1.GetSagaHistoryRequest{SagaId: id}))
	if err != nil || res.Msg.GetSaga().GetId() != id {
		t.Fatalf("GetSagaHistory with the token: %v, %v", res, err)
	}
	if code, body := e.do(t, "GET", "/api/v1/admin/sagas/"+id, tok, ""); code != http.StatusOK {
		t.Fatalf("REST with the token: %d %v", code, body)
	}
}
