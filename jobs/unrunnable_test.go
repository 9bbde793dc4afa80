package jobs_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/jobs"
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

// provisioningWorker submits a job with maxAttempts on a fake agent that never
// registers, and returns it once its worker's Create was called.
func provisioningWorker(t *testing.T, maxAttempts int) (*env, *notifyingCloud, *domain.Job) {
	t.Helper()
	var ec *notifyingCloud
	e := newEnvWith(t, envOpts{manual: true},
		func(f *fakeCloud) provider.Provider { ec = &notifyingCloud{fakeCloud: f}; return ec },
		func(c *jobs.Config) { c.RegistrationTimeout = 10 * time.Minute })
	e.runCleanupLoop(disconnectCfg)
	j, err := e.svc.Submit(context.Background(), domain.JobSpec{Command: []string{"x"}, MaxAttempts: maxAttempts})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := e.waitJob(j.ID, domain.JobProvisioning)
		ec.mu.Lock()
		created := got.WorkerID != "" && ec.creates[got.WorkerID] > 0
		ec.mu.Unlock()
		if created {
			return e, ec, got
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s: its worker was not created within 20s", j.ID)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A worker its provider reports, after Create returned, as one that can never start
// (a provider.Permanent exit: the kubernetes provider's image that cannot be pulled)
// fails the job still provisioning on it at once, with the provider's reason, instead
// of waiting for the registration timeout or trying again.
func TestPermanentExitFailsProvisioningJob(t *testing.T) {
	e, ec, j := provisioningWorker(t, 3)
	h := ec.handler.Load()
	if h == nil {
		t.Fatal("jobs.New did not set the provider's exit handler")
	}
	(*h)(j.WorkerID, provider.Permanent(fmt.Errorf("image nope:1 could not be pulled (ErrImageNeverPull): not present")))
	got := e.waitJob(j.ID, domain.JobFailed)
	if !strings.Contains(got.LastError, "image nope:1 could not be pulled") || got.Attempt != 1 {
		t.Fatalf("job: error %q, attempt %d; want the image named, attempt 1", got.LastError, got.Attempt)
	}
	e.waitWorkerDestroyed(ec.fakeCloud, j.WorkerID)
}

// An ordinary exit of a worker that never registered (the kubernetes provider's pod
// unschedulable for too long) fails that attempt's provisioning; with no attempts left
// the job's reason carries the provider's message.
func TestExitBeforeRegistrationNamesTheReason(t *testing.T) {
	e, ec, j := provisioningWorker(t, 1)
	h := ec.handler.Load()
	if h == nil {
		t.Fatal("jobs.New did not set the provider's exit handler")
	}
	(*h)(j.WorkerID, fmt.Errorf("pod hodei-worker-x unschedulable for 2s: 0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector"))
	got := e.waitJob(j.ID, domain.JobFailed)
	if !strings.Contains(got.LastError, "didn't match Pod's node affinity/selector") {
		t.Fatalf("job: error %q; want the scheduler's message", got.LastError)
	}
}

// waitWorkerDestroyed waits until the provider was asked to destroy the worker.
func (e *env) waitWorkerDestroyed(f *fakeCloud, workerID string) {
	e.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		f.mu.Lock()
		done := f.destroyed[workerID]
		f.mu.Unlock()
		if done {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("worker %s was not destroyed within 20s", workerID)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
