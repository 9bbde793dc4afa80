package retention_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/internal/pgtest"
	"github.com/hodei-jobs/hodei/jobs"
	"github.com/hodei-jobs/hodei/retention"
	"github.com/hodei-jobs/hodei/saga"
	"github.com/hodei-jobs/hodei/store"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

type leading bool

func (l leading) IsLeader() bool { return bool(l) }

// The store's list of ended saga states is the saga engine's.
func TestSagaEndedStatesAreTheTerminalOnes(t *testing.T) {
	all := []saga.State{saga.StateRunning, saga.StateWaiting, saga.StateCompensating, saga.StateCompleted,
		saga.StateFailed, saga.StateCompensated, saga.StateCompensationFailed, saga.StateCancelled}
	for _, s := range all {
		if got := slices.Contains(store.SagaEndedStates, string(s)); got != s.Terminal() {
			t.Errorf("saga state %s: in store.SagaEndedStates %v, Terminal %v", s, got, s.Terminal())
		}
	}
}

func mustT(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func mkJob(t *testing.T, st store.Store, id string, state domain.JobState, fin time.Time) {
	t.Helper()
	mustT(t, st.Jobs().Create(context.Background(), &domain.Job{ID: id, State: state, Attempt: 1, FinishedAt: fin,
		Spec: domain.JobSpec{Command: []string{"true"}}}))
	_, err := st.Logs().Append(context.Background(), &store.LogLine{JobID: id, Seq: 1, Line: "x", Time: time.Now()})
	mustT(t, err)
}

func mkSaga(t *testing.T, st store.Store, id, typ string, state saga.State) {
	t.Helper()
	_, _, err := st.Sagas().Create(context.Background(), &store.SagaRecord{ID: id, Type: typ, Version: 1, State: string(state)},
		&store.SagaEvent{Type: "started", Codec: "json"})
	mustT(t, err)
}

func exists(t *testing.T, err error) bool {
	t.Helper()
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		t.Fatal(err)
	}
	return err == nil
}

