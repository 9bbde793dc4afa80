package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/hodei-jobs/hodei/store"
)

// querier is what every port method needs: satisfied by pgx.Tx and *pgxpool.Pool.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
	CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, src pgx.CopyFromSource) (int64, error)
}

// Compile-time checks.
var (
	_ querier     = (*pgxpool.Pool)(nil)
	_ querier     = (pgx.Tx)(nil)
	_ store.Store = (*Store)(nil)
)

// Config tunes a Store. Build it with Options passed to Open.
type Config struct {
	// MaxConns is the pool size (default 10).
	MaxConns int32
	// NotifyInterval is the minimum gap between two coalesced NOTIFY hodei_outbox
	// statements sent after outbox inserts commit (default 1ms).
	NotifyInterval time.Duration
	// ListenerBackoffMax caps the reconnect backoff of Wakeups listeners (default 5s).
	ListenerBackoffMax time.Duration
	// Logger receives the Wakeups listeners' connection losses (Warn; the outbox
	// relay's poll covers the gap) and reconnections (Info). Default: discard.
	Logger *slog.Logger

	// disableCommitNotify turns off the after-commit NOTIFY (benchmarks only).
	disableCommitNotify bool
}

func (c *Config) setDefaults() {
	if c.MaxConns == 0 {
		c.MaxConns = 10
	}
	if c.NotifyInterval == 0 {
		c.NotifyInterval = time.Millisecond
	}
	if c.ListenerBackoffMax == 0 {
		c.ListenerBackoffMax = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports the first invalid field.
func (c *Config) Validate() error {
	if c.MaxConns < 1 || c.MaxConns > 1000 {
		return fmt.Errorf("postgres: MaxConns %d out of range [1, 1000]", c.MaxConns)
	}
	if c.NotifyInterval < 0 || c.NotifyInterval > time.Second {
		return fmt.Errorf("postgres: NotifyInterval %s out of range [0, 1s]", c.NotifyInterval)
	}
	if c.ListenerBackoffMax < 10*time.Millisecond {
		return fmt.Errorf("postgres: ListenerBackoffMax %s below 10ms", c.ListenerBackoffMax)
	}
	return nil
}

// Option changes the Config used by Open.
type Option func(*Config)

// WithMaxConns sets the connection pool size.
func WithMaxConns(n int32) Option { return func(c *Config) { c.MaxConns = n } }

// WithNotifyInterval sets the minimum gap between coalesced outbox NOTIFYs.
func WithNotifyInterval(d time.Duration) Option { return func(c *Config) { c.NotifyInterval = d } }

// WithListenerBackoffMax caps the reconnect backoff of Wakeups listeners.
func WithListenerBackoffMax(d time.Duration) Option {
	return func(c *Config) { c.ListenerBackoffMax = d }
}

// WithLogger sets the logger of the Wakeups listeners.
func WithLogger(l *slog.Logger) Option { return func(c *Config) { c.Logger = l } }

var _ store.Store = (*Store)(nil)

// Store is the PostgreSQL driver of the store ports. Create it with Open.
type Store struct {
	pool *pgxpool.Pool
	cfg  Config

	// notifyReq asks the notifier goroutine for one NOTIFY (capacity 1: coalesces).
	notifyReq chan struct{}
	closing   chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup

	subsMu sync.Mutex
	subs   map[chan struct{}]struct{} // in-process Wakeups subscribers

	jobs    jobStore
	workers workerStore
	outbox  outboxStore
	idem    idempotencyStore
}

// Open connects a pool to url. It does not migrate: call Migrate first.
func Open(ctx context.Context, url string, opts ...Option) (*Store, error) {
	var cfg Config
	for _, o := range opts {
		o(&cfg)
	}
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	pcfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("postgres: parse database url: %w", err)
	}
	pcfg.MaxConns = cfg.MaxConns
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: open pool: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: ping: %w", err)
	}
	s := &Store{
		pool:      pool,
		cfg:       cfg,
		notifyReq: make(chan struct{}, 1),
		closing:   make(chan struct{}),
		subs:      make(map[chan struct{}]struct{}),
	}
	s.jobs = jobStore{s}
	s.workers = workerStore{s}
	s.outbox = outboxStore{s}
	s.idem = idempotencyStore{s}
	s.wg.Add(1)
	go s.notifier()
	return s, nil
}

// Pool returns the underlying connection pool.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Jobs returns the job port.
func (s *Store) Jobs() store.JobStore { return &s.jobs }

// Workers returns the worker port.
func (s *Store) Workers() store.WorkerStore { return &s.workers }

// Outbox returns the outbox port.
func (s *Store) Outbox() store.OutboxStore { return &s.outbox }

// Idempotency returns the idempotency-key port.
func (s *Store) Idempotency() store.IdempotencyStore { return &s.idem }

// Ping reports whether the database answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("postgres: ping: %w", err)
	}
	return nil
}

// Close stops the notifier and listeners and closes the pool. Safe to call twice.
func (s *Store) Close() {
	s.closeOnce.Do(func() {
		close(s.closing)
		s.wg.Wait()
		s.pool.Close()
	})
}

// txKey is the context key of the transaction state of one Store (keyed by the Store
// so that two Stores never mistake each other's transaction for their own).
type txKey struct{ s *Store }

// txState is the transaction carried in a context by InTx.
type txState struct {
	tx pgx.Tx

	mu          sync.Mutex
	afterCommit []func()
}

func (s *Store) txFrom(ctx context.Context) *txState {
	st, _ := ctx.Value(txKey{s}).(*txState)
	return st
}

// q returns the transaction carried by ctx, or the pool when there is none.
func (s *Store) q(ctx context.Context) querier {
	if st := s.txFrom(ctx); st != nil {
		return st.tx
	}
	return s.pool
}

// InTx runs fn in a transaction, or in the one ctx already carries (fn then joins it and
// the outermost InTx commits or rolls back). An error from fn, or a panic, rolls back.
// Callbacks registered with AfterCommit run after the outermost commit succeeds.
//
// A joined fn whose error is swallowed by its caller does not roll anything back by
// itself; if a statement failed, PostgreSQL has aborted the transaction and the final
// commit fails (pgx.ErrTxCommitRollback), so nothing partial is ever committed.
//
// The pgx transaction is not safe for concurrent use: do not share the ctx handed to fn
// between goroutines that query at the same time.
func (s *Store) InTx(ctx context.Context, fn func(ctx context.Context) error) error {
	if s.txFrom(ctx) != nil {
		return fn(ctx)
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("postgres: begin: %w", err)
	}
	st := &txState{tx: tx}
	committed := false
	defer func() { // also on panic; a cancelled ctx must not prevent the rollback
		if !committed {
			_ = tx.Rollback(context.WithoutCancel(ctx))
		}
	}()
	if err := fn(store.WithTransaction(context.WithValue(ctx, txKey{s}, st))); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("postgres: commit: %w", err)
	}
	committed = true
	st.mu.Lock()
	cbs := st.afterCommit
	st.afterCommit = nil
	st.mu.Unlock()
	for _, cb := range cbs {
		cb()
	}
	return nil
}

// AfterCommit registers fn to run after the outermost transaction in ctx commits; it is
// dropped if that transaction rolls back. Without a transaction in ctx, fn runs now.
func (s *Store) AfterCommit(ctx context.Context, fn func()) {
	st := s.txFrom(ctx)
	if st == nil {
		fn()
		return
	}
	st.mu.Lock()
	st.afterCommit = append(st.afterCommit, fn)
	st.mu.Unlock()
}

// isUniqueViolation reports a PostgreSQL unique_violation (23505).
func isUniqueViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}
