package outbox_test

import (
	"context"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/internal/pgtest"
	"github.com/hodei-jobs/hodei/outbox"
	"github.com/hodei-jobs/hodei/store"
)

type leading bool

func (l leading) IsLeader() bool { return bool(l) }

// The pruner deletes finished rows older than the retention in batches, keeps newer
// ones and those not finished (RETRY, DEAD_LETTER, PENDING), and only on the leader.
func TestPrunerDeletesOldFinishedRows(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	st := pgtest.NewStore(t)
	ids := insertWork(t, ctx, st.Outbox(), "p", 9)
	claimed, err := st.Outbox().Claim(ctx, "r", 8, time.Hour)
	if err != nil || len(claimed) != 8 {
		t.Fatalf("claim: %d, %v", len(claimed), err)
	}
	if n, err := st.Outbox().Complete(ctx, "r", ids[:7]...); err != nil || n != 7 {
		t.Fatalf("complete: %d, %v", n, err)
	}
	if err := st.Outbox().Fail(ctx, "r", ids[7], "boom", time.Now(), true); err != nil {
		t.Fatal(err)
	}
	// A clock two hours ahead: every finished row is older than a 1h retention.
	future := func() time.Time { return time.Now().Add(2 * time.Hour) }
	if _, err := outbox.NewPruner(st.Outbox(), outbox.PrunerConfig{Retain: time.Second}); err == nil {
		t.Fatal("NewPruner accepted Retain 1s")
	}
	follower, err := outbox.NewPruner(st.Outbox(), outbox.PrunerConfig{Retain: time.Hour, Now: future,
		Interval: 10 * time.Millisecond, Leader: leading(false)})
	if err != nil {
		t.Fatal(err)
	}
	fctx, stop := context.WithTimeout(ctx, 200*time.Millisecond)
	defer stop()
	if err := follower.Run(fctx); err != nil {
		t.Fatal(err)
	}
	// With the real clock nothing is older than an hour: nothing goes.
	recent, err := outbox.NewPruner(st.Outbox(), outbox.PrunerConfig{Retain: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := recent.PruneOnce(ctx, false); err != nil || n != 0 {
		t.Fatalf("prune of recent rows: %d, %v; want 0", n, err)
	}
	if c := counts(t, st.Outbox())[store.OutboxCompleted]; c != 7 {
		t.Fatalf("a follower pruned: %d COMPLETED rows left, want 7", c)
	}
	p, err := outbox.NewPruner(st.Outbox(), outbox.PrunerConfig{Retain: time.Hour, Now: future, BatchSize: 3})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := p.PruneOnce(ctx, true); err != nil || n != 7 {
		t.Fatalf("dry run: %d, %v; want 7", n, err)
	}
	if c := counts(t, st.Outbox())[store.OutboxCompleted]; c != 7 {
		t.Fatalf("the dry run deleted rows: %d left", c)
	}
	if n, err := p.PruneOnce(ctx, false); err != nil || n != 7 {
		t.Fatalf("prune: %d, %v; want 7 (in batches of 3)", n, err)
	}
	c := counts(t, st.Outbox())
	if c[store.OutboxCompleted] != 0 || c[store.OutboxDeadLetter] != 1 || c[store.OutboxPending] != 1 {
		t.Fatalf("after the prune: %v; want no COMPLETED, the DEAD_LETTER and the PENDING row", c)
	}
}
