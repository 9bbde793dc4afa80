-- 0004_leader: leader leases. SQLite dialect of store/postgres/migrations/0004_leader.sql
-- (hodei dev is one process and always leads; the table keeps the port's contract).

CREATE TABLE leader_leases (
    name       TEXT    PRIMARY KEY,
    holder     TEXT    NOT NULL,
    elected_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    CHECK (expires_at > elected_at)
) STRICT;
