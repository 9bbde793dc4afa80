package main

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/hodei-jobs/hodei/internal/pgtest"
	"github.com/hodei-jobs/hodei/retention"
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
	var res retention.Report
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.Kinds) != 6 || res.Kinds[0].Kind != "outbox" ||
		res.Kinds[0].Rows != 2 || !res.DryRun {
		t.Fatalf("prune --dry-run -o json printed %q (%v); want 6 kinds, 2 outbox rows, dry run", out, err)
	}
	for _, k := range res.Kinds[1:] {
		if k.Rows != 0 {
			t.Fatalf("prune --dry-run: %s %d rows, want 0 (nothing else is old)", k.Kind, k.Rows)
		}
	}
	out, err = runHodei(t, "admin", "prune", "--database-url", url, "--retain-jobs", "0")
	if err != nil || !regexp.MustCompile(`(?m)^outbox +24h0m0s +2 `).MatchString(out) ||
		!regexp.MustCompile(`(?m)^jobs +forever`).MatchString(out) {
		t.Fatalf("prune printed %q, %v; want 2 outbox rows deleted and jobs kept forever", out, err)
	}
	var left int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM outbox`).Scan(&left); err != nil || left != 2 {
		t.Fatalf("%d rows left (%v), want 2: the recent finished one and the PENDING one", left, err)
	}
	if out, err := runHodei(t, "admin", "prune", "--database-url", url, "--retain-outbox", "5s"); err == nil ||
		!strings.Contains(err.Error()+out, "--retain-outbox") {
		t.Fatalf("prune --retain-outbox 5s: %v\n%s; want an error naming the flag", err, out)
	}
	if out, err := runHodei(t, "admin", "prune", "--database-url", url, "--retain-logs", "-1h"); err == nil ||
		!strings.Contains(err.Error()+out, "--retain-logs") {
		t.Fatalf("prune --retain-logs -1h: %v\n%s; want an error naming the flag", err, out)
	}
}
