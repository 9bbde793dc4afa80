package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/hodei-jobs/hodei/internal/pgtest"
	"github.com/hodei-jobs/hodei/store"
	"github.com/hodei-jobs/hodei/store/postgres"
)

// hodei admin prune: --dry-run counts the finished rows older than the retention and
// deletes nothing; without it they go, and a row not finished stays.
func TestAdminPrune(t *testing.T) {
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	if out, err := runHodei(t, "migrate", "--database-url", url); err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	st, err := postgres.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var msgs []*store.OutboxMessage
	for i := range 4 {
		msgs = append(msgs, &store.OutboxMessage{Kind: store.KindEvent, Type: "job.test",
			IdempotencyKey: fmt.Sprintf("prune-%d", i), Payload: []byte(`{}`)})
	}
	ids, err := st.Outbox().Insert(ctx, msgs...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Outbox().Claim(ctx, "r", 3, time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Outbox().Complete(ctx, "r", ids[:3]...); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	// Two finished rows two days old, one finished now, one PENDING two days old.
	if _, err := conn.Exec(ctx, `UPDATE outbox SET updated_at = now() - interval '2 days' WHERE id = ANY($1)`,
		[]int64{ids[0], ids[1], ids[3]}); err != nil {
		t.Fatal(err)
	}
	out, err := runHodei(t, "admin", "prune", "--database-url", url, "--dry-run", "-o", "json")
	if err != nil {
		t.Fatalf("prune --dry-run: %v\n%s", err, out)
	}
	var res []pruneResult
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res) != 1 || res[0].Rows != 2 || !res[0].DryRun {
		t.Fatalf("prune --dry-run -o json printed %q (%v); want 2 outbox rows, dry run", out, err)
	}
	out, err = runHodei(t, "admin", "prune", "--database-url", url)
	if err != nil || !strings.Contains(out, "outbox: 2 finished rows older than 24h0m0s deleted") {
		t.Fatalf("prune printed %q, %v", out, err)
	}
	var left int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM outbox`).Scan(&left); err != nil || left != 2 {
		t.Fatalf("%d rows left (%v), want 2: the recent finished one and the PENDING one", left, err)
	}
	if out, err := runHodei(t, "admin", "prune", "--database-url", url, "--retain-outbox", "5s"); err == nil ||
		!strings.Contains(err.Error()+out, "--retain-outbox") {
		t.Fatalf("prune --retain-outbox 5s: %v\n%s; want an error naming the flag", err, out)
	}
}
