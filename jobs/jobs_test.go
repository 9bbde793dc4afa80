package jobs_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/jobs"
	"github.com/hodei-jobs/hodei/saga"
	"github.com/hodei-jobs/hodei/store"
)

func TestSubmitRunsToSucceeded(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx := e.ctx()
	j, err := e.svc.Submit(ctx, spec(nil))
	if err != nil {
		t.Fatal(err)
	}
	if j.State != domain.JobPending || j.Spec.MaxAttempts != 1 {
		t.Fatalf("submitted job %+v", j)
	}
	got := e.waitJob(j.ID, domain.JobSucceeded, domain.JobFailed)
	if got.State != domain.JobSucceeded || got.ExitCode == nil || *got.ExitCode != 0 || got.Attempt != 1 ||
		got.StartedAt.IsZero() || got.FinishedAt.IsZero() {
		t.Fatalf("job %+v (exit %v)", got, got.ExitCode)
	}
	e.waitSaga(jobs.ExecutionSagaID(j.ID), saga.StateCompleted)
	e.waitSaga(jobs.ProvisioningSagaID(j.ID, 1), saga.StateCompleted)
	w, err := e.st.Workers().Get(ctx, got.WorkerID)
	if err != nil {
		t.Fatal(err)
	}
	if destroyed, creates := e.cloud.waitDestroyed(w.ID); w.State != domain.WorkerTerminated || !destroyed || creates != 1 {
		t.Fatalf("worker %+v destroyed %v creates %d", w, destroyed, creates)
	}
	lines, err := e.svc.ReadLogs(ctx, j.ID, 0, 0)
	if err != nil || len(lines) != 1 || lines[0].Line != "hello from "+j.ID ||
		lines[0].Stream != store.StreamStdout {
		t.Fatalf("logs %v, %v", lines, err)
	}
	// Events: queued, the state changes and exactly one completion, all in the outbox.
	if n := e.count(`SELECT count(*) FROM outbox WHERE kind = 'event' AND type = 'job.completed' AND payload->>'entity_id' = $1`, j.ID); n != 1 {
		t.Fatalf("%d job.completed events, want 1", n)
	}
	if n := e.count(`SELECT count(*) FROM outbox WHERE type = 'job.queued' AND payload->>'entity_id' = $1`, j.ID); n != 1 {
		t.Fatalf("%d job.queued events, want 1", n)
	}
	// The worker's credentials are gone with it.
	if _, err := e.svc.AuthenticateSession(ctx, "anything"); !errors.Is(err, jobs.ErrSessionInvalid) {
		t.Fatalf("AuthenticateSession: %v", err)
	}
	if n := e.count(`SELECT count(*) FROM worker_credentials`); n != 0 {
		t.Fatalf("%d credential rows left", n)
	}
}

func TestNonZeroExitFails(t *testing.T) {
	e := newEnv(t, envOpts{})
	j, err := e.svc.Submit(e.ctx(), spec(map[string]string{"FAKE_EXIT": "3"}))
	if err != nil {
		t.Fatal(err)
	}
	got := e.waitJob(j.ID, domain.JobSucceeded, domain.JobFailed)
	if got.State != domain.JobFailed || got.ExitCode == nil || *got.ExitCode != 3 || got.LastError != "exit code 3" {
		t.Fatalf("job %+v (exit %v)", got, got.ExitCode)
	}
	e.waitSaga(jobs.ExecutionSagaID(j.ID), saga.StateCompleted)
}

func TestInvalidSpecWritesNothing(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx := e.ctx()
	bad := []domain.JobSpec{
		{}, // empty command
		{Command: []string{"true"}, Timeout: -time.Second},
		{Command: []string{"true"}, Env: map[string]string{"BIG": strings.Repeat("x", domain.MaxEnvBytes+1)}},
	}
	for i, s := range bad {
		_, err := e.svc.Submit(ctx, s)
		var ve domain.ValidationErrors
		if !errors.Is(err, domain.ErrInvalidSpec) || !errors.As(err, &ve) || len(ve) == 0 {
			t.Fatalf("spec %d: err %v, want ValidationErrors", i, err)
		}
	}
	for _, table := range []string{"jobs", "sagas", "outbox", "workers"} {
		if n := e.count(`SELECT count(*) FROM ` + table); n != 0 {
			t.Fatalf("%d rows in %s after invalid submits", n, table)
		}
	}
}

