package postgres_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/command"
	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/internal/pgtest"
	"github.com/hodei-jobs/hodei/store"
)

// Two transactions that lock two worker rows in opposite orders deadlock; PostgreSQL aborts
// one. Its error is a lost race (store.LostRace) and so transient: the saga engine and
// the command bus run it again in a fresh transaction instead of failing for good (a
// recovery's terminate-old once compensated, failing its job, on such a deadlock).
func TestDeadlockIsALostRace(t *testing.T) {
	s := pgtest.NewStore(t)
	ctx := t.Context()
	for _, id := range []string{"w1", "w2"} {
		if err := s.Workers().Create(ctx, &domain.Worker{ID: id, Provider: "local", State: domain.WorkerBusy}); err != nil {
			t.Fatal(err)
		}
	}
	var (
		both sync.WaitGroup // each holds its first lock
		wg   sync.WaitGroup
		errs = make([]error, 2)
	)
	both.Add(2)
	for i, order := range [][2]string{{"w1", "w2"}, {"w2", "w1"}} {
		wg.Go(func() {
			errs[i] = s.InTx(ctx, func(ctx context.Context) error {
				now := time.Now()
				if err := s.Workers().Heartbeat(ctx, order[0], now); err != nil { // an UPDATE: the row is locked
					both.Done()
					return err
				}
				both.Done()
				both.Wait()
				return s.Workers().Heartbeat(ctx, order[1], now)
			})
		})
	}
	wg.Wait()
	var lost error
	for _, err := range errs {
		if err != nil {
			lost = errors.Join(lost, err)
		}
	}
	if lost == nil {
		t.Fatal("no transaction failed: the test did not deadlock")
	}
	if !store.LostRace(lost) || !command.IsTransient(lost) {
		t.Fatalf("deadlock error %v: LostRace %v, IsTransient %v; want both true", lost, store.LostRace(lost), command.IsTransient(lost))
	}
	if store.LostRace(store.ErrConflict) || store.LostRace(errors.New("40P01")) {
		t.Fatal("LostRace is true for errors that carry no SQLSTATE")
	}
}
