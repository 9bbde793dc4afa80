package command_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/command"
	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/internal/pgtest"
	"github.com/hodei-jobs/hodei/store"
	"github.com/hodei-jobs/hodei/store/sqlite"
)

// drivers runs fn once per store driver, each on a fresh database.
func drivers(t *testing.T, fn func(t *testing.T, st store.Store)) {
	t.Run("postgres", func(t *testing.T) { fn(t, pgtest.NewStore(t)) })
	t.Run("sqlite", func(t *testing.T) {
		st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "hodei.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(st.Close)
		fn(t, st)
	})
}

// createJob writes job JobID through ctx's transaction; FailFirst makes the first
// run fail transiently after the write.
type createJob struct {
	Key       string `json:"key"`
	JobID     string `json:"job_id"`
	FailFirst bool   `json:"fail_first,omitempty"`
}

func (createJob) CommandType() string      { return "test.create_job" }
func (c createJob) IdempotencyKey() string { return c.Key }

type chainFixture struct {
	st   store.Store
	bus  *command.Bus
	runs atomic.Int64
	cfg  command.ChainConfig
}

func newChainFixture(t *testing.T, st store.Store) *chainFixture {
	f := &chainFixture{st: st, bus: command.NewBus()}
	command.Register(f.bus, command.HandlerFunc[createJob, string](func(ctx context.Context, c createJob) (string, error) {
		run := f.runs.Add(1)
		j := &domain.Job{ID: c.JobID, Spec: domain.JobSpec{Command: []string{"true"}}}
		if err := st.Jobs().Create(ctx, j); err != nil {
			return "", err
		}
		if c.FailFirst && run == 1 {
			return "", command.Transient(errors.New("database restarting"))
		}
		return j.ID, nil
	}))
	f.cfg = command.ChainConfig{
		Idempotency: command.StoreDeps(st),
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		Retry: command.RetryConfig{MaxAttempts: 3,
			Sleep: func(ctx context.Context, _ time.Duration) error { return ctx.Err() }},
	}
	return f
}

func (f *chainFixture) jobExists(t *testing.T, id string) bool {
	t.Helper()
	_, err := f.st.Jobs().Get(context.Background(), id)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		t.Fatal(err)
	}
	return err == nil
}

func (f *chainFixture) keyRecorded(t *testing.T, key string) bool {
	t.Helper()
	_, err := f.st.Idempotency().Get(context.Background(), key)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		t.Fatal(err)
	}
	return err == nil
}

// errRollback makes the caller's transaction roll back.
var errRollback = errors.New("caller rolls back")

func TestRetryRefusesContextWithTransaction(t *testing.T) {
	drivers(t, func(t *testing.T, st store.Store) {
		ctx := context.Background()
		var calls int
		next := command.DispatcherFunc(func(context.Context, command.Command) (any, error) {
			calls++
			return "ok", nil
		})
		d := command.Retry(command.RetryConfig{})(next)
		err := st.InTx(ctx, func(ctx context.Context) error {
			_, err := d.DispatchAny(ctx, echo{Text: "x"})
			return err
		})
		if !errors.Is(err, command.ErrRetryInTransaction) {
			t.Fatalf("Retry inside InTx: err = %v, want ErrRetryInTransaction", err)
		}
		if calls != 0 {
			t.Fatalf("Retry inside InTx called next %d times, want 0", calls)
		}
		// The same middleware outside a transaction dispatches.
		if res, err := d.DispatchAny(ctx, echo{Text: "x"}); err != nil || res != "ok" || calls != 1 {
			t.Fatalf("Retry outside a transaction: %v, %v, %d calls; want ok, nil, 1", res, err, calls)
		}
	})
}

