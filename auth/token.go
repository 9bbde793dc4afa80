package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/store"
)

// Role is what a token may do; a higher role may do everything a lower one may.
type Role int

// Roles, lowest first.
const (
	RoleNone Role = iota
	RoleViewer
	RoleSubmitter
	RoleAdmin
)

func (r Role) String() string {
	switch r {
	case RoleViewer:
		return "viewer"
	case RoleSubmitter:
		return "submitter"
	case RoleAdmin:
		return "admin"
	}
	return "none"
}

// ParseRole parses "viewer", "submitter" or "admin".
func ParseRole(s string) (Role, error) {
	switch s {
	case "viewer":
		return RoleViewer, nil
	case "submitter":
		return RoleSubmitter, nil
	case "admin":
		return RoleAdmin, nil
	}
	return RoleNone, fmt.Errorf("unknown role %q (want viewer, submitter or admin)", s)
}

// AllNamespaces in a token's namespaces means every namespace.
const AllNamespaces = "*"

// SecretPrefix starts every token secret (so that a leaked one is recognisable).
const SecretPrefix = "hodei_"

// Limits of token fields.
const (
	MaxTokenNameLen  = 63
	MaxTokenNSCount  = 64
	maxSecretLen     = 256
	secretRandomSize = 32
)

// HashSecret is the SHA-256 of a token secret, as stored.
func HashSecret(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

// NewSecret returns a new random token secret.
func NewSecret() (string, error) {
	b := make([]byte, secretRandomSize)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("auth: random token: %w", err)
	}
	return SecretPrefix + base64.RawURLEncoding.EncodeToString(b), nil
}

// TokenSpec is what a new token is made of.
type TokenSpec struct {
	Name       string
	Role       string
	Namespaces []string
	// ExpiresIn: 0 never expires.
	ExpiresIn time.Duration
}

// ValidateTokenName checks a token name: like a namespace, a DNS label.
func ValidateTokenName(name string) error {
	if err := domain.ValidateNamespace(name); err != nil {
		return fmt.Errorf("name: %w", err)
	}
	return nil
}

// Validate names the first bad field of s.
func (s TokenSpec) Validate() error {
	if err := ValidateTokenName(s.Name); err != nil {
		return err
	}
	role, err := ParseRole(s.Role)
	if err != nil {
		return fmt.Errorf("role: %w", err)
	}
	if len(s.Namespaces) == 0 && role != RoleAdmin {
		return errors.New("namespaces: a viewer or submitter token needs at least one namespace (or \"*\" for all)")
	}
	if len(s.Namespaces) > MaxTokenNSCount {
		return fmt.Errorf("namespaces: %d exceeds the limit of %d", len(s.Namespaces), MaxTokenNSCount)
	}
	for i, ns := range s.Namespaces {
		if ns == AllNamespaces {
			continue
		}
		if err := domain.ValidateNamespace(ns); err != nil {
			return fmt.Errorf("namespaces[%d]: %w", i, err)
		}
	}
	if s.ExpiresIn < 0 {
		return fmt.Errorf("expires_in: must not be negative (0: never expires), got %s", s.ExpiresIn)
	}
	return nil
}

// NewToken validates spec and returns the token to store and its secret (to show once).
// An admin token without namespaces sees every namespace.
func NewToken(spec TokenSpec, now time.Time) (*store.Token, string, error) {
	if err := spec.Validate(); err != nil {
		return nil, "", err
	}
	secret, err := NewSecret()
	if err != nil {
		return nil, "", err
	}
	nss := slices.Clone(spec.Namespaces)
	if len(nss) == 0 {
		nss = []string{AllNamespaces}
	}
	slices.Sort(nss)
	nss = slices.Compact(nss)
	t := &store.Token{Name: spec.Name, Hash: HashSecret(secret), Role: spec.Role, Namespaces: nss, CreatedAt: now.UTC()}
	if spec.ExpiresIn > 0 {
		t.ExpiresAt = now.Add(spec.ExpiresIn).UTC()
	}
	return t, secret, nil
}

// ParseBearer returns the token of an Authorization header value: "" when the header
// is empty, an error when it is not "Bearer <token>" or the token is malformed.
func ParseBearer(header string) (string, error) {
	if header == "" {
		return "", nil
	}
	scheme, tok, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", errors.New(`the Authorization header must be "Bearer <token>"`)
	}
	tok = strings.TrimSpace(tok)
	switch {
	case tok == "":
		return "", errors.New("the bearer token is empty")
	case len(tok) > maxSecretLen:
		return "", fmt.Errorf("the bearer token is longer than %d bytes", maxSecretLen)
	case strings.IndexFunc(tok, func(r rune) bool { return r <= ' ' || r >= 0x7f }) >= 0:
		return "", errors.New("the bearer token must be printable ASCII")
	}
	return tok, nil
}
