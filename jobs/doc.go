// Package jobs is the job path: what happens between SubmitJob and a job's end state.
//
// # Flow
//
//	Submit ── one tx: job PENDING + ExecutionSaga started + outbox job.queued ──▶ wake scheduler
//	scheduler ── one tx under pg_advisory_xact_lock: count workers not TERMINATED;
//	             per free slot: next PENDING job (priority DESC, created_at, id; SKIP LOCKED),
//	             worker row CREATING (the slot), job → PROVISIONING (attempt+1),
//	             ProvisioningSaga started
//	ProvisioningSaga: validate-capacity ▶ create-worker (CreateWorker: password hash stored,
//	             provider.Create) ▶ await-registration ("worker.registered", timeout) ▶
//	             notify-execution (signal "worker.ready" to the ExecutionSaga)
//	RegisterWorker ── one tx: password redeemed, worker READY, signal "worker.registered"
//	ExecutionSaga: await-worker ▶ assign (job ASSIGNED, worker BUSY) ▶ dispatch (RunJob
//	             after commit) ▶ await-result ("job.finished", job timeout) ▶ complete
//	             (state + exit code + outbox events, one tx) ▶ release (worker TERMINATING,
//	             then TERMINATED: the slot frees at that commit; provider.Destroy runs
//	             after the commit and wakes the scheduler when it returns)
//
// Steps only dispatch commands (commands.go) through the step's dispatcher, with keys
// derived from StepContext.Key; they never block: waiting is AwaitSignal or
// AwaitSignalTimeout, which parks the saga. Handlers (handlers.go) write through the
// transaction in ctx and are idempotent by key and by the state machine. Signals from
// the API path go through saga.Engine.Signal inside the transaction that records the
// cause, so a signal and its cause commit together; the first signal of a name is the
// one a step sees, so a duplicate is harmless, and JobFinished also drops duplicates
// before signalling (a key in the idempotency table per job attempt).
//
// # Capacity
//
// A worker row that is not TERMINATED is a used slot. The scheduler creates the row in
// the same transaction that takes the job out of PENDING, while holding the scheduler's
// advisory lock, and every replica's scheduler takes the same lock before counting, so
// the number of such rows never exceeds Config.Capacity. A slot frees when DestroyWorker
// commits the worker TERMINATED; the provider's Destroy runs after that commit, so for a
// moment a TERMINATED worker's process may still be exiting. The scheduler is woken only
// when that Destroy returned, which keeps the processes alive within the capacity too in
// the common case (the safety poll, Config.SchedulerPoll, can start a job earlier).
//
// # Provider side effects and transactions
//
// DestroyWorker never calls the provider inside its transaction: it revokes the
// credentials and records TERMINATED, and an after-commit callback runs
// provider.Destroy in a goroutine (bounded by Config.DestroyTimeout, three attempts).
// That keeps a database transaction (and a saga step group) from staying open during a
// process scan or a grace period. Durability: if the control plane dies between the
// commit and the Destroy, or every attempt fails, the worker sweep (RunScheduler, at
// start and every Config.SweepInterval) asks each provider that can list its workers
// (provider/local: the pid records in its StateDir) and destroys every listed worker
// whose row is TERMINATED or missing. A worker row is committed (CREATING, by the
// scheduler) before its provider is asked to create it, so a live reservation is never
// swept. CreateWorker still calls provider.Create in its transaction (see Crash
// safety): the worker must not register before its password is committed, and the
// call is short (a fork/exec).
//
// # Credentials
//
// CreateWorker draws 32 random bytes as the one-time password, stores its SHA-256 with
// an expiry (Config.OTPTTL), and hands the plain value to the provider (environment,
// never argv). RegisterWorker redeems it once under a row lock and issues a random
// session token, also stored hashed. Unknown, reused and expired passwords give
// ErrOTPUnknown, ErrOTPReused and ErrOTPExpired and are logged with slog (without the
// password). DestroyWorker revokes both.
//
// # Crash safety
//
// Every state change is in the database before anything leaves the process. If the
// control plane dies between two steps, the sagas resume from their histories on
// restart: a worker that was running keeps running (its own process group), reconnects
// with its session token, and its result (re-sent until acknowledged) completes the job;
// a worker whose job is ASSIGNED gets its RunJob again from PendingRun when it
// reconnects. CreateWorker calls the provider inside its transaction; if that
// transaction does not commit, the retry destroys the process the failed attempt
// started (its password never committed) before creating it again. A worker that
// registers before CreateWorker's transaction commits waits on the credential row lock.
//
// Known limits: RunJob and CancelJob are sent at most once (a connected worker that
// misses a RunJob waits until it reconnects or the job times out); a worker lost
// mid-job is not replaced (the Recovery saga is a later issue); a worker whose
// Register response is lost cannot register again (its password is spent) and is
// destroyed when the job times out.
package jobs
