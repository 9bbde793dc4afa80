-- PostgreSQL drops the foreign key from saga_events to sagas here (see its 0015). On
-- SQLite removing a constraint means rebuilding the table, and the check is a cheap
-- lookup in the same file, so the constraint stays. Kept so both backends have the
-- same migration versions.
SELECT 1;
