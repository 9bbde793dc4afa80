package storetest

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/store"
)

// RunRetention checks the retention port (issue 14): what goes, what never goes, the
// batch limits and dry runs.
func RunRetention(t *testing.T, newStore func(t *testing.T) store.Store) {
	t.Run("Jobs", func(t *testing.T) { testRetentionJobs(t, newStore(t)) })
	t.Run("Sagas", func(t *testing.T) { testRetentionSagas(t, newStore(t)) })
	t.Run("Logs", func(t *testing.T) { testRetentionLogs(t, newStore(t)) })
	t.Run("Workers", func(t *testing.T) { testRetentionWorkers(t, newStore(t)) })
	t.Run("Idempotency", func(t *testing.T) { testRetentionIdempotency(t, newStore(t)) })
	t.Run("Limits", func(t *testing.T) {
		ctx, rs := ctxT(t), newStore(t).Retention()
		for name, fn := range map[string]func() error{
			"EndedJobs":    func() error { _, err := rs.EndedJobs(ctx, time.Now(), time.Time{}, "", 0); return err },
			"EndedWorkers": func() error { _, err := rs.EndedWorkers(ctx, time.Now(), time.Time{}, "", 10001); return err },
			"PruneSagas":   func() error { _, err := rs.PruneSagas(ctx, time.Now(), nil, 0, false); return err },
			"PruneLogs":    func() error { _, err := rs.PruneLogs(ctx, time.Now(), -1, false); return err },
			"PruneIdempotencyKeys": func() error {
				_, err := rs.PruneIdempotencyKeys(ctx, time.Now(), 0, true)
				return err
			},
		} {
			if err := fn(); err == nil || !strings.Contains(err.Error(), "limit") {
				t.Errorf("%s with a limit out of range: %v, want an error naming the limit", name, err)
			}
		}
	})
}

// retJob creates a job in state, finished at fin (zero: not finished).
func retJob(t *testing.T, s store.Store, id string, state domain.JobState, fin time.Time) {
	t.Helper()
	j := &domain.Job{ID: id, State: state, Spec: domain.JobSpec{Command: []string{"true"}}, Attempt: 1, FinishedAt: fin}
	if !fin.IsZero() {
		j.CreatedAt = fin.Add(-time.Minute)
	}
	must(t, s.Jobs().Create(context.Background(), j))
}

// retSaga creates saga id of type typ in state with two events, a snapshot and a timer.
func retSaga(t *testing.T, s store.Store, id, typ, state string) {
	t.Helper()
	ctx := context.Background()
	ss := s.Sagas()
	_, _, err := ss.Create(ctx, &store.SagaRecord{ID: id, Type: typ, Version: 1, State: state},
		&store.SagaEvent{Type: "started", Codec: "json"}, &store.SagaEvent{Type: "step", Codec: "json"})
	must(t, err)
	must(t, ss.PutSnapshot(ctx, &store.SagaSnapshot{SagaID: id, Seq: 2, State: []byte("s"), SHA256: []byte{1}}, 3))
	must(t, ss.CreateTimer(ctx, &store.SagaTimer{ID: id + "/t", SagaID: id, Name: "t", FireAt: time.Now().Add(time.Hour)}))
}

// sagaLeft reports whether saga id's row is still there, and whether any of its
// history or snapshots is (a deleted saga must leave none).
func sagaLeft(t *testing.T, s store.Store, id string) (row, rest bool) {
	t.Helper()
	ctx := context.Background()
	_, err := s.Sagas().Get(ctx, id)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		t.Fatal(err)
	}
	evs, eerr := s.Sagas().Events(ctx, id, 0)
	must(t, eerr)
	snaps, serr := s.Sagas().Snapshots(ctx, id, 10)
	must(t, serr)
	return err == nil, len(evs) > 0 || len(snaps) > 0
}

func retLogs(t *testing.T, s store.Store, jobID string, at time.Time, n int) {
	t.Helper()
	var lines []*store.LogLine
	for i := 1; i <= n; i++ {
		lines = append(lines, &store.LogLine{JobID: jobID, Seq: int64(i), Line: "l", Time: at})
	}
	_, err := s.Logs().Append(context.Background(), lines...)
	must(t, err)
}

func logCount(t *testing.T, s store.Store, jobID string) int {
	t.Helper()
	ls, err := s.Logs().List(context.Background(), jobID, 0, 1000)
	must(t, err)
	return len(ls)
}

