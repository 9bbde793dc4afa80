package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/store"
)

// RunSaga runs the conformance tests of the SagaStore port against the driver newStore
// builds (same contract as Run's factory).
func RunSaga(t *testing.T, newStore func(t *testing.T) store.Store) {
	t.Run("CreateIdempotent", func(t *testing.T) { sagaCreate(t, newStore(t)) })
	t.Run("AppendOptimisticLock", func(t *testing.T) { sagaAppend(t, newStore(t)) })
	t.Run("AppendJoinsTx", func(t *testing.T) { sagaAppendTx(t, newStore(t)) })
	t.Run("ClaimExclusive", func(t *testing.T) { sagaClaim(t, newStore(t)) })
	t.Run("ClaimIDs", func(t *testing.T) { sagaClaimIDs(t, newStore(t)) })
	t.Run("TakeWithWrite", func(t *testing.T) { sagaTake(t, newStore(t)) })
	t.Run("Savepoint", func(t *testing.T) { sagaSavepoint(t, newStore(t)) })
	t.Run("Histories", func(t *testing.T) { sagaHistories(t, newStore(t)) })
	t.Run("Snapshots", func(t *testing.T) { sagaSnapshots(t, newStore(t)) })
	t.Run("Timers", func(t *testing.T) { sagaTimers(t, newStore(t)) })
	t.Run("List", func(t *testing.T) { sagaList(t, newStore(t)) })
}

func sagaCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func sagaMust(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

var sagaT0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

func ev(typ string) *store.SagaEvent {
	return &store.SagaEvent{Type: typ, Codec: "json", Payload: []byte(`{"k":"` + typ + `"}`), Step: "s", Attempt: 1,
		TraceContext: map[string]string{"traceparent": "00-x"}}
}

func newSaga(t *testing.T, ctx context.Context, ss store.SagaStore, id string, runnable time.Time) *store.SagaRecord {
	t.Helper()
	r, created, err := ss.Create(ctx, &store.SagaRecord{ID: id, Type: "test", Version: 1, State: "RUNNING",
		Input: []byte(`{"a":1}`), RunnableAt: runnable}, ev("started"))
	sagaMust(t, err)
	if !created {
		t.Fatalf("saga %s not created", id)
	}
	return r
}

func sagaCreate(t *testing.T, st store.Store) {
	ctx, ss := sagaCtx(t), st.Sagas()
	r := newSaga(t, ctx, ss, "s1", sagaT0)
	if r.LastSeq != 1 {
		t.Fatalf("LastSeq %d, want 1", r.LastSeq)
	}
	again, created, err := ss.Create(ctx, &store.SagaRecord{ID: "s1", Type: "other", Version: 2, State: "RUNNING"},
		ev("started"), ev("x"))
	sagaMust(t, err)
	if created || again.Type != "test" || again.LastSeq != 1 {
		t.Fatalf("second Create: created=%v rec=%+v, want the existing saga", created, again)
	}
	evs, err := ss.Events(ctx, "s1", 0)
	sagaMust(t, err)
	if len(evs) != 1 || evs[0].Seq != 1 || evs[0].Type != "started" || string(evs[0].Payload) != `{"k":"started"}` ||
		evs[0].TraceContext["traceparent"] != "00-x" || evs[0].Attempt != 1 || evs[0].Codec != "json" {
		t.Fatalf("events %+v", evs)
	}
	got, err := ss.Get(ctx, "s1")
	sagaMust(t, err)
	if string(got.Input) != `{"a":1}` || !got.RunnableAt.Equal(sagaT0) || got.Version != 1 {
		t.Fatalf("Get %+v", got)
	}
	if _, err := ss.Get(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get missing: %v, want ErrNotFound", err)
	}
}

func sagaAppend(t *testing.T, st store.Store) {
	ctx, ss := sagaCtx(t), st.Sagas()
	newSaga(t, ctx, ss, "s1", sagaT0)
	upd := store.SagaUpdate{State: "WAITING", CurrentStep: 2, Error: "e"}
	sagaMust(t, ss.Append(ctx, "s1", 1, upd, ev("a"), ev("b")))
	err := ss.Append(ctx, "s1", 1, upd, ev("c"))
	var ce *store.SagaConflictError
	if !errors.Is(err, store.ErrConflict) || !errors.As(err, &ce) || ce.ActualSeq != 3 {
		t.Fatalf("stale Append: %v, want a conflict at seq 3", err)
	}
	if err := ss.Append(ctx, "nope", 0, upd, ev("c")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Append to missing saga: %v, want ErrNotFound", err)
	}
	evs, err := ss.Events(ctx, "s1", 1)
	sagaMust(t, err)
	if len(evs) != 2 || evs[0].Seq != 2 || evs[0].Type != "a" || evs[1].Seq != 3 || evs[1].Type != "b" {
		t.Fatalf("events after 1: %+v", evs)
	}
	r, err := ss.Get(ctx, "s1")
	sagaMust(t, err)
	if r.LastSeq != 3 || r.State != "WAITING" || r.CurrentStep != 2 || r.Error != "e" || !r.RunnableAt.IsZero() {
		t.Fatalf("row after append %+v", r)
	}
	// Concurrent appends at the same expected seq: exactly one wins.
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for i := range 8 {
		wg.Go(func() {
			err := ss.Append(ctx, "s1", 3, upd, ev(fmt.Sprint("racer", i)))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case !errors.Is(err, store.ErrConflict):
				t.Errorf("racer %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	all, err := ss.Events(ctx, "s1", 0)
	sagaMust(t, err)
	if wins != 1 || len(all) != 4 {
		t.Fatalf("%d racers won, %d events; want 1 and 4", wins, len(all))
	}
}

func sagaAppendTx(t *testing.T, st store.Store) {
	ctx, ss := sagaCtx(t), st.Sagas()
	boom := errors.New("boom")
	err := st.InTx(ctx, func(ctx context.Context) error {
		newSaga(t, ctx, ss, "s1", sagaT0)
		sagaMust(t, ss.Append(ctx, "s1", 1, store.SagaUpdate{State: "RUNNING"}, ev("a")))
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatal(err)
	}
	if _, err := ss.Get(ctx, "s1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("saga survived rollback: %v", err)
	}
}

func sagaClaim(t *testing.T, st store.Store) {
	ctx, ss := sagaCtx(t), st.Sagas()
	for i := range 10 {
		newSaga(t, ctx, ss, fmt.Sprint("s", i), sagaT0.Add(time.Duration(i)*time.Second))
	}
	newSaga(t, ctx, ss, "parked", time.Time{})
	// Two runners claim concurrently: disjoint sets, all due sagas.
	now := sagaT0.Add(time.Hour)
	var wg sync.WaitGroup
	got := make([][]*store.SagaRecord, 2)
	for r := range 2 {
		wg.Go(func() {
			for {
				recs, err := ss.Claim(ctx, fmt.Sprint("r", r), now, time.Minute, 2)
				if err != nil {
					t.Error(err)
					return
				}
				if len(recs) == 0 {
					return
				}
				got[r] = append(got[r], recs...)
			}
		})
	}
	wg.Wait()
	seen := map[string]string{}
	for r, recs := range got {
		for _, rec := range recs {
			if prev, dup := seen[rec.ID]; dup {
				t.Fatalf("saga %s claimed by %s and r%d", rec.ID, prev, r)
			}
			seen[rec.ID] = fmt.Sprint("r", r)
			if rec.ClaimedBy != seen[rec.ID] || !rec.ClaimExpiresAt.Equal(now.Add(time.Minute)) {
				t.Fatalf("claimed row %+v", rec)
			}
		}
	}
	if len(seen) != 10 || seen["parked"] != "" {
		t.Fatalf("claimed %v, want s0..s9 and not the parked saga", seen)
	}
	// Not yet due at an earlier now.
	if recs, err := ss.Claim(ctx, "r9", sagaT0.Add(-time.Second), time.Minute, 10); err != nil || len(recs) != 0 {
		t.Fatalf("claim before due: %v %v", recs, err)
	}
	// Held claims are not taken before they expire, then they are.
	if _, err := ss.ClaimByID(ctx, "s0", "r9", now, time.Minute); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("ClaimByID of a held saga: %v", err)
	}
	r, err := ss.ClaimByID(ctx, "s0", "r9", now.Add(2*time.Minute), time.Minute)
	sagaMust(t, err)
	if r.ClaimedBy != "r9" {
		t.Fatalf("ClaimByID after expiry: %+v", r)
	}
	// Append extends the claim of its runner, then releases it.
	until := now.Add(10 * time.Minute)
	sagaMust(t, ss.Append(ctx, "s0", 1, store.SagaUpdate{State: "RUNNING", RunnableAt: now, ClaimedBy: "r9", ClaimUntil: until}, ev("a")))
	r, _ = ss.Get(ctx, "s0")
	if r.ClaimedBy != "r9" || !r.ClaimExpiresAt.Equal(until) {
		t.Fatalf("claim not extended: %+v", r)
	}
	sagaMust(t, ss.Append(ctx, "s0", 2, store.SagaUpdate{State: "RUNNING", RunnableAt: now, ClaimedBy: "other", Release: true}, ev("b")))
	if r, _ = ss.Get(ctx, "s0"); r.ClaimedBy != "r9" {
		t.Fatalf("another runner's Append released r9's claim: %+v", r)
	}
	sagaMust(t, ss.Append(ctx, "s0", 3, store.SagaUpdate{State: "RUNNING", RunnableAt: now, ClaimedBy: "r9", Release: true}))
	if r, _ = ss.Get(ctx, "s0"); r.ClaimedBy != "" || !r.ClaimExpiresAt.IsZero() || r.LastSeq != 3 {
		t.Fatalf("claim not released by an event-less Append: %+v", r)
	}
	sagaMust(t, ss.Release(ctx, "s1", "not-holder"))
	if r, _ = ss.Get(ctx, "s1"); r.ClaimedBy == "" {
		t.Fatal("Release by a non-holder dropped the claim")
	}
	// ReleaseRunner drops every claim of one runner (a restarted one), and only those.
	held := map[string]string{}
	for i := range 10 {
		id := fmt.Sprint("s", i)
		if r, _ = ss.Get(ctx, id); r.ClaimedBy != "" {
			held[id] = r.ClaimedBy
		}
	}
	victim := held["s1"]
	want := 0
	for _, by := range held {
		if by == victim {
			want++
		}
	}
	n, err := ss.ReleaseRunner(ctx, victim)
	sagaMust(t, err)
	if n != want {
		t.Fatalf("ReleaseRunner(%s) released %d claims, want %d (claims %v)", victim, n, want, held)
	}
	for id, by := range held {
		r, _ = ss.Get(ctx, id)
		if by == victim && r.ClaimedBy != "" {
			t.Fatalf("saga %s still claimed by %s after ReleaseRunner", id, r.ClaimedBy)
		}
		if by != victim && r.ClaimedBy != by {
			t.Fatalf("ReleaseRunner(%s) changed the claim of saga %s held by %s: %+v", victim, id, by, r)
		}
	}
	if n, err := ss.ReleaseRunner(ctx, victim); err != nil || n != 0 {
		t.Fatalf("second ReleaseRunner: %d, %v", n, err)
	}
}

func sagaSnapshots(t *testing.T, st store.Store) {
	ctx, ss := sagaCtx(t), st.Sagas()
	newSaga(t, ctx, ss, "s1", sagaT0)
	for seq := int64(1); seq <= 5; seq++ {
		sagaMust(t, ss.PutSnapshot(ctx, &store.SagaSnapshot{SagaID: "s1", Seq: seq * 10, State: []byte{byte(seq)}, SHA256: []byte{1}}, 3))
	}
	snaps, err := ss.Snapshots(ctx, "s1", 10)
	sagaMust(t, err)
	if len(snaps) != 3 || snaps[0].Seq != 50 || snaps[2].Seq != 30 || snaps[0].State[0] != 5 {
		t.Fatalf("snapshots %+v, want seqs 50, 40, 30", snaps)
	}
}

func sagaTimers(t *testing.T, st store.Store) {
	ctx, ss := sagaCtx(t), st.Sagas()
	newSaga(t, ctx, ss, "s1", sagaT0)
	sagaMust(t, ss.CreateTimer(ctx, &store.SagaTimer{ID: "t1", SagaID: "s1", Name: "n1", FireAt: sagaT0.Add(time.Minute)}))
	sagaMust(t, ss.CreateTimer(ctx, &store.SagaTimer{ID: "t2", SagaID: "s1", Name: "n2", FireAt: sagaT0.Add(time.Hour)}))
	// Creating an existing id keeps the first.
	sagaMust(t, ss.CreateTimer(ctx, &store.SagaTimer{ID: "t1", SagaID: "s1", Name: "n1", FireAt: sagaT0.Add(48 * time.Hour)}))
	if got, _ := ss.ClaimDueTimers(ctx, "p", sagaT0, time.Minute, 10); len(got) != 0 {
		t.Fatalf("claimed %d timers before due", len(got))
	}
	now := sagaT0.Add(2 * time.Minute)
	var wg sync.WaitGroup
	var mu sync.Mutex
	claims := 0
	for i := range 4 {
		wg.Go(func() {
			got, err := ss.ClaimDueTimers(ctx, fmt.Sprint("p", i), now, time.Minute, 10)
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			claims += len(got)
			mu.Unlock()
		})
	}
	wg.Wait()
	if claims != 1 {
		t.Fatalf("due timer claimed %d times, want 1", claims)
	}
	// After the lease expires another poller gets it; the first can no longer finish it.
	got, err := ss.ClaimDueTimers(ctx, "late", now.Add(2*time.Minute), time.Minute, 10)
	sagaMust(t, err)
	if len(got) != 1 || got[0].ID != "t1" || got[0].Status != store.TimerPending {
		t.Fatalf("re-claim after expiry: %+v", got)
	}
	for i := range 4 {
		if err := ss.FinishTimer(ctx, "t1", fmt.Sprint("p", i), store.TimerFired); err == nil {
			t.Fatal("a poller that lost its lease finished the timer")
		}
	}
	sagaMust(t, ss.FinishTimer(ctx, "t1", "late", store.TimerFired))
	if err := ss.FinishTimer(ctx, "t1", "late", store.TimerFired); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("second finish: %v, want ErrConflict", err)
	}
	if err := ss.FinishTimer(ctx, "nope", "", store.TimerFired); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("finish missing timer: %v, want ErrNotFound", err)
	}
	sagaMust(t, ss.FinishTimer(ctx, "t2", "", store.TimerCancelled))
	ts, err := ss.Timers(ctx, "s1")
	sagaMust(t, err)
	if len(ts) != 2 || ts[0].Status != store.TimerFired || ts[1].Status != store.TimerCancelled ||
		!ts[0].FireAt.Equal(sagaT0.Add(time.Minute)) {
		t.Fatalf("timers %+v", ts)
	}
	if got, _ := ss.ClaimDueTimers(ctx, "p", now.Add(100*time.Hour), time.Minute, 10); len(got) != 0 {
		t.Fatalf("finished timers claimed again: %+v", got)
	}
}

func sagaClaimIDs(t *testing.T, st store.Store) {
	ctx, ss := sagaCtx(t), st.Sagas()
	for i := range 6 {
		newSaga(t, ctx, ss, fmt.Sprint("s", i), sagaT0)
	}
	newSaga(t, ctx, ss, "parked", time.Time{})
	newSaga(t, ctx, ss, "later", sagaT0.Add(time.Hour))
	now := sagaT0.Add(time.Minute)
	if _, err := ss.ClaimByID(ctx, "s5", "other", now, time.Minute); err != nil {
		t.Fatal(err)
	}
	if recs, err := ss.ClaimIDs(ctx, nil, "r1", now, time.Minute); err != nil || len(recs) != 0 {
		t.Fatalf("ClaimIDs of nothing: %v %v", recs, err)
	}
	// Two runners ask for overlapping sets at once: each saga goes to one of them.
	want := []string{"s0", "s1", "s2", "s3", "s4", "s5", "parked", "later", "missing"}
	var wg sync.WaitGroup
	got := make([][]*store.SagaRecord, 2)
	for r := range 2 {
		wg.Go(func() {
			recs, err := ss.ClaimIDs(ctx, want, fmt.Sprint("r", r), now, time.Minute)
			if err != nil {
				t.Error(err)
			}
			got[r] = recs
		})
	}
	wg.Wait()
	seen := map[string]string{}
	for r, recs := range got {
		for _, rec := range recs {
			if prev, dup := seen[rec.ID]; dup {
				t.Fatalf("saga %s claimed by %s and r%d", rec.ID, prev, r)
			}
			seen[rec.ID] = fmt.Sprint("r", r)
			if rec.ClaimedBy != seen[rec.ID] || !rec.ClaimExpiresAt.Equal(now.Add(time.Minute)) || rec.LastSeq != 1 {
				t.Fatalf("claimed row %+v", rec)
			}
		}
	}
	if len(seen) != 5 || seen["s5"] != "" || seen["parked"] != "" || seen["later"] != "" {
		t.Fatalf("claimed %v, want s0..s4 only (s5 held, parked parked, later not due)", seen)
	}
	// An expired claim can be taken.
	recs, err := ss.ClaimIDs(ctx, []string{"s5"}, "r1", now.Add(2*time.Minute), time.Minute)
	sagaMust(t, err)
	if len(recs) != 1 || recs[0].ClaimedBy != "r1" {
		t.Fatalf("ClaimIDs of an expired claim: %+v", recs)
	}
}

func sagaSavepoint(t *testing.T, st store.Store) {
	ctx, ss := sagaCtx(t), st.Sagas()
	if _, err := ss.Savepoint(ctx); err == nil {
		t.Fatal("Savepoint without a transaction succeeded")
	}
	ac, hasAC := st.(interface {
		AfterCommit(context.Context, func())
	})
	var ran []string
	err := st.InTx(ctx, func(ctx context.Context) error {
		newSaga(t, ctx, ss, "kept", sagaT0)
		if hasAC {
			ac.AfterCommit(ctx, func() { ran = append(ran, "before") })
		}
		rollback, err := ss.Savepoint(ctx)
		if err != nil {
			return err
		}
		newSaga(t, ctx, ss, "undone", sagaT0)
		if hasAC {
			ac.AfterCommit(ctx, func() { ran = append(ran, "undone") })
		}
		// A failing statement after the savepoint (a timer of a missing saga): the
		// rollback still recovers the transaction.
		if err := ss.CreateTimer(ctx, &store.SagaTimer{ID: "t", SagaID: "missing", Name: "n", FireAt: sagaT0}); err == nil {
			t.Error("CreateTimer for a missing saga succeeded")
		}
		if err := rollback(ctx); err != nil {
			return err
		}
		// Usable after the rollback, and a second savepoint works the same way.
		sagaMust(t, ss.Append(ctx, "kept", 1, store.SagaUpdate{State: "RUNNING"}, ev("a")))
		rollback2, err := ss.Savepoint(ctx)
		if err != nil {
			return err
		}
		sagaMust(t, ss.Append(ctx, "kept", 2, store.SagaUpdate{State: "RUNNING"}, ev("b")))
		if err := rollback2(ctx); err != nil {
			return err
		}
		if hasAC {
			ac.AfterCommit(ctx, func() { ran = append(ran, "after") })
		}
		return nil
	})
	sagaMust(t, err)
	if _, err := ss.Get(ctx, "undone"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("saga created after the savepoint survived its rollback: %v", err)
	}
	r, err := ss.Get(ctx, "kept")
	sagaMust(t, err)
	evs, err := ss.Events(ctx, "kept", 0)
	sagaMust(t, err)
	if r.LastSeq != 2 || len(evs) != 2 || evs[1].Type != "a" {
		t.Fatalf("kept saga %+v with %d events, want seq 2 (started, a)", r, len(evs))
	}
	if hasAC && fmt.Sprint(ran) != "[before after]" {
		t.Fatalf("after-commit callbacks ran %v, want [before after]", ran)
	}
}

func sagaHistories(t *testing.T, st store.Store) {
	ctx, ss := sagaCtx(t), st.Sagas()
	newSaga(t, ctx, ss, "s1", sagaT0)
	newSaga(t, ctx, ss, "s2", sagaT0)
	newSaga(t, ctx, ss, "s3", sagaT0)
	sagaMust(t, ss.Append(ctx, "s1", 1, store.SagaUpdate{State: "RUNNING"}, ev("a"), ev("b")))
	h, err := ss.Histories(ctx, []string{"s1", "s2", "missing"})
	sagaMust(t, err)
	if len(h) != 2 || len(h["s1"]) != 3 || len(h["s2"]) != 1 {
		t.Fatalf("histories %v", h)
	}
	for i, e := range h["s1"] {
		if e.SagaID != "s1" || e.Seq != int64(i+1) || e.TraceContext["traceparent"] != "00-x" || e.Codec != "json" {
			t.Fatalf("s1 event %d: %+v", i, e)
		}
	}
	if h["s1"][1].Type != "a" || h["s1"][2].Type != "b" || string(h["s2"][0].Payload) != `{"k":"started"}` {
		t.Fatalf("histories %+v", h)
	}
	if h, err := ss.Histories(ctx, nil); err != nil || len(h) != 0 {
		t.Fatalf("Histories of nothing: %v %v", h, err)
	}
}

// sagaTake: a saga created claimed is held by its creator; an append with Take claims
// a free saga, and one whose claim changed since it was read (TakeFrom) is a conflict
// that writes nothing.
func sagaTake(t *testing.T, st store.Store) {
	ctx, ss := sagaCtx(t), st.Sagas()
	until := sagaT0.Add(time.Minute)
	r, created, err := ss.Create(ctx, &store.SagaRecord{ID: "c1", Type: "test", Version: 1, State: "RUNNING",
		RunnableAt: sagaT0, ClaimedBy: "me", ClaimExpiresAt: until}, ev("started"))
	sagaMust(t, err)
	if !created || r.ClaimedBy != "me" {
		t.Fatalf("Create claimed: created=%v rec=%+v", created, r)
	}
	got, err := ss.Get(ctx, "c1")
	sagaMust(t, err)
	if got.ClaimedBy != "me" || !got.ClaimExpiresAt.Equal(until) {
		t.Fatalf("created saga's claim %q until %v, want me until %v", got.ClaimedBy, got.ClaimExpiresAt, until)
	}
	// Nobody else can claim it while the claim lasts.
	if recs, err := ss.ClaimIDs(ctx, []string{"c1"}, "other", sagaT0, time.Minute); err != nil || len(recs) != 0 {
		t.Fatalf("ClaimIDs of a saga created claimed: %d, %v; want none", len(recs), err)
	}

	newSaga(t, ctx, ss, "t1", time.Time{})
	upd := store.SagaUpdate{State: "RUNNING", RunnableAt: sagaT0, Take: "me", ClaimUntil: until}
	sagaMust(t, ss.Append(ctx, "t1", 1, upd, ev("signal")))
	got, err = ss.Get(ctx, "t1")
	sagaMust(t, err)
	if got.ClaimedBy != "me" || !got.ClaimExpiresAt.Equal(until) || got.LastSeq != 2 {
		t.Fatalf("after Append with Take: %+v", got)
	}

	// Another runner read t1 while it was free; its Take must not overwrite the claim.
	upd2 := store.SagaUpdate{State: "RUNNING", RunnableAt: sagaT0, Take: "other", TakeFrom: "", ClaimUntil: until}
	err = ss.Append(ctx, "t1", 2, upd2, ev("signal2"))
	if !errors.Is(err, store.ErrConflict) {
		t.Fatalf("Take of a saga claimed meanwhile: %v, want ErrConflict", err)
	}
	got, err = ss.Get(ctx, "t1")
	sagaMust(t, err)
	if got.ClaimedBy != "me" || got.LastSeq != 2 {
		t.Fatalf("after a refused Take: %+v, want still claimed by me at seq 2", got)
	}
	// Knowing the holder (an expired claim, say), Take replaces it.
	upd2.TakeFrom = "me"
	sagaMust(t, ss.Append(ctx, "t1", 2, upd2, ev("signal2")))
	got, err = ss.Get(ctx, "t1")
	sagaMust(t, err)
	if got.ClaimedBy != "other" || got.LastSeq != 3 {
		t.Fatalf("after Take from me: %+v, want claimed by other at seq 3", got)
	}
}
