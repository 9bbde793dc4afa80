package outbox_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/command"
	"github.com/hodei-jobs/hodei/internal/pgtest"
	"github.com/hodei-jobs/hodei/outbox"
	"github.com/hodei-jobs/hodei/store"
)

// With the poll at one minute only a wake-up can dispatch a row within a second: first
// from an insert in this process, then from another Store (another pool and listener),
// whose wake-up can reach the relay only through PostgreSQL's NOTIFY.
func TestWakeupDispatchesWithinASecond(t *testing.T) {
	ctx := ctxT(t, 30*time.Second)
	st := pgtest.NewStore(t)
	other := secondStore(t, st)
	rec := newRecorder(nil)
	r := newRelay(t, st.Outbox(), rec, nil, outbox.Config{PollInterval: time.Minute})
	runRelay(t, r)
	eventually(t, 5*time.Second, "relay's listener connected", func() bool { return listeners(t, st) >= 1 })
	eventually(t, 5*time.Second, "relay's start-up claim done", func() bool { return r.Stats().Claims >= 1 })

	insertWork(t, ctx, st.Outbox(), "local", 1)
	eventually(t, time.Second, "row inserted in-process dispatched", func() bool { return rec.Count("local-0") == 1 })

	insertWork(t, ctx, other.Outbox(), "remote", 1)
	eventually(t, time.Second, "row inserted by another store dispatched (NOTIFY)", func() bool { return rec.Count("remote-0") == 1 })

	eventually(t, time.Second, "both rows marked COMPLETED", func() bool { return r.Stats().Completed == 2 })
	s := r.Stats()
	if s.Polls != 0 {
		t.Errorf("relay polled %d times with a one-minute poll", s.Polls)
	}
	if s.ClaimedOnWake != 2 {
		t.Errorf("stats %+v: want both rows claimed on wake-ups", s)
	}
}

