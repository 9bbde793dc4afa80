package auth

import (
	"context"
	"slices"
	"time"

	"github.com/hodei-jobs/hodei/domain"
)

// Principal is who makes a request.
type Principal struct {
	// Name of the token; "anonymous" when no token was sent on a server without --auth.
	Name       string
	Role       Role
	Namespaces []string // AllNamespaces: every namespace
	Anonymous  bool

	// Of a stored token (nil and zero otherwise): what Guard watches.
	hash      []byte
	expiresAt time.Time
}

// Anonymous is the Name of a caller without a token.
const Anonymous = "anonymous"

// SeesAll reports whether p sees every namespace.
func (p *Principal) SeesAll() bool { return slices.Contains(p.Namespaces, AllNamespaces) }

// CanSee reports whether p may see jobs of namespace ns ("" is domain.DefaultNamespace).
func (p *Principal) CanSee(ns string) bool {
	if ns == "" {
		ns = domain.DefaultNamespace
	}
	return p.SeesAll() || slices.Contains(p.Namespaces, ns)
}

// DefaultNamespace is where p's jobs go when no namespace is named: its only namespace,
// else domain.DefaultNamespace.
func (p *Principal) DefaultNamespace() string {
	if len(p.Namespaces) == 1 && p.Namespaces[0] != AllNamespaces {
		return p.Namespaces[0]
	}
	return domain.DefaultNamespace
}

// Visible is the namespace filter of a list for p: nil when p sees every namespace.
func (p *Principal) Visible() []string {
	if p.SeesAll() {
		return nil
	}
	return slices.Clone(p.Namespaces)
}

type principalKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// FromContext returns the principal the interceptor put in ctx, if any.
func FromContext(ctx context.Context) (*Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(*Principal)
	return p, ok
}

// CanSee reports whether the caller in ctx may see namespace ns. A context without a
// principal (a call that did not come through the interceptor: in-process callers and
// tests) sees everything.
func CanSee(ctx context.Context, ns string) bool {
	p, ok := FromContext(ctx)
	return !ok || p.CanSee(ns)
}
