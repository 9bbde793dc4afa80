-- 0003_jobpath: job output, worker credentials and the scheduler's index.

CREATE TABLE job_logs (
    job_id  text        NOT NULL,
    seq     bigint      NOT NULL CHECK (seq >= 1),
    stream  text        NOT NULL DEFAULT '',
    line    text        NOT NULL,
    time    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, seq)
);

-- One row per worker. Only SHA-256 hashes are stored: the one-time password and the
-- session token themselves never reach the database.
CREATE TABLE worker_credentials (
    worker_id      text        PRIMARY KEY,
    otp_hash       bytea,
    otp_expires_at timestamptz,
    otp_used_at    timestamptz,
    session_hash   bytea       UNIQUE,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- The scheduler takes PENDING jobs highest priority first, then oldest.
CREATE INDEX jobs_pending_sched_idx ON jobs (priority DESC, created_at, id) WHERE state = 'PENDING';
-- Capacity counts workers that are not TERMINATED.
CREATE INDEX workers_active_idx ON workers (id) WHERE state <> 'TERMINATED';
