// Package store defines the persistence ports of Hodei. Drivers (store/postgres, and
// later an embedded SQLite driver) implement them; store/storetest is the conformance
// suite every driver must pass.
//
// Transactions travel in the context. Store.InTx starts a transaction (or joins the one
// already in ctx) and every port method called with the ctx it hands to fn writes through
// that transaction. This is how the command bus keeps DESIGN invariant 1 without plumbing a
// Tx through every signature: the idempotency middleware opens InTx, the handler's writes
// join it, the key is recorded last, and a failing handler rolls everything back, key
// included. The outbox decorator likewise writes its row in whatever transaction the caller
// has open, so a saga step and the command it causes commit together.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/hodei-jobs/hodei/domain"
)

// Errors returned by every driver. Test with errors.Is.
var (
	// ErrNotFound: the row asked for does not exist.
	ErrNotFound = errors.New("store: not found")
	// ErrConflict: a unique key or an optimistic-lock check failed; nothing was written.
	ErrConflict = errors.New("store: conflict")
	// ErrInvalidPageToken: a List page token that no List returned (garbled, or from
	// another driver); nothing was read.
	ErrInvalidPageToken = errors.New("store: invalid page token")
)

// LostRace reports whether err is a transaction the database aborted because it lost
// to a concurrent one (SQLSTATE 40001 serialization_failure, 40P01 deadlock_detected):
// nothing of it was written, and running the whole transaction again can succeed.
// Drivers' errors expose their SQLSTATE through a SQLState method (pgconn.PgError does).
func LostRace(err error) bool {
	var se interface{ SQLState() string }
	if !errors.As(err, &se) {
		return false
	}
	switch se.SQLState() {
	case "40001", "40P01":
		return true
	}
	return false
}

// txMarker is the context key InTransaction looks for (a private type, so no other
// package can set or collide with it).
type txMarker struct{}

// WithTransaction returns ctx marked as carrying a transaction. Drivers call it on the
// context InTx hands to fn, so that code which must never run inside a transaction
// (command.Retry) can tell, whatever the driver.
func WithTransaction(ctx context.Context) context.Context {
	return context.WithValue(ctx, txMarker{}, true)
}

// InTransaction reports whether ctx carries a transaction opened by some Store's InTx
// (a context derived from the one InTx handed to fn, also after that transaction
// ended: do not keep such a context beyond fn).
func InTransaction(ctx context.Context) bool {
	v, _ := ctx.Value(txMarker{}).(bool)
	return v
}

// Store is the root port implemented by a driver. All methods are safe for concurrent use.
type Store interface {
	// InTx runs fn inside a transaction. If ctx already carries one (an enclosing InTx),
	// fn joins it and the outer InTx decides commit or rollback. fn's error rolls back.
	// Callbacks registered with AfterCommit run once the outermost transaction commits.
	InTx(ctx context.Context, fn func(ctx context.Context) error) error
	// AfterCommit registers fn to run after the outermost transaction in ctx commits; it
	// is dropped if that transaction rolls back. Without a transaction in ctx, fn runs
	// now. Effects outside the database (a message to a worker, a wake-up) go here, never
	// inside the transaction.
	AfterCommit(ctx context.Context, fn func())

	Jobs() JobStore
	Workers() WorkerStore
	Outbox() OutboxStore
	Idempotency() IdempotencyStore
	Sagas() SagaStore
	// Job path ports (store/jobpath.go).
	Logs() LogStore
	Credentials() CredentialStore
	Scheduling() SchedulingStore
	// Leader leases (store/leader.go).
	Leader() LeaderStore
	// API tokens and the audit trail (store/auth.go).
	Tokens() TokenStore
	Audit() AuditStore
	// Job secrets, encrypted by the caller (store/secrets.go).
	Secrets() SecretStore
	// Namespace limits (store/namespace.go).
	Namespaces() NamespaceStore
	// Retention: deleting what ended long ago (store/retention.go).
	Retention() RetentionStore

	// InstallationID is the id of the installation this database belongs to, the same
	// for every replica on it and every call (created by the first; migration 0006).
	// Providers on shared infrastructure record it on what they create (docker:
	// hodei.installation) and see only what carries theirs. A copy of a database keeps
	// the id: installations restored from one backup share it.
	InstallationID(ctx context.Context) (string, error)

	// Ping reports whether the database answers.
	Ping(ctx context.Context) error
	Close()
}

