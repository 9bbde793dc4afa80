package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/hodei-jobs/hodei/command"
	"github.com/hodei-jobs/hodei/saga"
	"github.com/hodei-jobs/hodei/store"
	"github.com/hodei-jobs/hodei/store/postgres"
)

// SagasConfig configures RunSagas.
type SagasConfig struct {
	// DatabaseURL is the PostgreSQL database to use. It is migrated and its saga tables
	// are TRUNCATED: use a database of its own.
	DatabaseURL string
	// AllowDataLoss (--i-know-this-deletes-data) runs even on a database that holds
	// jobs or outbox rows; without it such a database is refused (ErrDatabaseInUse).
	AllowDataLoss bool
	// Sagas started (default 2000).
	Sagas int
	// Steps of each saga, each dispatching one no-op command (default 3).
	Steps int
	// Runners are engines (replicas, each with its own runner id and claims) in this
	// process (default 2).
	Runners int
	// Concurrency is each runner's Config.Concurrency (default 16).
	Concurrency int
	// BatchSize is each runner's Config.BatchSize (default 64).
	BatchSize int
	// PollInterval is each runner's poll (default 5ms). With Wake false the poll is
	// what hands sagas to runners.
	PollInterval time.Duration
	// Wake makes Start announce each saga to the runners through an in-process
	// waker (each wake-up runs that one saga on the runner's loop). Default false: the
	// runners claim sagas in batches on their poll.
	Wake bool
	// Starters are goroutines calling Engine.Start (default 8).
	Starters int
	// Log receives progress lines (nil: none).
	Log io.Writer
}

