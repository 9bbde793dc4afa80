package outbox_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/command"
	"github.com/hodei-jobs/hodei/internal/pgtest"
	"github.com/hodei-jobs/hodei/outbox"
	"github.com/hodei-jobs/hodei/store"
)

var errRollback = errors.New("roll back")

// The Decorator writes in the caller's transaction: a rollback leaves no row, a commit
// leaves one that the relay executes, and the same key twice is one row.
func TestDecoratorInTransaction(t *testing.T) {
	ctx := ctxT(t, 30*time.Second)
	st := pgtest.NewStore(t)
	dec, err := outbox.NewDecorator(st.Outbox(), outbox.DecoratorOptions{})
	if err != nil {
		t.Fatal(err)
	}

	err = st.InTx(ctx, func(ctx context.Context) error {
		if _, err := command.Dispatch[outbox.Enqueued](ctx, dec, work{Key: "rolled-back"}); err != nil {
			return err
		}
		return errRollback
	})
	if !errors.Is(err, errRollback) {
		t.Fatalf("InTx: %v", err)
	}
	if c := counts(t, st.Outbox()); c[store.OutboxPending] != 0 {
		t.Fatalf("rolled-back transaction left %d rows", c[store.OutboxPending])
	}

	var first, second outbox.Enqueued
	err = st.InTx(ctx, func(ctx context.Context) error {
		var err error
		if first, err = command.Dispatch[outbox.Enqueued](ctx, dec, work{Key: "committed", N: 7}); err != nil {
			return err
		}
		second, err = command.Dispatch[outbox.Enqueued](ctx, dec, work{Key: "committed", N: 8})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	again, err := command.Dispatch[outbox.Enqueued](ctx, dec, work{Key: "committed", N: 9})
	if err != nil {
		t.Fatal(err)
	}
	if first.ID == 0 || second.ID != first.ID || again.ID != first.ID {
		t.Fatalf("same key gave ids %d, %d, %d; want one row", first.ID, second.ID, again.ID)
	}
	if c := counts(t, st.Outbox()); c[store.OutboxPending] != 1 {
		t.Fatalf("%d pending rows, want 1", c[store.OutboxPending])
	}

	var got atomic.Int64
	bus := command.NewBus()
	command.Register(bus, command.HandlerFunc[work, int](func(_ context.Context, w work) (int, error) {
		got.Store(int64(w.N))
		return w.N, nil
	}))
	r := newRelay(t, st.Outbox(), outbox.BusSink{Bus: bus}, nil, outbox.Config{PollInterval: time.Minute})
	runRelay(t, r)
	eventually(t, 5*time.Second, "committed command executed", func() bool {
		return getRow(t, st.Outbox(), first.ID).Status == store.OutboxCompleted
	})
	if got.Load() != 7 {
		t.Fatalf("handler saw N=%d, want the first enqueued command (7)", got.Load())
	}

	if _, err := dec.DispatchAny(ctx, work{}); err == nil || !strings.Contains(err.Error(), "IdempotencyKey") {
		t.Fatalf("command without a key: err %v, want one naming IdempotencyKey", err)
	}
}

// A command whose handler failed is not remembered by the idempotency layer: after a
// failure (and a dead letter, then a requeue) the same key runs again and succeeds.
func TestFailedCommandRunsAgainWithSameKey(t *testing.T) {
	ctx := ctxT(t, 30*time.Second)
	st := pgtest.NewStore(t)
	bus := command.NewBus()
	var calls atomic.Int64
	command.Register(bus, command.HandlerFunc[work, string](func(_ context.Context, w work) (string, error) {
		if calls.Add(1) == 1 {
			return "", errBoom
		}
		return "done " + w.Key, nil
	}))
	dispatcher := command.EdgeChain(bus, command.ChainConfig{Idempotency: command.StoreDeps(st)}) // the relay's, as in server.Run
	dec, err := outbox.NewDecorator(st.Outbox(), outbox.DecoratorOptions{MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	enq, err := command.Dispatch[outbox.Enqueued](ctx, dec, work{Key: "same-key"})
	if err != nil {
		t.Fatal(err)
	}
	r := newRelay(t, st.Outbox(), outbox.BusSink{Bus: bus, Dispatcher: dispatcher}, nil,
		outbox.Config{PollInterval: 20 * time.Millisecond})
	runRelay(t, r)
	eventually(t, 5*time.Second, "failed command dead-lettered", func() bool {
		return getRow(t, st.Outbox(), enq.ID).Status == store.OutboxDeadLetter
	})
	if _, err := st.Idempotency().Get(ctx, "same-key"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("idempotency key of a failed command: %v, want ErrNotFound", err)
	}
	if err := outbox.Requeue(ctx, st.Outbox(), enq.ID); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "requeued command completed", func() bool {
		return getRow(t, st.Outbox(), enq.ID).Status == store.OutboxCompleted
	})
	if calls.Load() != 2 {
		t.Fatalf("handler ran %d times, want 2", calls.Load())
	}
	if res, err := st.Idempotency().Get(ctx, "same-key"); err != nil || string(res) != `"done same-key"` {
		t.Fatalf("idempotency record after success: %s, %v", res, err)
	}
	if err := outbox.Requeue(ctx, st.Outbox(), enq.ID); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("Requeue of a completed row: %v, want ErrConflict", err)
	}
}

func TestConfigValidate(t *testing.T) {
	st := pgtest.NewStore(t)
	sink := newRecorder(nil)
	for _, tc := range []struct {
		cfg   outbox.Config
		field string
	}{
		{outbox.Config{BatchSize: -1}, "BatchSize"},
		{outbox.Config{BatchSize: 20000}, "BatchSize"},
		{outbox.Config{Lease: time.Millisecond}, "Lease"},
		{outbox.Config{BaseBackoff: time.Minute, MaxBackoff: time.Second}, "MaxBackoff"},
		{outbox.Config{Jitter: 2}, "Jitter"},
		{outbox.Config{MaxAttempts: -3}, "MaxAttempts"},
		{outbox.Config{Concurrency: -1}, "Concurrency"},
	} {
		_, err := outbox.NewRelay(st.Outbox(), sink, nil, tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%+v: err %v, want one naming %s", tc.cfg, err, tc.field)
		}
	}
	if _, err := outbox.NewRelay(st.Outbox(), nil, nil, outbox.Config{}); err == nil {
		t.Error("nil CommandSink accepted")
	}
	if _, err := outbox.NewDecorator(st.Outbox(), outbox.DecoratorOptions{MaxAttempts: -1}); err == nil || !strings.Contains(err.Error(), "MaxAttempts") {
		t.Errorf("DecoratorOptions.MaxAttempts -1: %v", err)
	}
}