// JobStore persists jobs. The drivers store, the domain decides (DESIGN §11): a state
// change is computed by (*domain.Job).Transition from values the caller passes, and the
// driver writes the result; no driver checks a transition or sets a time stamp of one.
// Times are stored in UTC at the driver's precision (PostgreSQL: microseconds); a
// returned job holds what was stored.
type JobStore interface {
	// Create inserts j. An empty ID gets a new one and an empty State PENDING. A zero
	// CreatedAt gets the driver's clock, and a zero UpdatedAt CreatedAt: creating is not
	// a transition, and fixtures without a clock rely on the default. A caller with a
	// clock of its own sets CreatedAt.
	Create(ctx context.Context, j *domain.Job) error
	Get(ctx context.Context, id string) (*domain.Job, error)
	// UpdateState moves job id to state `to` at time at (the caller's clock). In one
	// transaction (ctx's or its own) the driver locks the row, calls
	// j.Transition(to, at, mutate) — the domain checks the transition table, runs mutate
	// (optional: the caller's edit of other fields, on the job as stored) and computes
	// State, UpdatedAt, StartedAt and FinishedAt — and writes every mutable column of the
	// job it leaves. An illegal move returns the domain's *TransitionError (a zero at an
	// error) and writes nothing; a missing job is ErrNotFound.
	UpdateState(ctx context.Context, id string, to domain.JobState, at time.Time, mutate func(*domain.Job)) (*domain.Job, error)
	List(ctx context.Context, f JobFilter) ([]*domain.Job, string, error)
}

// JobFilter selects jobs for List. PageToken is opaque; an empty one starts at the newest.
type JobFilter struct {
	// Namespaces, if not empty, keeps jobs of these namespaces only (a job stored
	// without one is in domain.DefaultNamespace).
	Namespaces []string
	States     []domain.JobState
	Labels     map[string]string
	PageSize   int
	PageToken  string
}

// WorkerStore persists workers; state changes follow JobStore's rule (the domain
// decides, the driver stores).
type WorkerStore interface {
	// Create inserts w (new ID when empty, CREATING when State is empty); a zero
	// CreatedAt gets the driver's clock, as in JobStore.Create.
	Create(ctx context.Context, w *domain.Worker) error
	Get(ctx context.Context, id string) (*domain.Worker, error)
	// UpdateState is JobStore.UpdateState for workers: lock the row, call
	// w.Transition(to, at, mutate) (check, mutate, State and UpdatedAt = at), write.
	UpdateState(ctx context.Context, id string, to domain.WorkerState, at time.Time, mutate func(*domain.Worker)) (*domain.Worker, error)
	Heartbeat(ctx context.Context, id string, at time.Time) error
	List(ctx context.Context, states ...domain.WorkerState) ([]*domain.Worker, error)
	// SetOwner records the node that owns worker id (domain.Worker.Owner); ErrNotFound
	// when it does not exist.
	SetOwner(ctx context.Context, id, owner string) error
}

// Outbox message kinds.
const (
	KindCommand = "command"
	KindEvent   = "event"
)

// OutboxStatus is the life cycle of an outbox row:
//
//	PENDING ──claim/dispatch ok──▶ COMPLETED
//	   │  └──fail (attempts < max)──▶ RETRY ──(scheduled_at)──▶ claim …
//	   └──fail (attempts = max)──▶ DEAD_LETTER ──Requeue──▶ PENDING
//	PENDING/RETRY ──Cancel──▶ CANCELLED
type OutboxStatus string

