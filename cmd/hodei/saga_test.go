package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/hodei-jobs/hodei/command"
	"github.com/hodei-jobs/hodei/internal/pgtest"
	"github.com/hodei-jobs/hodei/saga"
	"github.com/hodei-jobs/hodei/store/postgres"
)

type showTestCmd struct {
	Key string `json:"key"`
}

func (showTestCmd) CommandType() string      { return "test.show" }
func (c showTestCmd) IdempotencyKey() string { return c.Key }

// runTestSaga runs a two-step saga to completion in a fresh migrated database and
// returns the database URL and the saga id.
func runTestSaga(t *testing.T) (string, string) {
	t.Helper()
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	if _, err := postgres.Migrate(ctx, url); err != nil {
		t.Fatal(err)
	}
	st, err := postgres.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	bus := command.NewBus()
	command.Register(bus, command.HandlerFunc[showTestCmd, map[string]string](func(_ context.Context, c showTestCmd) (map[string]string, error) {
		return map[string]string{"done": c.Key + strings.Repeat("x", 100)}, nil
	}))
	reg := saga.NewRegistry()
	step := func(ctx context.Context, sc *saga.StepContext) (any, error) {
		return sc.Dispatch(ctx, showTestCmd{Key: sc.Key()})
	}
	if err := reg.Register(saga.Definition{Name: "show", Version: 2, Steps: []saga.Step{
		{Name: "first", Do: step}, {Name: "second", Do: step}}}); err != nil {
		t.Fatal(err)
	}
	eng, err := saga.New(st, reg, bus, saga.Config{RunnerID: "test"})
	if err != nil {
		t.Fatal(err)
	}
	id := saga.IDFor("show", "subject")
	if _, _, err := eng.Start(ctx, "show", id, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := eng.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	info, err := eng.Get(ctx, id)
	if err != nil || info.State != saga.StateCompleted {
		t.Fatalf("saga = %+v, %v; want COMPLETED", info, err)
	}
	return url, id
}

func TestSagaShow(t *testing.T) {
	dbURL, id := runTestSaga(t)
	url := startServer(t, dbURL) // no admin token: loopback clients only

	out, err := runHodei(t, "saga", "show", id, "--server", url)
	if err != nil {
		t.Fatalf("saga show: %v\n%s", err, out)
	}
	for _, want := range []string{id, "show v2", "COMPLETED", "SEQ", "CATEGORY", "saga.started", "step.scheduled",
		"step.completed", "saga.completed", "first", "second"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || !strings.Contains(f[3], ".") {
			continue // not an event line
		}
		if want := string(saga.CategoryOf(f[3])); f[2] != want {
			t.Errorf("event line %q: category column %q, want %q", line, f[2], want)
		}
		if f[3] == saga.EventStepCompleted && !strings.Contains(line, "…") {
			t.Errorf("long payload not shortened: %q", line)
		}
	}

	out, err = runHodei(t, "saga", "show", id, "--server", url, "-o", "json")
	if err != nil {
		t.Fatalf("saga show -o json: %v\n%s", err, out)
	}
	var v sagaView
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("-o json is not one JSON object: %v\n%s", err, out)
	}
	if v.ID != id || v.Type != "show" || v.Version != 2 || v.State != "COMPLETED" || len(v.Events) == 0 {
		t.Fatalf("json view = %+v", v)
	}
	last := v.Events[len(v.Events)-1]
	if last.Type != saga.EventCompleted || last.Seq != v.LastSeq || last.Category != "lifecycle" {
		t.Fatalf("last event = %+v, last seq %d", last, v.LastSeq)
	}
	var sawOutput bool
	for _, ev := range v.Events {
		if ev.Type == saga.EventStepCompleted {
			var p struct {
				Output map[string]string `json:"output"`
			}
			if err := json.Unmarshal(ev.Payload, &p); err != nil || !strings.HasPrefix(p.Output["done"], id) {
				t.Fatalf("step.completed payload %s: %v", ev.Payload, err)
			}
			sawOutput = true
		}
	}
	if !sawOutput {
		t.Fatal("no step.completed event in JSON")
	}

	// --category keeps only those events (comma-separated or repeated).
	for _, args := range [][]string{{"--category", "lifecycle"}, {"--category", "lifecycle,signal"},
		{"--category", "lifecycle", "--category", "timer"}} {
		out, err = runHodei(t, append([]string{"saga", "show", id, "--server", url, "-o", "json"}, args...)...)
		if err != nil {
			t.Fatalf("saga show %v: %v\n%s", args, err, out)
		}
		var f sagaView
		if err := json.Unmarshal([]byte(out), &f); err != nil {
			t.Fatal(err)
		}
		if len(f.Events) != 2 || f.Events[0].Type != saga.EventStarted || f.Events[1].Type != saga.EventCompleted {
			t.Fatalf("saga show %v: events %+v, want saga.started and saga.completed", args, f.Events)
		}
	}
}

func TestSagaShowErrors(t *testing.T) {
	dbURL, id := runTestSaga(t)
	url := startServer(t, dbURL)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"no-such-saga"}, `not found: saga_id: no saga "no-such-saga"`},
		{[]string{strings.Repeat("x", 300)}, "saga_id: is 300 bytes"},
		{[]string{id, "--category", "steps"}, `categories[0]: "steps" is not one of lifecycle, step`},
		{[]string{"--job", "no-such-job"}, "not found"},
		{[]string{}, "give either SAGA_ID or --job JOB_ID"},
		{[]string{id, "--job", "j"}, "give either SAGA_ID or --job JOB_ID"},
		{[]string{id, "-o", "yaml"}, "--output"},
	} {
		_, err := runHodei(t, append([]string{"saga", "show", "--server", url}, tc.args...)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("saga show %.60v: error %v, want it to contain %q", tc.args, err, tc.want)
		}
	}
	// No server there: the hint names --server and HODEI_SERVER.
	srv := closedServerURL(t)
	_, err := runHodei(t, "saga", "show", id, "--server", srv)
	if want := "cannot reach the Hodei server at " + srv; err == nil || !strings.Contains(err.Error(), want) ||
		!strings.Contains(err.Error(), envServer) {
		t.Fatalf("unreachable server: %v", err)
	}
	// HODEI_SERVER is the default of --server.
	t.Setenv(envServer, url)
	if out, err := runHodei(t, "saga", "show", id); err != nil || !strings.Contains(out, id) {
		t.Fatalf("saga show with %s: %v\n%s", envServer, err, out)
	}
}

func TestBenchSagasSmall(t *testing.T) {
	url := pgtest.NewDatabase(t)
	out, err := runHodei(t, "bench", "sagas", "--database-url", url, "--sagas", "30", "--steps", "2", "-o", "json")
	if err != nil {
		t.Fatalf("bench sagas: %v\n%s", err, out)
	}
	var res map[string]any
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	for _, k := range []string{"throughput_per_s", "append_p50_ms", "append_p99_ms"} {
		v, ok := res[k].(float64)
		if !ok || v <= 0 {
			t.Errorf("%s = %v, want a positive number", k, res[k])
		}
	}
	if res["commands_dispatched"] != float64(60) {
		t.Errorf("commands_dispatched = %v, want 60", res["commands_dispatched"])
	}
}