// TestCapacityAndOrder: capacity 2 and 10 jobs: never more than 2 workers that are not
// TERMINATED (sampled in the database and counted by the provider), jobs start highest
// priority first, then oldest, and all succeed.
func TestCapacityAndOrder(t *testing.T) {
	e := newEnv(t, envOpts{capacity: 2, noScheduler: true})
	ctx := e.ctx()
	prios := []int{0, 5, 0, 9, 5, 0, 1, 9, 0, 5}
	ids := make([]string, len(prios))
	for i, p := range prios {
		s := spec(nil)
		s.Priority = p
		j, err := e.svc.Submit(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = j.ID
	}
	var want []string
	for _, p := range []int{9, 5, 1, 0} {
		for i, q := range prios {
			if q == p {
				want = append(want, ids[i])
			}
		}
	}

	var (
		maxActive atomic.Int64
		stop      = make(chan struct{})
		sampled   sync.WaitGroup
	)
	sampled.Add(1)
	go func() {
		defer sampled.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			var n int64
			if err := e.st.Pool().QueryRow(context.Background(),
				`SELECT count(*) FROM workers WHERE state <> 'TERMINATED'`).Scan(&n); err == nil && n > maxActive.Load() {
				maxActive.Store(n)
			}
		}
	}()
	var wg sync.WaitGroup
	sctx, cancel := context.WithCancel(ctx)
	// Two schedulers, as on two replicas: the advisory lock keeps them within capacity.
	e.startScheduler(sctx, &wg)
	e.startScheduler(sctx, &wg)
	for _, id := range ids {
		if j := e.waitJob(id, domain.JobSucceeded, domain.JobFailed); j.State != domain.JobSucceeded {
			t.Fatalf("job %s: %s %q", id, j.State, j.LastError)
		}
	}
	cancel()
	wg.Wait()
	close(stop)
	sampled.Wait()
	if m := maxActive.Load(); m > 2 || m < 1 {
		t.Fatalf("max workers not TERMINATED = %d, want 1..2", m)
	}
	e.cloud.mu.Lock()
	maxLive := e.cloud.maxLive
	e.cloud.mu.Unlock()
	if maxLive > 2 {
		t.Fatalf("provider saw %d live workers at once, capacity 2", maxLive)
	}
	rows, err := e.st.Pool().Query(ctx, `SELECT payload->>'entity_id' FROM outbox
		WHERE type = 'job.state_changed' AND payload->'data'->>'to' = 'PROVISIONING' ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		order = append(order, id)
	}
	rows.Close()
	if fmt.Sprint(order) != fmt.Sprint(want) {
		t.Fatalf("start order\n got %v\nwant %v", order, want)
	}
}

// manualWorker waits until the scheduler reserved and the provider created a worker for
// job id, and returns the worker id and its password.
func (e *env) manualWorker(id string) (workerID, otp string) {
	e.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		j, err := e.st.Jobs().Get(context.Background(), id)
		if err != nil {
			e.t.Fatal(err)
		}
		if j.WorkerID != "" {
			if p := e.cloud.otp(j.WorkerID); p != "" {
				return j.WorkerID, p
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	e.t.Fatalf("no worker created for job %s", id)
	return "", ""
}

func TestOneTimePassword(t *testing.T) {
	e := newEnv(t, envOpts{manual: true})
	ctx := e.ctx()
	j, err := e.svc.Submit(ctx, spec(nil))
	if err != nil {
		t.Fatal(err)
	}
	wid, otp := e.manualWorker(j.ID)
	if len(otp) < 43 {
		t.Fatalf("password %d chars, want 32 random bytes encoded", len(otp))
	}
	// The provider is called inside CreateWorker's transaction: wait for its commit.
	deadline := time.Now().Add(5 * time.Second)
	for n := 0; n != 1; {
		n = e.count(`SELECT count(*) FROM worker_credentials WHERE otp_hash = sha256($1::bytea)`, []byte(otp))
		if n != 1 && time.Now().After(deadline) {
			t.Fatalf("password hash rows %d, want 1 (stored as SHA-256)", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n := e.count(`SELECT count(*) FROM worker_credentials WHERE position($1::bytea in otp_hash) > 0`, []byte(otp)); n != 0 {
		t.Fatal("plain password stored")
	}

	if _, err := e.svc.RegisterWorker(ctx, wid, "wrong"); !errors.Is(err, jobs.ErrOTPUnknown) {
		t.Fatalf("wrong password: %v", err)
	}
	if _, err := e.svc.RegisterWorker(ctx, "no-such-worker", otp); !errors.Is(err, jobs.ErrOTPUnknown) {
		t.Fatalf("unknown worker: %v", err)
	}
	token, err := e.svc.RegisterWorker(ctx, wid, otp)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := e.svc.AuthenticateSession(ctx, token); err != nil || got != wid {
		t.Fatalf("session: %q, %v", got, err)
	}
	_, err = e.svc.RegisterWorker(ctx, wid, otp)
	if !errors.Is(err, jobs.ErrOTPReused) || !errors.Is(err, jobs.ErrInvalidCredentials) {
		t.Fatalf("reused password: %v", err)
	}
	if errors.Is(err, jobs.ErrOTPUnknown) || errors.Is(err, jobs.ErrOTPExpired) {
		t.Fatalf("reused password error matches another kind: %v", err)
	}
	if n := e.count(`SELECT count(*) FROM worker_credentials WHERE session_hash = sha256($1::bytea)`, []byte(token)); n != 1 {
		t.Fatal("session token not stored hashed")
	}

	// Expired: a second job's password, with the clock past its 5 minute lifetime.
	j2, err := e.svc.Submit(ctx, spec(nil))
	if err != nil {
		t.Fatal(err)
	}
	wid2, otp2 := e.manualWorker(j2.ID)
	e.clock.Advance(5*time.Minute + time.Second)
	if _, err := e.svc.RegisterWorker(ctx, wid2, otp2); !errors.Is(err, jobs.ErrOTPExpired) {
		t.Fatalf("expired password: %v", err)
	}
	logs := e.logs.String()
	for _, reason := range []string{"unknown one-time password", "one-time password already used", "one-time password expired"} {
		if !strings.Contains(logs, "worker registration refused") || !strings.Contains(logs, reason) {
			t.Fatalf("log lacks %q:\n%s", reason, logs)
		}
	}
	if strings.Contains(logs, otp) || strings.Contains(logs, otp2) {
		t.Fatal("a password was logged")
	}
}

// TestDuplicateResultIsNoop drives the worker side by hand: register, start, and report
// the result twice (also concurrently) and again after completion.
func TestDuplicateResultIsNoop(t *testing.T) {
	e := newEnv(t, envOpts{manual: true})
	ctx := e.ctx()
	j, err := e.svc.Submit(ctx, spec(nil))
	if err != nil {
		t.Fatal(err)
	}
	wid, otp := e.manualWorker(j.ID)
	if _, err := e.svc.RegisterWorker(ctx, wid, otp); err != nil {
		t.Fatal(err)
	}
	e.waitJob(j.ID, domain.JobAssigned)
	// PendingRun: what a (re)connecting worker is sent.
	rj, err := e.svc.PendingRun(ctx, wid)
	if err != nil || rj == nil || rj.ID != j.ID || rj.Spec.Command[0] != "echo" || rj.Attempt != 1 {
		t.Fatalf("PendingRun = %v, %v", rj, err)
	}
	if err := e.svc.JobStarted(ctx, "someone-else", j.ID, time.Now()); !errors.Is(err, jobs.ErrNotAssigned) {
		t.Fatalf("JobStarted by another worker: %v", err)
	}
	if err := e.svc.JobStarted(ctx, wid, j.ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.JobStarted(ctx, wid, j.ID, time.Now()); err != nil {
		t.Fatalf("repeated JobStarted: %v", err)
	}
	if rj, err := e.svc.PendingRun(ctx, wid); err != nil || rj != nil {
		t.Fatalf("PendingRun of a RUNNING job = %v, %v; want nil", rj, err)
	}
	res := jobs.JobResult{JobID: j.ID, ExitCode: 0}
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := e.svc.JobFinished(ctx, wid, res); err != nil {
				t.Errorf("JobFinished: %v", err)
			}
		}()
	}
	wg.Wait()
	// A different, later result for the same attempt is ignored too.
	if err := e.svc.JobFinished(ctx, wid, jobs.JobResult{JobID: j.ID, ExitCode: 9}); err != nil {
		t.Fatal(err)
	}
	got := e.waitJob(j.ID, domain.JobSucceeded, domain.JobFailed)
	if got.State != domain.JobSucceeded || *got.ExitCode != 0 {
		t.Fatalf("job %+v", got)
	}
	if err := e.svc.JobFinished(ctx, wid, res); err != nil {
		t.Fatalf("JobFinished after completion: %v", err)
	}
	e.waitSaga(jobs.ExecutionSagaID(j.ID), saga.StateCompleted)
	hist, err := e.engine.History(ctx, jobs.ExecutionSagaID(j.ID))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, ev := range hist {
		if ev.Type == saga.EventSignalReceived && ev.Data.Name == jobs.SignalJobFinished {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d %s signals in the history, want 1", n, jobs.SignalJobFinished)
	}
	if c := e.count(`SELECT count(*) FROM outbox WHERE type = 'job.completed' AND payload->>'entity_id' = $1`, j.ID); c != 1 {
		t.Fatalf("%d job.completed events", c)
	}
	// The session dies with the worker.
	if _, err := e.svc.AuthenticateSession(ctx, "x"); !errors.Is(err, jobs.ErrSessionInvalid) {
		t.Fatal(err)
	}
}

// TestRegistrationTimeout: a worker that never registers is destroyed by the
// provisioning saga's compensation and the job fails; its slot frees.
func TestRegistrationTimeout(t *testing.T) {
	e := newEnv(t, envOpts{manual: true, regTimeout: 200 * time.Millisecond})
	ctx := e.ctx()
	j, err := e.svc.Submit(ctx, spec(nil))
	if err != nil {
		t.Fatal(err)
	}
	wid, otp := e.manualWorker(j.ID)
	got := e.waitJob(j.ID, domain.JobFailed, domain.JobSucceeded)
	if want := "worker provisioning failed; attempts exhausted (1 of 1)"; got.State != domain.JobFailed || got.LastError != want {
		t.Fatalf("job %+v, want FAILED with %q", got, want)
	}
	e.waitSaga(jobs.ProvisioningSagaID(j.ID, 1), saga.StateCompensated)
	e.waitSaga(jobs.ExecutionSagaID(j.ID), saga.StateCompleted)
	w, err := e.st.Workers().Get(ctx, wid)
	if err != nil || w.State != domain.WorkerTerminated {
		t.Fatalf("worker %+v, %v", w, err)
	}
	// A late registration is refused: the password was revoked with the worker.
	if _, err := e.svc.RegisterWorker(ctx, wid, otp); !errors.Is(err, jobs.ErrOTPUnknown) {
		t.Fatalf("late registration: %v", err)
	}
}

// TestProvisioningRetried: a job whose first worker never registers gets its next
// attempt on a new worker (same execution saga), and succeeds there.
func TestProvisioningRetried(t *testing.T) {
	e := newEnv(t, envOpts{manual: true, regTimeout: 200 * time.Millisecond})
	ctx := e.ctx()
	sp := spec(nil)
	sp.MaxAttempts = 2
	j, err := e.svc.Submit(ctx, sp)
	if err != nil {
		t.Fatal(err)
	}
	first, _ := e.manualWorker(j.ID)
	e.waitSaga(jobs.ProvisioningSagaID(j.ID, 1), saga.StateCompensated)
	// The scheduler takes the job again: attempt 2 on another worker, which registers.
	var second, otp string
	deadline := time.Now().Add(20 * time.Second)
	for second == "" || second == first {
		if time.Now().After(deadline) {
			t.Fatalf("no second worker for job %s", j.ID)
		}
		second, otp = e.manualWorker(j.ID)
	}
	got, err := e.st.Jobs().Get(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Attempt != 2 || !strings.Contains(got.LastError, "worker provisioning failed (attempt 1 of 2); trying again") {
		t.Fatalf("after the failed provisioning: job %+v", got)
	}
	e.cloud.register(second, otp)
	e.waitJob(j.ID, domain.JobAssigned)
	if err := e.svc.JobFinished(ctx, second, jobs.JobResult{JobID: j.ID, ExitCode: 0}); err != nil {
		t.Fatal(err)
	}
	done := e.waitJob(j.ID, domain.JobSucceeded, domain.JobFailed)
	if done.State != domain.JobSucceeded || done.Attempt != 2 {
		t.Fatalf("job %+v, want SUCCEEDED on attempt 2", done)
	}
	if w, err := e.st.Workers().Get(ctx, first); err != nil || w.State != domain.WorkerTerminated {
		t.Fatalf("first worker %+v, %v", w, err)
	}
	e.waitSaga(jobs.ExecutionSagaID(j.ID), saga.StateCompleted)
}

func TestJobTimeout(t *testing.T) {
	e := newEnv(t, envOpts{})
	s := spec(map[string]string{"FAKE_HANG": "1"})
	s.Timeout = 300 * time.Millisecond
	j, err := e.svc.Submit(e.ctx(), s)
	if err != nil {
		t.Fatal(err)
	}
	got := e.waitJob(j.ID, domain.JobTimedOut, domain.JobSucceeded, domain.JobFailed)
	if got.State != domain.JobTimedOut || got.ExitCode != nil {
		t.Fatalf("job %+v", got)
	}
	e.waitSaga(jobs.ExecutionSagaID(j.ID), saga.StateCompleted)
}

func TestCancelPending(t *testing.T) {
	e := newEnv(t, envOpts{noScheduler: true})
	ctx := e.ctx()
	j, err := e.svc.Submit(ctx, spec(nil))
	if err != nil {
		t.Fatal(err)
	}
	got, err := e.svc.Cancel(ctx, j.ID, "")
	if err != nil || got.State != domain.JobCancelled {
		t.Fatalf("Cancel = %+v, %v", got, err)
	}
	e.waitSaga(jobs.ExecutionSagaID(j.ID), saga.StateCompleted)
	if _, err := e.svc.Cancel(ctx, j.ID, ""); !errors.Is(err, domain.ErrIllegalTransition) {
		t.Fatalf("cancel of a cancelled job: %v", err)
	}
	if _, err := e.svc.Schedule(ctx); err != nil {
		t.Fatal(err)
	}
	if n := e.count(`SELECT count(*) FROM workers`); n != 0 {
		t.Fatalf("a cancelled job got %d workers", n)
	}
}

// TestRestartResumes: the control plane stops while the job is ASSIGNED (its RunJob
// possibly lost) and a new one starts over the same database. The worker, still alive,
// reconnects: PendingRun gives it the RunJob again, and its result completes the job
// through the resumed execution saga.
func TestRestartResumes(t *testing.T) {
	e := newEnv(t, envOpts{manual: true})
	ctx := e.ctx()
	j, err := e.svc.Submit(ctx, spec(nil))
	if err != nil {
		t.Fatal(err)
	}
	wid, otp := e.manualWorker(j.ID)
	token, err := e.svc.RegisterWorker(ctx, wid, otp)
	if err != nil {
		t.Fatal(err)
	}
	e.waitJob(j.ID, domain.JobAssigned)
	e.waitSaga(jobs.ExecutionSagaID(j.ID), saga.StateWaiting) // parked in await-result

	e.stop()
	e.start(envOpts{manual: true})

	if got, err := e.svc.AuthenticateSession(ctx, token); err != nil || got != wid {
		t.Fatalf("session after restart: %q, %v", got, err)
	}
	rj, err := e.svc.PendingRun(ctx, wid)
	if err != nil || rj == nil || rj.ID != j.ID {
		t.Fatalf("PendingRun after restart = %v, %v", rj, err)
	}
	if err := e.svc.JobStarted(ctx, wid, j.ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.AppendLogs(ctx, wid, j.ID, []*store.LogLine{{Seq: 1, Line: "x"}}); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.JobFinished(ctx, wid, jobs.JobResult{JobID: j.ID, ExitCode: 7}); err != nil {
		t.Fatal(err)
	}
	got := e.waitJob(j.ID, domain.JobFailed, domain.JobSucceeded)
	if got.State != domain.JobFailed || *got.ExitCode != 7 {
		t.Fatalf("job %+v", got)
	}
	e.waitSaga(jobs.ExecutionSagaID(j.ID), saga.StateCompleted)
	if destroyed, _ := e.cloud.waitDestroyed(wid); !destroyed {
		t.Fatal("worker not destroyed after the job ended")
	}
}

// TestSweepDestroysWorkersLeftBehind: a worker the provider still runs although the
// database does not know it (its Destroy was lost in a crash after the commit) is
// destroyed by the sweep; a worker running a job is left alone.
func TestSweepDestroysWorkersLeftBehind(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx := e.ctx()
	j, err := e.svc.Submit(ctx, spec(map[string]string{"FAKE_HANG": "1"}))
	if err != nil {
		t.Fatal(err)
	}
	running := e.waitJob(j.ID, domain.JobRunning)
	e.cloud.mu.Lock()
	e.cloud.live["ghost-worker"] = true
	e.cloud.mu.Unlock()
	if destroyed, _ := e.cloud.waitDestroyed("ghost-worker"); !destroyed {
		t.Fatal("sweep did not destroy a worker unknown to the database")
	}
	time.Sleep(300 * time.Millisecond) // three more sweeps
	if destroyed, _ := e.cloud.wasDestroyed(running.WorkerID); destroyed {
		t.Fatal("sweep destroyed the worker of a running job")
	}
}