const (
	OutboxPending    OutboxStatus = "PENDING"
	OutboxRetry      OutboxStatus = "RETRY"
	OutboxCompleted  OutboxStatus = "COMPLETED"
	OutboxDeadLetter OutboxStatus = "DEAD_LETTER"
	OutboxCancelled  OutboxStatus = "CANCELLED"
)

// OutboxMessage is one row of the unified outbox (commands and events).
type OutboxMessage struct {
	ID             int64
	Kind           string // KindCommand or KindEvent
	Type           string // command type, or event subject suffix "<entity>.<type>"
	IdempotencyKey string // unique; inserting a key twice keeps the first row
	Payload        json.RawMessage
	Status         OutboxStatus
	Attempts       int
	MaxAttempts    int
	ScheduledAt    time.Time
	LastError      string
	ClaimedBy      string
	ClaimExpiresAt time.Time
	TraceContext   map[string]string
	CreatedAt      time.Time
	UpdatedAt      time.Time
}

// OutboxStore is the storage side of the outbox and its relay.
type OutboxStore interface {
	// Insert writes messages in ctx's transaction (or its own). A message whose
	// idempotency key already exists is skipped; the returned ids are those of the rows
	// that hold each key (existing or new), in input order. The driver wakes relays after
	// commit (coalesced), never with a per-row trigger.
	Insert(ctx context.Context, msgs ...*OutboxMessage) ([]int64, error)
	// Claim atomically leases up to limit due rows (PENDING or RETRY, scheduled_at <= now,
	// not leased) to relayID until now+lease and increments their attempts. Two concurrent
	// claims never return the same row.
	Claim(ctx context.Context, relayID string, limit int, lease time.Duration) ([]*OutboxMessage, error)
	// Complete marks rows COMPLETED if still leased by relayID; returns rows changed.
	Complete(ctx context.Context, relayID string, ids ...int64) (int, error)
	// Fail records errMsg on a row leased by relayID: RETRY at retryAt, or DEAD_LETTER
	// when dead is true. The lease is released.
	Fail(ctx context.Context, relayID string, id int64, errMsg string, retryAt time.Time, dead bool) error
	// ReapExpired releases leases that expired before now; returns rows released.
	ReapExpired(ctx context.Context) (int, error)
	// ReleaseClaims releases every lease relayID holds, expired or not; returns rows
	// released. A relay with an id stable across restarts calls it at start: the rows
	// its previous run (dead, as the caller guarantees) held are due again at once
	// instead of when their leases expire.
	ReleaseClaims(ctx context.Context, relayID string) (int, error)
	// PruneFinished deletes up to limit of the oldest COMPLETED and CANCELLED rows last
	// changed before before (never PENDING, RETRY or DEAD_LETTER ones); with dryRun it
	// deletes nothing and counts them (all of them, limit ignored). Returns the rows
	// deleted (or that would be). One short statement: no lock is held for long.
	PruneFinished(ctx context.Context, before time.Time, limit int, dryRun bool) (int, error)
	Get(ctx context.Context, id int64) (*OutboxMessage, error)
	ListByStatus(ctx context.Context, status OutboxStatus, limit int) ([]*OutboxMessage, error)
	// Requeue moves a DEAD_LETTER row back to PENDING with zero attempts.
	Requeue(ctx context.Context, id int64) error
	// CountByStatus returns the number of rows in each status.
	CountByStatus(ctx context.Context) (map[OutboxStatus]int, error)
	// Wakeups returns a channel that receives (coalesced) when rows may have become
	// available, from this or another process. It is closed when ctx ends. Listener
	// failures are retried by the driver; the relay's poll is the safety net.
	Wakeups(ctx context.Context) <-chan struct{}
}

// IdempotencyStore records the keys of commands that succeeded, with their result.
type IdempotencyStore interface {
	// Get returns the stored result for key, or ErrNotFound.
	Get(ctx context.Context, key string) (json.RawMessage, error)
	// Put records key in ctx's transaction. If the key exists it returns ErrConflict.
	Put(ctx context.Context, key, commandType string, result json.RawMessage) error
}
