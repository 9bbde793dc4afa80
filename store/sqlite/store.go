package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	msqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/hodei-jobs/hodei/store"
)

// querier is what every port method needs: satisfied by *sql.DB and *sql.Conn.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	PrepareContext(ctx context.Context, query string) (*sql.Stmt, error)
}

// execer runs one statement many times: a *sql.Stmt prepared for a batch, or the
// querier itself for a single row (preparing would only add a round trip).
type execer func(ctx context.Context, args ...any) (sql.Result, error)

func batchExec(ctx context.Context, q querier, query string, n int) (execer, func(), error) {
	if n <= 1 {
		return func(ctx context.Context, args ...any) (sql.Result, error) {
			return q.ExecContext(ctx, query, args...)
		}, func() {}, nil
	}
	stmt, err := q.PrepareContext(ctx, query)
	if err != nil {
		return nil, nil, err
	}
	return stmt.ExecContext, func() { _ = stmt.Close() }, nil
}

// Compile-time checks.
var (
	_ querier     = (*sql.DB)(nil)
	_ querier     = (*sql.Conn)(nil)
	_ store.Store = (*Store)(nil)
)

// Synchronous modes accepted by Config.Synchronous.
const (
	// SyncNormal: in WAL mode a commit survives a crash of the process; the last
	// commits may be lost if the machine loses power. The default.
	SyncNormal = "NORMAL"
	// SyncFull: every commit is fsynced; survives power loss too, at a cost per commit.
	SyncFull = "FULL"
)

// Config tunes a Store. Build it with Options passed to Open.
type Config struct {
	// MaxReadConns is the size of the read-only connection pool (default 4). Writes
	// always use the one writer connection.
	MaxReadConns int
	// BusyTimeout is how long a connection waits for a lock held by another connection
	// (another Store or process on the same file, or a checkpoint) before SQLITE_BUSY
	// (default 10s). Writers of one Store never compete for the lock: they queue for
	// the single writer connection instead.
	BusyTimeout time.Duration
	// Synchronous is SyncNormal (default) or SyncFull.
	Synchronous string
}

func (c *Config) setDefaults() {
	if c.MaxReadConns == 0 {
		c.MaxReadConns = 4
	}
	if c.BusyTimeout == 0 {
		c.BusyTimeout = 10 * time.Second
	}
	if c.Synchronous == "" {
		c.Synchronous = SyncNormal
	}
}

// Validate reports the first invalid field.
func (c *Config) Validate() error {
	if c.MaxReadConns < 1 || c.MaxReadConns > 256 {
		return fmt.Errorf("sqlite: MaxReadConns %d out of range [1, 256]", c.MaxReadConns)
	}
	if c.BusyTimeout < time.Millisecond || c.BusyTimeout > 10*time.Minute {
		return fmt.Errorf("sqlite: BusyTimeout %s out of range [1ms, 10m]", c.BusyTimeout)
	}
	if c.Synchronous != SyncNormal && c.Synchronous != SyncFull {
		return fmt.Errorf("sqlite: Synchronous %q is not %q or %q", c.Synchronous, SyncNormal, SyncFull)
	}
	return nil
}

// Option changes the Config used by Open.
type Option func(*Config)

// WithMaxReadConns sets the size of the read-only connection pool.
func WithMaxReadConns(n int) Option { return func(c *Config) { c.MaxReadConns = n } }

// WithBusyTimeout sets how long a connection waits for a lock held elsewhere.
func WithBusyTimeout(d time.Duration) Option { return func(c *Config) { c.BusyTimeout = d } }

// WithSynchronous sets the synchronous mode (SyncNormal or SyncFull).
func WithSynchronous(mode string) Option { return func(c *Config) { c.Synchronous = mode } }

var _ store.Store = (*Store)(nil)