func (c *SagasConfig) setDefaults() {
	if c.Sagas == 0 {
		c.Sagas = 2000
	}
	if c.Steps == 0 {
		c.Steps = 3
	}
	if c.Runners == 0 {
		c.Runners = 2
	}
	if c.Concurrency == 0 {
		c.Concurrency = 16
	}
	if c.BatchSize == 0 {
		c.BatchSize = 64
	}
	if c.PollInterval == 0 {
		c.PollInterval = 5 * time.Millisecond
	}
	if c.Starters == 0 {
		c.Starters = 8
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
}

// Validate reports the first invalid field.
func (c *SagasConfig) Validate() error {
	switch {
	case c.DatabaseURL == "":
		return errors.New("bench sagas: DatabaseURL is empty (set --database-url)")
	case c.Sagas < 1 || c.Sagas > 10_000_000:
		return fmt.Errorf("bench sagas: Sagas %d out of range [1, 10000000]", c.Sagas)
	case c.Steps < 1 || c.Steps > 1000:
		return fmt.Errorf("bench sagas: Steps %d out of range [1, 1000]", c.Steps)
	case c.Runners < 1 || c.Runners > 64:
		return fmt.Errorf("bench sagas: Runners %d out of range [1, 64]", c.Runners)
	case c.Concurrency < 1 || c.Concurrency > 1024:
		return fmt.Errorf("bench sagas: Concurrency %d out of range [1, 1024]", c.Concurrency)
	case c.BatchSize < 1 || c.BatchSize > 10000:
		return fmt.Errorf("bench sagas: BatchSize %d out of range [1, 10000]", c.BatchSize)
	case c.PollInterval < time.Millisecond:
		return fmt.Errorf("bench sagas: PollInterval %s below 1ms", c.PollInterval)
	case c.Starters < 1 || c.Starters > 1024:
		return fmt.Errorf("bench sagas: Starters %d out of range [1, 1024]", c.Starters)
	}
	return nil
}

// SagasResult is what `hodei bench sagas -o json` prints.
type SagasResult struct {
	// ThroughputPerS is sagas completed per second, from the start of the first saga to
	// the commit of the last completion.
	ThroughputPerS float64 `json:"throughput_per_s"`
	// Latency of SagaStore.Append calls (the optimistic-lock append of events and the
	// row projection; inside the step's transaction, so commit is not included).
	AppendP50Ms float64 `json:"append_p50_ms"`
	AppendP99Ms float64 `json:"append_p99_ms"`
	AppendMaxMs float64 `json:"append_max_ms"`
	Appends     int     `json:"appends"`
	// Conflicts is the number of appends that lost the optimistic lock.
	Conflicts int `json:"append_conflicts"`

	Sagas        int     `json:"sagas"`
	Steps        int     `json:"steps"`
	Commands     int64   `json:"commands_dispatched"`
	Seconds      float64 `json:"seconds"`
	StartSeconds float64 `json:"start_seconds"` // time to start all sagas
	Runners      int     `json:"runners"`
	Concurrency  int     `json:"concurrency"`
	BatchSize    int     `json:"batch_size"`
	PollInterval string  `json:"poll_interval"`
	Wake         bool    `json:"wake"`
	GOMAXPROCS   int     `json:"gomaxprocs"`
}

// benchNopCmd is the command every step dispatches; its handler does nothing.
type benchNopCmd struct {
	Key string `json:"key"`
}

func (benchNopCmd) CommandType() string      { return "bench.nop" }
func (c benchNopCmd) IdempotencyKey() string { return c.Key }

// timedStore is the PostgreSQL store with its saga port wrapped by timedSagas. The
// embedded *postgres.Store keeps InTx and AfterCommit (the engine uses both).
type timedStore struct {
	*postgres.Store
	sagas *timedSagas
}

func (s *timedStore) Sagas() store.SagaStore { return s.sagas }

// timedSagas times Append and counts completed sagas once their completion commits.
type timedSagas struct {
	store.SagaStore
	st *postgres.Store

	mu        sync.Mutex
	lat       []time.Duration
	conflicts int

	want      int64
	completed atomic.Int64
	lastDone  atomic.Int64 // unix nanos of the last completion's commit
	done      chan struct{}
}

func (t *timedSagas) Append(ctx context.Context, id string, expectedSeq int64, upd store.SagaUpdate, events ...*store.SagaEvent) error {
	start := time.Now()
	err := t.SagaStore.Append(ctx, id, expectedSeq, upd, events...)
	d := time.Since(start)
	t.mu.Lock()
	t.lat = append(t.lat, d)
	if errors.Is(err, store.ErrConflict) {
		t.conflicts++
	}
	t.mu.Unlock()
	if err != nil {
		return err
	}
	for _, ev := range events {
		if ev.Type == saga.EventCompleted {
			t.st.AfterCommit(ctx, t.completedOne)
			break
		}
	}
	return nil
}

func (t *timedSagas) completedOne() {
	t.lastDone.Store(time.Now().UnixNano())
	if t.completed.Add(1) == t.want {
		close(t.done)
	}
}

// RunSagas starts cfg.Sagas sagas of cfg.Steps no-op steps and runs them to completion
// with cfg.Runners engines on PostgreSQL.
func RunSagas(ctx context.Context, cfg SagasConfig) (*SagasResult, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if _, err := postgres.Migrate(ctx, cfg.DatabaseURL); err != nil {
		return nil, fmt.Errorf("bench sagas: migrate: %w", err)
	}
	conns := cfg.Runners*(cfg.Concurrency+2) + cfg.Starters + 2
	pg, err := postgres.Open(ctx, cfg.DatabaseURL, postgres.WithMaxConns(int32(min(conns, 200))))
	if err != nil {
		return nil, fmt.Errorf("bench sagas: %w", err)
	}
	defer pg.Close()
	if err := guardData(ctx, pg, cfg.AllowDataLoss, "bench sagas"); err != nil {
		return nil, err
	}
	if _, err := pg.Pool().Exec(ctx, `TRUNCATE sagas, saga_events, saga_snapshots, saga_timers`); err != nil {
		return nil, fmt.Errorf("bench sagas: truncate saga tables: %w", err)
	}
	// Open the pool's connections before the clock starts, as in a running server: a new
	// PostgreSQL backend costs tens of milliseconds of CPU on a busy 2-core machine, and
	// the ~40 the runners and starters need would otherwise be measured as saga time.
	warm := make([]*pgxpool.Conn, 0, min(conns, 200))
	for range cap(warm) {
		c, err := pg.Pool().Acquire(ctx)
		if err != nil {
			return nil, fmt.Errorf("bench sagas: warm the connection pool: %w", err)
		}
		warm = append(warm, c)
	}
	for _, c := range warm {
		c.Release()
	}
	ts := &timedSagas{SagaStore: pg.Sagas(), st: pg, want: int64(cfg.Sagas), done: make(chan struct{}),
		lat: make([]time.Duration, 0, cfg.Sagas*(cfg.Steps+1))}
	st := &timedStore{Store: pg, sagas: ts}

	var commands atomic.Int64
	bus := command.NewBus()
	command.Register(bus, command.HandlerFunc[benchNopCmd, struct{}](func(context.Context, benchNopCmd) (struct{}, error) {
		commands.Add(1)
		return struct{}{}, nil
	}))
	reg := saga.NewRegistry()
	steps := make([]saga.Step, cfg.Steps)
	for i := range steps {
		steps[i] = saga.Step{Name: "step" + strconv.Itoa(i+1), Do: func(ctx context.Context, sc *saga.StepContext) (any, error) {
			_, err := sc.Dispatch(ctx, benchNopCmd{Key: sc.Key()})
			return nil, err
		}}
	}
	if err := reg.Register(saga.Definition{Name: "bench", Version: 1, Steps: steps}); err != nil {
		return nil, err
	}

	logger := slog.New(slog.NewTextHandler(cfg.Log, &slog.HandlerOptions{Level: slog.LevelError}))
	var waker saga.Waker = sagaNoWaker{}
	if cfg.Wake {
		waker = saga.NewLocalWaker()
	}
	engines := make([]*saga.Engine, cfg.Runners)
	for i := range engines {
		engines[i], err = saga.New(st, reg, bus, saga.Config{RunnerID: fmt.Sprintf("bench-%d", i), Waker: waker,
			Logger: logger, Concurrency: cfg.Concurrency, BatchSize: cfg.BatchSize, PollInterval: cfg.PollInterval})
		if err != nil {
			return nil, err
		}
	}

	runCtx, stopRunners := context.WithCancel(ctx)
	defer stopRunners()
	var runners errgroup.Group
	for _, eng := range engines {
		runners.Go(func() error { return eng.Run(runCtx) })
	}

	fmt.Fprintf(cfg.Log, "bench sagas: starting %d sagas of %d steps, %d runners\n", cfg.Sagas, cfg.Steps, cfg.Runners)
	begin := time.Now()
	var next atomic.Int64
	var starters errgroup.Group
	for range cfg.Starters {
		starters.Go(func() error {
			for {
				i := next.Add(1) - 1
				if i >= int64(cfg.Sagas) {
					return nil
				}
				id := saga.IDFor("bench", strconv.FormatInt(i, 10))
				if _, _, err := engines[0].Start(ctx, "bench", id, nil); err != nil {
					return fmt.Errorf("bench sagas: start saga %d: %w", i, err)
				}
			}
		})
	}
	if err := starters.Wait(); err != nil {
		stopRunners()
		_ = runners.Wait()
		return nil, err
	}
	started := time.Since(begin)
	fmt.Fprintf(cfg.Log, "bench sagas: all started after %.2fs\n", started.Seconds())

	timeout := time.Duration(cfg.Sagas*cfg.Steps)*10*time.Millisecond + time.Minute
	select {
	case <-ts.done:
	case <-ctx.Done():
		stopRunners()
		_ = runners.Wait()
		return nil, ctx.Err()
	case <-time.After(timeout):
		stopRunners()
		_ = runners.Wait()
		return nil, fmt.Errorf("bench sagas: only %d of %d sagas completed within %s; see the runners' errors above",
			ts.completed.Load(), cfg.Sagas, timeout)
	}
	end := time.Unix(0, ts.lastDone.Load())
	stopRunners()
	if err := runners.Wait(); err != nil {
		return nil, fmt.Errorf("bench sagas: runner: %w", err)
	}

	elapsed := end.Sub(begin)
	ts.mu.Lock()
	ms := make([]float64, len(ts.lat))
	for i, d := range ts.lat {
		ms[i] = float64(d) / float64(time.Millisecond)
	}
	conflicts := ts.conflicts
	ts.mu.Unlock()
	slices.Sort(ms)
	res := &SagasResult{
		ThroughputPerS: sagaRound2(float64(cfg.Sagas) / elapsed.Seconds()),
		AppendP50Ms:    sagaRound3(sagaPercentile(ms, 0.50)),
		AppendP99Ms:    sagaRound3(sagaPercentile(ms, 0.99)),
		AppendMaxMs:    sagaRound3(sagaPercentile(ms, 1)),
		Appends:        len(ms),
		Conflicts:      conflicts,
		Sagas:          cfg.Sagas,
		Steps:          cfg.Steps,
		Commands:       commands.Load(),
		Seconds:        sagaRound3(elapsed.Seconds()),
		StartSeconds:   sagaRound3(started.Seconds()),
		Runners:        cfg.Runners,
		Concurrency:    cfg.Concurrency,
		BatchSize:      cfg.BatchSize,
		PollInterval:   cfg.PollInterval.String(),
		Wake:           cfg.Wake,
		GOMAXPROCS:     runtime.GOMAXPROCS(0),
	}
	if want := int64(cfg.Sagas * cfg.Steps); res.Commands < want {
		return res, fmt.Errorf("bench sagas: %d commands dispatched, want at least %d (one per step)", res.Commands, want)
	}
	return res, nil
}

// sagaNoWaker announces nothing: runners find sagas by their poll.
type sagaNoWaker struct{}

func (sagaNoWaker) Wake(context.Context, string) error { return nil }
func (sagaNoWaker) Wakeups(ctx context.Context) <-chan string {
	ch := make(chan string)
	go func() { <-ctx.Done(); close(ch) }()
	return ch
}

// sagaPercentile of sorted values (nearest rank); 0 for no values.
func sagaPercentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func sagaRound2(v float64) float64 { return math.Round(v*100) / 100 }
func sagaRound3(v float64) float64 { return math.Round(v*1000) / 1000 }
