-- 0002_sagas: durable saga engine (history, snapshots, timers). SQLite dialect of
-- store/postgres/migrations/0002_sagas.sql.

CREATE TABLE sagas (
    id               TEXT    PRIMARY KEY,
    type             TEXT    NOT NULL,
    version          INTEGER NOT NULL,
    state            TEXT    NOT NULL,
    input            BLOB    NOT NULL DEFAULT x'',
    current_step     INTEGER NOT NULL DEFAULT 0,
    last_seq         INTEGER NOT NULL DEFAULT 0,
    runnable_at      INTEGER,
    claimed_by       TEXT,
    claim_expires_at INTEGER,
    error            TEXT    NOT NULL DEFAULT '',
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
) STRICT;
CREATE INDEX sagas_runnable_idx ON sagas (runnable_at) WHERE runnable_at IS NOT NULL;
CREATE INDEX sagas_type_state_idx ON sagas (type, state);

CREATE TABLE saga_events (
    saga_id       TEXT    NOT NULL REFERENCES sagas (id) ON DELETE CASCADE,
    seq           INTEGER NOT NULL,
    type          TEXT    NOT NULL,
    step          TEXT    NOT NULL DEFAULT '',
    attempt       INTEGER NOT NULL DEFAULT 0,
    codec         TEXT    NOT NULL,
    payload       BLOB    NOT NULL DEFAULT x'',
    trace_context TEXT    NOT NULL DEFAULT '{}',
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (saga_id, seq)
) STRICT, WITHOUT ROWID;

CREATE TABLE saga_snapshots (
    saga_id    TEXT    NOT NULL REFERENCES sagas (id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL,
    state      BLOB    NOT NULL,
    sha256     BLOB    NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (saga_id, seq)
) STRICT, WITHOUT ROWID;

CREATE TABLE saga_timers (
    id               TEXT    PRIMARY KEY,
    saga_id          TEXT    NOT NULL REFERENCES sagas (id) ON DELETE CASCADE,
    name             TEXT    NOT NULL,
    fire_at          INTEGER NOT NULL,
    status           TEXT    NOT NULL DEFAULT 'PENDING'
                     CHECK (status IN ('PENDING', 'FIRED', 'CANCELLED')),
    claimed_by       TEXT,
    claim_expires_at INTEGER,
    created_at       INTEGER NOT NULL
) STRICT;
CREATE INDEX saga_timers_due_idx ON saga_timers (fire_at) WHERE status = 'PENDING';
CREATE INDEX saga_timers_saga_idx ON saga_timers (saga_id);
