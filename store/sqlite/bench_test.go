package sqlite

import (
	"context"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/store"
)

// BenchmarkOutboxInsert measures outbox insert throughput with 8 concurrent writers, one
// row per transaction (InTx + Insert, as a command handler writes), with a Wakeups
// subscriber that counts the rows it can see after each wake-up, as a relay would look
// for work. It reports rows/s and fails if a wake-up was lost.
//
//	go test -run x -bench BenchmarkOutboxInsert -benchtime 3s ./store/sqlite/
//
// Sub-benchmarks: synchronous=NORMAL (the default: in WAL mode no fsync per commit) and
// synchronous=FULL (one fsync per commit).
func BenchmarkOutboxInsert(b *testing.B) {
	b.Run("normal", func(b *testing.B) { benchInsert(b, SyncNormal) })
	b.Run("full", func(b *testing.B) { benchInsert(b, SyncFull) })
}

func benchInsert(b *testing.B, sync string) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := newTestStore(b, WithSynchronous(sync))

	var seen atomic.Int64
	wake := s.Outbox().Wakeups(ctx)
	go func() {
		for range wake {
			var n int64
			if err := s.rdb.QueryRowContext(ctx, `SELECT count(*) FROM outbox`).Scan(&n); err == nil {
				seen.Store(n)
			}
			time.Sleep(10 * time.Millisecond) // a relay working in batches
		}
	}()

	var seq atomic.Int64
	b.SetParallelism(max(1, 8/runtime.GOMAXPROCS(0)))
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			key := "bench-" + strconv.FormatInt(seq.Add(1), 10)
			err := s.InTx(ctx, func(ctx context.Context) error {
				_, err := s.Outbox().Insert(ctx, &store.OutboxMessage{
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
