-- 0007_auth: API tokens (stored as SHA-256 hashes), the append-only audit trail, and
-- an index for listing jobs by namespace (the namespace lives in the spec; a job
-- stored without one is in "default").

CREATE TABLE api_tokens (
    name        text        PRIMARY KEY,
    hash        bytea       NOT NULL UNIQUE,
    role        text        NOT NULL,
    namespaces  jsonb       NOT NULL DEFAULT '[]',
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz,
    revoked_at  timestamptz
);

CREATE TABLE audit_log (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL,
    actor       text        NOT NULL DEFAULT '',
    action      text        NOT NULL,
    procedure   text        NOT NULL DEFAULT '',
    target      text        NOT NULL DEFAULT '',
    namespace   text        NOT NULL DEFAULT '',
    outcome     text        NOT NULL,
    remote      text        NOT NULL DEFAULT '',
    detail      text        NOT NULL DEFAULT ''
);
CREATE INDEX audit_log_at_idx ON audit_log (at, id);
CREATE INDEX audit_log_actor_idx ON audit_log (actor, at, id);

-- Append-only: no UPDATE or DELETE (TRUNCATE stays possible for a database owner).
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END $$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();

CREATE INDEX jobs_namespace_created_idx
    ON jobs ((COALESCE(NULLIF(spec->>'namespace', ''), 'default')), created_at DESC, id DESC);
