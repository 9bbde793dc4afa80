// Package bench holds the benchmarks behind `hodei bench`: each one drives real
// components against a real database (PostgreSQL, or for the outbox and jobs
// benchmarks also the embedded SQLite driver) and reports figures a user can compare
// with a peer system measured on the same server.
package bench

import (
	"context"
	"database/sql"
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
	"github.com/hodei-jobs/hodei/store/sqlite"
)

// Store drivers of the benchmarks (OutboxConfig.Driver, JobsConfig.Driver).
const (
	DriverPostgres = "postgres"
	DriverSQLite   = "sqlite"
)

// OutboxConfig configures RunOutbox.
type OutboxConfig struct {
	// Driver is DriverPostgres (default) or DriverSQLite.
	Driver string
	// DatabaseURL is the PostgreSQL database to use (DriverPostgres). Its outbox table
	// is TRUNCATED.
	DatabaseURL string
	// SQLitePath is the SQLite database file to use (DriverSQLite; created if missing).
	// Its outbox table is emptied.
	SQLitePath string
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
	// AllowDataLoss (--i-know-this-deletes-data) runs even on a database that holds
	// jobs or outbox rows; without it such a database is refused (ErrDatabaseInUse).
	AllowDataLoss bool
	// Log receives progress lines (nil: none).
	Log io.Writer
}

