-- Issue 14: the leader deletes what ended long ago (--retain-sagas, --retain-jobs,
-- --retain-logs, --retain-idempotency) in small batches; each batch finds its oldest
-- rows through one of these indexes instead of a scan. The state lists are those of
-- store/postgres/retention.go (endedJobStates, endedSagaStates): keep them equal.
CREATE INDEX jobs_ended_idx ON jobs (finished_at, id)
    WHERE state IN ('SUCCEEDED', 'FAILED', 'TIMED_OUT', 'CANCELLED');
CREATE INDEX sagas_ended_idx ON sagas (updated_at, id)
    WHERE state IN ('COMPLETED', 'FAILED', 'COMPENSATED', 'COMPENSATION_FAILED', 'CANCELLED');
CREATE INDEX workers_terminated_idx ON workers (updated_at, id) WHERE state = 'TERMINATED';
CREATE INDEX job_logs_time_idx ON job_logs (time);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);
-- The batches keep what a job not ended needs (its log lines, its result key, its
-- worker, a saga's step keys): these small indexes hold only the jobs and sagas not
-- ended and the outbox rows not finished, so that check never scans the whole table.
CREATE INDEX jobs_live_idx ON jobs (id) WHERE state NOT IN ('SUCCEEDED', 'FAILED', 'TIMED_OUT', 'CANCELLED');
CREATE INDEX outbox_unfinished_key_idx ON outbox (idempotency_key) WHERE status IN ('PENDING', 'RETRY', 'DEAD_LETTER');
CREATE INDEX sagas_live_idx ON sagas (id)
    WHERE state NOT IN ('COMPLETED', 'FAILED', 'COMPENSATED', 'COMPENSATION_FAILED', 'CANCELLED');
