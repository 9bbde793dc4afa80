package jobs_test

import (
	"strings"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/domain"
)

// A disconnect notice without a time counts from when it is received; notices about an
// unknown worker, or one that has no job, start nothing, and the one about a worker
// running a job still recovers it.
func TestDisconnectNoticeWithoutTime(t *testing.T) {
	e := newEnv(t, envOpts{manual: true, regTimeout: time.Minute})
	sp := spec(nil)
	sp.MaxAttempts = 2
	j, w := e.runningOn(sp)
	idle, err := e.svc.Submit(e.ctx(), spec(nil))
	if err != nil {
		t.Fatal(err)
	}
	creating, _ := e.manualWorker(idle.ID)
	e.runCleanupLoop(disconnectCfg)
	received := time.Now()
	e.svc.WorkerDisconnected("no-such-worker", time.Time{})
	e.svc.WorkerDisconnected(creating, time.Time{}) // its job is PROVISIONING, not on it yet
	e.svc.WorkerDisconnected(w, time.Time{})
	p := e.waitJob(j.ID, domain.JobProvisioning)
	if since := time.Since(received); since < disconnectCfg.DisconnectGrace {
		t.Fatalf("recovered %s after the notice, before the grace %s (a zero time read as long ago)", since, disconnectCfg.DisconnectGrace)
	}
	if p.Attempt != 2 || p.WorkerID == w || !strings.Contains(p.LastError, "stream closed at") {
		t.Fatalf("after the disconnect: %+v", p)
	}
	if got := e.waitJob(idle.ID, domain.JobProvisioning); got.WorkerID != creating || got.Attempt != 1 {
		t.Fatalf("the disconnect of a worker without a job moved its job: %+v", got)
	}
	if n := e.count(`SELECT count(*) FROM sagas WHERE type = 'recovery'`); n != 1 {
		t.Fatalf("%d recovery sagas, want 1", n)
	}
}
