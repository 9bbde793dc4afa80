package leadership_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/internal/leadership"
	"github.com/hodei-jobs/hodei/internal/pgtest"
	"github.com/hodei-jobs/hodei/store"
	"github.com/hodei-jobs/hodei/store/postgres"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// openStores returns n stores (n pools) on one migrated database: one per replica.
func openStores(t *testing.T, n int) []*postgres.Store {
	t.Helper()
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	if _, err := postgres.Migrate(ctx, url); err != nil {
		t.Fatal(err)
	}
	var out []*postgres.Store
	for range n {
		s, err := postgres.Open(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		out = append(out, s)
	}
	return out
}

// replica is one Elector running until stop.
type replica struct {
	e    *leadership.Elector
	stop context.CancelFunc
	done chan struct{} // closed when Run returned
	err  error         // Run's result, once done
}

func start(t *testing.T, st store.LeaderStore, cfg leadership.Config) *replica {
	t.Helper()
	e, err := leadership.New(st, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &replica{e: e, stop: cancel, done: make(chan struct{})}
	go func() { r.err = e.Run(ctx); close(r.done) }()
	t.Cleanup(func() { r.halt(t) })
	return r
}

// halt cancels Run (a graceful stop: the leader resigns) and waits for it.
func (r *replica) halt(t *testing.T) {
	t.Helper()
	r.stop()
	select {
	case <-r.done:
		if r.err != nil {
			t.Errorf("Run: %v", r.err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return within 15s of its context ending")
	}
	if r.e.IsLeader() {
		t.Errorf("%s still leads after Run returned", r.e.ID())
	}
}

// waitLeader waits until exactly one of rs leads and the others know it, and returns
// it. It fails if two lead at once.
func waitLeader(t *testing.T, timeout time.Duration, rs ...*replica) *replica {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var leaders []*replica
		for _, r := range rs {
			if r.e.IsLeader() {
				leaders = append(leaders, r)
			}
		}
		if len(leaders) > 1 {
			t.Fatalf("%s and %s lead at once", leaders[0].e.ID(), leaders[1].e.ID())
		}
		if len(leaders) == 1 {
			id, known := leaders[0].e.ID(), true
			for _, r := range rs {
				if r.e.Leader() != id {
					known = false
				}
			}
			if known {
				return leaders[0]
			}
		}
		if time.Now().After(deadline) {
			var st []string
			for _, r := range rs {
				s := r.e.Status()
				st = append(st, s.ID+" leading="+map[bool]string{true: "yes", false: "no"}[s.Leading]+" leader="+s.Leader)
			}
			t.Fatalf("no single known leader within %s: %s", timeout, strings.Join(st, "; "))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func other(a, b, leader *replica) *replica {
	if leader == a {
		return b
	}
	return a
}

func TestOneLeadsAndResignHandsOver(t *testing.T) {
	sts := openStores(t, 2)
	// A long TTL and a short renew interval: a hand-over within seconds can only come
	// from the resignation, not from the lease expiring.
	cfg := func(id string) leadership.Config {
		return leadership.Config{ID: id, TTL: time.Minute, RenewInterval: 100 * time.Millisecond}
	}
	a := start(t, sts[0].Leader(), cfg("a"))
	b := start(t, sts[1].Leader(), cfg("b"))
	leader := waitLeader(t, 10*time.Second, a, b)
	follower := other(a, b, leader)

	// Leadership is stable while the leader renews.
	changed := follower.e.Changed()
	time.Sleep(500 * time.Millisecond)
	if !leader.e.IsLeader() || follower.e.IsLeader() {
		t.Fatalf("leadership moved without a reason: leader %v, follower %v", leader.e.IsLeader(), follower.e.IsLeader())
	}

	leader.halt(t)
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not lead within 10s of %s resigning (lease TTL 1m)", follower.e.ID(), leader.e.ID())
	}
	if got := waitLeader(t, 10*time.Second, follower); got != follower {
		t.Fatalf("leader %s", got.e.ID())
	}
}

func TestLeaderThatStopsRenewingIsReplacedAfterTTL(t *testing.T) {
	sts := openStores(t, 2)
	const ttl = 1500 * time.Millisecond
	a := start(t, sts[0].Leader(), leadership.Config{ID: "a", TTL: ttl})
	// b starts once a leads, so that a is the one that dies.
	waitLeader(t, 10*time.Second, a)
	b := start(t, sts[1].Leader(), leadership.Config{ID: "b", TTL: ttl})
	waitLeader(t, 10*time.Second, a, b)

	// a's database goes away (its pool closes): it can neither renew nor resign, as if
	// its process had died; only its lease's expiry frees the row.
	lastUntil := a.e.Status().Until
	sts[0].Close()
	changed := b.e.Changed()
	select {
	case <-changed:
	case <-time.After(10 * ttl):
		t.Fatalf("b did not lead within %s of a's database going away", 10*ttl)
	}
	tookOver := time.Now()
	if !b.e.IsLeader() {
		t.Fatal("b's Changed closed but b does not lead")
	}
	// Safety: b was elected no earlier than the last expiry a wrote, and a stopped
	// trusting its lease before that.
	if until := a.e.Status().Until; until.After(lastUntil) {
		lastUntil = until
	}
	if tookOver.Before(lastUntil) {
		t.Fatalf("b took over at %s, before a's lease expired at %s", tookOver, lastUntil)
	}
	if a.e.IsLeader() {
		t.Fatal("a still believes it leads after its lease expired")
	}
	if b.e.Leader() != "b" {
		t.Fatalf("b sees %q as leader", b.e.Leader())
	}
}

func TestSameIDAfterCrashTakesBackAtOnce(t *testing.T) {
	sts := openStores(t, 2)
	// The lease of a dead process with id "a" (never resigned, an hour to run).
	now := time.Now()
	if _, ok, err := sts[0].Leader().TryElect(context.Background(), leadership.DefaultName, "a", now, now.Add(time.Hour)); err != nil || !ok {
		t.Fatalf("seed lease: %v", err)
	}
	b := start(t, sts[1].Leader(), leadership.Config{ID: "b", TTL: time.Minute})
	// b learns who leads but does not lead.
	deadline := time.Now().Add(10 * time.Second)
	for b.e.Leader() != "a" {
		if time.Now().After(deadline) {
			t.Fatalf("b sees leader %q, want a", b.e.Leader())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if b.e.IsLeader() {
		t.Fatal("b leads while a's lease runs")
	}
	// The successor of a (same id: same data directory) leads at once.
	a := start(t, sts[0].Leader(), leadership.Config{ID: "a", TTL: time.Minute, RenewInterval: 100 * time.Millisecond})
	if got := waitLeader(t, 10*time.Second, a); got != a {
		t.Fatal("a not leading")
	}
}

func TestAlwaysLeader(t *testing.T) {
	e, err := leadership.NewAlwaysLeader("dev")
	if err != nil {
		t.Fatal(err)
	}
	if !e.IsLeader() || e.Leader() != "dev" || e.ID() != "dev" {
		t.Fatalf("status %+v", e.Status())
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := e.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	select {
	case <-e.Changed():
		t.Fatal("an always-leader's leadership changed")
	case <-time.After(50 * time.Millisecond):
	}
	cancel()
	wg.Wait()
	if _, err := leadership.NewAlwaysLeader(""); err == nil {
		t.Fatal("empty id accepted")
	}
}

func TestConfigValidate(t *testing.T) {
	st := pgtest.NewStore(t).Leader()
	for _, c := range []struct {
		cfg  leadership.Config
		want string
	}{
		{leadership.Config{}, "Config.ID"},
		{leadership.Config{ID: strings.Repeat("x", 201)}, "Config.ID"},
		{leadership.Config{ID: "a", TTL: time.Millisecond}, "Config.TTL"},
		{leadership.Config{ID: "a", TTL: time.Hour}, "Config.TTL"},
		{leadership.Config{ID: "a", TTL: time.Second, RenewInterval: 600 * time.Millisecond}, "Config.RenewInterval"},
		{leadership.Config{ID: "a", TTL: time.Second, RenewInterval: time.Millisecond}, "Config.RenewInterval"},
	} {
		_, err := leadership.New(st, c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(%+v) = %v, want an error naming %s", c.cfg, err, c.want)
		}
	}
	if _, err := leadership.New(nil, leadership.Config{ID: "a"}); err == nil {
		t.Error("New without a store accepted")
	}
	e, err := leadership.New(st, leadership.Config{ID: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if e.IsLeader() || e.Leader() != "" {
		t.Fatalf("before Run: %+v", e.Status())
	}
}
