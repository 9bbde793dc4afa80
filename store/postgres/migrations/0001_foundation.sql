-- 0001_foundation: jobs, workers, the unified outbox and idempotency keys.

CREATE TABLE jobs (
    id          text        PRIMARY KEY,
    spec        jsonb       NOT NULL,
    state       text        NOT NULL,
    attempt     integer     NOT NULL DEFAULT 0,
    worker_id   text        NOT NULL DEFAULT '',
    exit_code   integer,
    last_error  text        NOT NULL DEFAULT '',
    resolution  text        NOT NULL DEFAULT '',
    notes       text        NOT NULL DEFAULT '',
    priority    integer     NOT NULL DEFAULT 0,
    labels      jsonb       NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    started_at  timestamptz,
    finished_at timestamptz
);
-- List pages newest first: keyset on (created_at, id).
CREATE INDEX jobs_created_idx ON jobs (created_at DESC, id DESC);
CREATE INDEX jobs_state_created_idx ON jobs (state, created_at DESC, id DESC);
-- Label filters use labels @> '{"k":"v"}'.
CREATE INDEX jobs_labels_idx ON jobs USING gin (labels jsonb_path_ops);

CREATE TABLE workers (
    id             text        PRIMARY KEY,
    provider       text        NOT NULL,
    state          text        NOT NULL,
    job_id         text        NOT NULL DEFAULT '',
    labels         jsonb       NOT NULL DEFAULT '{}',
    last_heartbeat timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX workers_state_idx ON workers (state);

CREATE TABLE outbox (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind             text        NOT NULL CHECK (kind IN ('command', 'event')),
    type             text        NOT NULL,
    idempotency_key  text        NOT NULL UNIQUE,
    payload          jsonb       NOT NULL,
    status           text        NOT NULL DEFAULT 'PENDING'
                     CHECK (status IN ('PENDING', 'RETRY', 'COMPLETED', 'DEAD_LETTER', 'CANCELLED')),
    attempts         integer     NOT NULL DEFAULT 0,
    max_attempts     integer     NOT NULL DEFAULT 5,
    scheduled_at     timestamptz NOT NULL DEFAULT now(),
    last_error       text        NOT NULL DEFAULT '',
    claimed_by       text,
    claim_expires_at timestamptz,
    trace_context    jsonb       NOT NULL DEFAULT '{}',
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
-- The claim query's index: only due-able, unleased rows are in it, so a claim never
-- walks past rows other relays hold or rows already finished.
CREATE INDEX outbox_due_idx ON outbox (scheduled_at, id)
    WHERE status IN ('PENDING', 'RETRY') AND claimed_by IS NULL;
-- The reaper's index: leased rows only.
CREATE INDEX outbox_leased_idx ON outbox (claim_expires_at)
    WHERE claimed_by IS NOT NULL;
-- Dead letters are listed by operators.
CREATE INDEX outbox_dead_idx ON outbox (id) WHERE status = 'DEAD_LETTER';

CREATE TABLE idempotency_keys (
    key          text        PRIMARY KEY,
    command_type text        NOT NULL,
    result       jsonb,
    created_at   timestamptz NOT NULL DEFAULT now()
);
