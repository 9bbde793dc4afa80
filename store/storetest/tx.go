package storetest

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/store"
)

func testTx(t *testing.T, newStore func(t *testing.T) store.Store) {
	exists := func(t *testing.T, s store.Store, id string) bool {
		t.Helper()
		_, err := s.Jobs().Get(context.Background(), id)
		if err == nil {
			return true
		}
		wantErr(t, err, store.ErrNotFound)
		return false
	}
	job := func(id string) *domain.Job { return &domain.Job{ID: id, Spec: sampleSpec()} }

	t.Run("Commit", func(t *testing.T) {
		ctx, s := ctxT(t), newStore(t)
		must(t, s.InTx(ctx, func(ctx context.Context) error {
			must(t, s.Jobs().Create(ctx, job("a")))
			if exists(t, s, "a") {
				t.Error("uncommitted row visible outside the transaction")
			}
			if _, err := s.Jobs().Get(ctx, "a"); err != nil {
				t.Errorf("row not visible inside its own transaction: %v", err)
			}
			return nil
		}))
		if !exists(t, s, "a") {
			t.Fatal("committed row missing")
		}
	})

	t.Run("Rollback", func(t *testing.T) {
		ctx, s := ctxT(t), newStore(t)
		err := s.InTx(ctx, func(ctx context.Context) error {
			must(t, s.Jobs().Create(ctx, job("a")))
			return errBoom
		})
		wantErr(t, err, errBoom)
		if exists(t, s, "a") {
			t.Fatal("rolled-back row exists")
		}
	})

	t.Run("PanicRollsBack", func(t *testing.T) {
		ctx, s := ctxT(t), newStore(t)
		func() {
			defer func() {
				if recover() == nil {
					t.Error("panic swallowed by InTx")
				}
			}()
			_ = s.InTx(ctx, func(ctx context.Context) error {
				must(t, s.Jobs().Create(ctx, job("a")))
				panic("boom")
			})
		}()
		if exists(t, s, "a") {
			t.Fatal("row of a panicking transaction exists")
		}
		must(t, s.Jobs().Create(ctx, job("b"))) // the pool is still usable
	})

	t.Run("NestedJoins", func(t *testing.T) {
		ctx, s := ctxT(t), newStore(t)
		err := s.InTx(ctx, func(ctx context.Context) error {
			must(t, s.Jobs().Create(ctx, job("outer")))
			must(t, s.InTx(ctx, func(ctx context.Context) error {
				return s.Jobs().Create(ctx, job("inner"))
			}))
			if exists(t, s, "inner") {
				t.Error("nested InTx committed on its own")
			}
			return errBoom
		})
		wantErr(t, err, errBoom)
		if exists(t, s, "outer") || exists(t, s, "inner") {
			t.Fatal("outer rollback did not undo the inner writes")
		}
		must(t, s.InTx(ctx, func(ctx context.Context) error {
			must(t, s.Jobs().Create(ctx, job("outer")))
			return s.InTx(ctx, func(ctx context.Context) error { return s.Jobs().Create(ctx, job("inner")) })
		}))
		if !exists(t, s, "outer") || !exists(t, s, "inner") {
			t.Fatal("nested commit lost rows")
		}
	})

	t.Run("AfterCommit", func(t *testing.T) {
		ctx, s := ctxT(t), newStore(t)
		ac := s
		var ran atomic.Int32
		must(t, s.InTx(ctx, func(ctx context.Context) error {
			ac.AfterCommit(ctx, func() { ran.Add(1) })
			return s.InTx(ctx, func(ctx context.Context) error {
				ac.AfterCommit(ctx, func() { ran.Add(10) })
				if ran.Load() != 0 {
					t.Error("AfterCommit callback ran before commit")
				}
				return nil
			})
		}))
		if got := ran.Load(); got != 11 {
			t.Fatalf("after commit: callbacks sum %d, want 11", got)
		}
		ran.Store(0)
		_ = s.InTx(ctx, func(ctx context.Context) error {
			ac.AfterCommit(ctx, func() { ran.Add(1) })
			return errBoom
		})
		if ran.Load() != 0 {
			t.Fatal("AfterCommit callback ran after a rollback")
		}
		ac.AfterCommit(ctx, func() { ran.Add(1) })
		if ran.Load() != 1 {
			t.Fatal("AfterCommit without a transaction did not run at once")
		}
	})

	t.Run("InTransactionMarksContext", func(t *testing.T) {
		ctx, s := ctxT(t), newStore(t)
		if store.InTransaction(ctx) {
			t.Fatal("InTransaction true for a context without a transaction")
		}
		var outer, inner, written bool
		must(t, s.InTx(ctx, func(ctx context.Context) error {
			outer = store.InTransaction(ctx)
			must(t, s.Jobs().Create(ctx, job("a")))
			written = store.InTransaction(ctx)
			return s.InTx(ctx, func(ctx context.Context) error {
				inner = store.InTransaction(ctx)
				return nil
			})
		}))
		if !outer || !written || !inner {
			t.Fatalf("InTransaction inside InTx: outer %v, after a write %v, joined %v; want all true", outer, written, inner)
		}
		if store.InTransaction(ctx) {
			t.Fatal("InTx marked the caller's context")
		}
	})
}
