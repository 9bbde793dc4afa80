package storetest

import (
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/store"
)

// sagaList checks store.SagaLister: filters by type, state and last change, oldest
// change first, and the limit.
func sagaList(t *testing.T, s store.Store) {
	ctx := sagaCtx(t)
	sl, ok := s.Sagas().(store.SagaLister)
	if !ok {
		t.Fatalf("%T does not implement store.SagaLister", s.Sagas())
	}
	base := time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)
	for i, r := range []struct{ id, typ, state string }{
		{"a", "execution", "WAITING"}, {"b", "execution", "COMPLETED"}, {"c", "timeout", "WAITING"}, {"d", "execution", "WAITING"},
	} {
		at := base.Add(time.Duration(i) * time.Minute)
		_, _, err := s.Sagas().Create(ctx, &store.SagaRecord{ID: r.id, Type: r.typ, Version: 1, State: r.state,
			CreatedAt: at, RunnableAt: at}, ev("saga.started"))
		sagaMust(t, err)
	}
	ids := func(f store.SagaFilter) []string {
		t.Helper()
		recs, err := sl.ListSagas(ctx, f)
		sagaMust(t, err)
		var out []string
		for _, r := range recs {
			out = append(out, r.ID)
		}
		return out
	}
	eq := func(got []string, want ...string) bool {
		if len(got) != len(want) {
			return false
		}
		for i := range got {
			if got[i] != want[i] {
				return false
			}
		}
		return true
	}
	if got := ids(store.SagaFilter{}); len(got) != 4 {
		t.Errorf("all: %v", got)
	}
	if got := ids(store.SagaFilter{Type: "execution", State: "WAITING"}); !eq(got, "a", "d") {
		t.Errorf("execution WAITING: %v, want [a d]", got)
	}
	if got := ids(store.SagaFilter{State: "WAITING", UpdatedBefore: base.Add(150 * time.Second)}); !eq(got, "a", "c") {
		t.Errorf("WAITING updated before +2m30s: %v, want [a c]", got)
	}
	if got := ids(store.SagaFilter{Limit: 1}); len(got) != 1 {
		t.Errorf("limit 1: %v", got)
	}
}
