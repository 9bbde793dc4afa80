// Package bench holds the benchmarks behind `hodei bench`: each one drives real
// components against a real PostgreSQL and reports figures a user can compare with a
// peer system measured on the same server.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/hodei-jobs/hodei/outbox"
	"github.com/hodei-jobs/hodei/store"
	"github.com/hodei-jobs/hodei/store/postgres"
)

// OutboxConfig configures RunOutbox.
type OutboxConfig struct {
	// DatabaseURL is the PostgreSQL database to use. Its outbox table is TRUNCATED.
	DatabaseURL string
	// Messages pre-inserted for the burn-down phase (default 100,000).
	Messages int
	// Rate of single-row inserts per second in the latency phase (default 500).
	Rate int
	// Duration of the latency phase (default 10s).
	Duration time.Duration
	// Relays running on the table (default 4).
	Relays int
	// BatchSize of each claim (default 1000).
	BatchSize int
	// Concurrency of command dispatch within a batch (default 1: the handler is a no-op,
	// so dispatching inline is cheapest).
	Concurrency int
	// Log receives progress lines (nil: none).
	Log io.Writer
}

func (c *OutboxConfig) setDefaults() {
	if c.Messages == 0 {
		c.Messages = 100000
	}
	if c.Rate == 0 {
		c.Rate = 500
	}
	if c.Duration == 0 {
		c.Duration = 10 * time.Second
	}
	if c.Relays == 0 {
		c.Relays = 4
	}
	if c.BatchSize == 0 {
		c.BatchSize = 1000
	}
	if c.Concurrency == 0 {
		c.Concurrency = 1
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
}

// Validate reports the first invalid field.
func (c *OutboxConfig) Validate() error {
	switch {
	case c.DatabaseURL == "":
		return errors.New("bench outbox: DatabaseURL is empty")
	case c.Messages < 1 || c.Messages > 100_000_000:
		return fmt.Errorf("bench outbox: Messages %d out of range [1, 100000000]", c.Messages)
	case c.Rate < 1 || c.Rate > 100_000:
		return fmt.Errorf("bench outbox: Rate %d out of range [1, 100000]", c.Rate)
	case c.Duration < 100*time.Millisecond || c.Duration > time.Hour:
		return fmt.Errorf("bench outbox: Duration %s out of range [100ms, 1h]", c.Duration)
	case c.Relays < 1 || c.Relays > 64:
		return fmt.Errorf("bench outbox: Relays %d out of range [1, 64]", c.Relays)
	case c.BatchSize < 1 || c.BatchSize > 10000:
		return fmt.Errorf("bench outbox: BatchSize %d out of range [1, 10000]", c.BatchSize)
	case c.Concurrency < 1 || c.Concurrency > 10000:
		return fmt.Errorf("bench outbox: Concurrency %d out of range [1, 10000]", c.Concurrency)
	}
	return nil
}

// OutboxResult is what `hodei bench outbox -o json` prints.
type OutboxResult struct {
	// Burn-down phase.
	ThroughputPerS  float64 `json:"throughput_per_s"`
	Messages        int     `json:"messages"`
	BurnDownSeconds float64 `json:"burn_down_seconds"`
	Relays          int     `json:"relays"`
	BatchSize       int     `json:"batch_size"`

	// Latency phase: insert commit → handler invoked.
	LatencyP50Ms float64 `json:"latency_p50_ms"`
	LatencyP95Ms float64 `json:"latency_p95_ms"`
	LatencyP99Ms float64 `json:"latency_p99_ms"`
	LatencyMaxMs float64 `json:"latency_max_ms"`
	Rate         int     `json:"rate_per_s"`
	// AchievedRate is the insert rate actually reached.
	AchievedRate float64 `json:"achieved_rate_per_s"`
	// LatencyInserted rows were inserted, each in its own transaction, by a second
	// Store (its own pool), so relays could learn of them only through NOTIFY.
	LatencyInserted int `json:"latency_inserted"`
	// LatencyDispatched of them reached the handler within the phase plus 5 s.
	LatencyDispatched int `json:"latency_dispatched"`
	// The relays' safety poll is one minute in this phase and inserts begin after every
	// relay's start-up claim, so each row is claimed on a wake-up unless a wake-up was
	// lost. LostWakeups = inserted - claimed on wake-ups; ClaimedByPoll counts rows the
	// poll found (0 when the phase is shorter than the poll).
	PollInterval  string `json:"poll_interval"`
	ClaimedOnWake int64  `json:"claimed_on_wakeup"`
	ClaimedByPoll int64  `json:"claimed_by_poll"`
	LostWakeups   int    `json:"lost_wakeups"`
}

// RunOutbox runs the two phases of the outbox benchmark.
func RunOutbox(ctx context.Context, cfg OutboxConfig) (*OutboxResult, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if _, err := postgres.Migrate(ctx, cfg.DatabaseURL); err != nil {
		return nil, fmt.Errorf("bench outbox: migrate: %w", err)
	}
	st, err := postgres.Open(ctx, cfg.DatabaseURL, postgres.WithMaxConns(int32(2*cfg.Relays+4)))
	if err != nil {
		return nil, fmt.Errorf("bench outbox: %w", err)
	}
	defer st.Close()
	res := &OutboxResult{Messages: cfg.Messages, Relays: cfg.Relays, BatchSize: cfg.BatchSize, Rate: cfg.Rate}
	if err := outboxBurnDown(ctx, cfg, st, res); err != nil {
		return nil, err
	}
	if err := outboxLatency(ctx, cfg, st, res); err != nil {
		return nil, err
	}
	return res, nil
}

// outboxQuietLogger discards the relays' logs (warnings would only disturb the figures).
func outboxQuietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func outboxTruncate(ctx context.Context, st *postgres.Store) error {
	if _, err := st.Pool().Exec(ctx, `TRUNCATE outbox RESTART IDENTITY`); err != nil {
		return fmt.Errorf("bench outbox: truncate: %w", err)
	}
	return nil
}

// outboxRelaySet runs n relays until stop is called.
type outboxRelaySet struct {
	relays []*outbox.Relay
	cancel context.CancelFunc
	wg     sync.WaitGroup
	errs   chan error
}

func startOutboxRelays(ctx context.Context, st store.OutboxStore, sink outbox.CommandSink, n int, cfg outbox.Config) (*outboxRelaySet, error) {
	ctx, cancel := context.WithCancel(ctx)
	rs := &outboxRelaySet{cancel: cancel, errs: make(chan error, n)}
	for i := range n {
		c := cfg
		c.RelayID = fmt.Sprintf("bench-%d", i)
		r, err := outbox.NewRelay(st, sink, nil, c)
		if err != nil {
			cancel()
			return nil, fmt.Errorf("bench outbox: %w", err)
		}
		rs.relays = append(rs.relays, r)
	}
	for _, r := range rs.relays {
		rs.wg.Add(1)
		go func() {
			defer rs.wg.Done()
			if err := r.Run(ctx); err != nil {
				rs.errs <- err
			}
		}()
	}
	return rs, nil
}

func (rs *outboxRelaySet) stop() error {
	rs.cancel()
	rs.wg.Wait()
	close(rs.errs)
	return <-rs.errs
}

func (rs *outboxRelaySet) stats() outbox.Stats {
	var s outbox.Stats
	for _, r := range rs.relays {
		x := r.Stats()
		s.Claimed += x.Claimed
		s.ClaimedOnWake += x.ClaimedOnWake
		s.ClaimedOnPoll += x.ClaimedOnPoll
		s.Claims += x.Claims
		s.Completed += x.Completed
		s.Polls += x.Polls
		s.Wakeups += x.Wakeups
	}
	return s
}

// outboxBurnDown: N rows pre-inserted (untimed, COPY), then the relays dispatch them to a
// no-op handler; throughput from relay start to the last row marked COMPLETED.
func outboxBurnDown(ctx context.Context, cfg OutboxConfig, st *postgres.Store, res *OutboxResult) error {
	if err := outboxTruncate(ctx, st); err != nil {
		return err
	}
	fmt.Fprintf(cfg.Log, "burn-down: inserting %d rows\n", cfg.Messages)
	const chunk = 10000
	for done := 0; done < cfg.Messages; done += chunk {
		n := min(chunk, cfg.Messages-done)
		_, err := st.Pool().CopyFrom(ctx, pgx.Identifier{"outbox"},
			[]string{"kind", "type", "idempotency_key", "payload"},
			pgx.CopyFromSlice(n, func(i int) ([]any, error) {
				return []any{store.KindCommand, "bench.noop", "bench-" + strconv.Itoa(done+i), `{}`}, nil
			}))
		if err != nil {
			return fmt.Errorf("bench outbox: copy rows: %w", err)
		}
	}
	if _, err := st.Pool().Exec(ctx, `VACUUM ANALYZE outbox`); err != nil {
		return fmt.Errorf("bench outbox: vacuum: %w", err)
	}
	noop := outbox.CommandSinkFunc(func(context.Context, string, []byte) error { return nil })
	start := time.Now()
	rs, err := startOutboxRelays(ctx, st.Outbox(), noop, cfg.Relays, outbox.Config{
		BatchSize: cfg.BatchSize, Concurrency: cfg.Concurrency, PollInterval: 50 * time.Millisecond,
		Logger: outboxQuietLogger(),
	})
	if err != nil {
		return err
	}
	var last int64
	lastProgress := start
	for {
		c := rs.stats().Completed
		if c >= int64(cfg.Messages) {
			break
		}
		if c != last {
			last, lastProgress = c, time.Now()
		} else if time.Since(lastProgress) > 30*time.Second {
			_ = rs.stop()
			return fmt.Errorf("bench outbox: burn-down stalled at %d of %d rows", c, cfg.Messages)
		}
		if err := ctx.Err(); err != nil {
			_ = rs.stop()
			return err
		}
		time.Sleep(500 * time.Microsecond)
	}
	elapsed := time.Since(start)
	if err := rs.stop(); err != nil {
		return fmt.Errorf("bench outbox: relay: %w", err)
	}
	res.BurnDownSeconds = elapsed.Seconds()
	res.ThroughputPerS = float64(cfg.Messages) / elapsed.Seconds()
	fmt.Fprintf(cfg.Log, "burn-down: %d rows in %.2fs: %.0f/s\n", cfg.Messages, elapsed.Seconds(), res.ThroughputPerS)
	return nil
}

// outboxLatency: single-row inserts at cfg.Rate, each its own transaction, from a second Store;
// relays with a one-minute poll; latency from the insert's commit to the handler call.
func outboxLatency(ctx context.Context, cfg OutboxConfig, st *postgres.Store, res *OutboxResult) error {
	if err := outboxTruncate(ctx, st); err != nil {
		return err
	}
	const inserterConns = 8
	inserter, err := postgres.Open(ctx, cfg.DatabaseURL, postgres.WithMaxConns(inserterConns))
	if err != nil {
		return fmt.Errorf("bench outbox: inserter store: %w", err)
	}
	defer inserter.Close()
	// Warm the inserter's pool, as in a running server: otherwise the first inserts and
	// the first NOTIFYs wait for new connections (~100-300 ms on a busy machine) and the
	// figures measure connection set-up rather than the relay.
	conns := make([]*pgxpool.Conn, 0, inserterConns)
	for range inserterConns {
		c, err := inserter.Pool().Acquire(ctx)
		if err != nil {
			return fmt.Errorf("bench outbox: warm inserter pool: %w", err)
		}
		conns = append(conns, c)
	}
	for _, c := range conns {
		c.Release()
	}

	total := int(math.Ceil(cfg.Duration.Seconds() * float64(cfg.Rate)))
	committed := make([]int64, total) // ns since base, 0 = not committed
	handled := make([]atomic.Int64, total)
	var dispatched atomic.Int64
	base := time.Now()
	sink := outbox.CommandSinkFunc(func(_ context.Context, _ string, payload []byte) error {
		now := time.Since(base).Nanoseconds()
		seq, err := strconv.Atoi(string(payload))
		if err != nil || seq < 0 || seq >= total {
			return outbox.Permanent(fmt.Errorf("bench payload %q", payload))
		}
		if handled[seq].CompareAndSwap(0, now) {
			dispatched.Add(1)
		}
		return nil
	})
	const poll = time.Minute
	rs, err := startOutboxRelays(ctx, st.Outbox(), sink, cfg.Relays, outbox.Config{
		BatchSize: cfg.BatchSize, Concurrency: cfg.Concurrency, PollInterval: poll, Logger: outboxQuietLogger(),
	})
	if err != nil {
		return err
	}
	// Inserts start once every relay has made its start-up claim (so that each row must be
	// claimed on a wake-up or a poll) and its listener had time to connect.
	for _, r := range rs.relays {
		for r.Stats().Claims == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	time.Sleep(300 * time.Millisecond)
	fmt.Fprintf(cfg.Log, "latency: %d inserts at %d/s\n", total, cfg.Rate)

	// Open loop: insert i is due at start + i/rate; a few inserters share the schedule so
	// that one slow commit does not delay the next.
	const inserters = 4
	interval := time.Second / time.Duration(cfg.Rate)
	start := time.Now()
	var (
		wg      sync.WaitGroup
		errOnce sync.Once
		insErr  error
	)
	for w := range inserters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < total; i += inserters {
				if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
					time.Sleep(d)
				}
				err := inserter.InTx(ctx, func(ctx context.Context) error {
					_, err := inserter.Outbox().Insert(ctx, &store.OutboxMessage{
						Kind: store.KindCommand, Type: "bench.latency",
						IdempotencyKey: "lat-" + strconv.Itoa(i), Payload: []byte(strconv.Itoa(i)),
					})
					return err
				})
				if err != nil {
					errOnce.Do(func() { insErr = err })
					return
				}
				committed[i] = time.Since(base).Nanoseconds()
			}
		}()
	}
	wg.Wait()
	insertSeconds := time.Since(start).Seconds()
	if insErr != nil {
		_ = rs.stop()
		return fmt.Errorf("bench outbox: latency insert: %w", insErr)
	}
	deadline := time.Now().Add(5 * time.Second)
	for dispatched.Load() < int64(total) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond) // let the last Complete land for the stats
	s := rs.stats()
	if err := rs.stop(); err != nil {
		return fmt.Errorf("bench outbox: relay: %w", err)
	}

	lat := make([]float64, 0, total)
	for i := range total {
		h := handled[i].Load()
		if h == 0 || committed[i] == 0 {
			continue
		}
		// The handler may run before the inserter's clock read after commit returns.
		lat = append(lat, max(0, float64(h-committed[i]))/1e6)
	}
	slices.Sort(lat)
	res.LatencyInserted = total
	res.AchievedRate = float64(total) / insertSeconds
	res.LatencyDispatched = int(dispatched.Load())
	res.LatencyP50Ms = outboxPercentile(lat, 0.50)
	res.LatencyP95Ms = outboxPercentile(lat, 0.95)
	res.LatencyP99Ms = outboxPercentile(lat, 0.99)
	if len(lat) > 0 {
		res.LatencyMaxMs = lat[len(lat)-1]
	}
	res.PollInterval = poll.String()
	res.ClaimedOnWake = s.ClaimedOnWake
	res.ClaimedByPoll = s.ClaimedOnPoll
	res.LostWakeups = total - int(s.ClaimedOnWake)
	fmt.Fprintf(cfg.Log, "latency: p50 %.2fms p95 %.2fms p99 %.2fms; %d/%d dispatched, %d claimed on wake-ups\n",
		res.LatencyP50Ms, res.LatencyP95Ms, res.LatencyP99Ms, res.LatencyDispatched, total, s.ClaimedOnWake)
	return nil
}

// outboxPercentile of sorted values (nearest rank); NaN-free: 0 for no values.
func outboxPercentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}
