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

// RunLeader runs the conformance tests of LeaderStore against the driver newStore
// builds (same contract as Run's factory).
func RunLeader(t *testing.T, newStore func(t *testing.T) store.Store) {
	t.Run("ElectRenewExpire", func(t *testing.T) { leaderElectRenewExpire(t, newStore(t)) })
	t.Run("Resign", func(t *testing.T) { leaderResign(t, newStore(t)) })
	t.Run("SameHolderNewTerm", func(t *testing.T) { leaderSameHolder(t, newStore(t)) })
	t.Run("OneWinnerOfMany", func(t *testing.T) { leaderOneWinner(t, newStore(t)) })
	t.Run("JoinsTx", func(t *testing.T) { leaderTx(t, newStore(t)) })
	t.Run("Validates", func(t *testing.T) { leaderValidates(t, newStore(t)) })
}

// leaseT0 has microsecond precision, which every driver keeps.
var leaseT0 = time.Date(2031, 5, 6, 7, 8, 9, 123456000, time.UTC)

func wantLease(t *testing.T, got store.Lease, holder string, electedAt, expiresAt time.Time) {
	t.Helper()
	if got.Name != "main" || got.Holder != holder || !got.ElectedAt.Equal(electedAt) || !got.ExpiresAt.Equal(expiresAt) {
		t.Fatalf("lease = %+v, want main held by %s elected %s until %s", got, holder, electedAt, expiresAt)
	}
}

func leaderElectRenewExpire(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	ls := s.Leader()
	ttl := 15 * time.Second
	l, ok, err := ls.TryElect(ctx, "main", "a", leaseT0, leaseT0.Add(ttl))
	must(t, err)
	if !ok {
		t.Fatal("first election on an empty table lost")
	}
	wantLease(t, l, "a", leaseT0, leaseT0.Add(ttl))

	// b before the expiry: a still leads, and b learns it.
	t1 := leaseT0.Add(ttl - time.Millisecond)
	l, ok, err = ls.TryElect(ctx, "main", "b", t1, t1.Add(ttl))
	must(t, err)
	if ok {
		t.Fatal("b elected while a's lease runs")
	}
	wantLease(t, l, "a", leaseT0, leaseT0.Add(ttl))

	// Another lease name is independent.
	other, ok, err := ls.TryElect(ctx, "other", "b", t1, t1.Add(ttl))
	must(t, err)
	if !ok || other.Holder != "b" || other.Name != "other" {
		t.Fatalf("lease of another name: %+v elected %v", other, ok)
	}

	// a renews its term; b's renewal of a term it does not hold, and a's of a wrong
	// term, are refused.
	l, err = ls.Renew(ctx, "main", "a", leaseT0, t1.Add(ttl))
	must(t, err)
	wantLease(t, l, "a", leaseT0, t1.Add(ttl))
	_, err = ls.Renew(ctx, "main", "b", leaseT0, t1.Add(ttl))
	wantErr(t, err, store.ErrNotFound)
	_, err = ls.Renew(ctx, "main", "a", leaseT0.Add(time.Microsecond), t1.Add(ttl))
	wantErr(t, err, store.ErrNotFound)

	// At the new expiry (not before) b takes over with a new term.
	t2 := t1.Add(ttl)
	if _, ok, err := ls.TryElect(ctx, "main", "b", t2.Add(-time.Microsecond), t2.Add(ttl)); err != nil || ok {
		t.Fatalf("b elected a microsecond before the expiry (err %v)", err)
	}
	l, ok, err = ls.TryElect(ctx, "main", "b", t2, t2.Add(ttl))
	must(t, err)
	if !ok {
		t.Fatal("b not elected at the expiry of a's lease")
	}
	wantLease(t, l, "b", t2, t2.Add(ttl))

	// a's term is over: no renewal, no resignation of b's lease.
	_, err = ls.Renew(ctx, "main", "a", leaseT0, t2.Add(2*ttl))
	wantErr(t, err, store.ErrNotFound)
	resigned, err := ls.Resign(ctx, "main", "a", leaseT0)
	must(t, err)
	if resigned {
		t.Fatal("a's resignation of an old term deleted b's lease")
	}

	// A term whose expiry passed but that nobody took is still renewable.
	t3 := t2.Add(ttl + time.Hour)
	l, err = ls.Renew(ctx, "main", "b", t2, t3.Add(ttl))
	must(t, err)
	wantLease(t, l, "b", t2, t3.Add(ttl))
}

