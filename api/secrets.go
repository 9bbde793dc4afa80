package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"connectrpc.com/connect"

	"github.com/hodei-jobs/hodei/auth"
	"github.com/hodei-jobs/hodei/domain"
	hodeiv1 "github.com/hodei-jobs/hodei/gen/hodei/v1"
	"github.com/hodei-jobs/hodei/gen/hodei/v1/hodeiv1connect"
	"github.com/hodei-jobs/hodei/internal/protoconv"
	"github.com/hodei-jobs/hodei/store"
)

// SecretAdmin is what SecretService needs (secrets.Manager has it). No method returns
// a value: values go in and never come out of the API (package secrets has the design).
type SecretAdmin interface {
	Set(ctx context.Context, namespace, name, value string) (*store.Secret, error)
	List(ctx context.Context, namespaces []string) ([]*store.Secret, error)
	Delete(ctx context.Context, namespace, name string) (*store.Secret, error)
	RotateKey(ctx context.Context) (SecretRotation, error)
}

// SecretRotation is what a key rotation did.
type SecretRotation struct {
	KeyID         string // the current key
	Rotated, Kept int    // values re-sealed, values already under the current key
}

// SecretChecker checks at submit that a job's secrets exist in its namespace
// (secrets.Manager.Check): a *domain.ValidationError naming the missing one.
type SecretChecker interface {
	Check(ctx context.Context, namespace string, refs []domain.SecretRef) error
}

// SecretResolver decrypts a job's secrets for its RunJob (secrets.Manager.Resolve,
// adapted): called only where RunJob goes on the worker's stream.
type SecretResolver func(ctx context.Context, namespace string, refs []domain.SecretRef) ([]*hodeiv1.SecretEnv, error)

// SecretService implements hodeiv1connect.SecretServiceHandler. Its procedures are in
// the policy table (policy.go); namespaces are checked here: a namespace the caller may
// not see is PermissionDenied, and ListSecrets shows only visible ones.
type SecretService struct {
	admin  SecretAdmin
	errors []ErrorCode
	log    *slog.Logger
}

var _ hodeiv1connect.SecretServiceHandler = (*SecretService)(nil)

// NewSecretService returns the secret API over admin; errs maps extra errors to codes.
func NewSecretService(admin SecretAdmin, errs []ErrorCode, logger *slog.Logger) (*SecretService, error) {
	if admin == nil {
		return nil, errors.New("api: NewSecretService: admin is nil")
	}
	if logger == nil {
		logger = slog.Default()
	}
	return &SecretService{admin: admin, errors: errs, log: logger.With("component", "api.secrets")}, nil
}

func secretToProto(s *store.Secret) *hodeiv1.Secret {
	return &hodeiv1.Secret{Namespace: s.Namespace, Name: s.Name, KeyId: s.KeyID,
		CreatedAt: protoconv.TimeToProto(s.CreatedAt), UpdatedAt: protoconv.TimeToProto(s.UpdatedAt)}
}

func canUse(ctx context.Context, ns string) error {
	if p, ok := auth.FromContext(ctx); ok && !p.CanSee(ns) {
		return connect.NewError(connect.CodePermissionDenied,
			fmt.Errorf("namespace: token %q may not use namespace %q", p.Name, ns))
	}
	return nil
}

func secretNamespace(ctx context.Context, ns string) string {
	if ns != "" {
		return ns
	}
	if p, ok := auth.FromContext(ctx); ok {
		return p.DefaultNamespace()
	}
	return domain.DefaultNamespace
}

// SetSecret stores a value (never logged nor returned).
func (s *SecretService) SetSecret(ctx context.Context, req *connect.Request[hodeiv1.SetSecretRequest]) (*connect.Response[hodeiv1.SetSecretResponse], error) {
	ns := secretNamespace(ctx, req.Msg.GetNamespace())
	if err := canUse(ctx, ns); err != nil {
		return nil, err
	}
	sec, err := s.admin.Set(ctx, ns, req.Msg.GetName(), req.Msg.GetValue())
	if err != nil {
		return nil, toConnect(err, s.errors)
	}
	s.log.Info("secret set", "namespace", sec.Namespace, "name", sec.Name, "key_id", sec.KeyID)
	return connect.NewResponse(&hodeiv1.SetSecretResponse{Secret: secretToProto(sec)}), nil
}

// ListSecrets lists names (and key ids) of the namespaces the caller sees.
func (s *SecretService) ListSecrets(ctx context.Context, req *connect.Request[hodeiv1.ListSecretsRequest]) (*connect.Response[hodeiv1.ListSecretsResponse], error) {
	var nss []string
	if ns := req.Msg.GetNamespace(); ns != "" {
		if err := domain.ValidateNamespace(ns); err != nil {
			return nil, invalidArg("namespace", "%v", err)
		}
		if err := canUse(ctx, ns); err != nil {
			return nil, err
		}
		nss = []string{ns}
	} else if p, ok := auth.FromContext(ctx); ok {
		nss = p.Visible()
		if nss != nil && len(nss) == 0 {
			return connect.NewResponse(&hodeiv1.ListSecretsResponse{}), nil
		}
	}
	list, err := s.admin.List(ctx, nss)
	if err != nil {
		return nil, toConnect(err, s.errors)
	}
	out := &hodeiv1.ListSecretsResponse{Secrets: make([]*hodeiv1.Secret, len(list))}
	for i, sec := range list {
		out.Secrets[i] = secretToProto(sec)
	}
	return connect.NewResponse(out), nil
}

// DeleteSecret removes one secret; a job naming it afterwards fails to start.
func (s *SecretService) DeleteSecret(ctx context.Context, req *connect.Request[hodeiv1.DeleteSecretRequest]) (*connect.Response[hodeiv1.DeleteSecretResponse], error) {
	ns := secretNamespace(ctx, req.Msg.GetNamespace())
	if err := canUse(ctx, ns); err != nil {
		return nil, err
	}
	sec, err := s.admin.Delete(ctx, ns, req.Msg.GetName())
	if errors.Is(err, store.ErrNotFound) {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("name: no secret %q in namespace %q", req.Msg.GetName(), ns))
	}
	if err != nil {
		return nil, toConnect(err, s.errors)
	}
	s.log.Info("secret deleted", "namespace", sec.Namespace, "name", sec.Name)
	return connect.NewResponse(&hodeiv1.DeleteSecretResponse{Secret: secretToProto(sec)}), nil
}

// RotateSecretsKey re-seals every value under the server's current key.
func (s *SecretService) RotateSecretsKey(ctx context.Context, _ *connect.Request[hodeiv1.RotateSecretsKeyRequest]) (*connect.Response[hodeiv1.RotateSecretsKeyResponse], error) {
	res, err := s.admin.RotateKey(ctx)
	if err != nil {
		return nil, toConnect(err, s.errors)
	}
	s.log.Info("secrets key rotated", "key_id", res.KeyID, "rotated", res.Rotated, "unchanged", res.Kept)
	return connect.NewResponse(&hodeiv1.RotateSecretsKeyResponse{KeyId: res.KeyID,
		Rotated: int32(res.Rotated), Unchanged: int32(res.Kept)}), nil
}
