package storetest

import (
	"bytes"
	"crypto/sha256"
	"slices"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/store"
)

// RunAuth is the conformance suite of the API token and audit ports, and of listing
// jobs by namespace.
func RunAuth(t *testing.T, newStore func(t *testing.T) store.Store) {
	t.Run("Tokens", func(t *testing.T) { testTokens(t, newStore(t)) })
	t.Run("Audit", func(t *testing.T) { testAudit(t, newStore(t)) })
	t.Run("JobNamespaces", func(t *testing.T) { testJobNamespaces(t, newStore(t)) })
}

func testTokens(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	ts := s.Tokens()
	now := time.Now().UTC().Truncate(time.Millisecond)
	h1 := sha256.Sum256([]byte("secret-1"))
	h2 := sha256.Sum256([]byte("secret-2"))
	ci := &store.Token{Name: "ci", Hash: h1[:], Role: "submitter", Namespaces: []string{"team-a", "team-b"},
		CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	must(t, ts.Create(ctx, ci))
	must(t, ts.Create(ctx, &store.Token{Name: "admin", Hash: h2[:], Role: "admin", Namespaces: []string{"*"}, CreatedAt: now}))
	// A second token with the same name, or the same hash, is a conflict.
	h3 := sha256.Sum256([]byte("secret-3"))
	wantErr(t, ts.Create(ctx, &store.Token{Name: "ci", Hash: h3[:], Role: "viewer", CreatedAt: now}), store.ErrConflict)
	wantErr(t, ts.Create(ctx, &store.Token{Name: "other", Hash: h1[:], Role: "viewer", CreatedAt: now}), store.ErrConflict)

	got, err := ts.ByHash(ctx, h1[:])
	must(t, err)
	if got.Name != "ci" || got.Role != "submitter" || !slices.Equal(got.Namespaces, []string{"team-a", "team-b"}) ||
		!bytes.Equal(got.Hash, h1[:]) || !got.CreatedAt.Equal(now) || !got.ExpiresAt.Equal(now.Add(time.Hour)) ||
		!got.RevokedAt.IsZero() {
		t.Fatalf("ByHash = %+v, want %+v", got, ci)
	}
	_, err = ts.ByHash(ctx, h3[:])
	wantErr(t, err, store.ErrNotFound)

	list, err := ts.List(ctx)
	must(t, err)
	if len(list) != 2 || list[0].Name != "admin" || list[1].Name != "ci" || !list[0].ExpiresAt.IsZero() {
		t.Fatalf("List = %+v", list)
	}

	at := now.Add(time.Minute)
	rev, err := ts.Revoke(ctx, "ci", at)
	must(t, err)
	if !rev.RevokedAt.Equal(at) {
		t.Fatalf("Revoke: RevokedAt = %s, want %s", rev.RevokedAt, at)
	}
	// Revoking again keeps the first time.
	rev, err = ts.Revoke(ctx, "ci", at.Add(time.Hour))
	must(t, err)
	if !rev.RevokedAt.Equal(at) {
		t.Fatalf("second Revoke moved RevokedAt to %s", rev.RevokedAt)
	}
	got, err = ts.ByHash(ctx, h1[:])
	must(t, err)
	if !got.RevokedAt.Equal(at) {
		t.Fatalf("ByHash after revoke: RevokedAt = %s", got.RevokedAt)
	}
	_, err = ts.Revoke(ctx, "nobody", at)
	wantErr(t, err, store.ErrNotFound)
}

func testAudit(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	as := s.Audit()
	t0 := time.Now().UTC().Truncate(time.Millisecond)
	recs := []*store.AuditRecord{
		{Time: t0, Actor: "ci", Action: "job.submit", Procedure: "/p", Target: "j1", Namespace: "team-a", Outcome: "ok", Remote: "127.0.0.1"},
		{Time: t0.Add(time.Second), Actor: "", Action: "auth.refused", Outcome: "unauthenticated", Remote: "10.0.0.1", Detail: "unknown token"},
		{Time: t0.Add(2 * time.Second), Actor: "admin", Action: "token.revoke", Target: "ci", Outcome: "ok"},
	}
	for _, r := range recs {
		must(t, as.Append(ctx, r))
		if r.ID == 0 {
			t.Fatal("Append did not set the id")
		}
	}
	if err := as.Append(ctx, &store.AuditRecord{Time: t0}); err == nil {
		t.Fatal("Append without action and outcome succeeded")
	}
	all, err := as.List(ctx, store.AuditFilter{Limit: 10})
	must(t, err)
	if len(all) != 3 || all[0].Action != "job.submit" || all[2].Action != "token.revoke" ||
		all[0].Target != "j1" || all[0].Namespace != "team-a" || all[0].Remote != "127.0.0.1" ||
		all[1].Detail != "unknown token" || !all[0].Time.Equal(t0) || all[0].Procedure != "/p" {
		t.Fatalf("List = %+v", all)
	}
	since, err := as.List(ctx, store.AuditFilter{Since: t0.Add(time.Second), Limit: 10})
	must(t, err)
	if len(since) != 2 || since[0].Outcome != "unauthenticated" {
		t.Fatalf("List since = %+v", since)
	}
	byActor, err := as.List(ctx, store.AuditFilter{Actor: "admin", Limit: 10})
	must(t, err)
	if len(byActor) != 1 || byActor[0].Target != "ci" {
		t.Fatalf("List actor = %+v", byActor)
	}
	one, err := as.List(ctx, store.AuditFilter{Limit: 1})
	must(t, err)
	if len(one) != 1 || one[0].ID != all[0].ID {
		t.Fatalf("List limit 1 = %+v", one)
	}
	if _, err := as.List(ctx, store.AuditFilter{}); err == nil {
		t.Fatal("List without a limit succeeded")
	}
}

func testJobNamespaces(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	for i, ns := range []string{"team-a", "team-b", "", "default", "team-a"} {
		j := &domain.Job{Spec: domain.JobSpec{Command: []string{"true"}, Namespace: ns},
			CreatedAt: time.Now().UTC().Add(time.Duration(i) * time.Millisecond)}
		must(t, s.Jobs().Create(ctx, j))
	}
	count := func(nss ...string) int {
		t.Helper()
		jobs, _, err := s.Jobs().List(ctx, store.JobFilter{Namespaces: nss})
		must(t, err)
		for _, j := range jobs {
			if len(nss) > 0 && !slices.Contains(nss, j.NamespaceOf()) {
				t.Fatalf("List(%v) returned a job of namespace %q", nss, j.NamespaceOf())
			}
		}
		return len(jobs)
	}
	for _, c := range []struct {
		nss  []string
		want int
	}{{nil, 5}, {[]string{"team-a"}, 2}, {[]string{"default"}, 2}, {[]string{"team-a", "team-b"}, 3}, {[]string{"none"}, 0}} {
		if got := count(c.nss...); got != c.want {
			t.Errorf("List(namespaces %v) = %d jobs, want %d", c.nss, got, c.want)
		}
	}
}