func (c *OutboxConfig) setDefaults() {
	if c.Driver == "" {
		c.Driver = DriverPostgres
	}
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
	switch c.Driver {
	case DriverPostgres:
		if c.DatabaseURL == "" {
			return errors.New("bench outbox: DatabaseURL is empty")
		}
		if c.SQLitePath != "" {
			return errors.New("bench outbox: SQLitePath is for Driver sqlite, not postgres")
		}
	case DriverSQLite:
		if c.SQLitePath == "" {
			return errors.New("bench outbox: SQLitePath is empty (Driver sqlite)")
		}
		if c.DatabaseURL != "" {
			return errors.New("bench outbox: DatabaseURL is for Driver postgres, not sqlite")
		}
	default:
		return fmt.Errorf("bench outbox: Driver %q is not %q or %q", c.Driver, DriverPostgres, DriverSQLite)
	}
	switch {
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
	// Driver is the store driver measured (postgres or sqlite).
	Driver string `json:"driver"`
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
	// LatencyInserted rows were inserted, each in its own transaction. On PostgreSQL
	// the inserter is a second Store (its own pool), so relays could learn of them only
	// through NOTIFY, as from another process. On SQLite (one process per database) it
	// is the relays' own Store, whose wake-ups are in-process: LatencyInserter says
	// which.
	LatencyInserted int `json:"latency_inserted"`
	// LatencyInserter is "separate-pool-notify" (PostgreSQL) or "same-process"
	// (SQLite).
	LatencyInserter string `json:"latency_inserter"`
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
	db, err := openOutboxDB(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer db.close()
	if err := guardData(ctx, db.store(), cfg.AllowDataLoss, "bench outbox"); err != nil {
		return nil, err
	}
	res := &OutboxResult{Driver: cfg.Driver, Messages: cfg.Messages, Relays: cfg.Relays, BatchSize: cfg.BatchSize, Rate: cfg.Rate}
	if err := outboxBurnDown(ctx, cfg, db, res); err != nil {
		return nil, err
	}
	if err := outboxLatency(ctx, cfg, db, res); err != nil {
		return nil, err
	}
	return res, nil
}

// outboxTxStore is what the benchmark needs of a store driver.
type outboxTxStore interface {
	InTx(ctx context.Context, fn func(ctx context.Context) error) error
	Outbox() store.OutboxStore
	Jobs() store.JobStore
}

// outboxDB is one driver's database under the benchmark.
type outboxDB interface {
	store() outboxTxStore
	// truncate empties the outbox table (no relay runs).
	truncate(ctx context.Context) error
	// fill inserts n no-op command rows, untimed.
	fill(ctx context.Context, n int) error
	// inserter returns the store the latency phase inserts through, warmed up, and
	// a description for OutboxResult.LatencyInserter.
	inserter(ctx context.Context) (outboxTxStore, string, func(), error)
	close()
}

func openOutboxDB(ctx context.Context, cfg OutboxConfig) (outboxDB, error) {
	if cfg.Driver == DriverSQLite {
		st, err := sqlite.Open(ctx, cfg.SQLitePath)
		if err != nil {
			return nil, fmt.Errorf("bench outbox: %w", err)
		}
		return &outboxSQLite{st: st, path: cfg.SQLitePath}, nil
	}
	if _, err := postgres.Migrate(ctx, cfg.DatabaseURL); err != nil {
		return nil, fmt.Errorf("bench outbox: migrate: %w", err)
	}
	st, err := postgres.Open(ctx, cfg.DatabaseURL, postgres.WithMaxConns(int32(2*cfg.Relays+4)))
	if err != nil {
		return nil, fmt.Errorf("bench outbox: %w", err)
	}
	return &outboxPostgres{st: st, url: cfg.DatabaseURL}, nil
}

type outboxPostgres struct {
	st  *postgres.Store
	url string
}

func (p *outboxPostgres) store() outboxTxStore { return p.st }
func (p *outboxPostgres) close()               { p.st.Close() }

func (p *outboxPostgres) truncate(ctx context.Context) error {
	if _, err := p.st.Pool().Exec(ctx, `TRUNCATE outbox RESTART IDENTITY`); err != nil {
		return fmt.Errorf("bench outbox: truncate: %w", err)
	}
	return nil
}

func (p *outboxPostgres) fill(ctx context.Context, n int) error {
	const chunk = 10000
	for done := 0; done < n; done += chunk {
		k := min(chunk, n-done)
		_, err := p.st.Pool().CopyFrom(ctx, pgx.Identifier{"outbox"},
			[]string{"kind", "type", "idempotency_key", "payload"},
			pgx.CopyFromSlice(k, func(i int) ([]any, error) {
				return []any{store.KindCommand, "bench.noop", "bench-" + strconv.Itoa(done+i), `{}`}, nil
			}))
		if err != nil {
			return fmt.Errorf("bench outbox: copy rows: %w", err)
		}
	}
	if _, err := p.st.Pool().Exec(ctx, `VACUUM ANALYZE outbox`); err != nil {
		return fmt.Errorf("bench outbox: vacuum: %w", err)
	}
	return nil
}

func (p *outboxPostgres) inserter(ctx context.Context) (outboxTxStore, string, func(), error) {
	const inserterConns = 8
	ins, err := postgres.Open(ctx, p.url, postgres.WithMaxConns(inserterConns))
	if err != nil {
		return nil, "", nil, fmt.Errorf("bench outbox: inserter store: %w", err)
	}
	// Warm the inserter's pool, as in a running server: otherwise the first inserts and
	// the first NOTIFYs wait for new connections (~100-300 ms on a busy machine) and the
	// figures measure connection set-up rather than the relay.
	conns := make([]*pgxpool.Conn, 0, inserterConns)
	for range inserterConns {
		c, err := ins.Pool().Acquire(ctx)
		if err != nil {
			ins.Close()
			return nil, "", nil, fmt.Errorf("bench outbox: warm inserter pool: %w", err)
		}
		conns = append(conns, c)
	}
	for _, c := range conns {
		c.Release()
	}
	return ins, "separate-pool-notify", ins.Close, nil
}

// outboxSQLite: one Store on the file. SQLite is one process per database, so the
// latency phase inserts through the relays' own Store (in-process wake-ups).
type outboxSQLite struct {
	st   *sqlite.Store
	path string
}

func (q *outboxSQLite) store() outboxTxStore { return q.st }
func (q *outboxSQLite) close()               { q.st.Close() }

// truncate deletes the rows through a connection of its own (the Store has no
// statement for it); the Store's writer is idle, as no relay runs.
func (q *outboxSQLite) truncate(ctx context.Context) error {
	db, err := sql.Open("sqlite", q.path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		return fmt.Errorf("bench outbox: empty the outbox: %w", err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `DELETE FROM outbox`); err != nil {
		return fmt.Errorf("bench outbox: empty the outbox: %w", err)
	}
	return nil
}

func (q *outboxSQLite) fill(ctx context.Context, n int) error {
	const chunk = 1000
	for done := 0; done < n; done += chunk {
		k := min(chunk, n-done)
		msgs := make([]*store.OutboxMessage, k)
		for i := range msgs {
			msgs[i] = &store.OutboxMessage{Kind: store.KindCommand, Type: "bench.noop",
				IdempotencyKey: "bench-" + strconv.Itoa(done+i), Payload: []byte(`{}`)}
		}
		err := q.st.InTx(ctx, func(ctx context.Context) error {
			_, err := q.st.Outbox().Insert(ctx, msgs...)
			return err
		})
		if err != nil {
			return fmt.Errorf("bench outbox: insert rows: %w", err)
		}
	}
	return nil
}

func (q *outboxSQLite) inserter(context.Context) (outboxTxStore, string, func(), error) {
	return q.st, "same-process", func() {}, nil
}

// outboxQuietLogger discards the relays' logs (warnings would only disturb the figures).
func outboxQuietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
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
func outboxBurnDown(ctx context.Context, cfg OutboxConfig, db outboxDB, res *OutboxResult) error {
	if err := db.truncate(ctx); err != nil {
		return err
	}
	fmt.Fprintf(cfg.Log, "burn-down (%s): inserting %d rows\n", cfg.Driver, cfg.Messages)
	if err := db.fill(ctx, cfg.Messages); err != nil {
		return err
	}
	st := db.store()
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

// outboxLatency: single-row inserts at cfg.Rate, each its own transaction, from a second Store
// (PostgreSQL; SQLite: the same Store); relays with a one-minute poll; latency from the
// insert's commit to the handler call.
func outboxLatency(ctx context.Context, cfg OutboxConfig, db outboxDB, res *OutboxResult) error {
	if err := db.truncate(ctx); err != nil {
		return err
	}
	st := db.store()
	inserter, how, closeInserter, err := db.inserter(ctx)
	if err != nil {
		return err
	}
	defer closeInserter()
	res.LatencyInserter = how
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
	fmt.Fprintf(cfg.Log, "latency (%s, inserter %s): %d inserts at %d/s\n", cfg.Driver, how, total, cfg.Rate)

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