// Killing the listener connection loses no row (the poll dispatches them) and the
// listener comes back: NOTIFY from another Store wakes the relay again.
func TestListenerKilledPollDeliversAndListenerReconnects(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	st := pgtest.NewStore(t)
	other := secondStore(t, st)
	rec := newRecorder(nil)
	r := newRelay(t, st.Outbox(), rec, nil, outbox.Config{PollInterval: 300 * time.Millisecond})
	runRelay(t, r)
	eventually(t, 5*time.Second, "listener connected", func() bool { return listeners(t, st) >= 1 })

	var killed int
	if err := st.Pool().QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE application_name = 'hodei-outbox-listener' AND datname = current_database()`).Scan(&killed); err != nil {
		t.Fatal(err)
	}
	if killed == 0 {
		t.Fatal("no listener connection to kill")
	}
	insertWork(t, ctx, other.Outbox(), "during", 200)
	eventually(t, 5*time.Second, "all 200 rows dispatched while the listener was down", func() bool { return rec.Total() == 200 })

	eventually(t, 10*time.Second, "listener reconnected", func() bool { return listeners(t, st) >= 1 })
	time.Sleep(100 * time.Millisecond) // let the reconnect's own wake-up be consumed
	before := r.Stats().Wakeups
	insertWork(t, ctx, other.Outbox(), "after", 1)
	eventually(t, 2*time.Second, "NOTIFY wakes the relay after the reconnect", func() bool { return r.Stats().Wakeups > before })
	eventually(t, 2*time.Second, "row after reconnect dispatched", func() bool { return rec.Count("after-0") == 1 })
	for i := range 200 {
		if n := rec.Count(fmt.Sprintf("during-%d", i)); n != 1 {
			t.Fatalf("row during-%d dispatched %d times", i, n)
		}
	}
}

// Four relays on one table of 10,000 rows dispatch every row exactly once.
func TestFourRelaysDispatchEveryRowOnce(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	st := pgtest.NewStore(t)
	const n = 10000
	insertWork(t, ctx, st.Outbox(), "row", n)
	rec := newRecorder(nil)
	relays := make([]*outbox.Relay, 4)
	for i := range relays {
		relays[i] = newRelay(t, st.Outbox(), rec, nil, outbox.Config{
			RelayID: fmt.Sprintf("relay-%d", i), BatchSize: 100, PollInterval: 20 * time.Millisecond,
		})
	}
	for _, r := range relays {
		runRelay(t, r)
	}
	eventually(t, 40*time.Second, "10,000 rows dispatched", func() bool { return rec.Total() >= n })
	eventually(t, 5*time.Second, "10,000 rows COMPLETED", func() bool { return counts(t, st.Outbox())[store.OutboxCompleted] == n })
	time.Sleep(50 * time.Millisecond)
	if got := rec.Total(); got != n {
		t.Fatalf("%d dispatches for %d rows", got, n)
	}
	for i := range n {
		if c := rec.Count(fmt.Sprintf("row-%d", i)); c != 1 {
			t.Fatalf("row-%d dispatched %d times", i, c)
		}
	}
	busy := 0
	for _, r := range relays {
		if r.Stats().Completed > 0 {
			busy++
		}
	}
	if busy < 2 {
		t.Errorf("only %d of 4 relays completed rows: the test did not exercise concurrent claims", busy)
	}
}

// A handler that always fails moves its row through RETRY, each time scheduled further
// out, to DEAD_LETTER with the last error.
func TestFailingHandlerRetriesWithGrowingBackoffThenDeadLetters(t *testing.T) {
	ctx := ctxT(t, 30*time.Second)
	st := pgtest.NewStore(t)
	calls := 0
	var failedAt []time.Time // when each attempt's handler failed
	rec := newRecorder(func(context.Context, work) error {
		calls++ // one row, dispatched by one relay: calls are sequential
		failedAt = append(failedAt, time.Now())
		return fmt.Errorf("attempt %d: %w", calls, errBoom)
	})
	r := newRelay(t, st.Outbox(), rec, nil, outbox.Config{
		PollInterval: 10 * time.Millisecond, BaseBackoff: 100 * time.Millisecond, MaxBackoff: time.Second,
		Jitter: -1, MaxAttempts: 4,
	})
	p, _ := json.Marshal(work{Key: "k"})
	ids, err := st.Outbox().Insert(ctx, &store.OutboxMessage{Kind: store.KindCommand, Type: "test.work",
		IdempotencyKey: "k", Payload: p, MaxAttempts: 4})
	if err != nil {
		t.Fatal(err)
	}
	runRelay(t, r)

	type seen struct {
		attempts  int
		scheduled time.Time
		updated   time.Time
	}
	var retries []seen
	var last *store.OutboxMessage
	deadline := time.Now().Add(10 * time.Second)
	for {
		m := getRow(t, st.Outbox(), ids[0])
		if m.Status == store.OutboxRetry && m.ClaimedBy == "" && (len(retries) == 0 || retries[len(retries)-1].attempts != m.Attempts) {
			retries = append(retries, seen{m.Attempts, m.ScheduledAt, m.UpdatedAt})
		}
		if m.Status == store.OutboxDeadLetter {
			last = m
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("row not dead-lettered in time; last state %s attempts %d", m.Status, m.Attempts)
		}
		time.Sleep(2 * time.Millisecond)
	}
	if len(retries) != 3 {
		t.Fatalf("saw %d RETRY states (%+v), want 3", len(retries), retries)
	}
	for i, s := range retries {
		if s.attempts != i+1 {
			t.Errorf("retry %d: attempts %d, want %d", i, s.attempts, i+1)
		}
		// The relay schedules the retry a backoff after it saw the failure: at least
		// want after the handler failed, and not much later (the slack is the relay's
		// own delay between the two, which a loaded machine stretches).
		want := 100 * time.Millisecond << i
		got := s.scheduled.Sub(failedAt[i])
		if got < want-time.Millisecond || got > want+150*time.Millisecond {
			t.Errorf("retry %d scheduled %s after the failure, want %s (+ the relay's delay)", i+1, got, want)
		}
		if i > 0 && !s.scheduled.After(retries[i-1].scheduled) {
			t.Errorf("scheduled_at did not grow: %s then %s", retries[i-1].scheduled, s.scheduled)
		}
	}
	if last.Attempts != 4 || !strings.Contains(last.LastError, "attempt 4: boom") {
		t.Errorf("dead letter: attempts %d, last error %q; want 4 and the 4th error", last.Attempts, last.LastError)
	}
	if calls != 4 {
		t.Errorf("handler called %d times, want 4", calls)
	}
	dl, err := outbox.ListDeadLetters(ctx, st.Outbox(), 10)
	if err != nil || len(dl) != 1 || dl[0].ID != ids[0] {
		t.Fatalf("ListDeadLetters = %v, %v; want the row", dl, err)
	}
}

// An unknown command type and an undecodable payload go straight to DEAD_LETTER.
func TestPermanentErrorsDeadLetterAtOnce(t *testing.T) {
	ctx := ctxT(t, 30*time.Second)
	st := pgtest.NewStore(t)
	bus := command.NewBus()
	command.Register(bus, command.HandlerFunc[work, string](func(context.Context, work) (string, error) { return "ok", nil }))
	r := newRelay(t, st.Outbox(), outbox.BusSink{Bus: bus}, nil, outbox.Config{PollInterval: 10 * time.Millisecond})
	ids, err := st.Outbox().Insert(ctx,
		&store.OutboxMessage{Kind: store.KindCommand, Type: "test.unknown", IdempotencyKey: "u", Payload: json.RawMessage(`{}`)},
		&store.OutboxMessage{Kind: store.KindCommand, Type: "test.work", IdempotencyKey: "bad", Payload: json.RawMessage(`{"n":"not a number"}`)},
		&store.OutboxMessage{Kind: store.KindCommand, Type: "test.work", IdempotencyKey: "good", Payload: json.RawMessage(`{"key":"good","n":1}`)},
	)
	if err != nil {
		t.Fatal(err)
	}
	runRelay(t, r)
	eventually(t, 5*time.Second, "rows settled", func() bool {
		c := counts(t, st.Outbox())
		return c[store.OutboxDeadLetter] == 2 && c[store.OutboxCompleted] == 1
	})
	for _, id := range ids[:2] {
		if m := getRow(t, st.Outbox(), id); m.Attempts != 1 || m.LastError == "" {
			t.Errorf("row %d (%s): attempts %d, error %q; want 1 attempt and an error", id, m.Type, m.Attempts, m.LastError)
		}
	}
	if m := getRow(t, st.Outbox(), ids[0]); !strings.Contains(m.LastError, "no handler") {
		t.Errorf("unknown type's error %q does not say no handler", m.LastError)
	}
}

// A relay killed while its handler is blocked leaves its rows leased; the reaper returns
// them once the lease expires and another relay completes them.
func TestRelayKilledMidBatchRowsReapedAndCompletedElsewhere(t *testing.T) {
	ctx := ctxT(t, 30*time.Second)
	st := pgtest.NewStore(t)
	stuck := make(chan struct{})
	entered := make(chan struct{}, 10)
	t.Cleanup(func() { close(stuck) })
	blocked := newRecorder(func(context.Context, work) error {
		entered <- struct{}{}
		<-stuck // a handler that ignores its context
		return nil
	})
	a := newRelay(t, st.Outbox(), blocked, nil, outbox.Config{
		RelayID: "relay-a", Lease: 500 * time.Millisecond, ShutdownTimeout: 50 * time.Millisecond,
		PollInterval: 10 * time.Millisecond, ReapInterval: time.Hour,
	})
	ids := insertWork(t, ctx, st.Outbox(), "k", 5)
	stopA := runRelay(t, a)
	<-entered
	began := time.Now()
	stopA()
	if d := time.Since(began); d > 2*time.Second {
		t.Fatalf("Run took %s to return after cancel with ShutdownTimeout 50ms", d)
	}
	for _, id := range ids {
		if m := getRow(t, st.Outbox(), id); m.ClaimedBy != "relay-a" || m.Status != store.OutboxPending {
			t.Fatalf("row %d after the kill: status %s claimed by %q; want PENDING leased by relay-a", id, m.Status, m.ClaimedBy)
		}
	}
	if s := a.Stats(); s.Abandoned != 5 || s.Completed != 0 {
		t.Fatalf("relay-a stats %+v: want 5 abandoned, 0 completed", s)
	}

	rec := newRecorder(nil)
	b := newRelay(t, st.Outbox(), rec, nil, outbox.Config{
		RelayID: "relay-b", PollInterval: 20 * time.Millisecond, ReapInterval: 50 * time.Millisecond,
	})
	runRelay(t, b)
	eventually(t, 5*time.Second, "relay-b completed the 5 rows", func() bool { return counts(t, st.Outbox())[store.OutboxCompleted] == 5 })
	if b.Stats().Reaped != 5 {
		t.Errorf("relay-b reaped %d rows, want 5", b.Stats().Reaped)
	}
	for _, id := range ids {
		if m := getRow(t, st.Outbox(), id); m.Attempts != 2 {
			t.Errorf("row %d: attempts %d, want 2 (the abandoned claim counts)", id, m.Attempts)
		}
	}
	if rec.Total() != 5 {
		t.Errorf("relay-b dispatched %d rows, want 5", rec.Total())
	}
}

// A relay restarted with its id (ReleaseOnStart) takes back at once the rows its dead
// previous run had leased for an hour, without waiting for the lease or a reaper.
func TestRestartedRelayReleasesItsLeases(t *testing.T) {
	ctx := ctxT(t, 30*time.Second)
	st := pgtest.NewStore(t)
	insertWork(t, ctx, st.Outbox(), "k", 7)
	if claimed, err := st.Outbox().Claim(ctx, "stable-relay", 7, time.Hour); err != nil || len(claimed) != 7 {
		t.Fatalf("claim: %d rows, %v", len(claimed), err)
	}
	rec := newRecorder(nil)
	r := newRelay(t, st.Outbox(), rec, nil, outbox.Config{RelayID: "stable-relay", ReleaseOnStart: true,
		PollInterval: 20 * time.Millisecond, ReapInterval: time.Hour})
	runRelay(t, r)
	eventually(t, 5*time.Second, "the restarted relay completed its old rows", func() bool {
		return counts(t, st.Outbox())[store.OutboxCompleted] == 7
	})
	if rec.Total() != 7 {
		t.Errorf("dispatched %d rows, want 7", rec.Total())
	}
}

// A claim whose relay never settles (the process died) expires; the reaper of a live
// relay returns the rows and that relay completes them.
func TestLeaseOfDeadRelayExpires(t *testing.T) {
	ctx := ctxT(t, 30*time.Second)
	st := pgtest.NewStore(t)
	insertWork(t, ctx, st.Outbox(), "k", 20)
	claimed, err := st.Outbox().Claim(ctx, "dead-relay", 20, 300*time.Millisecond)
	if err != nil || len(claimed) != 20 {
		t.Fatalf("claim: %d rows, %v", len(claimed), err)
	}
	rec := newRecorder(nil)
	r := newRelay(t, st.Outbox(), rec, nil, outbox.Config{PollInterval: 20 * time.Millisecond, ReapInterval: 50 * time.Millisecond})
	runRelay(t, r)
	time.Sleep(150 * time.Millisecond)
	if rec.Total() != 0 {
		t.Fatalf("rows leased by another relay were dispatched before the lease expired")
	}
	eventually(t, 5*time.Second, "rows completed after the lease expired", func() bool { return rec.Total() == 20 })
}

// Stopping a relay lets its in-flight batch finish and be marked before Run returns.
func TestGracefulStopFinishesInFlightBatch(t *testing.T) {
	ctx := ctxT(t, 30*time.Second)
	st := pgtest.NewStore(t)
	entered := make(chan struct{}, 10)
	release := make(chan struct{})
	rec := newRecorder(func(ctx context.Context, w work) error {
		entered <- struct{}{}
		<-release
		return nil
	})
	r := newRelay(t, st.Outbox(), rec, nil, outbox.Config{PollInterval: 10 * time.Millisecond, ShutdownTimeout: 10 * time.Second})
	insertWork(t, ctx, st.Outbox(), "k", 3)
	stop := runRelay(t, r)
	<-entered
	go func() {
		time.Sleep(100 * time.Millisecond) // stop is already waiting for Run
		close(release)
	}()
	stop()
	if c := counts(t, st.Outbox()); c[store.OutboxCompleted] != 3 {
		t.Fatalf("after a graceful stop %d rows COMPLETED, want 3 (counts %v)", c[store.OutboxCompleted], c)
	}
}
