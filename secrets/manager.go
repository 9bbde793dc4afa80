package secrets

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/store"
)

// Manager sets, lists, deletes, rotates and resolves job secrets over a store port and
// a keyring (nil: a server without a key; every use of a value is ErrNoKey). Safe for
// concurrent use.
type Manager struct {
	st   store.SecretStore
	keys *Keyring
	now  func() time.Time
}

// NewManager returns a manager; now is the clock (nil: time.Now).
func NewManager(st store.SecretStore, keys *Keyring, now func() time.Time) (*Manager, error) {
	if st == nil {
		return nil, errors.New("secrets: NewManager: store is nil")
	}
	if now == nil {
		now = time.Now
	}
	return &Manager{st: st, keys: keys, now: now}, nil
}

// EnvValue is one secret value for a job's environment.
type EnvValue struct {
	Env   string
	Value string
}

// String never shows the value.
func (e EnvValue) String() string { return e.Env + "=***" }

// ValidateValue checks a value: not empty, no NUL (it goes in an environment), at most
// domain.MaxSecretValueBytes.
func ValidateValue(v string) error {
	switch {
	case v == "":
		return &domain.ValidationError{Field: "value", Msg: "is empty"}
	case len(v) > domain.MaxSecretValueBytes:
		return &domain.ValidationError{Field: "value", Msg: fmt.Sprintf("is %d bytes, the limit is %d (MaxSecretValueBytes)",
			len(v), domain.MaxSecretValueBytes)}
	case strings.IndexByte(v, 0) >= 0:
		return &domain.ValidationError{Field: "value", Msg: "contains a NUL byte (it goes in an environment variable)"}
	}
	return nil
}

func validNames(namespace, name string) error {
	if err := domain.ValidateNamespace(namespace); err != nil {
		return &domain.ValidationError{Field: "namespace", Msg: err.Error()}
	}
	if err := domain.ValidateSecretName(name); err != nil {
		return &domain.ValidationError{Field: "name", Msg: err.Error()}
	}
	return nil
}

// Set seals value and stores it as namespace/name (replacing an existing value).
func (m *Manager) Set(ctx context.Context, namespace, name, value string) (*store.Secret, error) {
	if err := validNames(namespace, name); err != nil {
		return nil, err
	}
	if err := ValidateValue(value); err != nil {
		return nil, err
	}
	if m.keys == nil {
		return nil, ErrNoKey
	}
	keyID, sealed, err := m.keys.Seal(namespace, name, []byte(value))
	if err != nil {
		return nil, err
	}
	at := m.now()
	return m.st.Put(ctx, &store.Secret{Namespace: namespace, Name: name, KeyID: keyID, Ciphertext: sealed,
		CreatedAt: at, UpdatedAt: at})
}

// List returns the secrets of namespaces (empty: all), without their ciphertext.
func (m *Manager) List(ctx context.Context, namespaces []string) ([]*store.Secret, error) {
	list, err := m.st.List(ctx, namespaces)
	if err != nil {
		return nil, err
	}
	for _, s := range list {
		s.Ciphertext = nil
	}
	return list, nil
}

// Delete removes namespace/name (store.ErrNotFound when there is none).
func (m *Manager) Delete(ctx context.Context, namespace, name string) (*store.Secret, error) {
	if err := validNames(namespace, name); err != nil {
		return nil, err
	}
	s, err := m.st.Delete(ctx, namespace, name)
	if err != nil {
		return nil, err
	}
	s.Ciphertext = nil
	return s, nil
}

// RotateResult is what RotateKey did.
type RotateResult struct {
	KeyID     string // the current key
	Rotated   int    // values re-sealed under it
	Unchanged int    // values already under it
}

// RotateKey re-seals every value not under the current key. A value set meanwhile
// is left as set (it is under the current key already). A value under a key the
// keyring does not hold stops the rotation with ErrUnknownKey naming it.
func (m *Manager) RotateKey(ctx context.Context) (RotateResult, error) {
	if m.keys == nil {
		return RotateResult{}, ErrNoKey
	}
	res := RotateResult{KeyID: m.keys.CurrentID()}
	all, err := m.st.List(ctx, nil)
	if err != nil {
		return res, err
	}
	for _, s := range all {
		if s.KeyID == res.KeyID {
			res.Unchanged++
			continue
		}
		v, err := m.keys.Open(s.Namespace, s.Name, s.KeyID, s.Ciphertext)
		if err != nil {
			return res, err
		}
		keyID, sealed, err := m.keys.Seal(s.Namespace, s.Name, v)
		clear(v)
		if err != nil {
			return res, err
		}
		err = m.st.Reseal(ctx, &store.Secret{Namespace: s.Namespace, Name: s.Name, KeyID: keyID, Ciphertext: sealed},
			s.KeyID, s.Ciphertext)
		switch {
		case errors.Is(err, store.ErrConflict), errors.Is(err, store.ErrNotFound):
			continue // set again (under the current key) or deleted meanwhile
		case err != nil:
			return res, err
		}
		res.Rotated++
	}
	return res, nil
}

// Check verifies that every secret refs names exists in namespace, and that this
// server can deliver them: a *domain.ValidationError naming the first missing secret,
// or ErrNoKey.
func (m *Manager) Check(ctx context.Context, namespace string, refs []domain.SecretRef) error {
	if len(refs) == 0 {
		return nil
	}
	if m.keys == nil {
		return ErrNoKey
	}
	for i, r := range refs {
		s, err := m.st.Get(ctx, namespace, r.Name)
		if errors.Is(err, store.ErrNotFound) {
			return &domain.ValidationError{Field: fmt.Sprintf("secrets[%d].name", i),
				Msg: fmt.Sprintf("no secret %q in namespace %q (hodei secret set %s --namespace %s)", r.Name, namespace, r.Name, namespace)}
		}
		if err != nil {
			return err
		}
		if !m.keys.Has(s.KeyID) {
			return fmt.Errorf("%w: secret %s/%s is sealed under key %s; start the server with that key in %s",
				ErrUnknownKey, namespace, r.Name, s.KeyID, OldKeyFileFlag)
		}
	}
	return nil
}

// Resolve decrypts the secrets refs names in namespace, for the job's environment.
// Only the replica sending RunJob on the worker's stream calls it.
func (m *Manager) Resolve(ctx context.Context, namespace string, refs []domain.SecretRef) ([]EnvValue, error) {
	if len(refs) == 0 {
		return nil, nil
	}
	if m.keys == nil {
		return nil, ErrNoKey
	}
	out := make([]EnvValue, 0, len(refs))
	for _, r := range refs {
		s, err := m.st.Get(ctx, namespace, r.Name)
		if err != nil {
			return nil, fmt.Errorf("secrets: resolve %s/%s: %w", namespace, r.Name, err)
		}
		v, err := m.keys.Open(namespace, r.Name, s.KeyID, s.Ciphertext)
		if err != nil {
			return nil, err
		}
		out = append(out, EnvValue{Env: r.EnvName(), Value: string(v)})
	}
	return out, nil
}
