package server

import (
	"context"
	"fmt"

	"github.com/hodei-jobs/hodei/api"
	"github.com/hodei-jobs/hodei/domain"
	hodeiv1 "github.com/hodei-jobs/hodei/gen/hodei/v1"
	"github.com/hodei-jobs/hodei/secrets"
	"github.com/hodei-jobs/hodei/store"
)

// newSecrets loads the secrets keyring (Config.SecretsKeyFile, optional) and returns
// the manager of the job secrets (package secrets has the design).
func newSecrets(st store.Store, cfg Config) (*secrets.Manager, error) {
	keys, err := secrets.LoadKeyring(cfg.SecretsKeyFile, cfg.SecretsOldKeyFiles)
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	m, err := secrets.NewManager(st.Secrets(), keys, nil)
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	return m, nil
}

// secretAdmin adapts secrets.Manager to api.SecretAdmin.
type secretAdmin struct{ *secrets.Manager }

func (a secretAdmin) RotateKey(ctx context.Context) (api.SecretRotation, error) {
	r, err := a.Manager.RotateKey(ctx)
	return api.SecretRotation{KeyID: r.KeyID, Rotated: r.Rotated, Kept: r.Unchanged}, err
}

// secretResolver is the worker stream's decryption of a RunJob's secrets.
func secretResolver(m *secrets.Manager) api.SecretResolver {
	return func(ctx context.Context, ns string, refs []domain.SecretRef) ([]*hodeiv1.SecretEnv, error) {
		vals, err := m.Resolve(ctx, ns, refs)
		if err != nil {
			return nil, err
		}
		out := make([]*hodeiv1.SecretEnv, len(vals))
		for i, v := range vals {
			out[i] = &hodeiv1.SecretEnv{Env: v.Env, Value: v.Value}
		}
		return out, nil
	}
}
