// Package sqlite is the embedded SQLite driver of the store ports (modernc.org/sqlite:
// pure Go, no cgo). It passes the same conformance suite (store/storetest) as the
// PostgreSQL driver.
//
// # Limits
//
// One process, one node. The database is a local file used by one Store in one
// process: wake-ups, the skipping of jobs claimed by open transactions and the outbox
// id counter live in that process's memory, and SQLite allows one writer at a time.
// It is for development (`hodei dev`) and single-machine installations; production,
// and anything with more than one server process, uses PostgreSQL (store/postgres).
//
// # Connections and transactions
//
// Open uses two database/sql pools on the file, which is put in WAL mode (readers do
// not block the writer nor the writer readers): a writer pool of exactly one connection
// (busy_timeout, foreign_keys on, synchronous NORMAL by default) and a pool of
// query_only connections for reads. SQLite's single-writer rule is thereby explicit in
// the process: a write waits for the writer connection (bounded by its ctx) instead of
// failing with SQLITE_BUSY, and a transaction that read before writing never fails to
// upgrade its read snapshot (SQLITE_BUSY_SNAPSHOT), because reads outside a write
// transaction are not part of one.
//
// Store.InTx puts a transaction in the context, as the PostgreSQL driver does; a nested
// InTx joins it and AfterCommit callbacks run after the outermost commit. The
// transaction takes the writer connection (BEGIN IMMEDIATE) at its first write and
// keeps it until commit or rollback. Until then its reads go to the read pool and see
// the latest committed data (statement by statement, like PostgreSQL's READ COMMITTED);
// after it, they go to the writer and see the transaction's own writes. So write
// transactions run one at a time, and a transaction that only reads never waits. A
// goroutine inside a write transaction must not write through the same Store with a
// ctx lacking that transaction: it would wait for itself until that ctx ends.
//
// A port method's writes apply all or none: one statement, or a savepoint around
// several. Unlike PostgreSQL, a failed statement does not poison the enclosing
// transaction; the caller may go on and commit.
//
// One connection for everything was considered and rejected: it makes every read wait
// behind open write transactions, and it deadlocks the scheduler's SKIP LOCKED case (a second transaction's claim while the first holds the
// scheduler lock; storetest.RunJobPath/SchedulingLockAndSkipLocked).
//
// # What replaces PostgreSQL's locking
//
//   - FOR UPDATE / SKIP LOCKED on the outbox, saga and timer claims: a claim is one
//     UPDATE … WHERE id IN (SELECT … LIMIT n) RETURNING on the single writer, so no two
//     claims interleave and a row has claimed_by set before another claim reads it.
//   - Read-modify-write methods (UpdateState, RedeemOTP, the saga Append's seq check)
//     read on the writer connection: nothing can change the row between the read and
//     the write.
//   - pg_advisory_xact_lock of Scheduling.Lock: Lock takes the writer connection for
//     the transaction, so two schedulers count and claim one after the other.
//   - FOR UPDATE SKIP LOCKED of Scheduling.ClaimPending: the ids it returns are recorded
//     in the Store as held by the transaction until it ends, and other transactions'
//     ClaimPending skip them. It does not take the writer, so a claim without the lock
//     does not wait for a scheduler that holds it.
//   - LISTEN/NOTIFY: Wakeups channels are signalled in process after commits that
//     inserted, reaped or requeued outbox rows. Other processes are not told.
//   - Sequences: outbox ids come from max(sqlite_sequence, the last id this Store handed
//     out) + 1, under the writer, so an id of a rolled-back insert is not handed out
//     again (a rolled-back AUTOINCREMENT would be).
//
// # Schema
//
// migrations/NNNN_name.sql mirror store/postgres/migrations (same versions, tables and
// columns) in SQLite's dialect, STRICT tables. Open applies those not recorded in
// schema_migrations, each in its own BEGIN IMMEDIATE transaction. Timestamps are
// INTEGER unix nanoseconds in UTC (NULL for the zero time; times outside 1678–2262 are
// clamped); JSON columns are TEXT; label filters use json_each. The claim queries name
// their partial index (INDEXED BY), so they stay index-ordered before statistics exist.
//
// # Durability
//
// synchronous=NORMAL in WAL mode: a committed transaction survives a crash of the
// process; the last commits before a power loss or OS crash may be lost. WithSynchronous
// (SyncFull) fsyncs every commit instead.
package sqlite
