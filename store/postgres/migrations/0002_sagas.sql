-- 0002_sagas: durable saga engine (history, snapshots, timers).

CREATE TABLE sagas (
    id               text        PRIMARY KEY,
    type             text        NOT NULL,
    version          integer     NOT NULL,
    state            text        NOT NULL,
    input            bytea       NOT NULL DEFAULT '',
    current_step     integer     NOT NULL DEFAULT 0,
    last_seq         bigint      NOT NULL DEFAULT 0,
    runnable_at      timestamptz,
    claimed_by       text,
    claim_expires_at timestamptz,
    error            text        NOT NULL DEFAULT '',
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
-- The claim query walks runnable sagas in due order; parked and finished ones are not
-- in the index.
CREATE INDEX sagas_runnable_idx ON sagas (runnable_at) WHERE runnable_at IS NOT NULL;
CREATE INDEX sagas_type_state_idx ON sagas (type, state);

CREATE TABLE saga_events (
    saga_id       text        NOT NULL REFERENCES sagas (id) ON DELETE CASCADE,
    seq           bigint      NOT NULL,
    type          text        NOT NULL,
    step          text        NOT NULL DEFAULT '',
    attempt       integer     NOT NULL DEFAULT 0,
    codec         text        NOT NULL,
    payload       bytea       NOT NULL DEFAULT '',
    trace_context jsonb       NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (saga_id, seq)
);

CREATE TABLE saga_snapshots (
    saga_id    text        NOT NULL REFERENCES sagas (id) ON DELETE CASCADE,
    seq        bigint      NOT NULL,
    state      bytea       NOT NULL,
    sha256     bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (saga_id, seq)
);

CREATE TABLE saga_timers (
    id               text        PRIMARY KEY,
    saga_id          text        NOT NULL REFERENCES sagas (id) ON DELETE CASCADE,
    name             text        NOT NULL,
    fire_at          timestamptz NOT NULL,
    status           text        NOT NULL DEFAULT 'PENDING'
                     CHECK (status IN ('PENDING', 'FIRED', 'CANCELLED')),
    claimed_by       text,
    claim_expires_at timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX saga_timers_due_idx ON saga_timers (fire_at) WHERE status = 'PENDING';
CREATE INDEX saga_timers_saga_idx ON saga_timers (saga_id);
