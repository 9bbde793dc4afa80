package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/store"
)

func cmdMsg(key string) *store.OutboxMessage {
	return &store.OutboxMessage{Kind: store.KindCommand, Type: "job.create", IdempotencyKey: key,
		Payload: json.RawMessage(`{"key":"` + key + `"}`)}
}

func insertN(t *testing.T, s store.Store, prefix string, n int) []int64 {
	t.Helper()
	msgs := make([]*store.OutboxMessage, n)
	for i := range msgs {
		msgs[i] = cmdMsg(fmt.Sprintf("%s-%d", prefix, i))
	}
	ids, err := s.Outbox().Insert(context.Background(), msgs...)
	must(t, err)
	return ids
}

func msgIDs(ms []*store.OutboxMessage) []int64 {
	out := make([]int64, len(ms))
	for i, m := range ms {
		out[i] = m.ID
	}
	return out
}

func getMsg(t *testing.T, s store.Store, id int64) *store.OutboxMessage {
	t.Helper()
	m, err := s.Outbox().Get(context.Background(), id)
	must(t, err)
	return m
}

func testOutbox(t *testing.T, newStore func(t *testing.T) store.Store) {
	t.Run("InsertDefaults", func(t *testing.T) {
		ctx, s := ctxT(t), newStore(t)
		before := time.Now().Add(-time.Second)
		m := &store.OutboxMessage{Kind: store.KindEvent, Type: "job.created", IdempotencyKey: "k1",
			Payload: json.RawMessage(`{"a": [1, 2], "b": "x"}`), TraceContext: map[string]string{"traceparent": "00-abc-def-01"}}
		ids, err := s.Outbox().Insert(ctx, m)
		must(t, err)
		if len(ids) != 1 || ids[0] <= 0 {
			t.Fatalf("ids %v", ids)
		}
		got := getMsg(t, s, ids[0])
		if got.Kind != store.KindEvent || got.Type != "job.created" || got.IdempotencyKey != "k1" ||
			got.Status != store.OutboxPending || got.Attempts != 0 || got.MaxAttempts != 5 ||
			got.ClaimedBy != "" || !got.ClaimExpiresAt.IsZero() || got.LastError != "" {
			t.Fatalf("new row %+v", got)
		}
		jsonEqual(t, got.Payload, m.Payload)
		if got.TraceContext["traceparent"] != "00-abc-def-01" {
			t.Fatalf("trace context %v", got.TraceContext)
		}
		if got.ScheduledAt.Before(before) || got.ScheduledAt.After(time.Now().Add(time.Second)) {
			t.Fatalf("scheduled_at %v is not now", got.ScheduledAt)
		}
		_, err = s.Outbox().Get(ctx, 999999)
		wantErr(t, err, store.ErrNotFound)
		if _, err := s.Outbox().Insert(ctx, &store.OutboxMessage{Kind: "bogus", Type: "t", IdempotencyKey: "k"}); err == nil {
			t.Fatal("unknown Kind accepted")
		}
		if _, err := s.Outbox().Insert(ctx, &store.OutboxMessage{Kind: store.KindCommand, Type: "t"}); err == nil {
			t.Fatal("empty IdempotencyKey accepted")
		}
	})

	t.Run("InsertDedupe", func(t *testing.T) {
		ctx, s := ctxT(t), newStore(t)
		first, err := s.Outbox().Insert(ctx, cmdMsg("a"))
		must(t, err)
		m := cmdMsg("a")
		m.Payload = json.RawMessage(`{"second":true}`)
		ids, err := s.Outbox().Insert(ctx, cmdMsg("b"), m, cmdMsg("c"), cmdMsg("b"))
		must(t, err)
		if len(ids) != 4 || ids[1] != first[0] || ids[0] != ids[3] || ids[0] == ids[2] || ids[0] == first[0] {
			t.Fatalf("ids %v (first a = %d): want input order, existing keys' ids reused", ids, first[0])
		}
		jsonEqual(t, getMsg(t, s, first[0]).Payload, []byte(`{"key":"a"}`)) // first row kept
		counts, err := s.Outbox().CountByStatus(ctx)
		must(t, err)
		if counts[store.OutboxPending] != 3 {
			t.Fatalf("pending rows %d, want 3 (a, b, c)", counts[store.OutboxPending])
		}
	})

	t.Run("InsertRollback", func(t *testing.T) {
		ctx, s := ctxT(t), newStore(t)
		var id int64
		err := s.InTx(ctx, func(ctx context.Context) error {
			ids, err := s.Outbox().Insert(ctx, cmdMsg("x"))
			must(t, err)
			id = ids[0]
			return errBoom
		})
		wantErr(t, err, errBoom)
		_, err = s.Outbox().Get(ctx, id)
		wantErr(t, err, store.ErrNotFound)
		ids, err := s.Outbox().Insert(ctx, cmdMsg("x")) // key free again
		must(t, err)
		if ids[0] == id {
			t.Fatalf("rolled-back id %d reused", id)
		}
	})

	t.Run("Claim", func(t *testing.T) {
		ctx, s := ctxT(t), newStore(t)
		ids := insertN(t, s, "m", 5)
		future := cmdMsg("future")
		future.ScheduledAt = time.Now().Add(time.Hour)
		_, err := s.Outbox().Insert(ctx, future)
		must(t, err)

		got, err := s.Outbox().Claim(ctx, "r1", 3, time.Minute)
		must(t, err)
		if !slices.Equal(msgIDs(got), ids[:3]) {
			t.Fatalf("claimed %v, want the oldest three %v", msgIDs(got), ids[:3])
		}
		for _, m := range got {
			if m.ClaimedBy != "r1" || m.Attempts != 1 || time.Until(m.ClaimExpiresAt) < 50*time.Second {
				t.Fatalf("claimed row %+v", m)
			}
		}
		got, err = s.Outbox().Claim(ctx, "r2", 10, time.Minute)
		must(t, err)
		if !slices.Equal(msgIDs(got), ids[3:]) {
			t.Fatalf("second claim %v, want %v (not leased, not future)", msgIDs(got), ids[3:])
		}
		got, err = s.Outbox().Claim(ctx, "r3", 10, time.Minute)
		must(t, err)
		if len(got) != 0 {
			t.Fatalf("third claim returned %v", msgIDs(got))
		}
		if _, err := s.Outbox().Claim(ctx, "r", 0, time.Minute); err == nil {
			t.Fatal("limit 0 accepted")
		}
		if _, err := s.Outbox().Claim(ctx, "r", 1, 0); err == nil {
			t.Fatal("lease 0 accepted")
		}
	})

	t.Run("ClaimExclusive", func(t *testing.T) {
		_, s := ctxT(t), newStore(t)
		const n, claimers = 1000, 4
		insertN(t, s, "c", n)
		var (
			wg   sync.WaitGroup
			mu   sync.Mutex
			seen = map[int64]string{}
			dup  []string
		)
		for c := range claimers {
			relay := fmt.Sprintf("relay-%d", c)
			wg.Go(func() {
				for {
					got, err := s.Outbox().Claim(context.Background(), relay, 17, time.Minute)
					if err != nil {
						t.Error(err)
						return
					}
					if len(got) == 0 {
						return
					}
					mu.Lock()
					for _, m := range got {
						if prev, ok := seen[m.ID]; ok {
							dup = append(dup, fmt.Sprintf("%d by %s and %s", m.ID, prev, relay))
						}
						seen[m.ID] = relay
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if len(dup) > 0 {
			t.Fatalf("rows claimed twice: %v", dup)
		}
		if len(seen) != n {
			t.Fatalf("claimed %d distinct rows, want %d", len(seen), n)
		}
	})

	t.Run("Complete", func(t *testing.T) {
		ctx, s := ctxT(t), newStore(t)
		ids := insertN(t, s, "m", 3)
		_, err := s.Outbox().Claim(ctx, "r1", 3, time.Minute)
		must(t, err)
		n, err := s.Outbox().Complete(ctx, "intruder", ids...)
		must(t, err)
		if n != 0 {
			t.Fatalf("another relay completed %d rows", n)
		}
		n, err = s.Outbox().Complete(ctx, "r1", ids[0], ids[1])
		must(t, err)
		if n != 2 {
			t.Fatalf("completed %d rows, want 2", n)
		}
		m := getMsg(t, s, ids[0])
		if m.Status != store.OutboxCompleted || m.ClaimedBy != "" {
			t.Fatalf("completed row %+v", m)
		}
		n, err = s.Outbox().Complete(ctx, "r1", ids[0])
		must(t, err)
		if n != 0 {
			t.Fatal("a completed row was completed again")
		}
		if getMsg(t, s, ids[2]).Status != store.OutboxPending {
			t.Fatal("uncompleted row changed status")
		}
	})

	t.Run("RetryDeadLetterRequeue", func(t *testing.T) {
		ctx, s := ctxT(t), newStore(t)
		id := insertN(t, s, "m", 1)[0]
		claim := func(want int) {
			t.Helper()
			got, err := s.Outbox().Claim(ctx, "r", 10, time.Minute)
			must(t, err)
			if len(got) != want {
				t.Fatalf("claimed %d rows, want %d", len(got), want)
			}
		}
		claim(1)
		wantErr(t, s.Outbox().Fail(ctx, "other", id, "nope", time.Now(), false), store.ErrConflict)
		wantErr(t, s.Outbox().Fail(ctx, "r", 424242, "nope", time.Now(), false), store.ErrNotFound)
		retryAt := time.Now().Add(time.Hour)
		must(t, s.Outbox().Fail(ctx, "r", id, "first failure", retryAt, false))
		m := getMsg(t, s, id)
		if m.Status != store.OutboxRetry || m.LastError != "first failure" || m.ClaimedBy != "" ||
			m.ScheduledAt.Sub(retryAt).Abs() > time.Millisecond || m.Attempts != 1 {
			t.Fatalf("after retry: %+v", m)
		}
		claim(0) // not due for an hour
		// Only dead letters can be requeued.
		wantErr(t, s.Outbox().Requeue(ctx, id), store.ErrConflict)
		wantErr(t, s.Outbox().Requeue(ctx, 424242), store.ErrNotFound)

		id2 := insertN(t, s, "n", 1)[0]
		claim(1)
		must(t, s.Outbox().Fail(ctx, "r", id2, "again", time.Now().Add(-time.Second), false))
		claim(1) // due again at once
		if m := getMsg(t, s, id2); m.Attempts != 2 || m.Status != store.OutboxRetry {
			t.Fatalf("re-claimed retry row %+v", m)
		}
		must(t, s.Outbox().Fail(ctx, "r", id2, "fatal", time.Time{}, true))
		m = getMsg(t, s, id2)
		if m.Status != store.OutboxDeadLetter || m.LastError != "fatal" || m.ClaimedBy != "" {
			t.Fatalf("dead letter %+v", m)
		}
		claim(0)
		dead, err := s.Outbox().ListByStatus(ctx, store.OutboxDeadLetter, 10)
		must(t, err)
		if !slices.Equal(msgIDs(dead), []int64{id2}) {
			t.Fatalf("dead letters %v, want [%d]", msgIDs(dead), id2)
		}
		must(t, s.Outbox().Requeue(ctx, id2))
		m = getMsg(t, s, id2)
		if m.Status != store.OutboxPending || m.Attempts != 0 || m.ScheduledAt.After(time.Now().Add(time.Second)) {
			t.Fatalf("requeued %+v", m)
		}
		claim(1)
		counts, err := s.Outbox().CountByStatus(ctx)
		must(t, err)
		want := map[store.OutboxStatus]int{store.OutboxPending: 1, store.OutboxRetry: 1}
		for _, st := range []store.OutboxStatus{store.OutboxPending, store.OutboxRetry, store.OutboxCompleted,
			store.OutboxDeadLetter, store.OutboxCancelled} {
			if counts[st] != want[st] {
				t.Errorf("count %s = %d, want %d", st, counts[st], want[st])
			}
		}
	})

	t.Run("ReleaseClaims", func(t *testing.T) {
		ctx, s := ctxT(t), newStore(t)
		ids := insertN(t, s, "rc", 5)
		_, err := s.Outbox().Claim(ctx, "restarted", 2, time.Hour)
		must(t, err)
		_, err = s.Outbox().Claim(ctx, "other", 2, time.Hour)
		must(t, err)
		done, err := s.Outbox().Claim(ctx, "restarted", 1, time.Hour)
		must(t, err)
		if n, err := s.Outbox().Complete(ctx, "restarted", done[0].ID); err != nil || n != 1 {
			t.Fatalf("complete: %d, %v", n, err)
		}
		if _, err := s.Outbox().ReleaseClaims(ctx, ""); err == nil || !strings.Contains(err.Error(), "relayID is empty") {
			t.Fatalf("ReleaseClaims(\"\") = %v, want an error naming relayID", err)
		}
		n, err := s.Outbox().ReleaseClaims(ctx, "restarted")
		must(t, err)
		if n != 2 {
			t.Fatalf("released %d leases, want the 2 unexpired ones of the relay (not its completed row, not another relay's)", n)
		}
		got, err := s.Outbox().Claim(ctx, "again", 10, time.Minute)
		must(t, err)
		if !slices.Equal(msgIDs(got), ids[:2]) {
			t.Fatalf("claimable after the release: %v, want %v", msgIDs(got), ids[:2])
		}
		if m, err := s.Outbox().Get(ctx, ids[4]); err != nil || m.Status != store.OutboxCompleted {
			t.Fatalf("completed row after the release: %+v, %v", m, err)
		}
	})

	t.Run("PruneFinished", func(t *testing.T) {
		ctx, s := ctxT(t), newStore(t)
		ids := insertN(t, s, "pr", 6)
		// ids[0..2] COMPLETED, ids[3] DEAD_LETTER, ids[4] RETRY, ids[5] PENDING.
		got, err := s.Outbox().Claim(ctx, "r", 5, time.Hour)
		must(t, err)
		if len(got) != 5 {
			t.Fatalf("claimed %d", len(got))
		}
		if n, err := s.Outbox().Complete(ctx, "r", ids[:3]...); err != nil || n != 3 {
			t.Fatalf("complete: %d, %v", n, err)
		}
		must(t, s.Outbox().Fail(ctx, "r", ids[3], "boom", time.Now(), true))
		must(t, s.Outbox().Fail(ctx, "r", ids[4], "later", time.Now().Add(time.Hour), false))
		if _, err := s.Outbox().PruneFinished(ctx, time.Now(), 0, false); err == nil || !strings.Contains(err.Error(), "limit 0") {
			t.Fatalf("PruneFinished limit 0 = %v, want an error naming the limit", err)
		}
		// Nothing is older than an hour ago.
		if n, err := s.Outbox().PruneFinished(ctx, time.Now().Add(-time.Hour), 100, false); err != nil || n != 0 {
			t.Fatalf("prune before an hour ago: %d, %v; want 0", n, err)
		}
		later := time.Now().Add(time.Second)
		if n, err := s.Outbox().PruneFinished(ctx, later, 100, true); err != nil || n != 3 {
			t.Fatalf("dry run: %d, %v; want 3", n, err)
		}
		if n, err := s.Outbox().PruneFinished(ctx, later, 2, false); err != nil || n != 2 {
			t.Fatalf("prune batch of 2: %d, %v", n, err)
		}
		if n, err := s.Outbox().PruneFinished(ctx, later, 100, false); err != nil || n != 1 {
			t.Fatalf("second batch: %d, %v; want 1", n, err)
		}
		for i, id := range ids {
			_, err := s.Outbox().Get(ctx, id)
			if gone := errors.Is(err, store.ErrNotFound); gone != (i < 3) {
				t.Errorf("row %d (index %d): gone %v, err %v", id, i, gone, err)
			}
		}
	})

	t.Run("Reaper", func(t *testing.T) {
		ctx, s := ctxT(t), newStore(t)
		ids := insertN(t, s, "m", 4)
		_, err := s.Outbox().Claim(ctx, "dead-relay", 2, 100*time.Millisecond)
		must(t, err)
		_, err = s.Outbox().Claim(ctx, "live-relay", 2, time.Hour)
		must(t, err)
		n, err := s.Outbox().ReapExpired(ctx)
		must(t, err)
		if n != 0 {
			t.Fatalf("reaped %d unexpired leases", n)
		}
		time.Sleep(250 * time.Millisecond)
		n, err = s.Outbox().ReapExpired(ctx)
		must(t, err)
		if n != 2 {
			t.Fatalf("reaped %d, want 2", n)
		}
		got, err := s.Outbox().Claim(ctx, "rescuer", 10, time.Minute)
		must(t, err)
		if !slices.Equal(msgIDs(got), ids[:2]) {
			t.Fatalf("rescuer claimed %v, want %v", msgIDs(got), ids[:2])
		}
		if got[0].Attempts != 2 {
			t.Fatalf("attempts after reap and re-claim %d, want 2", got[0].Attempts)
		}
		n, err = s.Outbox().Complete(ctx, "dead-relay", ids[:2]...)
		must(t, err)
		if n != 0 {
			t.Fatal("the relay whose lease was reaped completed rows")
		}
		n, err = s.Outbox().Complete(ctx, "rescuer", ids[:2]...)
		must(t, err)
		if n != 2 {
			t.Fatalf("rescuer completed %d", n)
		}
	})

	t.Run("ListByStatus", func(t *testing.T) {
		ctx, s := ctxT(t), newStore(t)
		ids := insertN(t, s, "m", 5)
		got, err := s.Outbox().ListByStatus(ctx, store.OutboxPending, 3)
		must(t, err)
		if !slices.Equal(msgIDs(got), ids[:3]) {
			t.Fatalf("pending page %v, want %v", msgIDs(got), ids[:3])
		}
		got, err = s.Outbox().ListByStatus(ctx, store.OutboxCompleted, 3)
		must(t, err)
		if len(got) != 0 {
			t.Fatalf("completed rows %v", msgIDs(got))
		}
	})

	t.Run("WakeupsAfterCommitOnly", func(t *testing.T) {
		ctx, s := ctxT(t), newStore(t)
		wctx, cancel := context.WithCancel(ctx)
		wake := s.Outbox().Wakeups(wctx)
		_ = s.InTx(ctx, func(ctx context.Context) error {
			_, err := s.Outbox().Insert(ctx, cmdMsg("rolled-back"))
			must(t, err)
			return errBoom
		})
		select {
		case <-wake:
			t.Fatal("woken by a rolled-back insert")
		case <-time.After(200 * time.Millisecond):
		}
		must(t, s.InTx(ctx, func(ctx context.Context) error {
			_, err := s.Outbox().Insert(ctx, cmdMsg("committed"))
			must(t, err)
			select {
			case <-wake:
				t.Error("woken before commit")
			case <-time.After(100 * time.Millisecond):
			}
			return nil
		}))
		select {
		case <-wake:
		case <-time.After(5 * time.Second):
			t.Fatal("no wake-up after a committed insert")
		}
		cancel()
		deadline := time.After(5 * time.Second)
		for {
			select {
			case _, ok := <-wake:
				if !ok {
					return
				}
			case <-deadline:
				t.Fatal("Wakeups channel not closed after ctx ended")
			}
		}
	})
}
