-- 0007_auth: API tokens (stored as SHA-256 hashes), the append-only audit trail, and
-- an index for listing jobs by namespace (the namespace lives in the spec; a job
-- stored without one is in "default"). Times are Unix nanoseconds.

CREATE TABLE api_tokens (
    name        TEXT    PRIMARY KEY,
    hash        BLOB    NOT NULL UNIQUE,
    role        TEXT    NOT NULL,
    namespaces  TEXT    NOT NULL DEFAULT '[]',
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER,
    revoked_at  INTEGER
);

CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,
    actor       TEXT    NOT NULL DEFAULT '',
    action      TEXT    NOT NULL,
    procedure   TEXT    NOT NULL DEFAULT '',
    target      TEXT    NOT NULL DEFAULT '',
    namespace   TEXT    NOT NULL DEFAULT '',
    outcome     TEXT    NOT NULL,
    remote      TEXT    NOT NULL DEFAULT '',
    detail      TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX audit_log_at_idx ON audit_log (at, id);
CREATE INDEX audit_log_actor_idx ON audit_log (actor, at, id);

-- Append-only: no UPDATE or DELETE.
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;

CREATE INDEX jobs_namespace_created_idx
    ON jobs (COALESCE(NULLIF(json_extract(spec, '$.namespace'), ''), 'default'), created_at DESC, id DESC);
