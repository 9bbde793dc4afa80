package jobs_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/domain"
)

// TestNamespaceRunningLimit: team-a may hold 2 workers at once. Its 5 jobs (highest
// priority, submitted first) never have more than 2 in PROVISIONING, ASSIGNED or
// RUNNING, sampled in the database, while team-b's and default's jobs still start;
// raising the limit to 3 starts one more of team-a's.
func TestNamespaceRunningLimit(t *testing.T) {
	e := newEnv(t, envOpts{capacity: 8, noScheduler: true})
	ctx := e.ctx()
	if err := e.st.Namespaces().SetLimit(ctx, "team-a", 2, time.Now()); err != nil {
		t.Fatal(err)
	}
	submit := func(ns string, prio int, hang bool) string {
		env := map[string]string{}
		if hang {
			env["FAKE_HANG"] = "1"
		}
		s := spec(env)
		s.Namespace, s.Priority = ns, prio
		j, err := e.svc.Submit(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		return j.ID
	}
	for range 5 {
		submit("team-a", 9, true)
	}
	b1, b2 := submit("team-b", 0, true), submit("team-b", 0, true)
	d := submit("", 0, false)

	holding := func(ns string) int {
		return e.count(`SELECT count(*) FROM jobs WHERE spec->>'namespace' = $1
			AND state IN ('PROVISIONING', 'ASSIGNED', 'RUNNING')`, ns)
	}
	var (
		maxA    atomic.Int64
		stop    = make(chan struct{})
		sampled sync.WaitGroup
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
			if err := e.st.Pool().QueryRow(context.Background(), `SELECT count(*) FROM jobs
				WHERE spec->>'namespace' = 'team-a' AND state IN ('PROVISIONING', 'ASSIGNED', 'RUNNING')`).Scan(&n); err == nil && n > maxA.Load() {
				maxA.Store(n)
			}
		}
	}()
	var wg sync.WaitGroup
	sctx, cancel := context.WithCancel(ctx)
	defer func() { cancel(); wg.Wait() }()
	// Two schedulers, as on two replicas.
	e.startScheduler(sctx, &wg)
	e.startScheduler(sctx, &wg)

	// The other namespaces' jobs start although team-a's come first.
	e.waitJob(b1, domain.JobRunning)
	e.waitJob(b2, domain.JobRunning)
	if j := e.waitJob(d, domain.JobSucceeded, domain.JobFailed); j.State != domain.JobSucceeded {
		t.Fatalf("default job: %s %q", j.State, j.LastError)
	}
	waitCount(t, func() int { return holding("team-a") }, 2)
	time.Sleep(300 * time.Millisecond) // several scheduler polls (50ms)
	if n := holding("team-a"); n != 2 {
		t.Fatalf("team-a holds %d workers, limit 2", n)
	}
	if n := e.count(`SELECT count(*) FROM jobs WHERE spec->>'namespace' = 'team-a' AND state = 'PENDING'`); n != 3 {
		t.Fatalf("team-a has %d PENDING jobs, want 3", n)
	}

	if m := maxA.Load(); m > 2 {
		t.Fatalf("team-a held %d workers at once, limit 2", m)
	}

	// Raising the limit starts one more.
	if err := e.st.Namespaces().SetLimit(ctx, "team-a", 3, time.Now()); err != nil {
		t.Fatal(err)
	}
	waitCount(t, func() int { return holding("team-a") }, 3)
	time.Sleep(300 * time.Millisecond)
	close(stop)
	sampled.Wait()
	if n := holding("team-a"); n != 3 {
		t.Fatalf("after raising the limit to 3, team-a holds %d workers", n)
	}
	if m := maxA.Load(); m > 3 {
		t.Fatalf("team-a held %d workers at once; limit 2, then 3", m)
	}
	usage, err := e.st.Namespaces().Usage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, u := range usage {
		if u.Name == "team-a" {
			found = true
			if u.MaxRunning != 3 || u.Running != 3 || u.Pending != 2 {
				t.Fatalf("team-a usage %+v, want max 3, running 3, pending 2", u)
			}
		}
	}
	if !found {
		t.Fatalf("no team-a in %+v", usage)
	}
}

// waitCount polls f until it returns want (or fails the test after 20s).
func waitCount(t *testing.T, f func() int, want int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		n := f()
		if n == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("count %d after 20s, want %d", n, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
