// Package postgres is the PostgreSQL driver of the store ports (pgx v5, pgxpool).
//
// # Transactions
//
// Store.InTx begins a pgx transaction and puts it in the context under a key private to
// that Store; every port method asks q(ctx) for its querier and so writes through the
// transaction when there is one and through the pool otherwise. A nested InTx joins the
// enclosing transaction (no savepoint): only the outermost InTx commits or rolls back, so
// rolling back the outer undoes the inner writes. AfterCommit callbacks are collected on
// the transaction and run, in order, after the outermost commit succeeds; they are
// dropped on rollback. Other drivers in this package (the saga store) use q(ctx) and
// AfterCommit the same way.
//
// # Migrations
//
// migrations/NNNN_name.sql are embedded and applied in name order by Migrate. Each runs in
// its own transaction that first takes pg_advisory_xact_lock, then checks and records
// its version in schema_migrations; concurrent migrators therefore serialise and each
// version is applied once. Open never migrates.
//
// # Outbox
//
// Claim is one UPDATE whose WHERE id = ANY(ARRAY(SELECT … FOR UPDATE SKIP LOCKED
// LIMIT n)) selects and leases in the same statement: a row is locked by exactly one
// claim and has claimed_by set before its lock is released, so two relays never get
// the same row. (Selecting with SKIP LOCKED outside a transaction and updating in a second
// statement, as the earlier Rust code did, lets two relays take the same row.) The due
// index covers only PENDING/RETRY rows with no lease, so claims do not wade through rows
// other relays hold.
//
// Insert is one multi-row INSERT … ON CONFLICT (idempotency_key) DO NOTHING; ids of keys
// that already existed are looked up after. Requeue keeps last_error (it is overwritten by
// the next failure) and resets attempts to 0.
//
// # Wake-ups
//
// Relays must learn about new rows without polling, but a per-row NOTIFY trigger costs
// too much: NOTIFY takes a cluster-wide lock at commit, so every inserting transaction
// would serialise on it (measured: 8 writers fell from ≈12,000 to ≈4,400 rows/s). Instead,
// Insert registers an AfterCommit callback that (1) signals the in-process Wakeups
// channels directly and (2) asks a per-Store notifier goroutine for a NOTIFY
// hodei_outbox. The request channel has capacity 1 and the notifier sends at most one
// NOTIFY per NotifyInterval (1 ms) from the pool, outside the users' transactions, so
// any number of commits cost at most ~1,000 small notify transactions per second. A
// request made while a NOTIFY is pending rides on it; one made while the notifier sleeps
// is kept in the channel and served after, so no commit is left without a later NOTIFY.
//
// Wakeups opens a dedicated connection (application_name hodei-outbox-listener, not from
// the pool) that LISTENs and waits for notifications. When that connection is lost it
// reconnects with exponential backoff (50 ms up to ListenerBackoffMax) and sends one
// wake-up after reconnecting, since rows may have been committed while it was deaf.
// Wake-ups are coalesced into a channel of capacity 1; the relay's poll is the safety net.
package postgres
