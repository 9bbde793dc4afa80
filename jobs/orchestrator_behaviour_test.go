package jobs_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/jobs"
	"github.com/hodei-jobs/hodei/messaging"
	"github.com/hodei-jobs/hodei/saga"
)

// embeddedJetStream starts an in-process NATS server with the platform's streams.
func embeddedJetStream(t *testing.T, ctx context.Context) jetstream.JetStream {
	t.Helper()
	js := embeddedNATS(t, ctx)
	if err := messaging.EnsureStreams(ctx, js); err != nil {
		t.Fatal(err)
	}
	return js
}

// embeddedNATS starts an embedded nats-server with JetStream (no streams yet) for the
// test and connects to it.
func embeddedNATS(t *testing.T, ctx context.Context) jetstream.JetStream {
	t.Helper()
	nsrv, err := messaging.StartEmbedded(ctx, messaging.Options{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nsrv.Shutdown)
	nc, js, err := messaging.Connect(ctx, nsrv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return js
}

func encodeEvent(t *testing.T, typ, entity string, data any) []byte {
	t.Helper()
	ev, err := domain.NewEvent(typ, entity, data)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// An orchestrator is refused a configuration it cannot run with, naming what is wrong.
func TestNewOrchestratorRefusesBadConfig(t *testing.T) {
	e := newEnv(t, envOpts{noScheduler: true, noEngineLoop: true})
	js := embeddedJetStream(t, e.ctx())
	routes := e.svc.OrchestratorRoutes()
	for _, tc := range []struct {
		name   string
		js     jetstream.JetStream
		routes []jobs.Route
		cfg    jobs.OrchestratorConfig
		want   string
	}{
		{"no JetStream", nil, routes, jobs.OrchestratorConfig{}, "needs JetStream and at least one route"},
		{"no routes", js, nil, jobs.OrchestratorConfig{}, "needs JetStream and at least one route"},
		{"AckWait", js, routes, jobs.OrchestratorConfig{AckWait: time.Millisecond}, "OrchestratorConfig.AckWait 1ms out of range"},
		{"RetryDelay", js, routes, jobs.OrchestratorConfig{RetryDelay: 2 * time.Hour}, "OrchestratorConfig.RetryDelay 2h0m0s out of range"},
		{"a route without Start", js, []jobs.Route{{EventType: "x.y"}}, jobs.OrchestratorConfig{}, `route "x.y": EventType and Start are required`},
	} {
		if o, err := jobs.NewOrchestrator(tc.js, tc.routes, tc.cfg); err == nil || o != nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewOrchestrator with %s = %v, %v; want an error containing %q", tc.name, o, err, tc.want)
		}
	}
}

// Handle, one event at a time: an event of a type without a route is ignored; an
// undecodable event, a job.worker_lost without its fields or about an unknown job is
// an error (the consumer then drops or redelivers it) and starts nothing.
func TestOrchestratorHandleBadEvents(t *testing.T) {
	e := newEnv(t, envOpts{manual: true})
	ctx := e.ctx()
	o, err := jobs.NewOrchestrator(embeddedJetStream(t, ctx), e.svc.OrchestratorRoutes(), jobs.OrchestratorConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if created, err := o.Handle(ctx, encodeEvent(t, "job.queued", "some-job", map[string]any{})); created || err != nil {
		t.Errorf("an unrouted event: created %v, %v; want ignored", created, err)
	}
	var syntax *json.SyntaxError
	if created, err := o.Handle(ctx, []byte("{not json")); created || err == nil || !errors.As(err, &syntax) {
		t.Errorf("undecodable bytes: created %v, %v; want a JSON syntax error", created, err)
	}
	bad := []struct {
		name string
		data []byte
		want string
	}{
		{"data of the wrong shape", []byte(`{"type":"job.worker_lost","entity_id":"j1","data":{"worker_id":7}}`), "decode job.worker_lost data"},
		{"no worker id", encodeEvent(t, jobs.EventJobWorkerLost, "j1", map[string]any{"attempt": 1}), "entity_id, worker_id and attempt are required"},
		{"no attempt", encodeEvent(t, jobs.EventJobWorkerLost, "j1", map[string]any{"worker_id": "w"}), "entity_id, worker_id and attempt are required"},
		{"no job", encodeEvent(t, jobs.EventJobWorkerLost, "", map[string]any{"worker_id": "w", "attempt": 1}), "entity_id, worker_id and attempt are required"},
		{"an unknown job", encodeEvent(t, jobs.EventJobWorkerLost, "no-such-job", map[string]any{"worker_id": "w", "attempt": 1}), "job.worker_lost of no-such-job"},
	}
	for _, tc := range bad {
		if created, err := o.Handle(ctx, tc.data); created || err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: created %v, %v; want an error containing %q", tc.name, created, err, tc.want)
		}
	}
	if n := e.count(`SELECT count(*) FROM sagas WHERE type = 'recovery'`); n != 0 {
		t.Fatalf("bad events started %d recovery sagas", n)
	}
}

// Run: an undecodable event is dropped (and logged), an event that fails is
// redelivered (and logged), and neither holds up the good event behind them, whose
// recovery starts.
func TestOrchestratorRunSurvivesBadEvents(t *testing.T) {
	e := newEnv(t, envOpts{manual: true})
	ctx := e.ctx()
	js := embeddedJetStream(t, ctx)
	logs := &syncBuffer{}
	o, err := jobs.NewOrchestrator(js, e.svc.OrchestratorRoutes(), jobs.OrchestratorConfig{RetryDelay: 20 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	octx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := o.Run(octx); err != nil {
			t.Error(err)
		}
	})
	defer func() { stop(); wg.Wait() }()

	j, old := e.runningOn(spec(nil))
	subject := messaging.EventSubject(jobs.EventJobWorkerLost)
	for _, data := range [][]byte{
		[]byte("{not json"),
		encodeEvent(t, jobs.EventJobWorkerLost, j.ID, map[string]any{"attempt": 1}), // no worker id
		encodeEvent(t, jobs.EventJobWorkerLost, j.ID, map[string]any{"worker_id": old, "attempt": 1, "reason": "test"}),
	} {
		if _, err := js.Publish(ctx, subject, data); err != nil {
			t.Fatal(err)
		}
	}
	e.waitSaga(jobs.RecoverySagaID(j.ID, 1), saga.StateCompleted)
	if f := e.waitJob(j.ID, domain.JobFailed); !strings.Contains(f.LastError, "attempts exhausted") {
		t.Fatalf("last error %q", f.LastError)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		handled, started := o.Stats()
		// Three messages; more handlings than that are redeliveries of the failing one.
		if handled > 4 && started == 1 &&
			strings.Contains(logs.String(), "undecodable event dropped") && strings.Contains(logs.String(), "event not handled; redelivering") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("handled %d, started %d; log:\n%s", handled, started, logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := strings.Count(logs.String(), "undecodable event dropped"); n != 1 {
		t.Fatalf("the undecodable event was handled %d times, want once (dropped, not redelivered)", n)
	}
}

// Run started while its stream does not answer (here: not created yet, as while a NATS
// cluster elects a new leader) does not return: it creates its consumer once it can and
// then starts the sagas of the events. Before, the error stopped the whole server.
func TestOrchestratorRunWaitsForItsStream(t *testing.T) {
	e := newEnv(t, envOpts{manual: true})
	ctx := e.ctx()
	js := embeddedNATS(t, ctx)
	logs := &syncBuffer{}
	o, err := jobs.NewOrchestrator(js, e.svc.OrchestratorRoutes(), jobs.OrchestratorConfig{Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	octx, stop := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- o.Run(octx) }()
	defer stop()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "event consumer not ready; trying again") {
		select {
		case err := <-ran:
			t.Fatalf("Run returned while its stream did not exist: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no retry logged; log:\n%s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := messaging.EnsureStreams(ctx, js); err != nil {
		t.Fatal(err)
	}
	j, old := e.runningOn(spec(nil))
	lost := encodeEvent(t, jobs.EventJobWorkerLost, j.ID, map[string]any{"worker_id": old, "attempt": 1, "reason": "test"})
	if _, err := js.Publish(ctx, messaging.EventSubject(jobs.EventJobWorkerLost), lost); err != nil {
		t.Fatal(err)
	}
	e.waitSaga(jobs.RecoverySagaID(j.ID, 1), saga.StateCompleted)
	if _, started := o.Stats(); started != 1 {
		t.Fatalf("%d sagas started, want 1", started)
	}
	stop()
	if err := <-ran; err != nil {
		t.Errorf("Run after the stream came: %v", err)
	}
}