func testRetentionJobs(t *testing.T, s store.Store) {
	ctx, rs := ctxT(t), s.Retention()
	old := time.Now().Add(-2 * time.Hour).UTC().Truncate(time.Millisecond)
	retJob(t, s, "old1", domain.JobSucceeded, old)
	retJob(t, s, "old2", domain.JobFailed, old.Add(time.Second))
	retJob(t, s, "old3", domain.JobCancelled, old.Add(2*time.Second))
	retJob(t, s, "mir", domain.JobManualInterventionRequired, old)
	retJob(t, s, "running", domain.JobRunning, time.Time{})
	retJob(t, s, "new", domain.JobTimedOut, time.Now())
	for _, id := range []string{"old1", "mir", "running"} {
		retLogs(t, s, id, old, 3)
	}
	before := time.Now().Add(-time.Hour)

	page, err := rs.EndedJobs(ctx, before, time.Time{}, "", 2)
	must(t, err)
	if len(page) != 2 || page[0].ID != "old1" || page[1].ID != "old2" || page[0].Attempt != 1 {
		t.Fatalf("first page of ended jobs: %+v, want old1 and old2", page)
	}
	rest, err := rs.EndedJobs(ctx, before, page[1].FinishedAt, page[1].ID, 2)
	must(t, err)
	if len(rest) != 1 || rest[0].ID != "old3" {
		t.Fatalf("page after old2: %+v, want old3 only (MANUAL_INTERVENTION_REQUIRED, RUNNING and recent jobs never)", rest)
	}

	retSaga(t, s, "s-ended", "execution", "COMPLETED")
	retSaga(t, s, "s-going", "execution", "WAITING")
	going, err := rs.UnendedSagas(ctx, []string{"s-ended", "s-going", "s-missing"})
	must(t, err)
	if !slices.Equal(going, []string{"s-going"}) {
		t.Fatalf("UnendedSagas = %v, want [s-going]", going)
	}

	// Jobs not ended are never deleted, even when asked for.
	n, err := rs.DeleteJobs(ctx, []string{"old1", "mir", "running"}, []string{"s-ended", "s-going"})
	must(t, err)
	if n != 1 {
		t.Fatalf("DeleteJobs deleted %d jobs, want 1 (old1)", n)
	}
	if _, err := s.Jobs().Get(ctx, "old1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("old1 after DeleteJobs: %v, want ErrNotFound", err)
	}
	for _, id := range []string{"mir", "running", "old2", "new"} {
		if _, err := s.Jobs().Get(ctx, id); err != nil {
			t.Fatalf("job %s after DeleteJobs: %v", id, err)
		}
	}
	if logCount(t, s, "old1") != 0 || logCount(t, s, "mir") != 3 || logCount(t, s, "running") != 3 {
		t.Fatalf("log lines after DeleteJobs: old1 %d (want 0), mir %d, running %d (want 3)",
			logCount(t, s, "old1"), logCount(t, s, "mir"), logCount(t, s, "running"))
	}
	if row, hist := sagaLeft(t, s, "s-ended"); row || hist {
		t.Fatalf("ended saga after DeleteJobs: row %v, history/snapshots %v; want neither", row, hist)
	}
	if row, hist := sagaLeft(t, s, "s-going"); !row || !hist {
		t.Fatalf("saga not ended after DeleteJobs: row %v, history %v; want both kept", row, hist)
	}
}

