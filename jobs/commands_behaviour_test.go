package jobs_test

import (
	"strings"
	"testing"

	"github.com/hodei-jobs/hodei/command"
	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/jobs"
)

// Commands arrive late or twice (a saga step retried, two sagas racing on one job).
// Each finds the state it would have set, or a state that makes it moot, and changes
// nothing; a command that would attach a job to another job's worker is refused.
func TestStaleCommandsChangeNothing(t *testing.T) {
	e := newEnv(t, envOpts{manual: true})
	ctx := e.ctx()
	a := &cancelAgent{e: e}
	e.cloud.setCanceller(a.cancel)
	running, wa := e.runningOn(spec(nil))
	prov, err := e.svc.Submit(ctx, spec(nil))
	if err != nil {
		t.Fatal(err)
	}
	wb, _ := e.manualWorker(prov.ID)
	e.stop() // from here on only the commands below change anything
	n := 0
	dispatch := func(c command.Command) (jobs.Outcome, error) {
		t.Helper()
		return command.Dispatch[jobs.Outcome](ctx, e.d, c)
	}
	key := func() string { n++; return "test/stale/" + string(rune('a'+n)) }
	state := func(id string) *domain.Job {
		t.Helper()
		j, err := e.st.Jobs().Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return j
	}

	// A repeated assignment of a RUNNING job to its own worker.
	if out, err := dispatch(jobs.AssignWorker{Key: key(), JobID: running.ID, WorkerID: wa}); err != nil || !out.Skipped {
		t.Fatalf("AssignWorker of a job already on that worker = %+v, %v; want skipped", out, err)
	}
	if j := state(running.ID); j.State != domain.JobRunning {
		t.Fatalf("a repeated assignment moved the job to %s", j.State)
	}
	// A job attached to another job's reserved worker: refused.
	if _, err := dispatch(jobs.AssignWorker{Key: key(), JobID: running.ID, WorkerID: wb}); err == nil ||
		!strings.Contains(err.Error(), "was reserved for job") {
		t.Fatalf("AssignWorker to another job's worker = %v, want refused", err)
	}
	// SendCancel and MarkJobRunning for a job that is not being cancelled / not on that
	// worker: no message, no change.
	if out, err := dispatch(jobs.SendCancel{Key: key(), JobID: running.ID, WorkerID: wa, Round: 1}); err != nil || !out.Aborted {
		t.Fatalf("SendCancel of a RUNNING job = %+v, %v; want aborted", out, err)
	}
	if a.count() != 0 {
		t.Fatalf("%d CancelJob messages for a job nobody cancelled", a.count())
	}
	if c, err := e.svc.PendingCancel(ctx, wa); err != nil || c != nil {
		t.Fatalf("PendingCancel of a RUNNING job = %v, %v; want none", c, err)
	}
	if c, err := e.svc.PendingCancel(ctx, wb); err != nil || c != nil {
		t.Fatalf("PendingCancel of a PROVISIONING job = %v, %v; want none", c, err)
	}
	if _, err := e.svc.PendingCancel(ctx, "no-such-worker"); err == nil {
		t.Fatal("PendingCancel of an unknown worker succeeded")
	}

	// Once the job is CANCELLING, a late assignment tells the execution saga so; a late
	// failure ends it CANCELLED, not FAILED.
	if _, err := e.svc.Cancel(ctx, running.ID, "user"); err != nil {
		t.Fatal(err)
	}
	if out, err := dispatch(jobs.AssignWorker{Key: key(), JobID: running.ID, WorkerID: wa}); err != nil || !out.Cancelled {
		t.Fatalf("AssignWorker of a CANCELLING job = %+v, %v; want cancelled", out, err)
	}
	if out, err := dispatch(jobs.MarkJobFailed{Key: key(), JobID: running.ID, Reason: "provisioning failed"}); err != nil || out.Skipped {
		t.Fatalf("MarkJobFailed of a CANCELLING job = %+v, %v", out, err)
	}
	if j := state(running.ID); j.State != domain.JobCancelled || j.LastError != "provisioning failed" {
		t.Fatalf("MarkJobFailed of a CANCELLING job: %s (%q), want CANCELLED", j.State, j.LastError)
	}
	// An ended job: every late command is a no-op.
	if out, err := dispatch(jobs.AssignWorker{Key: key(), JobID: running.ID, WorkerID: wa}); err != nil || !out.Aborted {
		t.Fatalf("AssignWorker of an ended job = %+v, %v; want aborted", out, err)
	}
	if out, err := dispatch(jobs.MarkJobFailed{Key: key(), JobID: running.ID, Reason: "late"}); err != nil || !out.Skipped {
		t.Fatalf("MarkJobFailed of an ended job = %+v, %v; want skipped", out, err)
	}
	if out, err := dispatch(jobs.DestroyWorker{Key: key(), WorkerID: "no-such-worker"}); err != nil || !out.Skipped {
		t.Fatalf("DestroyWorker of an unknown worker = %+v, %v; want skipped", out, err)
	}
	if j := state(running.ID); j.State != domain.JobCancelled || j.LastError != "provisioning failed" {
		t.Fatalf("late commands changed the ended job: %s (%q)", j.State, j.LastError)
	}
	if j := state(prov.ID); j.State != domain.JobProvisioning || j.WorkerID != wb {
		t.Fatalf("the other job was disturbed: %s on %q", j.State, j.WorkerID)
	}
}

// Cancel of a PROVISIONING job destroys its own reserved worker, and no other job's.
func TestCancelProvisioningSparesOtherJobs(t *testing.T) {
	e := newEnv(t, envOpts{manual: true})
	ctx := e.ctx()
	var ids, workers []string
	for range 2 {
		j, err := e.svc.Submit(ctx, spec(nil))
		if err != nil {
			t.Fatal(err)
		}
		w, _ := e.manualWorker(j.ID)
		ids, workers = append(ids, j.ID), append(workers, w)
	}
	got, err := e.svc.Cancel(ctx, ids[0], "")
	if err != nil || got.State != domain.JobCancelled {
		t.Fatalf("Cancel = %+v, %v", got, err)
	}
	if destroyed, _ := e.cloud.waitDestroyed(workers[0]); !destroyed {
		t.Fatalf("the cancelled job's worker %s was not destroyed", workers[0])
	}
	if n := e.count(`SELECT count(*) FROM workers WHERE id = $1 AND state = 'CREATING'`, workers[1]); n != 1 {
		t.Fatal("the other job's reserved worker was touched")
	}
	// The other job goes on: its worker registers (its password was not revoked) and
	// the job runs.
	e.registerManual(workers[1])
	e.waitJob(ids[1], domain.JobAssigned)
	if err := e.svc.JobFinished(ctx, workers[1], jobs.JobResult{JobID: ids[1]}); err != nil {
		t.Fatal(err)
	}
	if done := e.waitJob(ids[1], domain.JobSucceeded, domain.JobFailed); done.State != domain.JobSucceeded {
		t.Fatalf("the other job ended %s", done.State)
	}
}
