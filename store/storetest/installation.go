package storetest

import (
	"context"
	"testing"

	"github.com/hodei-jobs/hodei/store"
)

// testInstallation: one id per database, the same on every call (in a transaction
// too), another on another database.
func testInstallation(t *testing.T, newStore func(t *testing.T) store.Store) {
	ctx := ctxT(t)
	a := newStore(t)
	id, err := a.InstallationID(ctx)
	must(t, err)
	if id == "" {
		t.Fatal("empty installation id")
	}
	var again string
	must(t, a.InTx(ctx, func(ctx context.Context) error {
		again, err = a.InstallationID(ctx)
		return err
	}))
	if again != id {
		t.Fatalf("installation id changed: %q then %q", id, again)
	}
	other, err := newStore(t).InstallationID(ctx)
	must(t, err)
	if other == id {
		t.Fatalf("two databases share installation id %q", id)
	}
}
