package jobs_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/internal/natstest"
	"github.com/hodei-jobs/hodei/jobs"
	"github.com/hodei-jobs/hodei/messaging"
	"github.com/hodei-jobs/hodei/saga"
)

// The same job.worker_lost event published twice on HODEI_EVENTS (two stream messages:
// different message ids) starts one recovery saga; the job (no attempt left) FAILS.
func TestOrchestratorDuplicateEventStartsOneSaga(t *testing.T) {
	e := newEnv(t, envOpts{manual: true})
	nsrv, err := messaging.StartEmbedded(e.ctx(), messaging.Options{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nsrv.Shutdown)
	testOrchestratorDuplicate(t, e, nsrv.ClientURL())
}

// The same on Debian's nats-server 2.9 (one filter subject per consumer: the
// orchestrator takes every event and acknowledges those without a route, here a
// job.succeeded event published first).
func TestOrchestratorDuplicateEventStartsOneSagaNATS29(t *testing.T) {
	bin, err := natstest.DebianServer()
	if err != nil {
		t.Fatal(err)
	}
	c := natstest.Start(t, bin, 1)
	e := newEnv(t, envOpts{manual: true})
	nc, js, err := messaging.Connect(e.ctx(), c.URLs())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if messaging.ServerHasMultiFilter(nc) {
		t.Fatalf("nats-server %s claims multi-filter consumers", nc.ConnectedServerVersion())
	}
	if err := messaging.EnsureStreams(e.ctx(), js); err != nil {
		t.Fatal(err)
	}
	unrouted, err := json.Marshal(domain.Event{Type: "job.succeeded", EntityID: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(e.ctx(), messaging.EventSubject("job.succeeded"), unrouted); err != nil {
		t.Fatal(err)
	}
	testOrchestratorDuplicate(t, e, c.URLs())
	// Every event was acknowledged, the unrouted one included.
	cons, err := js.Consumer(e.ctx(), messaging.EventsStream, "hodei-orchestrator")
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(e.ctx())
	if err != nil {
		t.Fatal(err)
	}
	if info.NumAckPending != 0 || info.NumPending != 0 || info.AckFloor.Stream != 3 {
		t.Fatalf("orchestrator consumer: %d pending, %d unacked, ack floor %d; want 0, 0, 3",
			info.NumPending, info.NumAckPending, info.AckFloor.Stream)
	}
}

func testOrchestratorDuplicate(t *testing.T, e *env, url string) {
	ctx := e.ctx()
	nc, js, err := messaging.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if err := messaging.EnsureStreams(ctx, js); err != nil {
		t.Fatal(err)
	}
	o, err := jobs.NewOrchestrator(js, e.svc.OrchestratorRoutes(), jobs.OrchestratorConfig{RetryDelay: 50 * time.Millisecond})
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
	ev, err := domain.NewEvent(jobs.EventJobWorkerLost, j.ID, map[string]any{"worker_id": old, "attempt": 1, "reason": "test"})
	if err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := js.Publish(ctx, messaging.EventSubject(jobs.EventJobWorkerLost), data); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if handled, _ := o.Stats(); handled >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("orchestrator did not handle both events")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, started := o.Stats(); started != 1 {
		t.Fatalf("%d sagas started, want 1", started)
	}
	if n := e.count(`SELECT count(*) FROM sagas WHERE type = 'recovery'`); n != 1 {
		t.Fatalf("%d recovery sagas, want 1", n)
	}
	e.waitSaga(jobs.RecoverySagaID(j.ID, 1), saga.StateCompleted)
	if f := e.waitJob(j.ID, domain.JobFailed); !strings.Contains(f.LastError, "attempts exhausted") {
		t.Fatalf("last error %q", f.LastError)
	}
}
