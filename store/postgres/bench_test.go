package postgres_test

import (
	"context"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/internal/pgtest"
	"github.com/hodei-jobs/hodei/store"
	"github.com/hodei-jobs/hodei/store/postgres"
)

// BenchmarkOutboxInsert measures outbox insert throughput with 8 concurrent writers, one
// row per transaction, with a relay-side Store listening, for two wake-up designs:
//
//   - coalesced: the driver's after-commit NOTIFY, at most one per millisecond, sent
//     outside the writers' transactions;
//   - trigger: a per-row AFTER INSERT trigger calling pg_notify (created only in this
//     benchmark's database), after-commit NOTIFY disabled.
//
// It reports rows/s and fails if a wake-up was lost: the relay side counts the rows it
// sees after each wake-up and must end up seeing all of them.
//
// The throwaway test cluster runs with fsync and synchronous_commit off, which hides most
// of the trigger's cost (NOTIFY holds a cluster-wide lock until the commit record is
// flushed, so it defeats group commit). For figures that mean something, point it at a
// server with default durability:
//
//	HODEI_TEST_DATABASE_URL=postgres://… go test -run x -bench BenchmarkOutboxInsert -count 3 ./store/postgres/
//
//	go test -run x -bench BenchmarkOutboxInsert -count 3 ./store/postgres/
func BenchmarkOutboxInsert(b *testing.B) {
	b.Run("coalesced", func(b *testing.B) { benchInsert(b, false) })
	b.Run("trigger", func(b *testing.B) { benchInsert(b, true) })
}

const perRowTrigger = `
CREATE FUNCTION bench_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	PERFORM pg_notify('hodei_outbox', NEW.id::text);
	RETURN NEW;
END $$;
CREATE TRIGGER bench_outbox_notify AFTER INSERT ON outbox
	FOR EACH ROW EXECUTE FUNCTION bench_outbox_notify();`

func benchInsert(b *testing.B, trigger bool) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	base := pgtest.NewStore(b)
	url := base.Pool().Config().ConnString()
	opts := []postgres.Option{postgres.WithMaxConns(12)}
	if trigger {
		if _, err := base.Pool().Exec(ctx, perRowTrigger); err != nil {
			b.Fatal(err)
		}
		opts = append(opts, postgres.DisableCommitNotify())
	}
	writer, err := postgres.Open(ctx, url, opts...)
	if err != nil {
		b.Fatal(err)
	}
	defer writer.Close()
	relay, err := postgres.Open(ctx, url)
	if err != nil {
		b.Fatal(err)
	}
	defer relay.Close()

	// The relay side counts the rows it can see after every wake-up, as a relay would
	// look for work. If no wake-up is lost, its last count sees every committed row.
	var seen atomic.Int64
	wake := relay.Outbox().Wakeups(ctx)
	go func() {
		for range wake {
			var n int64
			if err := relay.Pool().QueryRow(ctx, `SELECT count(*) FROM outbox`).Scan(&n); err == nil {
				seen.Store(n)
			}
			// Like a relay working in batches; wake-ups meanwhile wait in the channel.
			time.Sleep(10 * time.Millisecond)
		}
	}()
	waitListener(b, relay)

	var seq atomic.Int64
	b.SetParallelism(max(1, 8/runtime.GOMAXPROCS(0)))
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			key := "bench-" + strconv.FormatInt(seq.Add(1), 10)
			err := writer.InTx(ctx, func(ctx context.Context) error {
				_, err := writer.Outbox().Insert(ctx, &store.OutboxMessage{
					Kind: store.KindCommand, Type: "bench.noop", IdempotencyKey: key,
					Payload: []byte(`{"n":1}`)})
				return err
			})
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "rows/s")

	deadline := time.Now().Add(5 * time.Second)
	for seen.Load() != int64(b.N) {
		if time.Now().After(deadline) {
			b.Fatalf("lost wake-up: the relay side last saw %d rows of %d", seen.Load(), b.N)
		}
		time.Sleep(time.Millisecond)
	}
}

func waitListener(b *testing.B, s *postgres.Store) {
	b.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var n int
		if err := s.Pool().QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
			WHERE application_name = $1 AND datname = current_database()`,
			postgres.ListenerApplicationName).Scan(&n); err != nil {
			b.Fatal(err)
		}
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			b.Fatal("listener did not connect")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