// Store is the SQLite driver of the store ports. Create it with Open.
type Store struct {
	path string
	cfg  Config

	wdb *sql.DB // exactly one connection: every write transaction holds it
	rdb *sql.DB // query_only connections for reads outside write transactions

	closing   chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup

	subsMu sync.Mutex
	subs   map[chan struct{}]struct{} // Wakeups subscribers

	// held maps the ids of jobs returned by Scheduling.ClaimPending to the open
	// transaction that claimed them; other transactions' claims skip them (the
	// in-process stand-in for FOR UPDATE SKIP LOCKED).
	heldMu sync.Mutex
	held   map[string]*txState

	// lastOutboxID is the highest outbox id this Store handed out, so that an id of a
	// rolled-back insert is never handed out again (AUTOINCREMENT alone would reuse it:
	// its counter rolls back with the transaction).
	lastOutboxID atomic.Int64

	jobs    jobStore
	workers workerStore
	outbox  outboxStore
	idem    idempotencyStore
}

// Open opens (creating it if needed) the database file at path, switches it to WAL
// mode, applies the embedded migrations it has not recorded yet and returns the Store.
// The directory of path must exist.
func Open(ctx context.Context, path string, opts ...Option) (*Store, error) {
	var cfg Config
	for _, o := range opts {
		o(&cfg)
	}
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if path == "" || path == ":memory:" || strings.HasPrefix(path, "file:") || strings.ContainsRune(path, '?') {
		return nil, fmt.Errorf("sqlite: path %q must be a plain file path (no ':memory:', 'file:' URI or '?')", path)
	}
	busy := cfg.BusyTimeout.Milliseconds()
	wdsn := fmt.Sprintf("%s?_pragma=busy_timeout(%d)&_pragma=foreign_keys(1)&_pragma=journal_mode(WAL)&_pragma=synchronous(%s)",
		path, busy, cfg.Synchronous)
	wdb, err := sql.Open("sqlite", wdsn)
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	wdb.SetMaxOpenConns(1)
	wdb.SetMaxIdleConns(1)
	wdb.SetConnMaxLifetime(0)
	wdb.SetConnMaxIdleTime(0)
	fail := func(err error) (*Store, error) {
		_ = wdb.Close()
		return nil, err
	}
	var mode string
	if err := wdb.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil {
		return fail(fmt.Errorf("sqlite: open %s: %w", path, err))
	}
	if !strings.EqualFold(mode, "wal") {
		return fail(fmt.Errorf("sqlite: open %s: journal_mode is %q, WAL is required", path, mode))
	}
	if _, err := migrate(ctx, wdb); err != nil {
		return fail(err)
	}
	rdsn := fmt.Sprintf("%s?_pragma=busy_timeout(%d)&_pragma=foreign_keys(1)&_pragma=query_only(1)", path, busy)
	rdb, err := sql.Open("sqlite", rdsn)
	if err != nil {
		return fail(fmt.Errorf("sqlite: open %s for reading: %w", path, err))
	}
	rdb.SetMaxOpenConns(cfg.MaxReadConns)
	rdb.SetMaxIdleConns(cfg.MaxReadConns)
	if err := rdb.PingContext(ctx); err != nil {
		_ = rdb.Close()
		return fail(fmt.Errorf("sqlite: open %s for reading: %w", path, err))
	}
	s := &Store{
		path:    path,
		cfg:     cfg,
		wdb:     wdb,
		rdb:     rdb,
		closing: make(chan struct{}),
		subs:    make(map[chan struct{}]struct{}),
		held:    make(map[string]*txState),
	}
	s.jobs = jobStore{s}
	s.workers = workerStore{s}
	s.outbox = outboxStore{s}
	s.idem = idempotencyStore{s}
	return s, nil
}

// Path returns the database file path.
func (s *Store) Path() string { return s.path }

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
	if err := s.rdb.PingContext(ctx); err != nil {
		return fmt.Errorf("sqlite: ping: %w", err)
	}
	return nil
}

// Close closes the Wakeups channels and both connection pools. Safe to call twice. Do
// not call it while a transaction is open: it waits for the writer connection.
func (s *Store) Close() {
	s.closeOnce.Do(func() {
		s.subsMu.Lock() // a concurrent Wakeups either registers before or sees closing
		close(s.closing)
		s.subsMu.Unlock()
		s.wg.Wait()
		// Gathers planner statistics where they are stale (cheap; SQLite recommends it
		// before closing a long-lived connection).
		_, _ = s.wdb.ExecContext(context.Background(), `PRAGMA optimize`)
		_ = s.rdb.Close()
		_ = s.wdb.Close()
	})
}

