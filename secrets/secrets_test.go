package secrets_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/secrets"
	"github.com/hodei-jobs/hodei/store"
	"github.com/hodei-jobs/hodei/store/sqlite"
)

func newKey(t *testing.T) []byte {
	t.Helper()
	k := make([]byte, secrets.KeySize)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

func writeFile(t *testing.T, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadKeyring(t *testing.T) {
	k := newKey(t)
	for name, data := range map[string][]byte{
		"raw": k, "hex": []byte(hex.EncodeToString(k) + "\n"),
	} {
		kr, err := secrets.LoadKeyring(writeFile(t, data), nil)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if kr.CurrentID() != secrets.KeyID(k) || len(kr.CurrentID()) != 16 {
			t.Fatalf("%s: CurrentID = %q, want %q", name, kr.CurrentID(), secrets.KeyID(k))
		}
	}
	// A short key is refused naming the flag, and the error does not show the key.
	short := writeFile(t, []byte("0123456789abcdef"))
	_, err := secrets.LoadKeyring(short, nil)
	if err == nil || !strings.Contains(err.Error(), "--secrets-key-file") || !strings.Contains(err.Error(), "16 bytes") ||
		strings.Contains(err.Error(), "0123456789abcdef") {
		t.Fatalf("short key: %v", err)
	}
	_, err = secrets.LoadKeyring(writeFile(t, k), []string{short})
	if err == nil || !strings.Contains(err.Error(), "--secrets-old-key-file") {
		t.Fatalf("short old key: %v", err)
	}
	_, err = secrets.LoadKeyring(filepath.Join(t.TempDir(), "missing"), nil)
	if err == nil || !strings.Contains(err.Error(), "--secrets-key-file") {
		t.Fatalf("missing key file: %v", err)
	}
	if kr, err := secrets.LoadKeyring("", nil); kr != nil || err != nil {
		t.Fatalf("no key file: %v, %v", kr, err)
	}
}

func TestSealBindsSecret(t *testing.T) {
	kr, err := secrets.NewKeyring(newKey(t))
	if err != nil {
		t.Fatal(err)
	}
	id, sealed, err := kr.Seal("team-a", "TOKEN", []byte("hunter2-very-secret"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte("hunter2")) {
		t.Fatal("ciphertext holds the plaintext")
	}
	v, err := kr.Open("team-a", "TOKEN", id, sealed)
	if err != nil || string(v) != "hunter2-very-secret" {
		t.Fatalf("Open = %q, %v", v, err)
	}
	// The same ciphertext under another secret's name does not open.
	if _, err := kr.Open("team-b", "TOKEN", id, sealed); err == nil {
		t.Fatal("a ciphertext moved to another namespace opened")
	}
	sealed[len(sealed)-1] ^= 1
	if _, err := kr.Open("team-a", "TOKEN", id, sealed); err == nil {
		t.Fatal("an altered ciphertext opened")
	}
	if _, err := kr.Open("team-a", "TOKEN", "0000000000000000", sealed); !errors.Is(err, secrets.ErrUnknownKey) {
		t.Fatalf("unknown key: %v", err)
	}
}

func newStore(t *testing.T) store.Store {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "hodei.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	return st
}

func TestManagerRotateResolveCheck(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	oldKey, newKeyB := newKey(t), newKey(t)
	oldRing, err := secrets.NewKeyring(oldKey)
	if err != nil {
		t.Fatal(err)
	}
	m, err := secrets.NewManager(st.Secrets(), oldRing, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Set(ctx, "team-a", "TOKEN", "s3cr3t-value"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Set(ctx, "team-a", "OTHER", "another-value"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Set(ctx, "team-a", "EMPTY", ""); err == nil || !strings.Contains(err.Error(), "value") {
		t.Fatalf("empty value: %v", err)
	}
	if _, err := m.Set(ctx, "team-a", "bad-name", "x"); err == nil || !strings.Contains(err.Error(), "name") {
		t.Fatalf("bad name: %v", err)
	}
	list, err := m.List(ctx, nil)
	if err != nil || len(list) != 2 || list[0].Ciphertext != nil || list[0].KeyID != secrets.KeyID(oldKey) {
		t.Fatalf("List = %+v, %v", list, err)
	}

	// The server restarts with a new key and the old one as an old key: values open,
	// rotation re-seals them, and then the old key is no longer needed.
	ring, err := secrets.NewKeyring(newKeyB, oldKey)
	if err != nil {
		t.Fatal(err)
	}
	m, _ = secrets.NewManager(st.Secrets(), ring, nil)
	vals, err := m.Resolve(ctx, "team-a", []domain.SecretRef{{Name: "TOKEN"}, {Name: "OTHER", Env: "MY_VAR"}})
	if err != nil || len(vals) != 2 || vals[0] != (secrets.EnvValue{Env: "TOKEN", Value: "s3cr3t-value"}) ||
		vals[1] != (secrets.EnvValue{Env: "MY_VAR", Value: "another-value"}) {
		t.Fatalf("Resolve = %v, %v", vals, err)
	}
	if strings.Contains(vals[0].String(), "s3cr3t") {
		t.Fatalf("EnvValue.String shows the value: %s", vals[0])
	}
	res, err := m.RotateKey(ctx)
	if err != nil || res.Rotated != 2 || res.Unchanged != 0 || res.KeyID != secrets.KeyID(newKeyB) {
		t.Fatalf("RotateKey = %+v, %v", res, err)
	}
	res, err = m.RotateKey(ctx)
	if err != nil || res.Rotated != 0 || res.Unchanged != 2 {
		t.Fatalf("second RotateKey = %+v, %v", res, err)
	}
	onlyNew, _ := secrets.NewKeyring(newKeyB)
	m, _ = secrets.NewManager(st.Secrets(), onlyNew, nil)
	vals, err = m.Resolve(ctx, "team-a", []domain.SecretRef{{Name: "TOKEN"}})
	if err != nil || vals[0].Value != "s3cr3t-value" {
		t.Fatalf("Resolve after rotation with the new key only = %v, %v", vals, err)
	}

	// Check names the missing secret; a secret of another namespace does not count.
	err = m.Check(ctx, "team-b", []domain.SecretRef{{Name: "TOKEN"}})
	var ve *domain.ValidationError
	if !errors.As(err, &ve) || ve.Field != "secrets[0].name" || !strings.Contains(ve.Msg, `"TOKEN"`) {
		t.Fatalf("Check(team-b) = %v", err)
	}
	if err := m.Check(ctx, "team-a", []domain.SecretRef{{Name: "OTHER"}, {Name: "TOKEN"}}); err != nil {
		t.Fatal(err)
	}

	// Without a key, setting and using secrets fails naming the flag.
	noKey, _ := secrets.NewManager(st.Secrets(), nil, nil)
	for _, err := range []error{
		func() error { _, err := noKey.Set(ctx, "team-a", "X", "v"); return err }(),
		noKey.Check(ctx, "team-a", []domain.SecretRef{{Name: "TOKEN"}}),
		func() error { _, err := noKey.RotateKey(ctx); return err }(),
	} {
		if !errors.Is(err, secrets.ErrNoKey) || !strings.Contains(err.Error(), "--secrets-key-file") {
			t.Fatalf("without a key: %v", err)
		}
	}
	// Listing and deleting need no key.
	if _, err := noKey.Delete(ctx, "team-a", "OTHER"); err != nil {
		t.Fatal(err)
	}
	if _, err := noKey.Delete(ctx, "team-a", "OTHER"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second Delete: %v", err)
	}
}
