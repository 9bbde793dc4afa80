package jobs_test

import (
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/domain"
)

// TestTimeoutWhileRecovering: a job's timeout counts from its first start; when it
// expires while the job waits for a replacement worker (PROVISIONING after its worker
// was lost), the job ends TIMED_OUT, and both the lost worker and the replacement go.
func TestTimeoutWhileRecovering(t *testing.T) {
	e := newEnv(t, envOpts{manual: true, regTimeout: 3 * time.Second})
	ctx := e.ctx()
	sp := spec(nil)
	sp.MaxAttempts = 2
	sp.Timeout = 1500 * time.Millisecond
	j, old := e.runningOn(sp)

	e.clock.Advance(2 * time.Second) // the worker goes silent and is found lost
	r, err := e.svc.Cleanup(ctx, cleanupCfg)
	if err != nil {
		t.Fatal(err)
	}
	if r.RecoveriesStarted != 1 {
		t.Fatalf("cleanup report %+v, want one recovery", r)
	}
	p := e.waitJob(j.ID, domain.JobProvisioning)
	if p.WorkerID == old || p.Attempt != 2 {
		t.Fatalf("after the loss: %+v", p)
	}
	// The replacement never registers; the timeout fires first.
	got := e.waitJob(j.ID, domain.JobTimedOut, domain.JobFailed, domain.JobSucceeded)
	if got.State != domain.JobTimedOut {
		t.Fatalf("job %s (%s), want TIMED_OUT", got.State, got.LastError)
	}
	for _, w := range []string{old, p.WorkerID} {
		if destroyed, _ := e.cloud.waitDestroyed(w); !destroyed {
			t.Errorf("worker %s not destroyed", w)
		}
	}
}
