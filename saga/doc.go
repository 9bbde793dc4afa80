// Package saga is Hodei's durable saga engine: event-sourced histories with optimistic
// locking, a runner that is safe on many replicas, compensation, snapshots, codecs,
// durable timers and signals.
//
// # Model
//
// A saga type is a Definition{Name, Version, Steps}; each Step has Do, an optional
// Compensate, a RetryPolicy and a Timeout. Several versions of a type are registered side
// by side in a Registry; Engine.Start starts the latest, and a started saga keeps the
// steps of the version it started with until it ends. Saga ids about a subject are
// deterministic (IDFor: UUIDv5 of type and subject), so starting the same saga twice
// writes nothing the second time and returns the existing saga. Start joins the
// transaction in ctx, so a row change and the saga it causes commit together.
//
// # States
//
//	Start ──▶ RUNNING ──(step ok)──▶ RUNNING (next step) … ──(last step ok)──▶ COMPLETED
//	            │   ▲
//	  step awaits│   │ signal received / timer fired
//	  a signal or│   │
//	     a timer ▼   │
//	           WAITING
//
//	RUNNING or WAITING ──(a step fails for good: permanent error, or transient errors
//	                      past Retry.MaxAttempts; or Cancel)──▶ COMPENSATING
//
//	COMPENSATING runs Compensate of the completed steps in reverse order, then:
//	  ──▶ FAILED               nothing needed undoing
//	  ──▶ COMPENSATED          every completed step with a Compensate was undone
//	  ──▶ CANCELLED            the same, after Engine.Cancel
//	  ──▶ COMPENSATION_FAILED  a compensation failed for good: a human must look
//
// COMPLETED, FAILED, COMPENSATED, CANCELLED and COMPENSATION_FAILED are terminal. A
// transient failure with attempts left does not change the state: the failure and the
// next attempt (with its not-before time, command.Backoff with jitter) are recorded and
// the saga row's runnable_at is moved to that time; no goroutine sleeps. WAITING sagas
// have runnable_at NULL and hold no goroutine and no claim.
//
// # Storage
//
// The history (store.SagaEvent, table saga_events, primary key (saga_id, seq)) is the
// source of truth; the saga row (table sagas) is a projection used to claim and list.
// SagaStore.Append(id, expectedSeq, update, events...) is one statement: it updates the
// row only WHERE last_seq = expectedSeq and inserts the events from that update's result,
// so a stale writer gets a conflict and writes nothing. Event payloads are encoded by a
// Codec (JSONCodec; Config.Codecs adds others) whose name is stored per
// event, so switching the default keeps old events readable. Every SnapshotEvery events a
// snapshot of the folded state is stored with its SHA-256 (the last SnapshotKeep are
// kept); loading takes the newest snapshot whose checksum and encoding are valid (a bad
// one is logged and skipped) and folds the later events.
//
// # Runner
//
// Claims are leases on the saga row (claimed_by, claim_expires_at), taken with one
// UPDATE … FOR UPDATE SKIP LOCKED statement; each recorded step extends the lease. The
// engine's Clock, never the database's now(), decides what is due, so tests drive time.
// Runners are woken by a Waker (in-process LocalWaker here; NATS core subjects in
// production) and by a TaskQueue (PollQueue here: the row is the queue), and poll the
// database every PollInterval, so a lost wake-up or task costs only latency.
//
// Hand-off (handoff.go): while a process's Run loop is active, the start, signal, cancel
// or fired timer it records takes the saga's claim in the same write when nobody holds
// it (SagaRecord.ClaimedBy on Create; SagaUpdate.Take on Append, which is a conflict if
// the claim changed since it was read), and after the commit the saga goes straight to
// that loop: no wake-up, no task, no claim statement. On the job path this is most
// wake-ups (the process that records a worker's registration runs the provisioning
// saga's next step). The claim is an ordinary lease, so a process that dies first only
// delays the saga until it expires; a full or stopping loop releases and announces it.
//
// Run keeps Concurrency workers busy from one claiming loop, with at most
// Concurrency+BatchSize sagas claimed (queued or running). A poll claims up to BatchSize
// sagas and, while polls come back full, the loop claims again as soon as half a batch
// of slots is free instead of waiting for the next tick. Wake-ups and tasks are gathered while more
// are ready and claimed together (SagaStore.ClaimIDs). The histories of a claimed batch
// that are too short to have a snapshot are read in one query (SagaStore.Histories), so
// a fresh three-step saga costs: Start (one INSERT statement, no transaction of its
// own), a share of one claim and one history query, then BEGIN, two SAVEPOINTs, one
// append and COMMIT for its three steps.
//
// # Step groups
//
// Consecutive ready forward steps of a claimed saga run in one transaction, up to
// MaxStepsPerTx (default 16), and their outcomes are recorded by one append at the end:
// the history is the same as with a transaction per step (step.completed, then
// step.scheduled of the next step, …), it is just committed at once. The group ends
// after the last step, at MaxStepsPerTx, or when half the lease has gone by (a runner
// that stops in the middle of a group records nothing of it). Every step after the first runs behind a SAVEPOINT: a step that fails,
// waits or needs a backoff is rolled back to it (its writes and the after-commit
// callbacks it registered are dropped), and the completed steps before it plus its
// failure, wait or retry are recorded in the same transaction. A first step that fails
// rolls the transaction back and its failure is recorded on its own. Compensations
// run one per transaction.
//
// A group is atomic, so the guarantees below hold for it as a whole: if the process
// dies (or its append meets a newer seq) before the commit, none of the group's steps
// happened, and the next run executes the whole group again with the same attempts,
// hence the same idempotency keys. The price is that a crash or conflict late in a
// group repeats the earlier steps of the group (never their committed effects), and
// effects outside the database of those steps must be idempotent by key, as for any
// rolled-back attempt.
//
// # Activities
//
// A step that must act on the outside world (create or destroy a worker through a
// provider, deliver a message to a worker) is an activity: Step.Activity instead of
// Step.Do. Temporal's activities are the model. The intent is recorded first: the
// activity's step.scheduled event commits (with the step group before it, if any) before
// the activity runs. The activity then runs outside any transaction, holding no row lock
// and, on SQLite, not blocking the only writer, for at most its Timeout (default and
// maximum: half the Lease, so the runner's claim outlives it). Its outcome is recorded
// like a step's: step.completed with its output in a new transaction, which also runs
// the ready steps after it as a group, or step.failed and a retry with backoff, or the
// final failure and compensation.
//
// An activity runs at least once per attempt. A runner that dies between the effect
// and the record runs it again, with the same attempt and key, after the lease expires,
// so activities are idempotent by ActivityContext.Key or by the identity of what they
// act on (the worker id). A signal or timer appended while the activity runs makes the
// record's append conflict; the runner reloads the saga and records the outcome it
// already has when the same attempt is still scheduled, so it does not repeat the effect.
// A cancel meanwhile discards the outcome, and compensation runs instead.
//
// Because the effect comes after the commit that records its intent, whatever the
// activity needs from the database (a worker's row, its password hash) is visible to
// the outside world before the effect can be observed: a worker created by an activity
// can never register before its password is committed.
//
// # Crash safety
//
// A step runs like this:
//
//  1. "step.scheduled" (step, attempt) is committed before the step runs; for every step
//     after the first it commits together with the previous step's completion.
//  2. Do runs inside a transaction, and dispatches commands through the bus in that
//     transaction with the idempotency key "saga id/step/attempt" (StepContext.Key).
//  3. "step.completed" (with Do's output) is appended with the expected seq in the same
//     transaction, so the step's database effects (rows, idempotency keys, outbox
//     messages) and its recorded outcome commit together or not at all.
//
// (With step groups, 1 is the previous group's commit, and 2 and 3 hold for the group
// as a whole.) If the process dies anywhere before the commit in 3, nothing of the step
// is in the database; after the lease expires another runner loads the history, finds the step
// scheduled and not completed, and runs it again with the same attempt, hence the same
// keys. If it dies after the commit, the history says the step completed and it is not
// run again. Effects that leave the database (a NATS publish, a provider call) go through
// the outbox written in the step's transaction, or must be idempotent by the same key,
// because a rolled-back attempt may have made them. Two runners on one saga (a lease
// that expired under a slow step) both may run the step, but only one outcome appends:
// the other's Append finds a newer seq, its transaction rolls back with its effects, and
// it drops the saga when the claim is no longer its own. Signals, cancels and timer
// firings are appended the same way (retrying on conflict), and a runner whose append
// conflicts with one of them reloads and continues.
//
// Timers are rows (saga_timers) created in the transaction that records timer.created;
// a poller claims due timers with a lease (SKIP LOCKED) and fires each in one transaction
// that marks the row FIRED only if it still holds the claim and appends timer.fired, so
// exactly one replica fires a timer. A timer that fell due while no process ran is due at
// the first poll after start. Timers of a step that finishes are cancelled with it.
//
// # Event categories
//
// Every history event type has a category (CategoryOf, Event.Category): lifecycle
// (the saga started, was asked to cancel, took a snapshot, ended), step, compensation,
// timer, signal or incident. `hodei saga show` prints it as a column and the admin API
// (AdminService.GetSagaHistory) filters by it. A new event type must get one: a test
// enumerates the package's Event… constants.
//
// # Testing sagas
//
// Package saga/sagatest runs a definition on a real store (SQLite in a temporary
// directory) with a ManualClock, one recorded move at a time, with injected step
// failures, signals and timers, and asserts the history; see its example.
//
// # Incidents
//
// Engine.RecordIncident appends "incident.recorded" (a kind and a detail) for things an
// operator should see about a saga, such as a task that reached the queue's delivery
// limit (natsq.RecordDeadTask). The fold ignores it and the row's state, runnable time
// and claim stay as they were, so it never wakes a waiting step.
package saga
