-- 0006_installation: the installation's id, shared by every replica on this database
-- and recorded on what providers create on shared infrastructure (a Docker Engine's
-- containers carry it as hodei.installation), so that two installations on one engine
-- leave each other's workers alone. One row, written by the first InstallationID call
-- (not here: a database copied from a migrated template gets its own id).

CREATE TABLE installation (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    id        text    NOT NULL CHECK (id <> '')
);
