package store

import (
	"context"
	"time"
)

// Lease is the row of one leader lease: who holds it, since when (ElectedAt, which
// also names the holder's term) and until when (ExpiresAt).
type Lease struct {
	Name      string
	Holder    string
	ElectedAt time.Time
	ExpiresAt time.Time
}

// LeaderStore keeps leader leases: one row per name, held by one holder until it
// expires (internal/leadership elects with it). Every time is computed by the caller
// (drivers store, the domain decides): no method reads the database's clock. Methods
// run in ctx's transaction if there is one, else in their own.
type LeaderStore interface {
	// TryElect makes holder the holder of lease name, elected at now until expiresAt,
	// when nobody holds it, when its lease expired (ExpiresAt <= now) or when holder
	// already holds it (a holder id names one live process, so the same id asking
	// again is that process, or its successor after a crash: it starts a new term).
	// It returns the lease as it stands afterwards and whether holder holds it; an
	// unexpired lease of another holder is left as it is and returned.
	TryElect(ctx context.Context, name, holder string, now, expiresAt time.Time) (Lease, bool, error)
	// Renew moves the expiry of holder's term electedAt (the ElectedAt TryElect
	// returned) to expiresAt. ErrNotFound when that term is no longer the lease's:
	// another holder was elected after it expired, or it resigned. A term whose expiry
	// passed but that nobody took yet is renewed.
	Renew(ctx context.Context, name, holder string, electedAt, expiresAt time.Time) (Lease, error)
	// Resign deletes the lease if it is still holder's term electedAt, so that another
	// holder is elected at once; it reports whether it deleted it.
	Resign(ctx context.Context, name, holder string, electedAt time.Time) (bool, error)
}
