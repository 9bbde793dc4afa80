package jobs_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/command"
	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/jobs"
	"github.com/hodei-jobs/hodei/provider"
	"github.com/hodei-jobs/hodei/saga"
	"github.com/hodei-jobs/hodei/store"
)

// An operator who mistypes a setting is told which field is wrong.
func TestConfigValidateNamesTheField(t *testing.T) {
	e := newEnv(t, envOpts{noScheduler: true, noEngineLoop: true})
	for _, tc := range []struct {
		field string
		mut   func(*jobs.Config)
	}{
		{"Capacity", func(c *jobs.Config) { c.Capacity = 100_001 }},
		{"OTPTTL", func(c *jobs.Config) { c.OTPTTL = time.Millisecond }},
		{"RegistrationTimeout", func(c *jobs.Config) { c.RegistrationTimeout = time.Millisecond }},
		{"SchedulerPoll", func(c *jobs.Config) { c.SchedulerPoll = 2 * time.Minute }},
		{"SchedulerBatch", func(c *jobs.Config) { c.SchedulerBatch = 1001 }},
		{"SweepInterval", func(c *jobs.Config) { c.SweepInterval = time.Millisecond }},
		{"DestroyTimeout", func(c *jobs.Config) { c.DestroyTimeout = 2 * time.Hour }},
		{"CancelGrace", func(c *jobs.Config) { c.CancelGrace = 2 * time.Hour }},
		{"DeliveryTimeout", func(c *jobs.Config) { c.DeliveryTimeout = 2 * time.Minute }},
		{"DefaultProvider", func(c *jobs.Config) { c.DefaultProvider = "no-such-provider" }},
		{"ServerURL", func(c *jobs.Config) { c.ServerURL = "" }},
	} {
		c := jobs.Config{ServerURL: "http://127.0.0.1:1"}
		tc.mut(&c)
		_, err := jobs.New(e.st, command.NewBus(), e.engine, newProviders(t, e.cloud), e.cloud, c)
		if err == nil || !strings.Contains(err.Error(), "Config."+tc.field) {
			t.Errorf("jobs.New with a bad %s = %v, want an error naming Config.%s", tc.field, err, tc.field)
		}
	}
	if _, err := jobs.New(nil, command.NewBus(), e.engine, newProviders(t, e.cloud), e.cloud, jobs.Config{}); err == nil {
		t.Error("jobs.New without a store succeeded")
	}
}

// ResumeJob: an operator's resolution of a job in MANUAL_INTERVENTION_REQUIRED. Bad
// input names the field; a job in another state is refused; "retry" runs the job again
// under a new execution saga, and that attempt is timed out like the first.
func TestResumeJob(t *testing.T) {
	e := newEnvWith(t, envOpts{}, func(f *fakeCloud) provider.Provider { return &stuckCloud{fakeCloud: f} }, nil)
	j := timedOutJob(t, e)
	if j.State != domain.JobManualInterventionRequired {
		t.Fatalf("job %s, want MANUAL_INTERVENTION_REQUIRED", j.State)
	}
	var ve *domain.ValidationError
	if _, err := e.svc.ResumeJob(e.ctx(), j.ID, "shrug", ""); !errors.As(err, &ve) || ve.Field != "resolution" {
		t.Errorf("ResumeJob with an unknown resolution = %v, want a ValidationError on resolution", err)
	}
	if _, err := e.svc.ResumeJob(e.ctx(), j.ID, jobs.ResolutionManuallyFixed, strings.Repeat("n", jobs.MaxNotesBytes+1)); !errors.As(err, &ve) || ve.Field != "notes" {
		t.Errorf("ResumeJob with long notes = %v, want a ValidationError on notes", err)
	}
	if _, err := e.svc.ResumeJob(e.ctx(), "no-such-job", jobs.ResolutionRetry, ""); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("ResumeJob of an unknown job = %v, want store.ErrNotFound", err)
	}
	if got, _ := e.st.Jobs().Get(e.ctx(), j.ID); got.State != domain.JobManualInterventionRequired {
		t.Fatalf("refused resumes changed the job to %s", got.State)
	}

	got, err := e.svc.ResumeJob(e.ctx(), j.ID, jobs.ResolutionRetry, "worker host rebooted")
	if err != nil {
		t.Fatal(err)
	}
	if got.State != domain.JobPending || got.Resolution != jobs.ResolutionRetry || got.Notes != "worker host rebooted" || got.WorkerID != "" {
		t.Fatalf("after retry: %+v, want PENDING with the resolution and notes and no worker", got)
	}
	if _, err := e.svc.ResumeJob(e.ctx(), j.ID, jobs.ResolutionRetry, ""); !errors.Is(err, jobs.ErrNotAwaitingIntervention) ||
		!errors.Is(err, domain.ErrIllegalTransition) {
		t.Errorf("second ResumeJob = %v, want ErrNotAwaitingIntervention (an illegal transition)", err)
	}
	if n := e.count(`SELECT count(*) FROM outbox WHERE type = $1 AND idempotency_key LIKE $2`, jobs.EventJobResumed, "%"+j.ID+"%"); n != 1 {
		t.Errorf("%d job.resumed events, want 1", n)
	}
	retrySaga := jobs.RetryExecutionSagaID(j.ID, 2)
	again := e.waitJob(j.ID, domain.JobManualInterventionRequired, domain.JobTimedOut, domain.JobFailed, domain.JobSucceeded)
	if again.State != domain.JobManualInterventionRequired || again.Attempt != 2 {
		t.Fatalf("retried job: %s attempt %d, want MANUAL_INTERVENTION_REQUIRED on attempt 2", again.State, again.Attempt)
	}
	e.waitSaga(retrySaga, saga.StateCompleted)
	sagas, err := e.svc.JobSagas(e.ctx(), j.ID)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i, s := range sagas {
		ids = append(ids, s.Type)
		if i > 0 && s.CreatedAt.Before(sagas[i-1].CreatedAt) {
			t.Errorf("JobSagas not oldest first: %s before %s", sagas[i-1].ID, s.ID)
		}
	}
	// The retried attempt was timed out by a timeout saga of its own (the first run's
	// had already ended, and a second start of the same id would have been a no-op).
	e.waitSaga(jobs.AttemptTimeoutSagaID(j.ID, 2), saga.StateCompleted)
	found := map[string]bool{}
	for _, s := range sagas {
		found[s.ID] = true
	}
	if !found[retrySaga] || !found[jobs.AttemptTimeoutSagaID(j.ID, 2)] || !found[jobs.TimeoutSagaID(j.ID)] {
		t.Fatalf("JobSagas %v lacks the retry's execution saga or one of the two timeout sagas", ids)
	}
	if _, err := e.svc.JobSagas(e.ctx(), "no-such-job"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("JobSagas of an unknown job = %v, want store.ErrNotFound", err)
	}

	// manually_fixed ends the job FAILED with the operator's notes.
	fixed, err := e.svc.ResumeJob(e.ctx(), j.ID, jobs.ResolutionManuallyFixed, "killed by hand")
	if err != nil {
		t.Fatal(err)
	}
	if fixed.State != domain.JobFailed || fixed.Resolution != jobs.ResolutionManuallyFixed || fixed.Notes != "killed by hand" {
		t.Fatalf("after manually_fixed: %+v", fixed)
	}
}
