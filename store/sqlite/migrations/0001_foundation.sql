-- 0001_foundation: jobs, workers, the unified outbox and idempotency keys.
-- SQLite dialect of store/postgres/migrations/0001_foundation.sql: same tables and
-- columns; timestamps are INTEGER unix nanoseconds (UTC), JSON is TEXT.

CREATE TABLE jobs (
    id          TEXT    PRIMARY KEY,
    spec        TEXT    NOT NULL,
    state       TEXT    NOT NULL,
    attempt     INTEGER NOT NULL DEFAULT 0,
    worker_id   TEXT    NOT NULL DEFAULT '',
    exit_code   INTEGER,
    last_error  TEXT    NOT NULL DEFAULT '',
    resolution  TEXT    NOT NULL DEFAULT '',
    notes       TEXT    NOT NULL DEFAULT '',
    priority    INTEGER NOT NULL DEFAULT 0,
    labels      TEXT    NOT NULL DEFAULT '{}',
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    started_at  INTEGER,
    finished_at INTEGER
) STRICT;
-- List pages newest first: keyset on (created_at, id).
CREATE INDEX jobs_created_idx ON jobs (created_at DESC, id DESC);
CREATE INDEX jobs_state_created_idx ON jobs (state, created_at DESC, id DESC);

CREATE TABLE workers (
    id             TEXT    PRIMARY KEY,
    provider       TEXT    NOT NULL,
    state          TEXT    NOT NULL,
    job_id         TEXT    NOT NULL DEFAULT '',
    labels         TEXT    NOT NULL DEFAULT '{}',
    last_heartbeat INTEGER,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
) STRICT;
CREATE INDEX workers_state_idx ON workers (state);

-- AUTOINCREMENT: ids of deleted rows are never reused (the driver also skips the ids
-- of rolled-back inserts, which AUTOINCREMENT alone would hand out again).
CREATE TABLE outbox (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    kind             TEXT    NOT NULL CHECK (kind IN ('command', 'event')),
    type             TEXT    NOT NULL,
    idempotency_key  TEXT    NOT NULL UNIQUE,
    payload          TEXT    NOT NULL,
    status           TEXT    NOT NULL DEFAULT 'PENDING'
                     CHECK (status IN ('PENDING', 'RETRY', 'COMPLETED', 'DEAD_LETTER', 'CANCELLED')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL DEFAULT 5,
    scheduled_at     INTEGER NOT NULL,
    last_error       TEXT    NOT NULL DEFAULT '',
    claimed_by       TEXT,
    claim_expires_at INTEGER,
    trace_context    TEXT    NOT NULL DEFAULT '{}',
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
) STRICT;
-- The claim query's index: only due-able, unleased rows.
CREATE INDEX outbox_due_idx ON outbox (scheduled_at, id)
    WHERE status IN ('PENDING', 'RETRY') AND claimed_by IS NULL;
-- The reaper's index: leased rows only.
CREATE INDEX outbox_leased_idx ON outbox (claim_expires_at)
    WHERE claimed_by IS NOT NULL;
CREATE INDEX outbox_status_idx ON outbox (status, id);

CREATE TABLE idempotency_keys (
    key          TEXT    PRIMARY KEY,
    command_type TEXT    NOT NULL,
    result       TEXT,
    created_at   INTEGER NOT NULL
) STRICT;
