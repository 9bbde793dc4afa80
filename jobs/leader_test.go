package jobs_test

import (
	"context"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/internal/leadership"
	"github.com/hodei-jobs/hodei/jobs"
	"github.com/hodei-jobs/hodei/store"
)

// TestOnlyTheLeaderSchedulesAndCleans runs a Service whose replica does not lead (the
// lease is another replica's): its scheduler and cleanup loops do nothing. When that
// replica resigns, this one leads and both loops act.
func TestOnlyTheLeaderSchedulesAndCleans(t *testing.T) {
	var (
		el      *leadership.Elector
		elected time.Time
	)
	e := newEnv(t, envOpts{leader: func(st store.Store) jobs.Leadership {
		now := time.Now()
		lease, ok, err := st.Leader().TryElect(context.Background(), leadership.DefaultName, "other", now, now.Add(time.Hour))
		if err != nil || !ok {
			t.Fatalf("seed the other replica's lease: %v", err)
		}
		elected = lease.ElectedAt
		el, err = leadership.New(st.Leader(), leadership.Config{ID: "me", TTL: 10 * time.Second, RenewInterval: 100 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		return el
	}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = el.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	go func() { _ = e.svc.RunCleanup(ctx, jobs.CleanupConfig{Interval: 50 * time.Millisecond}) }()

	deadline := time.Now().Add(10 * time.Second)
	for el.Leader() != "other" {
		if time.Now().After(deadline) {
			t.Fatalf("the elector sees leader %q, want other", el.Leader())
		}
		time.Sleep(5 * time.Millisecond)
	}
	j, err := e.svc.Submit(e.ctx(), spec(nil))
	if err != nil {
		t.Fatal(err)
	}
	// Many scheduler polls (50ms) and cleanup intervals pass: nothing happens here.
	time.Sleep(time.Second)
	if got, err := e.st.Jobs().Get(e.ctx(), j.ID); err != nil || got.State != domain.JobPending {
		t.Fatalf("a follower scheduled the job: %v, %v", got.State, err)
	}
	if n := e.count(`SELECT count(*) FROM outbox WHERE type = 'cleanup.completed'`); n != 0 {
		t.Fatalf("a follower ran %d cleanup runs", n)
	}

	// The other replica resigns: this one leads, schedules the job and cleans.
	if ok, err := e.st.Leader().Resign(e.ctx(), leadership.DefaultName, "other", elected); err != nil || !ok {
		t.Fatalf("resign: %v %v", ok, err)
	}
	e.waitJob(j.ID, domain.JobSucceeded)
	if !el.IsLeader() {
		t.Fatal("the job ran but this replica does not lead")
	}
	for e.count(`SELECT count(*) FROM outbox WHERE type = 'cleanup.completed'`) == 0 {
		if time.Now().After(deadline.Add(20 * time.Second)) {
			t.Fatal("the leader ran no cleanup")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
