package postgres_test

import (
	"bytes"
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/internal/pgtest"
	"github.com/hodei-jobs/hodei/store"
	"github.com/hodei-jobs/hodei/store/postgres"
	"github.com/hodei-jobs/hodei/store/storetest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return pgtest.NewStore(t) })
}

func TestMigrateIdempotentAndConcurrent(t *testing.T) {
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	migs, err := postgres.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	var all []string
	for _, m := range migs {
		all = append(all, m.Version)
	}
	if len(all) == 0 || all[0] != "0001_foundation" {
		t.Fatalf("migrations %v, want 0001_foundation first", all)
	}
	// Three migrators at once: exactly one applies each version.
	results := make(chan []string, 3)
	errs := make(chan error, 3)
	for range 3 {
		go func() {
			applied, err := postgres.Migrate(ctx, url)
			results <- applied
			errs <- err
		}()
	}
	var applied []string
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
		applied = append(applied, <-results...)
	}
	slices.Sort(applied)
	if !slices.Equal(applied, all) {
		t.Fatalf("concurrent migrators applied %v, want each of %v once", applied, all)
	}
	again, err := postgres.Migrate(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	if len(again) != 0 {
		t.Fatalf("second Migrate applied %v", again)
	}
	s, err := postgres.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var n int
	if err := s.Pool().QueryRow(ctx, `SELECT count(*) FROM schema_migrations`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != len(all) {
		t.Fatalf("schema_migrations has %d rows, want %d", n, len(all))
	}
}

func waitWake(t *testing.T, ch <-chan struct{}, within time.Duration, what string) {
	t.Helper()
	select {
	case _, ok := <-ch:
		if !ok {
			t.Fatalf("%s: wake-up channel closed", what)
		}
	case <-time.After(within):
		t.Fatalf("%s: no wake-up within %s", what, within)
	}
}

func drain(ch <-chan struct{}) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}

// openSecond opens another Store (another "process") on a's database.
func openSecond(t *testing.T, a *postgres.Store) *postgres.Store {
	t.Helper()
	b, err := postgres.Open(context.Background(), a.Pool().Config().ConnString())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

func insert(t *testing.T, s store.Store, key string) {
	t.Helper()
	if _, err := s.Outbox().Insert(context.Background(), &store.OutboxMessage{
		Kind: store.KindCommand, Type: "t", IdempotencyKey: key, Payload: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
}

// waitListening waits until n listener connections are in pg_stat_activity.
func waitListening(t *testing.T, s *postgres.Store, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var got int
		if err := s.Pool().QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
			WHERE application_name = $1 AND datname = current_database()`,
			postgres.ListenerApplicationName).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d listener connections, want %d", got, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestWakeupsAcrossStores(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	relaySide := pgtest.NewStore(t)
	writer := openSecond(t, relaySide)
	wake := relaySide.Outbox().Wakeups(ctx)
	waitListening(t, relaySide, 1)
	drain(wake)

	// A committed insert by the other Store reaches this one only through NOTIFY.
	if err := writer.InTx(ctx, func(ctx context.Context) error {
		_, err := writer.Outbox().Insert(ctx, &store.OutboxMessage{
			Kind: store.KindEvent, Type: "job.created", IdempotencyKey: "x", Payload: []byte(`{}`)})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	waitWake(t, wake, 2*time.Second, "insert committed by another Store")
}

func TestWakeupsListenerReconnects(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := &syncBuffer{}
	relaySide, err := postgres.Open(ctx, pgtest.NewStore(t).Pool().Config().ConnString(),
		postgres.WithListenerBackoffMax(100*time.Millisecond),
		postgres.WithLogger(slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))))
	if err != nil {
		t.Fatal(err)
	}
	defer relaySide.Close()
	writer := openSecond(t, relaySide)
	wake := relaySide.Outbox().Wakeups(ctx)
	waitListening(t, relaySide, 1)
	drain(wake)

	var killed int
	if err := writer.Pool().QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE application_name = $1 AND datname = current_database()`,
		postgres.ListenerApplicationName).Scan(&killed); err != nil {
		t.Fatal(err)
	}
	if killed != 1 {
		t.Fatalf("terminated %d listener connections, want 1", killed)
	}
	// After reconnecting the listener sends one wake-up on its own (rows may have
	// arrived while it was deaf).
	waitWake(t, wake, 5*time.Second, "reconnect")
	waitListening(t, relaySide, 1)
	drain(wake)
	insert(t, writer, "after-reconnect")
	waitWake(t, wake, 2*time.Second, "insert after reconnect")
	// The operator can see both in the log.
	for _, want := range []string{"outbox listener lost its connection", "outbox listener reconnected"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
}

// syncBuffer is a bytes.Buffer for a logger written from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestWakeupsEndWithStore(t *testing.T) {
	s := pgtest.NewStore(t)
	s2 := openSecond(t, s)
	wake := s2.Outbox().Wakeups(context.Background())
	s2.Close()
	select {
	case _, ok := <-wake:
		if ok {
			// a reconnect wake-up may be buffered; the close must follow
			if _, ok := <-wake; ok {
				t.Fatal("channel still open after Close")
			}
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wakeups channel not closed by Store.Close")
	}
}

func TestLocalWakeupWithoutNotify(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	base := pgtest.NewStore(t)
	s, err := postgres.Open(ctx, base.Pool().Config().ConnString(), postgres.DisableCommitNotify())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	wake := s.Outbox().Wakeups(ctx)
	drain(wake)
	insert(t, s, "local")
	waitWake(t, wake, time.Second, "in-process insert with NOTIFY disabled")
}
