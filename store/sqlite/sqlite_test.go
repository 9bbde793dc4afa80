package sqlite

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/store"
	"github.com/hodei-jobs/hodei/store/storetest"
)

// newTestStore opens a Store on a fresh file in t.TempDir(), closed at cleanup.
func newTestStore(t testing.TB, opts ...Option) *Store {
	t.Helper()
	s, err := Open(context.Background(), filepath.Join(t.TempDir(), "hodei.db"), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func factory(t *testing.T) store.Store { return newTestStore(t) }

func TestConformance(t *testing.T) { storetest.Run(t, factory) }

func TestSagaConformance(t *testing.T) { storetest.RunSaga(t, factory) }

func TestJobPathConformance(t *testing.T) { storetest.RunJobPath(t, factory) }

func TestLeaderConformance(t *testing.T) { storetest.RunLeader(t, factory) }

func TestOpenValidates(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	for _, p := range []string{"", ":memory:", "file:x.db", filepath.Join(dir, "a?b")} {
		if s, err := Open(ctx, p); err == nil {
			s.Close()
			t.Errorf("Open(%q) accepted", p)
		}
	}
	if _, err := Open(ctx, filepath.Join(dir, "x.db"), WithSynchronous("SOMETIMES")); err == nil ||
		!strings.Contains(err.Error(), "Synchronous") {
		t.Errorf("bad Synchronous: %v", err)
	}
	if _, err := Open(ctx, filepath.Join(dir, "x.db"), WithMaxReadConns(-1)); err == nil ||
		!strings.Contains(err.Error(), "MaxReadConns") {
		t.Errorf("bad MaxReadConns: %v", err)
	}
	if _, err := Open(ctx, filepath.Join(dir, "missing", "x.db")); err == nil {
		t.Error("Open in a missing directory succeeded")
	}
}

func TestWALAndPragmas(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t)
	var mode string
	if err := s.rdb.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil {
		t.Fatal(err)
	}
	if mode != "wal" {
		t.Fatalf("journal_mode %q, want wal", mode)
	}
	var fk, qo int
	if err := s.wdb.QueryRowContext(ctx, `PRAGMA foreign_keys`).Scan(&fk); err != nil {
		t.Fatal(err)
	}
	if err := s.rdb.QueryRowContext(ctx, `PRAGMA query_only`).Scan(&qo); err != nil {
		t.Fatal(err)
	}
	if fk != 1 || qo != 1 {
		t.Fatalf("foreign_keys %d on the writer, query_only %d on readers; want 1 and 1", fk, qo)
	}
	// Foreign keys are enforced: an event of a missing saga is refused.
	err := s.write(ctx, func(ctx context.Context, q querier) error {
		_, err := q.ExecContext(ctx, `INSERT INTO saga_events (saga_id, seq, type, codec, created_at)
			VALUES ('nope', 1, 't', 'json', 0)`)
		return err
	})
	if err == nil {
		t.Fatal("insert violating a foreign key succeeded")
	}
	// The read pool cannot write.
	if _, err := s.rdb.ExecContext(ctx, `DELETE FROM jobs`); err == nil {
		t.Fatal("read pool wrote")
	}
}

func TestReopenKeepsData(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "hodei.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	j := &domain.Job{ID: "persist", Spec: domain.JobSpec{Command: []string{"echo", "hi"}, Labels: map[string]string{"a": "b"}}}
	if err := s.Jobs().Create(ctx, j); err != nil {
		t.Fatal(err)
	}
	ids, err := s.Outbox().Insert(ctx, &store.OutboxMessage{Kind: store.KindEvent, Type: "job.created",
		IdempotencyKey: "k1", Payload: []byte(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	// A rolled-back insert burns an id; it must stay burnt after reopening.
	_ = s.InTx(ctx, func(ctx context.Context) error {
		if _, err := s.Outbox().Insert(ctx, &store.OutboxMessage{Kind: store.KindEvent, Type: "x",
			IdempotencyKey: "rolled-back"}); err != nil {
			t.Error(err)
		}
		return errors.New("roll back")
	})
	s.Close()

	s2, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	got, err := s2.Jobs().Get(ctx, "persist")
	if err != nil {
		t.Fatalf("job lost on reopen: %v", err)
	}
	if !got.CreatedAt.Equal(j.CreatedAt) || got.Spec.Labels["a"] != "b" || got.State != domain.JobPending {
		t.Fatalf("reopened job %+v, want %+v", got, j)
	}
	m, err := s2.Outbox().Get(ctx, ids[0])
	if err != nil || m.IdempotencyKey != "k1" {
		t.Fatalf("outbox row after reopen: %+v, %v", m, err)
	}
	var n int
	if err := s2.rdb.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	migs, err := Migrations()
	if err != nil {
		t.Fatal(err)
	}
	if n != len(migs) {
		t.Fatalf("schema_migrations has %d rows after reopen, want %d (each applied once)", n, len(migs))
	}
	ids2, err := s2.Outbox().Insert(ctx, &store.OutboxMessage{Kind: store.KindEvent, Type: "job.created",
		IdempotencyKey: "k2"})
	if err != nil {
		t.Fatal(err)
	}
	if ids2[0] <= ids[0] {
		t.Fatalf("id after reopen %d, want > %d", ids2[0], ids[0])
	}
}

// TestMigrationVersionsMatchPostgres keeps the two drivers' migration lists aligned.
func TestMigrationVersionsMatchPostgres(t *testing.T) {
	migs, err := Migrations()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range migs {
		got = append(got, m.Version)
	}
	pg, err := filepath.Glob("../postgres/migrations/*.sql")
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, p := range pg {
		want = append(want, strings.TrimSuffix(filepath.Base(p), ".sql"))
	}
	if !slices.Equal(got, want) {
		t.Fatalf("sqlite migrations %v, postgres migrations %v", got, want)
	}
}

// TestConcurrentWritersNoBusy: many goroutines writing at once (in transactions of their
// own, in explicit transactions that read before they write, and through two Stores on
// one file) never see SQLITE_BUSY or lose a write.
func TestConcurrentWritersNoBusy(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	path := filepath.Join(t.TempDir(), "hodei.db")
	s1, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s1.Close()
	s2, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	const goroutines, each = 32, 25
	var wg sync.WaitGroup
	errs := make(chan error, goroutines*each)
	for g := range goroutines {
		s := s1
		if g%4 == 3 {
			s = s2 // a second Store: its writer competes through SQLite's lock and busy_timeout
		}
		wg.Go(func() {
			for i := range each {
				id := fmt.Sprintf("g%d-%d", g, i)
				var err error
				switch i % 3 {
				case 0:
					err = s.Jobs().Create(ctx, &domain.Job{ID: id, Spec: domain.JobSpec{Command: []string{"true"}}})
				case 1:
					err = s.InTx(ctx, func(ctx context.Context) error {
						if _, err := s.Idempotency().Get(ctx, id); !errors.Is(err, store.ErrNotFound) {
							return fmt.Errorf("get key: %w", err)
						}
						if _, err := s.Outbox().Insert(ctx, &store.OutboxMessage{Kind: store.KindCommand,
							Type: "t", IdempotencyKey: id}); err != nil {
							return err
						}
						return s.Idempotency().Put(ctx, id, "t", nil)
					})
				default:
					err = s.InTx(ctx, func(ctx context.Context) error {
						if err := s.Jobs().Create(ctx, &domain.Job{ID: id, Spec: domain.JobSpec{Command: []string{"true"}}}); err != nil {
							return err
						}
						_, err := s.Jobs().UpdateState(ctx, id, domain.JobProvisioning, time.Now(), nil)
						return err
					})
				}
				if err != nil {
					errs <- fmt.Errorf("%s: %w", id, err)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	jobs, _, err := s1.Jobs().List(ctx, store.JobFilter{PageSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	wantJobs := 0
	for i := range each {
		if i%3 != 1 {
			wantJobs++
		}
	}
	if len(jobs) != goroutines*wantJobs {
		t.Fatalf("%d jobs, want %d", len(jobs), goroutines*wantJobs)
	}
	counts, err := s2.Outbox().CountByStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if counts[store.OutboxPending] != goroutines*(each-wantJobs) {
		t.Fatalf("%d outbox rows, want %d", counts[store.OutboxPending], goroutines*(each-wantJobs))
	}
}

// TestWriterWaitHonoursContext: a write waiting for the writer connection gives up when
// its ctx ends, and the Store works after.
func TestWriterWaitHonoursContext(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t)
	hold := make(chan struct{})
	held := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- s.InTx(ctx, func(ctx context.Context) error {
			if err := s.Jobs().Create(ctx, &domain.Job{ID: "holder", Spec: domain.JobSpec{Command: []string{"true"}}}); err != nil {
				return err
			}
			close(held)
			<-hold
			return nil
		})
	}()
	<-held
	wctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	err := s.Jobs().Create(wctx, &domain.Job{ID: "waiter", Spec: domain.JobSpec{Command: []string{"true"}}})
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("write while the writer is held: %v, want deadline exceeded", err)
	}
	// Reads do not wait for the writer.
	if _, err := s.Jobs().Get(ctx, "holder"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("read during a write transaction: %v, want ErrNotFound (not committed yet)", err)
	}
	close(hold)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := s.Jobs().Create(ctx, &domain.Job{ID: "after", Spec: domain.JobSpec{Command: []string{"true"}}}); err != nil {
		t.Fatal(err)
	}
}

// TestFailedOpLeavesTxUsable: a port method that fails inside a transaction undoes only
// its own writes (savepoint); the transaction goes on and commits the rest.
func TestFailedOpLeavesTxUsable(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t)
	if _, _, err := s.Sagas().Create(ctx, &store.SagaRecord{ID: "s", Type: "t", State: "RUNNING"},
		&store.SagaEvent{Type: "started", Codec: "json"}); err != nil {
		t.Fatal(err)
	}
	err := s.InTx(ctx, func(ctx context.Context) error {
		if err := s.Jobs().Create(ctx, &domain.Job{ID: "kept", Spec: domain.JobSpec{Command: []string{"true"}}}); err != nil {
			return err
		}
		// Stale seq: the update matches nothing; nothing of this Append may remain.
		if err := s.Sagas().Append(ctx, "s", 0, store.SagaUpdate{State: "X"},
			&store.SagaEvent{Type: "e", Codec: "json"}); !errors.Is(err, store.ErrConflict) {
			return fmt.Errorf("stale append: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Jobs().Get(ctx, "kept"); err != nil {
		t.Fatal(err)
	}
	r, err := s.Sagas().Get(ctx, "s")
	if err != nil || r.State != "RUNNING" || r.LastSeq != 1 {
		t.Fatalf("saga after a failed append: %+v, %v", r, err)
	}
}

// TestSavepointBeforeFirstWrite: a savepoint taken before the transaction wrote anything
// holds no writer; rolling back to it undoes everything since, hands the writer back
// (others can write meanwhile) and leaves the transaction usable.
func TestSavepointBeforeFirstWrite(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := newTestStore(t)
	job := func(id string) *domain.Job {
		return &domain.Job{ID: id, Spec: domain.JobSpec{Command: []string{"true"}}}
	}
	var ran []string
	err := s.InTx(ctx, func(ctx context.Context) error {
		rollback, err := s.Sagas().Savepoint(ctx)
		if err != nil {
			return err
		}
		if err := s.Jobs().Create(ctx, job("undone")); err != nil {
			return err
		}
		s.AfterCommit(ctx, func() { ran = append(ran, "undone") })
		if err := rollback(ctx); err != nil {
			return err
		}
		// The writer is free again: another goroutine's write completes at once.
		wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
		defer wcancel()
		if err := s.Jobs().Create(context.WithoutCancel(wctx), job("other")); err != nil {
			return fmt.Errorf("write after the rollback released the writer: %w", err)
		}
		if err := s.Jobs().Create(ctx, job("kept")); err != nil {
			return err
		}
		s.AfterCommit(ctx, func() { ran = append(ran, "kept") })
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Jobs().Get(ctx, "undone"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("job written after the savepoint survived its rollback: %v", err)
	}
	for _, id := range []string{"kept", "other"} {
		if _, err := s.Jobs().Get(ctx, id); err != nil {
			t.Fatalf("job %s: %v", id, err)
		}
	}
	if fmt.Sprint(ran) != "[kept]" {
		t.Fatalf("after-commit callbacks %v, want [kept]", ran)
	}
}

func TestRetentionConformance(t *testing.T) { storetest.RunRetention(t, factory) }