func leaderResign(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	ls := s.Leader()
	l, ok, err := ls.TryElect(ctx, "main", "a", leaseT0, leaseT0.Add(time.Hour))
	must(t, err)
	if !ok {
		t.Fatal("not elected")
	}
	resigned, err := ls.Resign(ctx, "main", "a", l.ElectedAt)
	must(t, err)
	if !resigned {
		t.Fatal("Resign of the current term reported false")
	}
	again, err := ls.Resign(ctx, "main", "a", l.ElectedAt)
	must(t, err)
	if again {
		t.Fatal("second Resign reported true")
	}
	// b is elected at once, long before a's lease would have expired.
	t1 := leaseT0.Add(time.Second)
	l, ok, err = ls.TryElect(ctx, "main", "b", t1, t1.Add(time.Hour))
	must(t, err)
	if !ok {
		t.Fatal("b not elected after a resigned")
	}
	wantLease(t, l, "b", t1, t1.Add(time.Hour))
}

func leaderSameHolder(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	ls := s.Leader()
	if _, ok, err := ls.TryElect(ctx, "main", "a", leaseT0, leaseT0.Add(time.Hour)); err != nil || !ok {
		t.Fatalf("not elected: %v", err)
	}
	// The same holder (a restarted process with its stable id) starts a new term at
	// once; the old term is over.
	t1 := leaseT0.Add(time.Second)
	l, ok, err := ls.TryElect(ctx, "main", "a", t1, t1.Add(time.Minute))
	must(t, err)
	if !ok {
		t.Fatal("the holder asking again was refused")
	}
	wantLease(t, l, "a", t1, t1.Add(time.Minute))
	_, err = ls.Renew(ctx, "main", "a", leaseT0, t1.Add(time.Hour))
	wantErr(t, err, store.ErrNotFound)
}

func leaderOneWinner(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	ls := s.Leader()
	const n = 8
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		winners []string
		holders = map[string]bool{}
		errs    []error
	)
	for i := range n {
		wg.Go(func() {
			holder := fmt.Sprintf("r%d", i)
			l, ok, err := ls.TryElect(ctx, "main", holder, leaseT0, leaseT0.Add(time.Minute))
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			holders[l.Holder] = true
			if ok {
				winners = append(winners, holder)
				if l.Holder != holder {
					errs = append(errs, fmt.Errorf("%s elected but the lease names %s", holder, l.Holder))
				}
			}
		})
	}
	wg.Wait()
	must(t, errors.Join(errs...))
	if len(winners) != 1 || len(holders) != 1 || !holders[winners[0]] {
		t.Fatalf("winners %v, holders seen %v: want one winner that everyone sees", winners, holders)
	}
}

func leaderTx(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	ls := s.Leader()
	err := s.InTx(ctx, func(ctx context.Context) error {
		if _, ok, err := ls.TryElect(ctx, "main", "a", leaseT0, leaseT0.Add(time.Hour)); err != nil || !ok {
			return fmt.Errorf("elect in tx: ok %v: %w", ok, err)
		}
		return errBoom
	})
	wantErr(t, err, errBoom)
	// Rolled back: b is elected.
	if _, ok, err := ls.TryElect(ctx, "main", "b", leaseT0, leaseT0.Add(time.Hour)); err != nil || !ok {
		t.Fatalf("b not elected after a's election rolled back (err %v)", err)
	}
}

func leaderValidates(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	ls := s.Leader()
	for _, c := range []struct {
		name, holder string
		now, exp     time.Time
	}{
		{"", "a", leaseT0, leaseT0.Add(time.Second)},
		{"main", "", leaseT0, leaseT0.Add(time.Second)},
		{"main", "a", leaseT0, leaseT0},
		{"main", "a", leaseT0, leaseT0.Add(-time.Second)},
	} {
		if _, _, err := ls.TryElect(ctx, c.name, c.holder, c.now, c.exp); err == nil {
			t.Errorf("TryElect(%q, %q, %s, %s) accepted", c.name, c.holder, c.now, c.exp)
		}
		if _, err := ls.Renew(ctx, c.name, c.holder, c.now, c.exp); err == nil || errors.Is(err, store.ErrNotFound) {
			t.Errorf("Renew(%q, %q, %s, %s): %v, want a validation error", c.name, c.holder, c.now, c.exp, err)
		}
	}
	if _, err := ls.Resign(ctx, "", "a", leaseT0); err == nil {
		t.Error("Resign without a name accepted")
	}
}
