package jobs_test

import (
	"context"
	"strings"
	"testing"

	"github.com/hodei-jobs/hodei/domain"
)

// A PENDING job that no configured provider can run (accepted under other providers:
// written here straight to the store) is failed by the scheduler, naming why, instead of
// waiting for ever; a job the provider can run still starts.
func TestSchedulerFailsUnrunnablePendingJob(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx := context.Background()
	j := &domain.Job{ID: "0190f0e0-0000-7000-8000-000000000001", State: domain.JobPending,
		Spec: domain.JobSpec{Command: []string{"true"}, Image: "busybox", MaxAttempts: 1}}
	if err := e.st.Jobs().Create(ctx, j); err != nil {
		t.Fatal(err)
	}
	e.svc.WakeScheduler()
	got := e.waitJob(j.ID, domain.JobFailed)
	if !strings.Contains(got.LastError, "no configured provider can run the job") || !strings.Contains(got.LastError, "runs no images") &&
		!strings.Contains(got.LastError, "image given but no configured provider runs images") {
		t.Fatalf("last error %q; want why no provider can run it", got.LastError)
	}
	ok, err := e.svc.Submit(ctx, domain.JobSpec{Command: []string{"true"}})
	if err != nil {
		t.Fatal(err)
	}
	e.waitJob(ok.ID, domain.JobSucceeded)
}
