package jobs_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/provider"
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

// notifyingCloud is the fake provider with an exit notifier the test fires.
type notifyingCloud struct {
	*fakeCloud
	handler atomic.Pointer[func(string, error)]
}

func (c *notifyingCloud) OnExit(h func(string, error)) { c.handler.Store(&h) }

// A worker its provider killed for the memory limit (provider.ErrOOMKilled) fails its
// running job with exit code 137 and the provider's reason, instead of a recovery that
// would hit the same limit again.
func TestOOMKilledWorkerFailsItsJob(t *testing.T) {
	var ec *notifyingCloud
	e := newEnvWith(t, envOpts{}, func(f *fakeCloud) provider.Provider { ec = &notifyingCloud{fakeCloud: f}; return ec }, nil)
	e.runCleanupLoop(disconnectCfg)
	ctx := context.Background()
	j, err := e.svc.Submit(ctx, domain.JobSpec{Command: []string{"x"}, Env: map[string]string{"FAKE_HANG": "1"}, MaxAttempts: 3})
	if err != nil {
		t.Fatal(err)
	}
	running := e.waitJob(j.ID, domain.JobRunning)
	h := ec.handler.Load()
	if h == nil {
		t.Fatal("jobs.New did not set the provider's exit handler")
	}
	ec.kill(running.WorkerID)
	(*h)(running.WorkerID, fmt.Errorf("%w (limit 64Mi): the worker's container was killed (exit code 137)", provider.ErrOOMKilled))
	got := e.waitJob(j.ID, domain.JobFailed)
	if got.ExitCode == nil || *got.ExitCode != 137 || !strings.Contains(got.LastError, "out of memory (limit 64Mi)") || got.Attempt != 1 {
		t.Fatalf("job %s: exit %v, error %q, attempt %d; want FAILED, 137, out of memory (limit 64Mi), attempt 1",
			got.State, got.ExitCode, got.LastError, got.Attempt)
	}
}
