package storetest

import (
	"bytes"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/store"
)

// RunSecrets is the conformance suite of the job secret port.
func RunSecrets(t *testing.T, newStore func(t *testing.T) store.Store) {
	t.Run("Secrets", func(t *testing.T) { testSecrets(t, newStore(t)) })
}

func testSecrets(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	ss := s.Secrets()
	now := time.Now().UTC().Truncate(time.Millisecond)
	put := func(ns, name, key string, ct []byte, at time.Time) *store.Secret {
		t.Helper()
		got, err := ss.Put(ctx, &store.Secret{Namespace: ns, Name: name, KeyID: key, Ciphertext: ct, CreatedAt: at, UpdatedAt: at})
		must(t, err)
		return got
	}
	a := put("team-a", "TOKEN", "k1", []byte{1, 2, 3}, now)
	if a.Namespace != "team-a" || a.Name != "TOKEN" || a.KeyID != "k1" || !bytes.Equal(a.Ciphertext, []byte{1, 2, 3}) ||
		!a.CreatedAt.Equal(now) || !a.UpdatedAt.Equal(now) {
		t.Fatalf("Put = %+v", a)
	}
	put("team-b", "TOKEN", "k1", []byte{4}, now)
	put("team-a", "API_KEY", "k1", []byte{5}, now)
	// Put again replaces key id, ciphertext and UpdatedAt; CreatedAt stays.
	later := now.Add(time.Minute)
	a = put("team-a", "TOKEN", "k2", []byte{9, 9}, later)
	if a.KeyID != "k2" || !bytes.Equal(a.Ciphertext, []byte{9, 9}) || !a.CreatedAt.Equal(now) || !a.UpdatedAt.Equal(later) {
		t.Fatalf("Put over an existing secret = %+v", a)
	}
	// A nameless or empty secret is refused.
	if _, err := ss.Put(ctx, &store.Secret{Namespace: "team-a", Name: "X", KeyID: "k1", CreatedAt: now}); err == nil {
		t.Fatal("Put without ciphertext succeeded")
	}

	got, err := ss.Get(ctx, "team-a", "TOKEN")
	must(t, err)
	if got.KeyID != "k2" || !bytes.Equal(got.Ciphertext, []byte{9, 9}) {
		t.Fatalf("Get = %+v", got)
	}
	_, err = ss.Get(ctx, "team-c", "TOKEN")
	wantErr(t, err, store.ErrNotFound)

	names := func(list []*store.Secret) []string {
		var out []string
		for _, sc := range list {
			out = append(out, sc.Namespace+"/"+sc.Name)
		}
		return out
	}
	all, err := ss.List(ctx, nil)
	must(t, err)
	if got, want := names(all), []string{"team-a/API_KEY", "team-a/TOKEN", "team-b/TOKEN"}; !equalStrings(got, want) {
		t.Fatalf("List(all) = %v, want %v", got, want)
	}
	some, err := ss.List(ctx, []string{"team-b", "team-c"})
	must(t, err)
	if got, want := names(some), []string{"team-b/TOKEN"}; !equalStrings(got, want) {
		t.Fatalf("List(team-b, team-c) = %v, want %v", got, want)
	}

	// Reseal: compare-and-swap on the key id and ciphertext read.
	re := &store.Secret{Namespace: "team-a", Name: "TOKEN", KeyID: "k3", Ciphertext: []byte{7}}
	wantErr(t, ss.Reseal(ctx, re, "k1", []byte{9, 9}), store.ErrConflict)    // wrong old key
	wantErr(t, ss.Reseal(ctx, re, "k2", []byte{1, 2, 3}), store.ErrConflict) // value changed since read
	must(t, ss.Reseal(ctx, re, "k2", []byte{9, 9}))
	got, err = ss.Get(ctx, "team-a", "TOKEN")
	must(t, err)
	if got.KeyID != "k3" || !bytes.Equal(got.Ciphertext, []byte{7}) || !got.UpdatedAt.Equal(later) {
		t.Fatalf("after Reseal: %+v", got)
	}
	wantErr(t, ss.Reseal(ctx, &store.Secret{Namespace: "team-x", Name: "NOPE", KeyID: "k3", Ciphertext: []byte{1}}, "k2", []byte{1}), store.ErrNotFound)

	del, err := ss.Delete(ctx, "team-a", "TOKEN")
	must(t, err)
	if del.Name != "TOKEN" || del.Namespace != "team-a" {
		t.Fatalf("Delete = %+v", del)
	}
	_, err = ss.Delete(ctx, "team-a", "TOKEN")
	wantErr(t, err, store.ErrNotFound)
	_, err = ss.Get(ctx, "team-a", "TOKEN")
	wantErr(t, err, store.ErrNotFound)
	// The other namespace's secret of the same name is untouched.
	_, err = ss.Get(ctx, "team-b", "TOKEN")
	must(t, err)
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
