-- 0004_leader: leader leases (internal/leadership). One row per lease name; the holder
-- renews expires_at well before it passes, and another replica takes the row once it
-- has. Every time is written by the caller (no now() here).

CREATE TABLE leader_leases (
    name       text        PRIMARY KEY,
    holder     text        NOT NULL,
    elected_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    CHECK (expires_at > elected_at)
);
