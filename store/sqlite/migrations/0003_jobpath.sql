-- 0003_jobpath: job output, worker credentials and the scheduler's index. SQLite
-- dialect of store/postgres/migrations/0003_jobpath.sql.

CREATE TABLE job_logs (
    job_id  TEXT    NOT NULL,
    seq     INTEGER NOT NULL CHECK (seq >= 1),
    stream  TEXT    NOT NULL DEFAULT '',
    line    TEXT    NOT NULL,
    time    INTEGER NOT NULL,
    PRIMARY KEY (job_id, seq)
) STRICT, WITHOUT ROWID;

-- One row per worker. Only SHA-256 hashes are stored.
CREATE TABLE worker_credentials (
    worker_id      TEXT    PRIMARY KEY,
    otp_hash       BLOB,
    otp_expires_at INTEGER,
    otp_used_at    INTEGER,
    session_hash   BLOB    UNIQUE,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
) STRICT;

-- The scheduler takes PENDING jobs highest priority first, then oldest.
CREATE INDEX jobs_pending_sched_idx ON jobs (priority DESC, created_at, id) WHERE state = 'PENDING';
-- Capacity counts workers that are not TERMINATED.
CREATE INDEX workers_active_idx ON workers (id) WHERE state <> 'TERMINATED';
