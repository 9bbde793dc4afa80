package storetest

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/store"
)

func testWorkers(t *testing.T, newStore func(t *testing.T) store.Store) {
	t.Run("CreateGet", func(t *testing.T) {
		ctx, s := ctxT(t), newStore(t)
		w := &domain.Worker{ID: "w1", Provider: "docker", Labels: map[string]string{"zone": "a"}}
		must(t, s.Workers().Create(ctx, w))
		got, err := s.Workers().Get(ctx, "w1")
		must(t, err)
		if got.State != domain.WorkerCreating || got.Provider != "docker" || got.Labels["zone"] != "a" ||
			!got.CreatedAt.Equal(w.CreatedAt) || !got.LastHeartbeat.IsZero() {
			t.Fatalf("got %+v", got)
		}
		wantErr(t, s.Workers().Create(ctx, &domain.Worker{ID: "w1", Provider: "x"}), store.ErrConflict)
		_, err = s.Workers().Get(ctx, "nope")
		wantErr(t, err, store.ErrNotFound)
	})

	t.Run("EveryTransition", func(t *testing.T) {
		ctx, s := ctxT(t), newStore(t)
		for _, from := range domain.AllWorkerStates() {
			for _, to := range domain.AllWorkerStates() {
				id := fmt.Sprintf("%s-%s", from, to)
				must(t, s.Workers().Create(ctx, &domain.Worker{ID: id, Provider: "p", State: from}))
				_, err := s.Workers().UpdateState(ctx, id, to, time.Now(), func(w *domain.Worker) { w.JobID = "job" })
				got, gerr := s.Workers().Get(ctx, id)
				must(t, gerr)
				if domain.CheckWorkerTransition(from, to) == nil {
					if err != nil || got.State != to || got.JobID != "job" {
						t.Fatalf("%s → %s: err %v, stored %s job %q", from, to, err, got.State, got.JobID)
					}
					continue
				}
				if !errors.Is(err, domain.ErrIllegalTransition) {
					t.Fatalf("%s → %s: error %v, want illegal transition", from, to, err)
				}
				if got.State != from || got.JobID != "" {
					t.Fatalf("%s → %s refused but wrote: %s job %q", from, to, got.State, got.JobID)
				}
			}
		}
		_, err := s.Workers().UpdateState(ctx, "missing", domain.WorkerReady, time.Now(), nil)
		wantErr(t, err, store.ErrNotFound)
	})

	// As for jobs: the driver writes the UpdatedAt (*domain.Worker).Transition computed
	// from the caller's time, exactly, and refuses a zero time without writing.
	t.Run("StoresWhatTheDomainComputed", func(t *testing.T) {
		ctx, s := ctxT(t), newStore(t)
		must(t, s.Workers().Create(ctx, &domain.Worker{ID: "w", Provider: "p"}))
		created, err := s.Workers().Get(ctx, "w")
		must(t, err)
		if _, err := s.Workers().UpdateState(ctx, "w", domain.WorkerReady, time.Time{}, nil); err == nil {
			t.Fatal("UpdateState at the zero time succeeded")
		}
		if got, err := s.Workers().Get(ctx, "w"); err != nil || !reflect.DeepEqual(got, created) {
			t.Fatalf("refused UpdateState wrote: %+v (err %v)", got, err)
		}
		at := time.Date(2002, 3, 4, 5, 6, 7, 891000, time.FixedZone("UTC-3", -3*3600))
		ret, err := s.Workers().UpdateState(ctx, "w", domain.WorkerReady, at, func(w *domain.Worker) { w.JobID = "j" })
		must(t, err)
		got, err := s.Workers().Get(ctx, "w")
		must(t, err)
		if !reflect.DeepEqual(ret, got) {
			t.Fatalf("returned %+v, stored %+v", ret, got)
		}
		if !got.UpdatedAt.Equal(at) || got.UpdatedAt.Location() != time.UTC || got.State != domain.WorkerReady ||
			got.JobID != "j" || !got.CreatedAt.Equal(created.CreatedAt) {
			t.Fatalf("after READY at %v: %+v", at, got)
		}
	})

	t.Run("Heartbeat", func(t *testing.T) {
		ctx, s := ctxT(t), newStore(t)
		must(t, s.Workers().Create(ctx, &domain.Worker{ID: "w", Provider: "p"}))
		t1 := time.Date(2031, 5, 6, 7, 8, 9, 123456000, time.UTC)
		must(t, s.Workers().Heartbeat(ctx, "w", t1))
		got, err := s.Workers().Get(ctx, "w")
		must(t, err)
		if !got.LastHeartbeat.Equal(t1) {
			t.Fatalf("last heartbeat %v, want %v", got.LastHeartbeat, t1)
		}
		must(t, s.Workers().Heartbeat(ctx, "w", t1.Add(-time.Minute))) // late, older beat
		got, err = s.Workers().Get(ctx, "w")
		must(t, err)
		if !got.LastHeartbeat.Equal(t1) {
			t.Fatalf("an older heartbeat moved last heartbeat back to %v", got.LastHeartbeat)
		}
		t2 := t1.Add(time.Second)
		must(t, s.Workers().Heartbeat(ctx, "w", t2))
		got, err = s.Workers().Get(ctx, "w")
		must(t, err)
		if !got.LastHeartbeat.Equal(t2) {
			t.Fatalf("last heartbeat %v, want %v", got.LastHeartbeat, t2)
		}
		wantErr(t, s.Workers().Heartbeat(ctx, "nope", t1), store.ErrNotFound)
	})

	t.Run("List", func(t *testing.T) {
		ctx, s := ctxT(t), newStore(t)
		for i, st := range []domain.WorkerState{domain.WorkerReady, domain.WorkerBusy, domain.WorkerReady, domain.WorkerTerminated} {
			must(t, s.Workers().Create(ctx, &domain.Worker{ID: fmt.Sprintf("w%d", i), Provider: "p", State: st}))
		}
		ids := func(states ...domain.WorkerState) []string {
			ws, err := s.Workers().List(ctx, states...)
			must(t, err)
			var out []string
			for _, w := range ws {
				out = append(out, w.ID)
			}
			slices.Sort(out)
			return out
		}
		if got := ids(); len(got) != 4 {
			t.Fatalf("all workers: %v", got)
		}
		if got := ids(domain.WorkerReady); !slices.Equal(got, []string{"w0", "w2"}) {
			t.Fatalf("ready workers: %v", got)
		}
		if got := ids(domain.WorkerBusy, domain.WorkerTerminated); !slices.Equal(got, []string{"w1", "w3"}) {
			t.Fatalf("busy/terminated workers: %v", got)
		}
	})
}