// txKey is the context key of the transaction state of one Store.
type txKey struct{ s *Store }

// txState is the transaction carried in a context by InTx. It holds the writer
// connection only from its first write (or Scheduling.Lock) on.
type txState struct {
	s *Store

	mu          sync.Mutex
	conn        *sql.Conn // the writer, inside BEGIN IMMEDIATE; nil until the first write
	afterCommit []func()
	held        []string // job ids claimed by ClaimPending
}

func (s *Store) txFrom(ctx context.Context) *txState {
	st, _ := ctx.Value(txKey{s}).(*txState)
	return st
}

// writer returns the transaction's writer connection, waiting for it (and beginning
// the SQLite write transaction) on first use.
func (st *txState) writer(ctx context.Context) (*sql.Conn, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.conn != nil {
		return st.conn, nil
	}
	conn, err := st.s.wdb.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("sqlite: wait for the writer connection: %w", err)
	}
	if _, err := conn.ExecContext(ctx, `BEGIN IMMEDIATE`); err != nil {
		discard(conn)
		return nil, fmt.Errorf("sqlite: begin: %w", err)
	}
	st.conn = conn
	return conn, nil
}

func (st *txState) writerConn() *sql.Conn {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.conn
}

// end commits (or rolls back) the write transaction, returns the writer and drops the
// claims on jobs.
func (st *txState) end(ctx context.Context, commit bool) error {
	st.s.releaseHeld(st)
	st.mu.Lock()
	conn := st.conn
	st.conn = nil
	st.mu.Unlock()
	if conn == nil {
		return nil
	}
	if commit {
		if _, err := conn.ExecContext(ctx, `COMMIT`); err != nil {
			rollback(ctx, conn)
			return fmt.Errorf("sqlite: commit: %w", err)
		}
		_ = conn.Close()
		return nil
	}
	rollback(ctx, conn)
	return nil
}

// rollback rolls conn's transaction back and returns it to the pool; if the rollback
// fails the connection is discarded so that the next writer gets a clean one.
func rollback(ctx context.Context, conn *sql.Conn) {
	if _, err := conn.ExecContext(context.WithoutCancel(ctx), `ROLLBACK`); err != nil {
		discard(conn)
		return
	}
	_ = conn.Close()
}

// discard closes the driver connection behind conn instead of pooling it.
func discard(conn *sql.Conn) {
	_ = conn.Raw(func(any) error { return driver.ErrBadConn })
	_ = conn.Close()
}

// q returns the writer connection when ctx's transaction holds it, else the read pool.
// Reads of a transaction before its first write therefore see the latest committed
// data (like PostgreSQL's READ COMMITTED), and reads after it see its own writes.
func (s *Store) q(ctx context.Context) querier {
	if st := s.txFrom(ctx); st != nil {
		if c := st.writerConn(); c != nil {
			return c
		}
	}
	return s.rdb
}

// write runs fn on the writer connection: in ctx's transaction, or without one in a
// transaction of its own. fn must make at most one write statement (reads are free):
// a single SQLite statement applies all or nothing by itself. Use writeAtomic for more.
// fn's ctx carries the transaction: use it for AfterCommit and nested port calls.
func (s *Store) write(ctx context.Context, fn func(ctx context.Context, q querier) error) error {
	return s.writeTx(ctx, false, fn)
}

// writeAtomic is write for fn making several write statements: in ctx's transaction
// it runs fn inside a savepoint, so fn's writes apply all or none, as one PostgreSQL
// statement would.
func (s *Store) writeAtomic(ctx context.Context, fn func(ctx context.Context, q querier) error) error {
	return s.writeTx(ctx, true, fn)
}