func testRetentionSagas(t *testing.T, s store.Store) {
	ctx, rs := ctxT(t), s.Retention()
	for _, st := range store.SagaEndedStates {
		retSaga(t, s, "ended-"+st, "warm-worker", st)
	}
	retSaga(t, s, "owned", "execution", "COMPLETED")
	for _, st := range []string{"RUNNING", "WAITING", "COMPENSATING"} {
		retSaga(t, s, "going-"+st, "warm-worker", st)
	}
	except := []string{"execution"}
	if n, err := rs.PruneSagas(ctx, time.Now().Add(-time.Hour), except, 100, false); err != nil || n != 0 {
		t.Fatalf("prune of sagas ended just now with a 1h retention: %d, %v; want 0", n, err)
	}
	later := time.Now().Add(time.Hour)
	if n, err := rs.PruneSagas(ctx, later, except, 100, true); err != nil || n != len(store.SagaEndedStates) {
		t.Fatalf("dry run: %d, %v; want %d", n, err, len(store.SagaEndedStates))
	}
	if row, _ := sagaLeft(t, s, "ended-COMPLETED"); !row {
		t.Fatal("the dry run deleted a saga")
	}
	if n, err := rs.PruneSagas(ctx, later, except, 3, false); err != nil || n != 3 {
		t.Fatalf("batch of 3: %d, %v", n, err)
	}
	if n, err := rs.PruneSagas(ctx, later, except, 100, false); err != nil || n != len(store.SagaEndedStates)-3 {
		t.Fatalf("second batch: %d, %v; want %d", n, err, len(store.SagaEndedStates)-3)
	}
	for _, st := range store.SagaEndedStates {
		if row, hist := sagaLeft(t, s, "ended-"+st); row || hist {
			t.Fatalf("saga ended %s: row %v, history/snapshots %v left", st, row, hist)
		}
	}
	for _, id := range []string{"owned", "going-RUNNING", "going-WAITING", "going-COMPENSATING"} {
		if row, hist := sagaLeft(t, s, id); !row || !hist {
			t.Fatalf("saga %s (not ended, or of an excepted type) was pruned: row %v, history %v", id, row, hist)
		}
	}
	// A timer of a deleted saga is gone: no poller finds it.
	due, err := s.Sagas().ClaimDueTimers(ctx, "p", time.Now().Add(2*time.Hour), time.Minute, 100)
	must(t, err)
	for _, tm := range due {
		if strings.HasPrefix(tm.SagaID, "ended-") {
			t.Fatalf("timer %s of a deleted saga is still due", tm.ID)
		}
	}
	if len(due) != 4 {
		t.Fatalf("%d due timers, want the 4 of the sagas kept", len(due))
	}
}

func testRetentionLogs(t *testing.T, s store.Store) {
	ctx, rs := ctxT(t), s.Retention()
	old := time.Now().Add(-2 * time.Hour)
	retJob(t, s, "done", domain.JobSucceeded, old)
	retJob(t, s, "mir", domain.JobManualInterventionRequired, old)
	retJob(t, s, "running", domain.JobRunning, time.Time{})
	retJob(t, s, "recent", domain.JobSucceeded, time.Now())
	retLogs(t, s, "done", old, 5)
	retLogs(t, s, "gone", old, 2) // a job deleted already
	retLogs(t, s, "mir", old, 4)
	retLogs(t, s, "running", old, 4)
	retLogs(t, s, "recent", time.Now(), 3)
	before := time.Now().Add(-time.Hour)
	if n, err := rs.PruneLogs(ctx, before, 100, true); err != nil || n != 7 {
		t.Fatalf("dry run: %d, %v; want 7 (done's 5, gone's 2)", n, err)
	}
	if n, err := rs.PruneLogs(ctx, before, 4, false); err != nil || n != 4 {
		t.Fatalf("batch of 4: %d, %v", n, err)
	}
	if n, err := rs.PruneLogs(ctx, before, 100, false); err != nil || n != 3 {
		t.Fatalf("second batch: %d, %v; want 3", n, err)
	}
	got := map[string]int{}
	for _, id := range []string{"done", "gone", "mir", "running", "recent"} {
		got[id] = logCount(t, s, id)
	}
	if got["done"] != 0 || got["gone"] != 0 || got["mir"] != 4 || got["running"] != 4 || got["recent"] != 3 {
		t.Fatalf("lines left %v; want done 0, gone 0, mir 4, running 4, recent 3", got)
	}
}

