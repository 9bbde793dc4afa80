package postgres_test

import (
	"testing"

	"github.com/hodei-jobs/hodei/internal/pgtest"
	"github.com/hodei-jobs/hodei/store"
	"github.com/hodei-jobs/hodei/store/storetest"
)

func TestAuthConformance(t *testing.T) {
	storetest.RunAuth(t, func(t *testing.T) store.Store { return pgtest.NewStore(t) })
}
