package store

import (
	"context"
	"time"
)

// Token is the stored form of an API token (package auth decides what it means). The
// secret itself is never stored: Hash is its SHA-256.
type Token struct {
	Name       string
	Hash       []byte // SHA-256 of the secret, 32 bytes; unique
	Role       string
	Namespaces []string
	CreatedAt  time.Time
	ExpiresAt  time.Time // zero: never
	RevokedAt  time.Time // zero: not revoked
}

// TokenStore keeps API tokens. Times are computed by the caller.
type TokenStore interface {
	// Create inserts t; ErrConflict when its name or hash exists.
	Create(ctx context.Context, t *Token) error
	// ByHash returns the token with this hash (revoked and expired ones too: the
	// caller decides); ErrNotFound when none.
	ByHash(ctx context.Context, hash []byte) (*Token, error)
	// List returns every token, by name.
	List(ctx context.Context) ([]*Token, error)
	// Revoke sets RevokedAt of token name to at unless it is already revoked, and
	// returns the token; ErrNotFound when there is no such token.
	Revoke(ctx context.Context, name string, at time.Time) (*Token, error)
}

// AuditRecord is one entry of the append-only audit trail.
type AuditRecord struct {
	ID        int64 // assigned by Append
	Time      time.Time
	Actor     string
	Action    string
	Procedure string
	Target    string
	Namespace string
	Outcome   string
	Remote    string
	Detail    string
}

// AuditFilter selects audit records for List.
type AuditFilter struct {
	Since time.Time // zero: from the start
	Actor string    // empty: everyone
	Limit int       // required, > 0
}

// AuditStore is the audit trail: records are appended and read, never changed (the
// migrations refuse UPDATE and DELETE on the table).
type AuditStore interface {
	// Append inserts r and sets r.ID.
	Append(ctx context.Context, r *AuditRecord) error
	// List returns the oldest Limit records matching f, oldest first.
	List(ctx context.Context, f AuditFilter) ([]*AuditRecord, error)
}
