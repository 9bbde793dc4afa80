package postgres_test

import (
	"testing"

	"github.com/hodei-jobs/hodei/internal/pgtest"
	"github.com/hodei-jobs/hodei/store"
	"github.com/hodei-jobs/hodei/store/storetest"
)

func TestSecretsConformance(t *testing.T) {
	storetest.RunSecrets(t, func(t *testing.T) store.Store { return pgtest.NewStore(t) })
}
