package postgres_test

import (
	"testing"

	"github.com/hodei-jobs/hodei/internal/pgtest"
	"github.com/hodei-jobs/hodei/store"
	"github.com/hodei-jobs/hodei/store/storetest"
)

func TestSagaConformance(t *testing.T) {
	storetest.RunSaga(t, func(t *testing.T) store.Store { return pgtest.NewStore(t) })
}

func TestRetentionConformance(t *testing.T) {
	storetest.RunRetention(t, func(t *testing.T) store.Store { return pgtest.NewStore(t) })
}
