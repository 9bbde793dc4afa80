package outbox_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/internal/pgtest"
	"github.com/hodei-jobs/hodei/outbox"
	"github.com/hodei-jobs/hodei/store"
	"github.com/hodei-jobs/hodei/store/postgres"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// work is the test command.
type work struct {
	Key string `json:"key"`
	N   int    `json:"n"`
}

func (work) CommandType() string      { return "test.work" }
func (w work) IdempotencyKey() string { return w.Key }

// recorder is a CommandSink counting dispatches per idempotency key.
type recorder struct {
	mu     sync.Mutex
	counts map[string]int
	total  int
	fn     func(ctx context.Context, w work) error // optional behaviour
}

func newRecorder(fn func(ctx context.Context, w work) error) *recorder {
	return &recorder{counts: map[string]int{}, fn: fn}
}

func (r *recorder) DispatchEncoded(ctx context.Context, typ string, payload []byte) error {
	var w work
	if err := json.Unmarshal(payload, &w); err != nil {
		return outbox.Permanent(err)
	}
	if r.fn != nil {
		if err := r.fn(ctx, w); err != nil {
			return err
		}
	}
	r.mu.Lock()
	r.counts[w.Key]++
	r.total++
	r.mu.Unlock()
	return nil
}

func (r *recorder) Total() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.total
}

func (r *recorder) Count(key string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.counts[key]
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// runRelay starts r.Run and returns a stop function that cancels it and waits, failing
// the test if Run returned an error. stop is also registered as a cleanup.
func runRelay(t *testing.T, r *outbox.Relay) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("relay %s: Run: %v", r.ID(), err)
				}
			case <-time.After(15 * time.Second):
				t.Errorf("relay %s: Run did not return 15s after its context ended", r.ID())
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func newRelay(t *testing.T, st store.OutboxStore, sink outbox.CommandSink, pub outbox.EventPublisher, cfg outbox.Config) *outbox.Relay {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
	}
	r, err := outbox.NewRelay(st, sink, pub, cfg)
	if err != nil {
		t.Fatalf("NewRelay: %v", err)
	}
	return r
}

// eventually polls cond every 5ms until it holds or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func insertWork(t *testing.T, ctx context.Context, st store.OutboxStore, prefix string, n int) []int64 {
	t.Helper()
	var ids []int64
	for start := 0; start < n; start += 1000 {
		msgs := make([]*store.OutboxMessage, 0, 1000)
		for i := start; i < min(start+1000, n); i++ {
			key := fmt.Sprintf("%s-%d", prefix, i)
			p, _ := json.Marshal(work{Key: key, N: i})
			msgs = append(msgs, &store.OutboxMessage{Kind: store.KindCommand, Type: "test.work", IdempotencyKey: key, Payload: p})
		}
		got, err := st.Insert(ctx, msgs...)
		if err != nil {
			t.Fatalf("insert: %v", err)
		}
		ids = append(ids, got...)
	}
	return ids
}

// secondStore opens another Store (its own pool, its own listener) on st's database, so
// that wake-ups from its inserts reach st's relays only through PostgreSQL NOTIFY.
func secondStore(t *testing.T, st *postgres.Store) *postgres.Store {
	t.Helper()
	s2, err := postgres.Open(ctxT(t, 10*time.Second), st.Pool().Config().ConnString())
	if err != nil {
		t.Fatalf("open second store: %v", err)
	}
	t.Cleanup(s2.Close)
	return s2
}

// listeners counts this database's outbox listener connections that have run LISTEN.
func listeners(t *testing.T, st *postgres.Store) int {
	t.Helper()
	var n int
	err := st.Pool().QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
		WHERE application_name = $1 AND datname = current_database() AND query ILIKE 'LISTEN%'`,
		postgres.ListenerApplicationName).Scan(&n)
	if err != nil {
		t.Fatalf("count listeners: %v", err)
	}
	return n
}

func getRow(t *testing.T, st store.OutboxStore, id int64) *store.OutboxMessage {
	t.Helper()
	m, err := st.Get(context.Background(), id)
	if err != nil {
		t.Fatalf("get row %d: %v", id, err)
	}
	return m
}

func counts(t *testing.T, st store.OutboxStore) map[store.OutboxStatus]int {
	t.Helper()
	c, err := st.CountByStatus(context.Background())
	if err != nil {
		t.Fatalf("count: %v", err)
	}
	return c
}

var errBoom = errors.New("boom")
