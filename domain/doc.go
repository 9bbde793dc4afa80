// Package domain holds Hodei's entities (Job, JobSpec, Worker), their state machines,
// job-spec validation and the names of the domain events. It is pure code: no I/O, no
// imports of store, transport or messaging packages, no package-level mutable state.
//
// # Job states
//
// Every write of a job's state goes through (*Job).Transition, which checks the table
// below (CheckJobTransition); an illegal move is a *TransitionError (errors.Is(err,
// ErrIllegalTransition)), never a silent overwrite. Staying in the same state is also an
// error: callers that want an idempotent write (a duplicated message, say) compare the
// states themselves before calling.
//
// Transition also computes the time stamps, from a time the caller passes (its clock,
// never the database's): UpdatedAt on every move, StartedAt on first entering RUNNING,
// FinishedAt on entering a terminal state. The store drivers write what it computed and
// decide nothing themselves (store.JobStore.UpdateState). (*Worker).Transition does the
// same for workers (State and UpdatedAt).
//
//	            ┌────────── re-queue (from PROVISIONING, ASSIGNED or RUNNING) ──────────┐
//	            ▼                                                                      │
//	submit ─▶ PENDING ─▶ PROVISIONING ─▶ ASSIGNED ─▶ RUNNING ─▶ SUCCEEDED              │
//	            │             │             │  ▲        │                               │
//	            │             │             │  └────────┤ transferred to a replacement  │
//	            │             │             │           │                               │
//	            │             └─────────────┴───────────┴─▶ FAILED, CANCELLING,
//	            │             │             │           │   MANUAL_INTERVENTION_REQUIRED
//	            │             └─────────────┴───────────┴─▶ TIMED_OUT
//	            ├─▶ FAILED, CANCELLED (nothing started yet: no worker to tell)
//	            └─▶ CANCELLING ─▶ CANCELLED | SUCCEEDED | FAILED | MANUAL_INTERVENTION_REQUIRED
//
//	MANUAL_INTERVENTION_REQUIRED ─▶ PENDING | FAILED | CANCELLED   (an operator decides)
//	SUCCEEDED, FAILED, TIMED_OUT, CANCELLED: terminal, no way out
//
// The table, row by row (from → allowed to):
//
//	PENDING                       → PROVISIONING, CANCELLING, CANCELLED, FAILED
//	PROVISIONING                  → ASSIGNED, PENDING, FAILED, TIMED_OUT, CANCELLING, MANUAL_INTERVENTION_REQUIRED
//	ASSIGNED                      → RUNNING, PENDING, FAILED, CANCELLING, TIMED_OUT, MANUAL_INTERVENTION_REQUIRED
//	RUNNING                       → SUCCEEDED, FAILED, TIMED_OUT, CANCELLING, PENDING, ASSIGNED, MANUAL_INTERVENTION_REQUIRED
//	CANCELLING                    → CANCELLED, SUCCEEDED, FAILED, MANUAL_INTERVENTION_REQUIRED
//	MANUAL_INTERVENTION_REQUIRED  → PENDING, FAILED, CANCELLED
//	SUCCEEDED, FAILED, TIMED_OUT, CANCELLED → (terminal: none)
//
// Why the less obvious edges exist:
//
//   - PROVISIONING → PENDING: capacity or provisioning failed and the job is retried.
//   - ASSIGNED/RUNNING → PENDING: the recovery saga re-queues a job whose worker was lost.
//   - RUNNING → ASSIGNED: the recovery saga transferred the job to a replacement worker
//     that has not started it yet.
//   - CANCELLING → SUCCEEDED: the job finished on the worker before the cancel reached
//     it; the true outcome is recorded rather than a cancel that did not happen.
//     (CANCELLING → TIMED_OUT is not allowed: once a cancel is under way it wins over
//     the timeout.)
//   - → MANUAL_INTERVENTION_REQUIRED: the platform could not confirm what happened (for
//     example a worker that cannot be terminated). Only an operator moves the job on,
//     and only to PENDING (run again), FAILED or CANCELLED; RequiresManualReview tells
//     the console and the API which jobs wait for a human.
//   - TIMED_OUT is reachable from ASSIGNED and RUNNING, and from PROVISIONING: the
//     timeout counts from the moment the job first has a worker, and a job whose worker
//     was lost is re-provisioned (RUNNING → PENDING → PROVISIONING) with its clock still
//     running, so it may time out while its replacement comes up.
//
// # Worker states
//
//	CREATING ──▶ READY ◀──▶ BUSY
//	   │           │          │
//	   └───────────┴──────────┴──▶ TERMINATING ──▶ TERMINATED
//	   (each of CREATING, READY, BUSY may also go straight to TERMINATED: the
//	    process or container is already gone)
//
// TERMINATED is the only end state. A Worker carries its LastHeartbeat; deciding that a
// heartbeat is stale belongs to the cleanup saga, not to this package.
//
// # Validation
//
// JobSpec.Validate checks every field against the exported limits (MaxArgs,
// MaxEnvBytes, MaxTimeout, …) and reports every problem at once as ValidationErrors, a
// list of *ValidationError each naming its field ("command[0]", "env[FOO]",
// "labels[team]", "timeout"). Both match errors.Is(err, ErrInvalidSpec). Validation
// runs at the edge (API, CLI, worker stream) before anything is written.
package domain
