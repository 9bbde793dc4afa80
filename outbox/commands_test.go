package outbox_test

import (
	"context"
	"encoding/json"
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
	payload, err := json.Marshal(work{Key: "same-key"})
	if err != nil {
		t.Fatal(err)
	}
	ids, err := st.Outbox().Insert(ctx, &store.OutboxMessage{Kind: store.KindCommand, Type: work{}.CommandType(),
		IdempotencyKey: "same-key", Payload: payload, MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	enq := struct{ ID int64 }{ids[0]}
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
}