func (s *Store) writeTx(ctx context.Context, savepoint bool, fn func(ctx context.Context, q querier) error) error {
	st := s.txFrom(ctx)
	if st == nil {
		return s.InTx(ctx, func(ctx context.Context) error {
			c, err := s.txFrom(ctx).writer(ctx)
			if err != nil {
				return err
			}
			return fn(ctx, c)
		})
	}
	c, err := st.writer(ctx)
	if err != nil {
		return err
	}
	if !savepoint {
		return fn(ctx, c)
	}
	if _, err := c.ExecContext(ctx, `SAVEPOINT port_op`); err != nil {
		return fmt.Errorf("sqlite: savepoint: %w", err)
	}
	if err := fn(ctx, c); err != nil {
		wctx := context.WithoutCancel(ctx)
		if _, rerr := c.ExecContext(wctx, `ROLLBACK TO port_op`); rerr != nil {
			return errors.Join(err, fmt.Errorf("sqlite: roll back to savepoint: %w", rerr))
		}
		_, _ = c.ExecContext(wctx, `RELEASE port_op`)
		return err
	}
	if _, err := c.ExecContext(ctx, `RELEASE port_op`); err != nil {
		return fmt.Errorf("sqlite: release savepoint: %w", err)
	}
	return nil
}

// InTx runs fn in a transaction, or in the one ctx already carries (fn then joins it and
// the outermost InTx commits or rolls back). An error from fn, or a panic, rolls back.
// Callbacks registered with AfterCommit run after the outermost commit succeeds.
//
// The transaction takes the single writer connection at its first write and keeps it
// until it ends, so write transactions run one at a time (SQLite allows one writer);
// others wait for it, bounded by their ctx. A goroutine inside a write transaction
// must therefore not write through this Store with a ctx that lacks the transaction:
// it would wait for itself until that ctx ends.
//
// Unlike PostgreSQL, a failed statement does not abort the transaction: each port
// method's writes apply all or none (one statement, or a savepoint around several),
// and the transaction can go on.
func (s *Store) InTx(ctx context.Context, fn func(ctx context.Context) error) error {
	if s.txFrom(ctx) != nil {
		return fn(ctx)
	}
	st := &txState{s: s}
	committed := false
	defer func() { // also on panic
		if !committed {
			_ = st.end(context.WithoutCancel(ctx), false)
		}
	}()
	if err := fn(store.WithTransaction(context.WithValue(ctx, txKey{s}, st))); err != nil {
		return err
	}
	committed = true
	if err := st.end(ctx, true); err != nil {
		return err
	}
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

func (s *Store) releaseHeld(st *txState) {
	st.mu.Lock()
	ids := st.held
	st.held = nil
	st.mu.Unlock()
	if len(ids) == 0 {
		return
	}
	s.heldMu.Lock()
	for _, id := range ids {
		if s.held[id] == st {
			delete(s.held, id)
		}
	}
	s.heldMu.Unlock()
}

// isUniqueViolation reports a UNIQUE or PRIMARY KEY constraint failure.
func isUniqueViolation(err error) bool {
	var se *msqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	return se.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || se.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
}

func noRows(err error) bool { return errors.Is(err, sql.ErrNoRows) }

// Timestamps are stored as INTEGER unix nanoseconds (UTC); the zero time is NULL.
// Times outside the int64 range (before 1678, after 2262) are clamped.

var (
	minNanoTime = time.Unix(0, math.MinInt64+1).UTC()
	maxNanoTime = time.Unix(0, math.MaxInt64).UTC()
)

// now returns the current time in UTC without a monotonic reading.
func now() time.Time { return time.Now().UTC().Round(0) }

// normTime returns t in UTC at the stored precision (the zero time stays zero).
func normTime(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	return time.Unix(0, nanos(t)).UTC()
}

func nanos(t time.Time) int64 {
	switch {
	case t.Before(minNanoTime):
		return math.MinInt64 + 1
	case t.After(maxNanoTime):
		return math.MaxInt64
	}
	return t.UnixNano()
}

// ts is the column value of t: NULL for the zero time.
func ts(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return nanos(t)
}

func fromTS(n sql.NullInt64) time.Time {
	if !n.Valid {
		return time.Time{}
	}
	return time.Unix(0, n.Int64).UTC()
}

// scanner is a *sql.Row or *sql.Rows.
type scanner interface{ Scan(dest ...any) error }