// A pass deletes ended jobs with their sagas and logs, ended sagas no job owns and
// terminated workers, and never a job in MANUAL_INTERVENTION_REQUIRED, a job not
// ended, a job one of whose sagas is still going, a saga not ended, a saga of a job
// that is kept, or a worker whose warm-pool saga is still going; a dry run counts the
// same and deletes nothing; a follower prunes nothing.
func TestPrunerKeepsWhatIsStillNeeded(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st := pgtest.NewStore(t)
	t0 := time.Now().Add(-time.Minute)
	// Walked oldest first, with batches of one: the kept "cancelling" job comes first
	// and must not stall the walk.
	mkJob(t, st, "cancelling", domain.JobCancelled, t0)
	mkSaga(t, st, jobs.CancellationSagaID("cancelling"), jobs.SagaCancellation, saga.StateWaiting)
	mkJob(t, st, "done", domain.JobSucceeded, t0.Add(time.Second))
	mkSaga(t, st, jobs.ExecutionSagaID("done"), jobs.SagaExecution, saga.StateCompleted)
	mkSaga(t, st, jobs.ProvisioningSagaID("done", 1), jobs.SagaProvisioning, saga.StateCompleted)
	mkJob(t, st, "mir", domain.JobManualInterventionRequired, time.Time{})
	mkSaga(t, st, jobs.ExecutionSagaID("mir"), jobs.SagaExecution, saga.StateCompensationFailed)
	mkJob(t, st, "running", domain.JobRunning, time.Time{})
	mkSaga(t, st, jobs.ProvisioningSagaID("running", 1), jobs.SagaProvisioning, saga.StateCompleted)
	mkSaga(t, st, jobs.ExecutionSagaID("running"), jobs.SagaExecution, saga.StateWaiting)
	for _, w := range []string{"w-warm", "w-gone"} {
		mustT(t, st.Workers().Create(ctx, &domain.Worker{ID: w, Provider: "local", State: domain.WorkerTerminated,
			CreatedAt: t0, UpdatedAt: t0}))
	}
	mkSaga(t, st, jobs.WarmSagaID("w-warm"), jobs.SagaWarmWorker, saga.StateRunning)
	mkSaga(t, st, jobs.WarmSagaID("w-gone"), jobs.SagaWarmWorker, saga.StateCompleted)

	later := func() time.Time { return time.Now().Add(2 * time.Hour) }
	r := retention.Retentions{Sagas: time.Hour, Jobs: time.Hour, Logs: time.Hour, Idempotency: time.Hour, Outbox: time.Hour}
	follower, err := retention.NewPruner(st, retention.Config{Retain: r, Now: later, BatchSize: 1,
		Interval: 10 * time.Millisecond, Leader: leading(false)})
	mustT(t, err)
	fctx, stop := context.WithTimeout(ctx, 200*time.Millisecond)
	mustT(t, follower.Run(fctx))
	stop()
	p, err := retention.NewPruner(st, retention.Config{Retain: r, Now: later, BatchSize: 1, Pause: time.Millisecond})
	mustT(t, err)
	dry, err := p.PruneOnce(ctx, true)
	mustT(t, err)
	rows := func(rep retention.Report) map[string]int {
		m := map[string]int{}
		for _, k := range rep.Kinds {
			m[k.Kind] = k.Rows
		}
		return m
	}
	// logs: the lines of the two ended jobs ("cancelling" is kept for its saga, its
	// output is not).
	want := map[string]int{"outbox": 0, "sagas": 1, "jobs": 1, "workers": 1, "logs": 2, "idempotency": 0}
	if got := rows(dry); !mapsEqual(got, want) {
		t.Fatalf("dry run: %v, want %v", got, want)
	}
	if _, err := st.Jobs().Get(ctx, "done"); err != nil {
		t.Fatalf("a follower or the dry run deleted a job: %v", err)
	}
	rep, err := p.PruneOnce(ctx, false)
	mustT(t, err)
	// The dry run counted "done"'s log line under logs; the real pass deleted it with
	// its job first.
	want["logs"] = 1
	if got := rows(rep); !mapsEqual(got, want) {
		t.Fatalf("pass: %v, want %v", got, want)
	}
	for id, keep := range map[string]bool{"cancelling": true, "done": false, "mir": true, "running": true} {
		_, err := st.Jobs().Get(ctx, id)
		if exists(t, err) != keep {
			t.Errorf("job %s: %v, want kept %v", id, err, keep)
		}
	}
	for id, keep := range map[string]bool{
		jobs.CancellationSagaID("cancelling"): true,
		jobs.ExecutionSagaID("done"):          false,
		jobs.ProvisioningSagaID("done", 1):    false,
		jobs.ExecutionSagaID("mir"):           true, // ended, but its job is kept
		jobs.ProvisioningSagaID("running", 1): true, // ended, but its job is kept
		jobs.ExecutionSagaID("running"):       true,
		jobs.WarmSagaID("w-warm"):             true,
		jobs.WarmSagaID("w-gone"):             false,
	} {
		_, err := st.Sagas().Get(ctx, id)
		if exists(t, err) != keep {
			t.Errorf("saga %s: %v, want kept %v", id, err, keep)
		}
	}
	for id, keep := range map[string]bool{"w-warm": true, "w-gone": false} {
		_, err := st.Workers().Get(ctx, id)
		if exists(t, err) != keep {
			t.Errorf("worker %s: %v, want kept %v", id, err, keep)
		}
	}
	if lines, err := st.Logs().List(ctx, "mir", 0, 10); err != nil || len(lines) != 1 {
		t.Errorf("log lines of the MANUAL_INTERVENTION_REQUIRED job: %d, %v; want 1", len(lines), err)
	}
	// What is left stays: a second pass deletes nothing.
	again, err := p.PruneOnce(ctx, false)
	mustT(t, err)
	if again.Rows() != 0 {
		t.Fatalf("second pass deleted %v", rows(again))
	}
}

func mapsEqual(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// Retentions out of range name their flag; 0 keeps a kind forever.
func TestRetentionsValidate(t *testing.T) {
	if err := (retention.Retentions{}).Validate(time.Minute); err != nil {
		t.Fatalf("all zero: %v", err)
	}
	if err := retention.Defaults().Validate(time.Minute); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	err := retention.Retentions{Jobs: time.Hour, Sagas: 30 * time.Second}.Validate(time.Minute)
	if err == nil || err.Error() != "--retain-sagas 30s: 0 (keep forever) or at least 1m0s" {
		t.Fatalf("sagas 30s: %v", err)
	}
	if _, err := retention.NewPruner(pgtest.NewStore(t), retention.Config{BatchSize: 20000}); err == nil {
		t.Fatal("NewPruner accepted BatchSize 20000")
	}
}
