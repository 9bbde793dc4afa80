// Package jobs is the job path: what happens between SubmitJob and a job's end state.
//
// # Flow
//
//	Submit ── one tx: job PENDING + ExecutionSaga started + outbox job.queued ──▶ wake scheduler
//	scheduler (leader only) ── one tx under pg_advisory_xact_lock: count workers not TERMINATED;
//	             per free slot: next PENDING job (priority DESC, created_at, id; SKIP LOCKED),
//	             worker row CREATING (the slot), job → PROVISIONING (attempt+1),
//	             ProvisioningSaga started
//	ProvisioningSaga: validate-capacity ▶ create-worker (an activity, outside any tx:
//	             CreateWorker commits a fresh password hash and this node as owner, then
//	             provider.Create) ▶ await-registration ("worker.registered", timeout) ▶
//	             notify-execution (signal "worker.ready" to the ExecutionSaga)
//	RegisterWorker ── one tx: password redeemed, worker READY, signal "worker.registered"
//	ExecutionSaga: await-worker ▶ assign (job ASSIGNED, worker BUSY) ▶ dispatch (an
//	             activity: DeliverRun, RunJob until the agent acks it) ▶ await-result
//	             ("job.finished", job timeout) ▶ complete
//	             (state + exit code + outbox events, one tx) ▶ release (worker TERMINATING,
//	             then TERMINATED: the slot frees at that commit; provider.Destroy runs
//	             after the commit and wakes the scheduler when it returns)
//
// One file per saga holds its definition, its commands and their handlers:
// provisioning.go, execution.go, cancel.go, timeout.go, recovery.go; commands.go has the
// commands several sagas share (DestroyWorker, MarkJobFailed) and the registration of
// every handler, sagas.go the saga registry and the step helpers (withInput).
//
// Steps only dispatch commands through the step's dispatcher, with keys
// derived from StepContext.Key; they never block: waiting is AwaitSignal or
// AwaitSignalTimeout, which parks the saga. Handlers write through the
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
// advisory lock, and whoever else counts and reserves (a second leader, reserve-
// replacement) takes the same lock first, so the number of such rows never exceeds
// Config.Capacity. A slot frees when DestroyWorker
// commits the worker TERMINATED; the provider's Destroy runs after that commit, so for a
// moment a TERMINATED worker's process may still be exiting. The scheduler is woken only
// when that Destroy returned, which keeps the processes alive within the capacity too in
// the common case (the safety poll, Config.SchedulerPoll, can start a job earlier).
//
// # Providers: selection and capacity (selection.go)
//
// Several providers run at once (hodei server --provider local --provider docker).
// A job runs on its spec's Provider if it names one; otherwise on the first provider,
// in registration order, whose Capabilities().Labels carry the job's Selector and that
// can run it (an Image needs Capabilities().Images; a provider with RequiresImage needs
// one). Submit refuses a spec no provider can run (a *domain.ValidationError naming the
// field: InvalidArgument), so nothing is created; a PENDING job that none can run any
// more (the providers changed since it was accepted) is failed by the scheduler.
//
// Capacity is per provider: under its lock, the scheduler counts the workers that are
// not TERMINATED per provider (Workers().List) and gives each job the first of its
// candidates below its Capabilities().MaxWorkers; Config.Capacity (default the sum of
// the providers' MaxWorkers) bounds the total. It claims more PENDING jobs than it has
// free slots, so a job whose providers are all full keeps its place (priority, then
// age) while later jobs for providers with room start. The chosen provider is the
// worker row's Provider (shown by hodei job get); a recovery's replacement runs on the
// lost worker's provider.
//
// A provider's Create error marked provider.Permanent (an image that does not exist
// under --pull never, a failed pull, a spec the provider refuses) fails the job at once
// with the provider's reason (failPermanently, effects.go) instead of provisioning it
// again until its attempts run out.
//
// # Warm pools (warm.go)
//
// Config.Pools keeps idle workers registered ahead of jobs, per provider and image
// (PoolConfig: min_idle, max_idle, idle_ttl, max_jobs_per_worker). A pool's worker is
// an ordinary worker row with the label hodei.pool and no job; it counts against its
// provider's capacity like any other. Everything about it stays in the saga and
// ownership structure:
//
//	scheduler tx (leader, under the lock), after the PENDING jobs: per pool, while
//	     idle + creating < min_idle and its provider has room that no PENDING job of
//	     this pass waited for: worker row CREATING (labels hodei.pool), password row,
//	     warm-worker saga started (id saga.IDFor("warm-worker", worker))
//	warm-worker saga: create-worker (activity: CreateWarmWorker, the same launch as
//	     CreateWorker; the spec carries MaxJobs and a long JobWait) ▶
//	     await-registration; compensation: DestroyWorker
//	RegisterWorker of a pool worker: READY (hodei.pool.idle_since), its saga signalled,
//	     scheduler woken
//	scheduler tx: a PENDING job that matches an idle worker (the worker's provider is
//	     one of the job's candidates — provider, selector, image capability — and image,
//	     resources and namespace are equal; a worker serves the namespace of its first
//	     job, label hodei.namespace) takes it at once: worker READY → BUSY on the job,
//	     job PENDING → PROVISIONING, "worker.ready" signalled to its execution saga, all
//	     in that commit. No provisioning saga, no provider call. A crash after the
//	     commit loses nothing: the signal is in the execution saga's history, whose
//	     assign and dispatch steps run as for any worker (PendingRun re-sends RunJob).
//	execution saga release: ReleaseWorker returns a pool worker to its pool
//	     (BUSY → READY, no job, Outcome.Recycled; the destroy is skipped) when its pool
//	     reuses workers (max_jobs_per_worker > 1), it has jobs left, the job SUCCEEDED
//	     or FAILED with a result the worker itself reported (so its agent finished and
//	     cleaned up, see package agent), and the pool has fewer than max_idle idle
//	     workers; else it is destroyed as today.
//
// A PENDING job comes first: the pool refills only on providers no job of the pass
// waited for, and a job whose providers are full takes the slot of an idle pool worker
// it cannot use (that worker is destroyed in the job's scheduler transaction). Idle
// workers idle longer than idle_ttl are destroyed while the pool has more than
// min_idle, and those of a pool no longer configured at once. A pool whose worker
// could not be created pauses for poolFailurePause. A pool worker that exits without a
// job (local: the provider saw it) is destroyed at once (checkExited); one lost
// silently is destroyed by the cleanup's heartbeat rule, and after a restart the
// sweep leaves pool workers alone (their rows are not TERMINATED): they reconnect and
// are matched again. Timeouts, cancellations and recoveries destroy a pool worker like
// any other.
//
// # Side effects: after the commit, on the node that owns the worker (effects.go)
//
// No provider call and no message to a worker runs inside a database transaction
// (DESIGN.md §3, invariant 7). Those a saga step needs are saga activities
// (saga.Step.Activity): the step.scheduled event that records the intent commits first,
// the activity dispatches its command (CreateWorker, TerminateWorker, DeliverRun)
// through the engine's ActivityDispatcher outside any transaction, and its outcome is
// recorded by the next transaction. They are idempotent per worker id and job attempt,
// because an activity runs at least once. The provisioning, execution and timeout sagas
// have them from version 2 on; version 1 (steps that made these calls inside their
// transaction) stays registered only so that sagas started on it finish.
//
// The worker can never register before its password is committed: the scheduler commits
// the password hash and the owner (its node) with the worker row, and the create-worker
// activity that runs right after on that node takes the plain password from memory
// (otpstash.go), so it needs no transaction of its own; a run elsewhere, after a
// restart or on a retry commits a fresh password (RotateOTP, which refuses to replace a
// password already redeemed) and the worker's owner in a short transaction of its own.
// Only then is the provider asked to start the worker. A copy of the worker left by an earlier run of the
// activity (running, or exited after its registration was refused) is destroyed first,
// so that Create (idempotent per worker id) starts one with the new password.
//
// Every worker has one owner, the node (replica) that created it (domain.Worker.Owner,
// the server's instance id). Operations on an existing worker go through
// Config.Workers (provider/routing.Router): a shared provider's (Docker over its API,
// Kubernetes) run on any replica; a node-local provider's (local processes) are routed
// to the owner over NATS. An owner that does not answer is an error, never "unknown, so
// gone": the timeout saga's terminate fails, and after its retries the job ends
// MANUAL_INTERVENTION_REQUIRED rather than TIMED_OUT with its process still running.
//
// DestroyWorker revokes the credentials and records TERMINATED; the provider's Destroy
// runs after the commit, on the owner, in a goroutine (bounded by Config.DestroyTimeout,
// three attempts). If the control plane dies between the commit and the Destroy, or
// every attempt fails, the worker sweep (RunScheduler, at start and every
// Config.SweepInterval) asks each provider that lists its workers (provider.Lister;
// local: the pid records in its StateDir, so each node sweeps its own) and destroys every
// listed worker whose row is TERMINATED or missing. A worker row is committed (CREATING,
// by the scheduler) before its provider is asked to create it, so a live reservation is
// never swept.
//
// Messages to workers are acknowledged (WorkerChannel): RunJob is delivered by the
// dispatch activity, re-sent with backoff until the agent acks it (Config.DeliveryTimeout
// per try; after deliverAttempts the saga goes on waiting, and a worker that is gone is
// found lost); so is the RunJob of a job transferred to a replacement, by the recovery
// saga's deliver activity. CancelJob (and a first copy of a transferred job's RunJob) is
// delivered after the commit that decided it, re-sent until acked or the worker is
// terminated. Message
// ids are the channel's (api.Hub): the same job, attempt and round give the same id, and
// the agent drops a copy it has seen. A worker that (re)connects is also sent its
// pending RunJob or CancelJob.

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
// reconnects. An activity that ran but whose outcome was not recorded runs again after
// the claim's lease: CreateWorker gives the worker a new password and replaces the copy
// the earlier run started; DeliverRun sends the same RunJob (same message id) again.
//
// # Cancellation (cancel.go)
//
// Cancel of a PENDING or PROVISIONING job ends it CANCELLED in one transaction (a
// reserved worker is destroyed, the provisioning saga cancelled, the execution saga
// told). An ASSIGNED or RUNNING job goes CANCELLING in the transaction that starts its
// CancellationSaga (id saga.IDFor("cancellation", jobID)): three rounds of send-cancel
// (CancelJob with Config.CancelGrace, after commit) ▶ await-cancel ("job.finished",
// which JobFinished also signals to this saga while the job is CANCELLING, bounded by
// the grace plus 1s), then finish (CANCELLED, whether or not the worker confirmed, and
// a cancelled result signalled to the execution saga, whose first result wins) and
// release (worker TERMINATED and destroyed). A later round is a no-op once a result
// arrived. A worker that reconnects while its job is CANCELLING gets the CancelJob
// again (PendingCancel, asked by the API). The execution saga does not fight it: its
// steps skip a job that is CANCELLING or ended, and CompleteJob of a job that ended
// concurrently is retried and then skipped. Cancel of an ended job gives
// *NotCancellableError (matches domain.ErrIllegalTransition: FailedPrecondition).
//
// # Timeouts (timeout.go)
//
// When await-result's timer fires, the execution saga dispatches StartJobTimeout, which
// starts the TimeoutSaga if the job is still ASSIGNED or RUNNING on its worker (a
// CANCELLING job is left to its cancellation); the execution saga's complete and release
// then skip. The TimeoutSaga's terminate step calls provider Destroy then Status (three
// attempts; an activity, on the worker's owner); confirmed, the job ends TIMED_OUT and the worker is released and
// destroyed; not confirmed, MarkJobFailed with RequiresManualReview ends the job
// MANUAL_INTERVENTION_REQUIRED with the error in its reason and the worker row is left
// as it is (its slot stays used) for an operator.
//
// Known limits: a worker lost mid-job is replaced by the recovery saga (see Recovery); a
// worker whose Register response is lost cannot register again (its password is spent)
// and is destroyed when the job times out.
//
// # Recovery (recovery.go)
//
// A worker is lost in three ways. (1) The cleanup run (below) has not heard of it for
// CleanupConfig.LostAfter (default 3 heartbeat intervals): "heard of" is its last
// heartbeat, or its last state change if later (workerSeen) — a timestamp rule, not a
// state. (2) Its stream closed and it was not heard of again within
// CleanupConfig.DisconnectGrace (default two heartbeat intervals, at most LostAfter):
// the API calls
// Service.WorkerDisconnected when a worker's stream ends for any reason but the
// server's shutdown, and counts every stream opening as a heartbeat, so a reconnect
// is "back". WorkerDisconnected never blocks (a buffered channel; a full one drops
// the notice, which rule 1 covers); RunCleanup's loop keeps the latest close per
// worker and, once it is DisconnectGrace old, checks that worker once: row missing or
// TERMINATED, seen after the close, or no ASSIGNED/RUNNING job on it → nothing; else
// StartRecovery (key "disconnect/<worker>/<close unix ns>"). Failed checks are logged,
// not retried (rule 1 covers them); the check runs on the replica that held the
// stream only. (3) Its provider saw its process exit (Service.WorkerExited, from
// local.Config.OnExit; exited.go): the same loop acts at once, no grace — a worker
// still CREATING fails its provisioning now (a worker.registered signal carrying the
// failure) instead of after Config.RegistrationTimeout, and an ASSIGNED/RUNNING job on
// it is recovered. Only the server process that started a worker sees its exit; after
// a restart rules 1 and 2 remain, and every replica asks its providers each cleanup
// interval about workers CREATING for more than two heartbeat intervals
// (checkCreatingStatus, outside any transaction): one reported exited is treated as
// an exit. Whichever rule fires, each ASSIGNED/RUNNING job on a lost (or gone: row missing or
// TERMINATED) worker gets StartRecovery and the job.worker_lost event (its key is per
// job attempt, so both rules publish it once), and StartRecovery starts the
// RecoverySaga with id saga.IDFor("recovery", jobID+"/"+attempt): a loss detected
// twice starts one saga. StartRecovery and ReserveReplacement skip a job whose result
// for its current attempt is already recorded (JobFinished's key
// "job.finished/<job>/<attempt>"): the worker reported before it vanished (an agent
// may exit right after its result is acked, before the execution saga's complete
// step), the execution saga completes the job, and running it again would be wrong.
// StartRecovery also skips a job whose TimeoutSaga exists: that saga's TerminateWorker
// is what killed the worker, and the timeout wins. AssignWorker of a worker that is
// already TERMINATING/TERMINATED (it died between registering and its assignment)
// assigns the job anyway and starts its recovery in the same transaction.
//
// A worker that could not be provisioned (provider error, registration timeout, or
// its process exited first) does not fail the job while attempts remain: the
// provisioning saga's compensation dispatches RetryProvisioning, which puts the job
// back to PENDING (provisioning.go); the execution saga still waits in
// await-worker, so the scheduler's next attempt simply signals it. A replacement
// worker of a recovery is different, since that execution saga waits for a result, not
// a worker: while attempts remain, RetryProvisioning reserves another replacement at
// once (reserveReplacementWorker, the next attempt) labelled with the same recovery
// saga, which NotifyWorkerReady signals (replacement.ready carries the worker and its
// attempt, and transfer uses them); with none left the job FAILS and the recovery
// saga's compensation (or AbandonJob, which also destroys a replacement still being
// provisioned) cleans up. The recovery saga's wait is bounded by the registration
// timeout (plus slack) times the attempts left.
//
// The job keeps its one ExecutionSaga, parked in await-result (so the job's timeout
// still bounds the whole job). The RecoverySaga:
//
//	reserve-replacement ── one tx under the scheduler lock: attempts left? (attempt <
//	     max_attempts) → replacement worker row CREATING, job RUNNING/ASSIGNED → PENDING →
//	     PROVISIONING (attempt+1, worker = replacement), the replacement's ordinary
//	     ProvisioningSaga started (the existing provisioning path, not a copy of it);
//	     none left → job FAILED "worker W lost (…); attempts exhausted (n of max)" and
//	     the execution saga gets job.finished, so it ends and releases the lost worker
//	await-replacement ── NotifyWorkerReady also signals "replacement.ready" to the
//	     recovery saga of attempt-1 (bounded by RegistrationTimeout + 2s)
//	transfer ── job ASSIGNED to the replacement, signal "worker.reassigned/<attempt>"
//	     to the execution saga (loadExec then uses that worker: complete and release act
//	     on the replacement), outbox event job.reassigned, RunJob after commit, and a
//	     best-effort CancelJob to the lost worker
//	terminate-old ── DestroyWorker of the lost worker (provider.Destroy ends its process
//	     group); the replacement too if the job ended meanwhile
//	deliver (v2, activity) ── DeliverRun: RunJob to the replacement until the agent acks
//	     it, as the execution saga's dispatch does. The after-commit copy above is lost
//	     when the transfer's commit answer is (committed, callbacks never run, the retry
//	     finds the job transferred), and a replacement that connected before the
//	     transfer would otherwise wait for its job forever
//
// Compensation (a later step failing for good, e.g. the replacement never registers):
// destroy the replacement and the lost worker, AbandonJob (job FAILED, or CANCELLED if
// it was being cancelled) and job.finished to the execution saga so that it ends. The
// lost worker cannot report any more: the job's worker is the replacement
// (ErrNotAssigned). Capacity: the lost worker's row counts until terminate-old, so a
// recovery may exceed Config.Capacity by one worker for that short window.
//
// # Leader (leader.go)
//
// One replica leads (Config.Leader; internal/leadership elects it with a lease row on
// PostgreSQL, and the only process of hodei dev always leads). The leader runs what
// must happen once for the platform: the capacity scheduler's passes (RunScheduler
// skips them on a follower and runs one at once when the replica becomes leader) and
// the cleanup scan (Cleanup, from RunCleanup). Every replica runs the rest: saga
// steps, its API's notices (WorkerDisconnected, WorkerExited), the check of CREATING
// workers with its providers, and the worker sweep, because those ask this node's
// providers about the workers this node started (a node-local provider knows no
// other node's processes; a follower's leftovers must still be swept).
//
// The lease does not make two leaders impossible: a leader paused past its TTL (a
// stopped process, a long GC) resumes its pass after another replica was elected.
// What the leader writes stays correct anyway. The scheduler keeps its advisory lock
// (Scheduling.Lock, one pg_advisory_xact_lock per pass, uncontended in the common
// case): two schedulers count and reserve one after the other, and so does the
// recovery saga's reserve-replacement, which runs on any replica; the lock is the
// capacity invariant's fence, the lease only keeps the other replicas from trying.
// Two cleanup runs act once between them (keys, the state machine, deterministic saga
// ids); see Cleanup.
//
// # Cleanup (cleanup.go)
//
// Service.RunCleanup runs on every replica; every CleanupConfig.Interval the leader
// runs Service.Cleanup. A run finds lost workers with a job (→ StartRecovery),
// ASSIGNED/RUNNING jobs whose worker is gone (→ StartRecovery, whose reserve step
// fails them when no attempt is left), lost workers without a job and workers CREATING
// for longer than CreatingTimeout (→ DestroyWorker; a stuck worker's job is failed by
// its provisioning saga's registration timeout), and writes the outbox event
// cleanup.completed with its report, all in one transaction. Its commands' keys and
// the event's are derived from the interval slot ("cleanup/<interval>/<slot>"), so a
// second run of the same slot (a second leader at a TTL boundary) repeats nothing,
// and the state machine and the deterministic saga ids make a later slot's run a
// no-op for what was already done; a run that loses a race on a key fails with
// store.ErrConflict and the next interval runs again. (Before the leader lease, every
// replica ran Cleanup and claimed the slot's key in the idempotency table first.)
// DryRun reads and reports only: no command, no event (the disconnect check then only
// logs what it would do).
package jobs