func TestEdgeChainRetriesInFreshTransactions(t *testing.T) {
	drivers(t, func(t *testing.T, st store.Store) {
		f := newChainFixture(t, st)
		d := command.EdgeChain(f.bus, f.cfg)
		// The first attempt writes the job, then fails transiently: its transaction
		// rolls back, so the second attempt can write the same id in a new one (in the
		// first attempt's transaction it would conflict, or on PostgreSQL find it aborted).
		got, err := command.Dispatch[string](context.Background(), d, createJob{Key: "edge/1", JobID: "job-edge-1", FailFirst: true})
		if err != nil || got != "job-edge-1" {
			t.Fatalf("EdgeChain dispatch = %q, %v; want job-edge-1, nil", got, err)
		}
		if f.runs.Load() != 2 || !f.jobExists(t, "job-edge-1") || !f.keyRecorded(t, "edge/1") {
			t.Fatalf("runs %d, job exists %v, key recorded %v; want 2, true, true",
				f.runs.Load(), f.jobExists(t, "job-edge-1"), f.keyRecorded(t, "edge/1"))
		}
	})
}

func TestEdgeChainRefusedInsideTransaction(t *testing.T) {
	drivers(t, func(t *testing.T, st store.Store) {
		f := newChainFixture(t, st)
		d := command.EdgeChain(f.bus, f.cfg)
		err := st.InTx(context.Background(), func(ctx context.Context) error {
			_, err := command.Dispatch[string](ctx, d, createJob{Key: "edge/tx", JobID: "job-edge-tx"})
			return err
		})
		if !errors.Is(err, command.ErrRetryInTransaction) {
			t.Fatalf("EdgeChain inside InTx: err = %v, want ErrRetryInTransaction", err)
		}
		if f.runs.Load() != 0 || f.jobExists(t, "job-edge-tx") || f.keyRecorded(t, "edge/tx") {
			t.Fatalf("runs %d, job exists %v, key recorded %v; want nothing done",
				f.runs.Load(), f.jobExists(t, "job-edge-tx"), f.keyRecorded(t, "edge/tx"))
		}
	})
}

func TestInTxChainJoinsCallerTransaction(t *testing.T) {
	drivers(t, func(t *testing.T, st store.Store) {
		f := newChainFixture(t, st)
		d := command.InTxChain(f.bus, f.cfg)
		ctx := context.Background()
		// The caller rolls back after a successful dispatch: effect and key go with it.
		err := st.InTx(ctx, func(ctx context.Context) error {
			if _, err := command.Dispatch[string](ctx, d, createJob{Key: "intx/1", JobID: "job-intx-1"}); err != nil {
				return err
			}
			return errRollback
		})
		if !errors.Is(err, errRollback) {
			t.Fatalf("err = %v, want the caller's", err)
		}
		if f.jobExists(t, "job-intx-1") || f.keyRecorded(t, "intx/1") {
			t.Fatal("the caller rolled back, but the dispatch's effect or key committed")
		}
		// A transient failure is not retried: it reaches the caller, once.
		f.runs.Store(0)
		err = st.InTx(ctx, func(ctx context.Context) error {
			_, err := command.Dispatch[string](ctx, d, createJob{Key: "intx/2", JobID: "job-intx-2", FailFirst: true})
			return err
		})
		if !command.IsTransient(err) || f.runs.Load() != 1 {
			t.Fatalf("err = %v after %d runs; want the Transient error after 1 run", err, f.runs.Load())
		}
		// The caller's retry, in a new transaction, succeeds and commits both.
		err = st.InTx(ctx, func(ctx context.Context) error {
			_, err := command.Dispatch[string](ctx, d, createJob{Key: "intx/2", JobID: "job-intx-2", FailFirst: true})
			return err
		})
		if err != nil || !f.jobExists(t, "job-intx-2") || !f.keyRecorded(t, "intx/2") {
			t.Fatalf("caller's retry: err %v, job exists %v, key recorded %v", err, f.jobExists(t, "job-intx-2"), f.keyRecorded(t, "intx/2"))
		}
	})
}
