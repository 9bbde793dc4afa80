package jobs_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/jobs"
	"github.com/hodei-jobs/hodei/store"
)

// What a worker (or something pretending to be one) sends is checked before anything
// is written: a malformed request is refused with an error naming what is wrong, and
// leaves the job, its logs and the worker's credentials as they were.
func TestWorkerAPIRefusesMalformedInput(t *testing.T) {
	e := newEnv(t, envOpts{manual: true})
	ctx := e.ctx()
	j, w := e.runningOn(spec(nil))

	// Registration: a missing worker id names the field; a missing or oversized
	// password is an unknown password (never a hint about which part was wrong).
	if _, err := e.svc.RegisterWorker(ctx, "", "x"); !errors.Is(err, jobs.ErrInvalidInput) || !strings.Contains(err.Error(), "worker_id") {
		t.Errorf("RegisterWorker without a worker id = %v, want ErrInvalidInput naming worker_id", err)
	}
	for _, otp := range []string{"", strings.Repeat("p", jobs.MaxSecretLen+1)} {
		if _, err := e.svc.RegisterWorker(ctx, w, otp); !errors.Is(err, jobs.ErrOTPUnknown) {
			t.Errorf("RegisterWorker with a %d-byte password = %v, want ErrOTPUnknown", len(otp), err)
		}
	}
	for _, tok := range []string{"", strings.Repeat("t", jobs.MaxSecretLen+1), "not-a-session"} {
		if _, err := e.svc.AuthenticateSession(ctx, tok); !errors.Is(err, jobs.ErrSessionInvalid) {
			t.Errorf("AuthenticateSession(%d bytes) = %v, want ErrSessionInvalid", len(tok), err)
		}
	}

	// Reports without a job id name the field.
	if err := e.svc.JobStarted(ctx, w, "", time.Now()); !errors.Is(err, jobs.ErrInvalidInput) || !strings.Contains(err.Error(), "job_id") {
		t.Errorf("JobStarted without a job id = %v, want ErrInvalidInput naming job_id", err)
	}
	if err := e.svc.JobFinished(ctx, w, jobs.JobResult{}); !errors.Is(err, jobs.ErrInvalidInput) || !strings.Contains(err.Error(), "job_id") {
		t.Errorf("JobFinished without a job id = %v, want ErrInvalidInput naming job_id", err)
	}

	// Log batches: each bad batch is refused whole, naming the line at fault.
	line := func(seq int64, s string) *store.LogLine {
		return &store.LogLine{Seq: seq, Stream: store.StreamStdout, Line: s}
	}
	tooMany := make([]*store.LogLine, jobs.MaxBatchLines+1)
	for i := range tooMany {
		tooMany[i] = line(int64(i+1), "x")
	}
	for _, tc := range []struct {
		name  string
		job   string
		lines []*store.LogLine
		want  string
	}{
		{"no job id", "", []*store.LogLine{line(1, "a")}, "job_id"},
		{"too many lines", j.ID, tooMany, "MaxBatchLines"},
		{"a missing line", j.ID, []*store.LogLine{line(1, "a"), nil}, "lines[1] is missing"},
		{"seq 0", j.ID, []*store.LogLine{line(1, "a"), line(0, "b")}, "lines[1].seq must be >= 1"},
		{"a long line", j.ID, []*store.LogLine{line(1, strings.Repeat("l", jobs.MaxLogLineBytes+1))}, "MaxLogLineBytes"},
	} {
		err := e.svc.AppendLogs(ctx, w, tc.job, tc.lines)
		if !errors.Is(err, jobs.ErrInvalidInput) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("AppendLogs with %s = %v, want ErrInvalidInput containing %q", tc.name, err, tc.want)
		}
	}
	// Another job's logs, or an unknown worker's, are refused too.
	other, err := e.svc.Submit(ctx, spec(nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.svc.AppendLogs(ctx, w, other.ID, []*store.LogLine{line(1, "intruder")}); !errors.Is(err, jobs.ErrNotAssigned) {
		t.Errorf("AppendLogs to another job = %v, want ErrNotAssigned", err)
	}
	if err := e.svc.AppendLogs(ctx, "no-such-worker", j.ID, []*store.LogLine{line(1, "ghost")}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("AppendLogs of an unknown worker = %v, want store.ErrNotFound", err)
	}
	if err := e.svc.AppendLogs(ctx, w, j.ID, nil); err != nil {
		t.Errorf("an empty batch = %v, want nil", err)
	}
	for _, id := range []string{j.ID, other.ID} {
		if got, err := e.svc.ReadLogs(ctx, id, 0, 0); err != nil || len(got) != 0 {
			t.Fatalf("refused batches stored %d lines for job %s (%v)", len(got), id, err)
		}
	}
	// A good batch is stored once, however often it is re-sent.
	for range 2 {
		if err := e.svc.AppendLogs(ctx, w, j.ID, []*store.LogLine{line(1, "one"), line(2, "two")}); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := e.svc.ReadLogs(ctx, j.ID, 0, 0); err != nil || len(got) != 2 || got[1].Line != "two" || got[1].JobID != j.ID {
		t.Fatalf("stored lines %+v, %v; want the two lines once", got, err)
	}

	// A heartbeat without a time is recorded at the Service's clock; one of an unknown
	// worker is an error.
	before := e.clock.Now()
	if err := e.svc.Heartbeat(ctx, w, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if hw, err := e.st.Workers().Get(ctx, w); err != nil || hw.LastHeartbeat.Before(before.Add(-time.Millisecond)) {
		t.Fatalf("heartbeat without a time: last heartbeat %v (before %v), %v", hw.LastHeartbeat, before, err)
	}
	if err := e.svc.Heartbeat(ctx, "no-such-worker", time.Now()); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Heartbeat of an unknown worker = %v, want store.ErrNotFound", err)
	}

	// The job was not disturbed by any of it.
	if got, err := e.st.Jobs().Get(ctx, j.ID); err != nil || got.State != domain.JobRunning || got.WorkerID != w {
		t.Fatalf("job after the refused requests: %+v, %v", got, err)
	}
}

// A worker's error text longer than MaxErrorBytes is cut to that size; the job still
// ends FAILED with the start of the text as its reason.
func TestLongResultErrorIsTruncated(t *testing.T) {
	e := newEnv(t, envOpts{manual: true})
	ctx := e.ctx()
	j, w := e.runningOn(spec(nil))
	long := "boom: " + strings.Repeat("e", jobs.MaxErrorBytes)
	if err := e.svc.JobFinished(ctx, w, jobs.JobResult{JobID: j.ID, ExitCode: 1, Error: long}); err != nil {
		t.Fatal(err)
	}
	got := e.waitJob(j.ID, domain.JobFailed, domain.JobSucceeded)
	if got.State != domain.JobFailed || len(got.LastError) != jobs.MaxErrorBytes || !strings.HasPrefix(got.LastError, "boom: ") {
		t.Fatalf("job %s, last error of %d bytes (prefix %q); want FAILED with %d bytes",
			got.State, len(got.LastError), got.LastError[:min(10, len(got.LastError))], jobs.MaxErrorBytes)
	}
}

// PendingRun (asked when a worker connects) hands out a job only to the worker it is
// ASSIGNED to and not yet started on.
func TestPendingRunOnlyForAnAssignedJob(t *testing.T) {
	e := newEnv(t, envOpts{manual: true})
	ctx := e.ctx()
	j, err := e.svc.Submit(ctx, spec(nil))
	if err != nil {
		t.Fatal(err)
	}
	p := e.waitJob(j.ID, domain.JobProvisioning)
	if got, err := e.svc.PendingRun(ctx, p.WorkerID); err != nil || got != nil {
		t.Fatalf("PendingRun of a worker still provisioning = %v, %v; want none", got, err)
	}
	w := e.registerManual(p.WorkerID)
	e.waitJob(j.ID, domain.JobAssigned)
	if got, err := e.svc.PendingRun(ctx, w); err != nil || got == nil || got.ID != j.ID {
		t.Fatalf("PendingRun of the assigned worker = %v, %v; want job %s", got, err, j.ID)
	}
	if err := e.svc.JobStarted(ctx, w, j.ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	if got, err := e.svc.PendingRun(ctx, w); err != nil || got != nil {
		t.Fatalf("PendingRun after the job started = %v, %v; want none", got, err)
	}
	if err := e.svc.JobFinished(ctx, w, jobs.JobResult{JobID: j.ID}); err != nil {
		t.Fatal(err)
	}
	e.waitJob(j.ID, domain.JobSucceeded)
	if got, err := e.svc.PendingRun(ctx, w); err != nil || got != nil {
		t.Fatalf("PendingRun of a released worker = %v, %v; want none", got, err)
	}
	if _, err := e.svc.PendingRun(ctx, "no-such-worker"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("PendingRun of an unknown worker = %v, want store.ErrNotFound", err)
	}
}
