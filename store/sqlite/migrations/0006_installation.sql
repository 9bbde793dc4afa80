-- 0006_installation: the installation's id. SQLite dialect of
-- store/postgres/migrations/0006_installation.sql.

CREATE TABLE installation (
    singleton INTEGER PRIMARY KEY DEFAULT 1 CHECK (singleton = 1),
    id        TEXT    NOT NULL CHECK (id <> '')
) STRICT;
