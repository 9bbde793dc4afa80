package store

import (
	"context"
	"errors"
	"time"

	"github.com/hodei-jobs/hodei/domain"
)

// Ports of the job path (issue 4): job output lines, worker credentials and the
// capacity scheduler's queries. Drivers implement them next to the foundation ports;
// storetest.RunJobPath is their conformance suite.

// Credential errors of CredentialStore.RedeemOTP (besides ErrNotFound for an unknown
// worker, a password that does not match, or one that was revoked).
var (
	// ErrOTPUsed: the password matched but was redeemed before.
	ErrOTPUsed = errors.New("store: one-time password already used")
	// ErrOTPExpired: the password matched but its expiry has passed.
	ErrOTPExpired = errors.New("store: one-time password expired")
)

// Log streams of a LogLine.
const (
	StreamStdout = "stdout"
	StreamStderr = "stderr"
)

// LogLine is one line of a job's output. (JobID, Seq) is unique; Seq starts at 1 and is
// assigned by the worker.
type LogLine struct {
	JobID  string
	Seq    int64
	Stream string // StreamStdout, StreamStderr or ""
	Line   string
	Time   time.Time
}

// LogStore persists job output.
type LogStore interface {
	// Append inserts lines in ctx's transaction (or its own). A line whose (JobID, Seq)
	// exists is skipped, so a re-sent batch changes nothing. It returns how many lines
	// were new.
	Append(ctx context.Context, lines ...*LogLine) (inserted int, err error)
	// List returns up to limit lines of jobID with Seq > afterSeq, in Seq order.
	List(ctx context.Context, jobID string, afterSeq int64, limit int) ([]*LogLine, error)
}

// CredentialStore keeps a worker's one-time password and session token, both as
// SHA-256 hashes only (the plain values are never stored).
type CredentialStore interface {
	// SetOTP stores (or replaces) the password hash of workerID with its expiry, clears
	// the used mark and any session. A nil hash records the worker with no password
	// yet: a later SetOTP in another transaction then holds the row, and a concurrent
	// RedeemOTP waits for that transaction instead of missing the row.
	SetOTP(ctx context.Context, workerID string, otpHash []byte, expiresAt time.Time) error
	// RotateOTP replaces workerID's password while it is unused: an attempt that starts
	// a worker anew gives it a fresh password. It returns ErrOTPUsed (writing nothing)
	// once the worker registered, and ErrNotFound when the worker has no row. It locks
	// the row like RedeemOTP, so of a rotation and a registration racing, one wins.
	RotateOTP(ctx context.Context, workerID string, otpHash []byte, expiresAt time.Time) error
	// RedeemOTP locks workerID's row and, if otpHash matches an unused password that
	// has not expired at now, marks it used and stores sessionHash, in ctx's
	// transaction (or its own). Errors: ErrNotFound (no row, no password or a different
	// one), ErrOTPUsed, ErrOTPExpired; nothing is written then.
	RedeemOTP(ctx context.Context, workerID string, otpHash, sessionHash []byte, now time.Time) error
	// WorkerForSession returns the worker whose session hash is sessionHash, or
	// ErrNotFound.
	WorkerForSession(ctx context.Context, sessionHash []byte) (workerID string, err error)
	// Revoke deletes workerID's credentials (no-op when there are none).
	Revoke(ctx context.Context, workerID string) error
}

// SchedulingStore holds the queries of the capacity scheduler. Lock and ClaimPending
// need a transaction in ctx (Store.InTx) and fail without one.
type SchedulingStore interface {
	// Lock takes the scheduler's transaction-scoped advisory lock, waiting for it: two
	// schedulers (replicas) never count and claim at the same time, so together they
	// never exceed the capacity.
	Lock(ctx context.Context) error
	// CountActiveWorkers returns the number of workers that are not TERMINATED.
	CountActiveWorkers(ctx context.Context) (int, error)
	// ClaimPending locks (FOR UPDATE SKIP LOCKED) and returns up to limit PENDING jobs,
	// highest priority first, then oldest (created_at, then id).
	ClaimPending(ctx context.Context, limit int) ([]*domain.Job, error)
	// ClaimPendingExcept is ClaimPending leaving out the jobs of the namespaces in
	// except.
	ClaimPendingExcept(ctx context.Context, limit int, except []string) ([]*domain.Job, error)
	// NamespaceHeadroom returns, for every namespace with a limit
	// (NamespaceStore.SetLimit), how many more of its jobs may enter PROVISIONING: the
	// limit minus its jobs in PROVISIONING, ASSIGNED or RUNNING, at least 0.
	NamespaceHeadroom(ctx context.Context) (map[string]int, error)
}