func testRetentionWorkers(t *testing.T, s store.Store) {
	ctx, rs := ctxT(t), s.Retention()
	old := time.Now().Add(-2 * time.Hour)
	retJob(t, s, "ended", domain.JobSucceeded, old)
	retJob(t, s, "running", domain.JobRunning, time.Time{})
	mk := func(id string, st domain.WorkerState, job string, at time.Time) {
		must(t, s.Workers().Create(ctx, &domain.Worker{ID: id, Provider: "local", State: st, JobID: job, CreatedAt: at, UpdatedAt: at}))
		must(t, s.Credentials().SetOTP(ctx, id, []byte("h-"+id), time.Now().Add(time.Hour)))
	}
	mk("w-done", domain.WorkerTerminated, "ended", old)
	mk("w-idle", domain.WorkerTerminated, "", old.Add(time.Second))
	mk("w-job-running", domain.WorkerTerminated, "running", old)
	mk("w-ready", domain.WorkerReady, "", old)
	mk("w-new", domain.WorkerTerminated, "", time.Now())
	before := time.Now().Add(-time.Hour)
	ws, err := rs.EndedWorkers(ctx, before, time.Time{}, "", 1)
	must(t, err)
	if len(ws) != 1 || ws[0].ID != "w-done" {
		t.Fatalf("first ended worker: %+v, want w-done", ws)
	}
	ws2, err := rs.EndedWorkers(ctx, before, ws[0].UpdatedAt, ws[0].ID, 10)
	must(t, err)
	if len(ws2) != 1 || ws2[0].ID != "w-idle" {
		t.Fatalf("ended workers after w-done: %+v, want w-idle only", ws2)
	}
	n, err := rs.DeleteWorkers(ctx, []string{"w-done", "w-idle", "w-job-running", "w-ready"})
	must(t, err)
	if n != 2 {
		t.Fatalf("DeleteWorkers deleted %d, want 2 (a worker not TERMINATED or whose job runs stays)", n)
	}
	for id, want := range map[string]bool{"w-done": false, "w-idle": false, "w-job-running": true, "w-ready": true, "w-new": true} {
		_, err := s.Workers().Get(ctx, id)
		if (err == nil) != want {
			t.Fatalf("worker %s after DeleteWorkers: %v; want kept %v", id, err, want)
		}
		err = s.Credentials().RotateOTP(ctx, id, []byte("x"), time.Now().Add(time.Hour))
		if want && err != nil || !want && !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("credentials of %s after DeleteWorkers: %v; want kept %v", id, err, want)
		}
	}
}

func testRetentionIdempotency(t *testing.T, s store.Store) {
	ctx, rs := ctxT(t), s.Retention()
	retJob(t, s, "ended", domain.JobSucceeded, time.Now())
	retJob(t, s, "running", domain.JobRunning, time.Time{})
	retSaga(t, s, "s-going", "execution", "WAITING")
	retSaga(t, s, "s-ended", "execution", "COMPLETED")
	keys := []string{"free", "carried-pending", "carried-dead", "carried-done", "job.finished/ended/1",
		"job.finished/running/1", "job.finished/gone/2", "s-going/step/1", "s-ended/step/1", "s-gone/step/1"}
	for _, k := range keys {
		must(t, s.Idempotency().Put(ctx, k, "t", []byte(`{}`)))
	}
	ids, err := s.Outbox().Insert(ctx, cmdMsg("carried-pending"), cmdMsg("carried-dead"), cmdMsg("carried-done"))
	must(t, err)
	claimed, err := s.Outbox().Claim(ctx, "r", 10, time.Hour)
	must(t, err)
	if len(claimed) != 3 {
		t.Fatalf("claimed %d", len(claimed))
	}
	must(t, s.Outbox().Fail(ctx, "r", ids[0], "later", time.Now(), false)) // RETRY
	must(t, s.Outbox().Fail(ctx, "r", ids[1], "dead", time.Now(), true))   // DEAD_LETTER
	if _, err := s.Outbox().Complete(ctx, "r", ids[2]); err != nil {
		t.Fatal(err)
	}
	if n, err := rs.PruneIdempotencyKeys(ctx, time.Now().Add(-time.Hour), 100, false); err != nil || n != 0 {
		t.Fatalf("prune of keys recorded just now with a 1h retention: %d, %v; want 0", n, err)
	}
	later := time.Now().Add(time.Hour)
	want := []string{"free", "carried-done", "job.finished/ended/1", "job.finished/gone/2", "s-ended/step/1", "s-gone/step/1"}
	if n, err := rs.PruneIdempotencyKeys(ctx, later, 100, true); err != nil || n != len(want) {
		t.Fatalf("dry run: %d, %v; want %d (%v)", n, err, len(want), want)
	}
	if n, err := rs.PruneIdempotencyKeys(ctx, later, 1, false); err != nil || n != 1 {
		t.Fatalf("batch of 1: %d, %v", n, err)
	}
	if n, err := rs.PruneIdempotencyKeys(ctx, later, 100, false); err != nil || n != len(want)-1 {
		t.Fatalf("second batch: %d, %v; want %d", n, err, len(want)-1)
	}
	for _, k := range keys {
		_, err := s.Idempotency().Get(ctx, k)
		gone := errors.Is(err, store.ErrNotFound)
		if gone != slices.Contains(want, k) {
			t.Fatalf("key %s after the prune: %v; want gone %v", k, err, slices.Contains(want, k))
		}
	}
}
