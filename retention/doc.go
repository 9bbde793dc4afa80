// Package retention deletes what ended long ago, so a server can run for months
// (issue 14). The leading replica runs a Pruner every minute; `hodei admin prune` runs
// one pass by hand (--dry-run: counts only). River's job cleaner and Temporal's
// namespace retention are the models: each kind has its own retention, and every
// deletion is a batch of at most BatchSize rows found through an index (migration
// 0016_retention), one short statement or transaction at a time with a pause between
// batches, so no lock is held for long and other writers keep going.
//
// Kinds and what each deletes once older than its retention (0: keep forever):
//
//	outbox       COMPLETED and CANCELLED outbox rows (--retain-outbox, default 24h)
//	sagas        ended sagas no job owns (warm workers', …), with history, snapshots,
//	             timers (--retain-sagas, default 168h)
//	jobs         jobs in an end state (SUCCEEDED, FAILED, TIMED_OUT, CANCELLED), with
//	             their log lines and the sagas they own (--retain-jobs, default 720h)
//	workers      TERMINATED workers and their credentials (--retain-jobs too)
//	logs         log lines of ended jobs (--retain-logs, default 168h)
//	idempotency  recorded command keys (--retain-idempotency, default 168h)
//
// Never deleted: a job not in an end state (MANUAL_INTERVENTION_REQUIRED included,
// and every job one of whose sagas has not ended); a saga that has not ended, and its
// history; the sagas a job owns while the job is kept (recovery and timeouts look them
// up by id, and starting one again after its deletion would run it twice); a worker
// whose warm-pool saga has not ended or whose current job has not ended; log lines of a
// job not ended; an idempotency key an outbox row not yet finished carries (PENDING,
// RETRY, DEAD_LETTER: it may still be dispatched), that records the result of a job
// not ended, or that is a step key (<saga>/<step>/…) of a saga not ended; dead
// letters; the audit trail (append-only by trigger, package auth: an operator archives
// it by hand if ever).
//
// Idempotency keys and the command bus (package command): a key makes a repeated
// dispatch a no-op. The relay repeats a command only while its outbox row is not
// finished (such keys are kept), and a saga step's command commits with the step's
// outcome, so a key is needed again only for a caller that repeats a request later
// than --retain-idempotency: such a repeat runs again. Keep the retention longer than
// any client's retry window.
package retention
