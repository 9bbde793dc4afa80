package store

import (
	"context"
	"strconv"
	"time"
)

// SagaRecord is one row of the sagas table: a projection of the saga's history kept for
// claiming and listing. The history (SagaEvent) is the source of truth.
type SagaRecord struct {
	ID          string
	Type        string
	Version     int
	State       string // saga.State; the store does not interpret it
	Input       []byte
	CurrentStep int
	LastSeq     int64
	// RunnableAt is when a runner should next look at the saga; zero means parked
	// (waiting for a signal or timer) or finished.
	RunnableAt     time.Time
	ClaimedBy      string
	ClaimExpiresAt time.Time
	Error          string
	CreatedAt      time.Time
	UpdatedAt      time.Time
}

// SagaEvent is one entry of a saga's append-only history.
type SagaEvent struct {
	SagaID       string
	Seq          int64 // assigned by Create/Append: previous last seq + 1, + 2, …
	Type         string
	Step         string
	Attempt      int
	Codec        string // name of the codec that encoded Payload
	Payload      []byte
	TraceContext map[string]string
	CreatedAt    time.Time
}

// SagaSnapshot is the folded state of a saga at Seq, with the SHA-256 of State.
type SagaSnapshot struct {
	SagaID    string
	Seq       int64
	State     []byte
	SHA256    []byte
	CreatedAt time.Time
}

// Saga timer statuses.
const (
	TimerPending   = "PENDING"
	TimerFired     = "FIRED"
	TimerCancelled = "CANCELLED"
)

// SagaTimer is a durable timer row. ID is chosen by the caller (deterministic per saga,
// step and name), so creating the same timer twice keeps the first.
type SagaTimer struct {
	ID             string
	SagaID         string
	Name           string
	FireAt         time.Time
	Status         string
	ClaimedBy      string
	ClaimExpiresAt time.Time
	CreatedAt      time.Time
}

// SagaUpdate is the projection written to the saga row together with appended events.
type SagaUpdate struct {
	State       string
	CurrentStep int
	RunnableAt  time.Time // zero: parked or finished
	Error       string
	// Claim handling for the runner that holds the saga: if ClaimedBy is not empty and
	// the row is claimed by it, the claim is released (Release) or extended to
	// ClaimUntil (non-zero). Other claims are left alone.
	ClaimedBy  string
	ClaimUntil time.Time
	Release    bool
	// Take claims the saga for the runner Take until ClaimUntil with this append, for
	// the process that records a signal, timer or cancel and then advances the saga
	// itself (no separate claim, no wake-up). The row must still be claimed by TakeFrom
	// ("": unclaimed), as read before; otherwise the append is a conflict (ErrConflict)
	// and writes nothing, so a claim taken meanwhile by another runner is never
	// overwritten. Empty Take: the claim is handled as described above.
	Take     string
	TakeFrom string
}

