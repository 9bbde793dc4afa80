package store

import (
	"context"
	"time"
)

// Secret is the stored form of a job secret: its value only encrypted (package
// secrets seals and opens it; the driver never sees plaintext).
type Secret struct {
	Namespace  string
	Name       string
	KeyID      string // id of the key Ciphertext is sealed under
	Ciphertext []byte // nonce || AES-256-GCM sealed value
	CreatedAt  time.Time
	UpdatedAt  time.Time
}

// SecretStore keeps job secrets, unique by (Namespace, Name). Times are computed by
// the caller.
type SecretStore interface {
	// Put inserts s, or replaces the key id, ciphertext and UpdatedAt of the secret of
	// that namespace and name (its CreatedAt stays); it returns the stored secret.
	Put(ctx context.Context, s *Secret) (*Secret, error)
	// Get returns one secret; ErrNotFound when there is none.
	Get(ctx context.Context, namespace, name string) (*Secret, error)
	// List returns the secrets of namespaces (nil or empty: every namespace), by
	// namespace and name.
	List(ctx context.Context, namespaces []string) ([]*Secret, error)
	// Delete removes a secret and returns it; ErrNotFound when there is none.
	Delete(ctx context.Context, namespace, name string) (*Secret, error)
	// Reseal replaces the key id and ciphertext of a secret still sealed under
	// oldKeyID with the same ciphertext as when it was read (a rotation racing a Set
	// loses: ErrConflict, nothing written); ErrNotFound when it is gone.
	Reseal(ctx context.Context, s *Secret, oldKeyID string, oldCiphertext []byte) error
}
