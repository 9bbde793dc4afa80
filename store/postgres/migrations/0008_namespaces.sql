-- 0008_namespaces: a namespace's limit on jobs holding a worker (PROVISIONING,
-- ASSIGNED, RUNNING); the scheduler leaves the namespace's other jobs PENDING.

CREATE TABLE namespace_limits (
    namespace    text        PRIMARY KEY,
    max_running  integer     NOT NULL CHECK (max_running > 0),
    updated_at   timestamptz NOT NULL
);