// SagaStore persists saga rows, histories, snapshots and timers. All methods join the
// transaction carried by ctx (Store.InTx) and are safe for concurrent use.
type SagaStore interface {
	// Create inserts rec (LastSeq is set to len(events)) and its first events with seqs
	// 1..n, claimed by rec.ClaimedBy until rec.ClaimExpiresAt when ClaimedBy is set (the
	// starting process then runs it itself). If a saga with rec.ID exists, nothing is
	// written and the existing row is returned with created=false.
	Create(ctx context.Context, rec *SagaRecord, events ...*SagaEvent) (saved *SagaRecord, created bool, err error)
	// Get returns the saga row, or ErrNotFound.
	Get(ctx context.Context, id string) (*SagaRecord, error)
	// Append adds events with seqs expectedSeq+1… and writes upd to the row, atomically,
	// only if the row's last seq is still expectedSeq. Otherwise it returns an error
	// matching ErrConflict and writes nothing. A missing saga is ErrNotFound.
	Append(ctx context.Context, id string, expectedSeq int64, upd SagaUpdate, events ...*SagaEvent) error
	// Events returns the events with seq > afterSeq, in seq order.
	Events(ctx context.Context, id string, afterSeq int64) ([]*SagaEvent, error)
	// Histories returns the whole history of each of ids (in seq order), in one round
	// trip; sagas that do not exist are absent from the map.
	Histories(ctx context.Context, ids []string) (map[string][]*SagaEvent, error)

	// Claim leases up to limit sagas with RunnableAt <= now whose claim is free or
	// expired to runnerID until now+lease. Two concurrent claims never return the same
	// saga.
	Claim(ctx context.Context, runnerID string, now time.Time, lease time.Duration, limit int) ([]*SagaRecord, error)
	// ClaimByID leases saga id like Claim if it is runnable at now and free; it returns
	// ErrNotFound when it is missing, not runnable or held by another runner.
	ClaimByID(ctx context.Context, id, runnerID string, now time.Time, lease time.Duration) (*SagaRecord, error)
	// ClaimIDs leases, like Claim, those of ids that are runnable at now and free (or
	// whose claim expired); the others (missing, parked, held, or locked by a writer at
	// this moment) are left out. Order of the result is unspecified.
	ClaimIDs(ctx context.Context, ids []string, runnerID string, now time.Time, lease time.Duration) ([]*SagaRecord, error)
	// Release drops runnerID's claim on id (no-op if another runner holds it).
	Release(ctx context.Context, id, runnerID string) error
	// ReleaseRunner drops every claim runnerID holds, on sagas and on timers, and
	// returns how many it dropped. A runner whose identity survives a restart (a server
	// holding its data directory's lock) calls it when it starts: its earlier
	// incarnation died holding those claims, and waiting for their leases to expire
	// would only stall the sagas.
	ReleaseRunner(ctx context.Context, runnerID string) (int, error)

	// Savepoint marks the current point of the transaction in ctx (an error when ctx
	// carries none). Calling rollback undoes every write made in that transaction since
	// the mark, and drops the after-commit callbacks registered since then, leaving the
	// transaction usable (also when a statement failed after the mark). The runner uses
	// it to run several saga steps in one transaction.
	Savepoint(ctx context.Context) (rollback func(ctx context.Context) error, err error)

	// PutSnapshot stores snap and deletes all but the newest keep snapshots of its saga.
	PutSnapshot(ctx context.Context, snap *SagaSnapshot, keep int) error
	// Snapshots returns up to limit snapshots of id, newest first.
	Snapshots(ctx context.Context, id string, limit int) ([]*SagaSnapshot, error)

	// CreateTimer inserts t as PENDING; an existing timer with t.ID is kept unchanged.
	CreateTimer(ctx context.Context, t *SagaTimer) error
	// ClaimDueTimers leases up to limit PENDING timers with FireAt <= now whose claim is
	// free or expired to pollerID until now+lease.
	ClaimDueTimers(ctx context.Context, pollerID string, now time.Time, lease time.Duration, limit int) ([]*SagaTimer, error)
	// FinishTimer moves a PENDING timer to status (TimerFired or TimerCancelled). If
	// pollerID is not empty the timer must be claimed by it. Returns ErrConflict when the
	// timer is no longer PENDING or held by another poller, ErrNotFound when missing.
	FinishTimer(ctx context.Context, id, pollerID, status string) error
	// Timers returns the timers of a saga ordered by FireAt.
	Timers(ctx context.Context, sagaID string) ([]*SagaTimer, error)
}

// SagaConflictError is returned by SagaStore.Append when the saga's last seq is not the
// expected one. It matches ErrConflict with errors.Is.
type SagaConflictError struct {
	SagaID      string
	ExpectedSeq int64
	ActualSeq   int64
	Reason      string
}

func (e *SagaConflictError) Error() string {
	if e.Reason != "" {
		return "store: saga " + e.SagaID + ": append conflict: " + e.Reason
	}
	return "store: saga " + e.SagaID + ": append conflict: expected last seq " +
		itoa(e.ExpectedSeq) + ", found " + itoa(e.ActualSeq)
}

// Is makes errors.Is(err, ErrConflict) true.
func (e *SagaConflictError) Is(target error) bool { return target == ErrConflict }

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// SagaLister is implemented by drivers that list sagas for operators (hodei saga
// list). Both drivers implement it.
type SagaLister interface {
	// ListSagas returns up to f.Limit sagas matching f, least recently updated first.
	ListSagas(ctx context.Context, f SagaFilter) ([]*SagaRecord, error)
}

// SagaFilter selects sagas for ListSagas; zero fields do not filter.
type SagaFilter struct {
	Type  string
	State string
	// UpdatedBefore keeps sagas whose row was last changed before it (with State
	// WAITING: sagas waiting longer than now-UpdatedBefore).
	UpdatedBefore time.Time
	Limit         int // default 100
}
