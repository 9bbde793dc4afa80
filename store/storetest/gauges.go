package storetest

import (
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/store"
)

// testGauges checks store.GaugeReader: the counts follow the rows, terminated workers
// and finished outbox rows are left out, and the oldest pending outbox row is named.
func testGauges(t *testing.T, newStore func(t *testing.T) store.Store) {
	ctx, s := ctxT(t), newStore(t)
	gr, ok := s.(store.GaugeReader)
	if !ok {
		t.Fatalf("%T does not implement store.GaugeReader", s)
	}
	g, err := gr.Gauges(ctx)
	must(t, err)
	if len(g.PendingByPriority) != 0 || g.ManualIntervention != 0 || len(g.Workers) != 0 || !g.OldestPendingOutbox.IsZero() {
		t.Fatalf("empty store: %+v", g)
	}
	base := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	for i, p := range []int{0, 0, 5} {
		j := &domain.Job{Spec: domain.JobSpec{Command: []string{"true"}, Priority: p}, CreatedAt: base.Add(time.Duration(i) * time.Second)}
		must(t, s.Jobs().Create(ctx, j))
	}
	stuck := &domain.Job{Spec: domain.JobSpec{Command: []string{"true"}}, State: domain.JobManualInterventionRequired}
	must(t, s.Jobs().Create(ctx, stuck))
	must(t, s.Workers().Create(ctx, &domain.Worker{ID: "a", Provider: "local"}))
	must(t, s.Workers().Create(ctx, &domain.Worker{ID: "b", Provider: "local"}))
	must(t, s.Workers().Create(ctx, &domain.Worker{ID: "c", Provider: "docker", State: domain.WorkerReady}))
	must(t, s.Workers().Create(ctx, &domain.Worker{ID: "d", Provider: "docker", State: domain.WorkerTerminated}))
	ids := insertN(t, s, "g", 2)

	g, err = gr.Gauges(ctx)
	must(t, err)
	if g.PendingByPriority[0] != 2 || g.PendingByPriority[5] != 1 || len(g.PendingByPriority) != 2 {
		t.Errorf("pending by priority %v, want map[0:2 5:1]", g.PendingByPriority)
	}
	if g.ManualIntervention != 1 {
		t.Errorf("manual intervention %d, want 1", g.ManualIntervention)
	}
	want := map[[2]string]int{{"CREATING", "local"}: 2, {"READY", "docker"}: 1}
	got := map[[2]string]int{}
	for _, w := range g.Workers {
		got[[2]string{w.State, w.Provider}] = w.N
	}
	if len(got) != len(want) || got[[2]string{"CREATING", "local"}] != 2 || got[[2]string{"READY", "docker"}] != 1 {
		t.Errorf("workers %v, want %v", got, want)
	}
	first := getMsg(t, s, ids[0])
	if !g.OldestPendingOutbox.Equal(first.CreatedAt) {
		t.Errorf("oldest pending outbox row %v, want %v (row %d)", g.OldestPendingOutbox, first.CreatedAt, ids[0])
	}
}
