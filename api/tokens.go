package api

import (
	"context"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"

	"github.com/hodei-jobs/hodei/auth"
	hodeiv1 "github.com/hodei-jobs/hodei/gen/hodei/v1"
	"github.com/hodei-jobs/hodei/internal/protoconv"
	"github.com/hodei-jobs/hodei/store"
)

// TokenAdmin creates, lists and revokes API tokens; store.TokenStore satisfies it.
type TokenAdmin interface {
	Create(ctx context.Context, t *store.Token) error
	List(ctx context.Context) ([]*store.Token, error)
	Revoke(ctx context.Context, name string, at time.Time) (*store.Token, error)
}

// AuditReader reads the audit trail; store.AuditStore satisfies it.
type AuditReader interface {
	List(ctx context.Context, f store.AuditFilter) ([]*store.AuditRecord, error)
}

// Limits of ListAudit.
const (
	DefaultAuditList = 100
	MaxAuditList     = 1000
	maxActorLen      = 128
)

func tokenToProto(t *store.Token) *hodeiv1.ApiToken {
	return &hodeiv1.ApiToken{Name: t.Name, Role: t.Role, Namespaces: t.Namespaces,
		CreatedAt: protoconv.TimeToProto(t.CreatedAt), ExpiresAt: protoconv.TimeToProto(t.ExpiresAt),
		RevokedAt: protoconv.TimeToProto(t.RevokedAt)}
}

func (s *AdminService) tokens() (TokenAdmin, error) {
	if s.opts.Tokens == nil {
		return nil, connect.NewError(connect.CodeUnimplemented, errors.New("this server has no token store"))
	}
	return s.opts.Tokens, nil
}

// CreateToken implements AdminService.CreateToken: the secret is in the response,
// once; only its hash is stored.
func (s *AdminService) CreateToken(ctx context.Context, req *connect.Request[hodeiv1.CreateTokenRequest]) (*connect.Response[hodeiv1.CreateTokenResponse], error) {
	ts, err := s.tokens()
	if err != nil {
		return nil, err
	}
	m := req.Msg
	spec := auth.TokenSpec{Name: m.GetName(), Role: m.GetRole(), Namespaces: m.GetNamespaces()}
	if d := m.GetExpiresIn(); d != nil {
		spec.ExpiresIn = d.AsDuration()
	}
	t, secret, err := auth.NewToken(spec, time.Now())
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	if err := ts.Create(ctx, t); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return nil, connect.NewError(connect.CodeAlreadyExists, fmt.Errorf("name: a token named %q exists (revoke it or choose another name)", t.Name))
		}
		return nil, s.toConnect(err)
	}
	s.log.Info("token created", "name", t.Name, "role", t.Role, "namespaces", t.Namespaces)
	return connect.NewResponse(&hodeiv1.CreateTokenResponse{Token: tokenToProto(t), Secret: secret}), nil
}

// ListTokens implements AdminService.ListTokens (never the secrets: they are not stored).
func (s *AdminService) ListTokens(ctx context.Context, _ *connect.Request[hodeiv1.ListTokensRequest]) (*connect.Response[hodeiv1.ListTokensResponse], error) {
	ts, err := s.tokens()
	if err != nil {
		return nil, err
	}
	list, err := ts.List(ctx)
	if err != nil {
		return nil, s.toConnect(err)
	}
	out := &hodeiv1.ListTokensResponse{Tokens: make([]*hodeiv1.ApiToken, len(list))}
	for i, t := range list {
		out.Tokens[i] = tokenToProto(t)
	}
	return connect.NewResponse(out), nil
}

// RevokeToken implements AdminService.RevokeToken: the next request with the token is
// refused.
func (s *AdminService) RevokeToken(ctx context.Context, req *connect.Request[hodeiv1.RevokeTokenRequest]) (*connect.Response[hodeiv1.RevokeTokenResponse], error) {
	ts, err := s.tokens()
	if err != nil {
		return nil, err
	}
	name := req.Msg.GetName()
	if err := auth.ValidateTokenName(name); err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	t, err := ts.Revoke(ctx, name, time.Now())
	if errors.Is(err, store.ErrNotFound) {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("name: no token named %q", name))
	}
	if err != nil {
		return nil, s.toConnect(err)
	}
	s.log.Info("token revoked", "name", t.Name)
	return connect.NewResponse(&hodeiv1.RevokeTokenResponse{Token: tokenToProto(t)}), nil
}

// ListAudit implements AdminService.ListAudit.
func (s *AdminService) ListAudit(ctx context.Context, req *connect.Request[hodeiv1.ListAuditRequest]) (*connect.Response[hodeiv1.ListAuditResponse], error) {
	if s.opts.Audit == nil {
		return nil, connect.NewError(connect.CodeUnimplemented, errors.New("this server has no audit trail"))
	}
	m := req.Msg
	f := store.AuditFilter{Actor: m.GetActor(), Limit: int(m.GetLimit())}
	switch {
	case f.Limit == 0:
		f.Limit = DefaultAuditList
	case f.Limit < 0 || f.Limit > MaxAuditList:
		return nil, invalidArg("limit", "%d out of range [1, %d]", f.Limit, MaxAuditList)
	}
	if len(f.Actor) > maxActorLen {
		return nil, invalidArg("actor", "is %d bytes, the limit is %d", len(f.Actor), maxActorLen)
	}
	if ts := m.GetSince(); ts != nil {
		if err := ts.CheckValid(); err != nil {
			return nil, invalidArg("since", "%v", err)
		}
		f.Since = ts.AsTime()
	}
	recs, err := s.opts.Audit.List(ctx, f)
	if err != nil {
		return nil, s.toConnect(err)
	}
	out := &hodeiv1.ListAuditResponse{Records: make([]*hodeiv1.AuditRecord, len(recs))}
	for i, r := range recs {
		out.Records[i] = &hodeiv1.AuditRecord{Id: r.ID, Time: protoconv.TimeToProto(r.Time), Actor: r.Actor,
			Action: r.Action, Procedure: r.Procedure, Target: r.Target, Namespace: r.Namespace,
			Outcome: r.Outcome, Remote: r.Remote, Detail: r.Detail}
	}
	return connect.NewResponse(out), nil
}
