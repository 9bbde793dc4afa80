-- Issue 14: the leader prunes finished outbox rows (COMPLETED, CANCELLED) after
-- --retain-outbox in small batches; this index finds the oldest of them without a scan.
CREATE INDEX outbox_finished_idx ON outbox (updated_at, id) WHERE status IN ('COMPLETED', 'CANCELLED');
