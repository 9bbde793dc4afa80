// Package storetest is the conformance suite of the store ports. Every driver's tests
// call Run with a factory that returns a fresh, migrated, empty Store per call.
package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/store"
)

// Run runs the conformance suite against the driver newStore builds. newStore must return
// a Store on its own empty, migrated database (closed by the factory at t.Cleanup).
func Run(t *testing.T, newStore func(t *testing.T) store.Store) {
	t.Run("Jobs", func(t *testing.T) { testJobs(t, newStore) })
	t.Run("Workers", func(t *testing.T) { testWorkers(t, newStore) })
	t.Run("Tx", func(t *testing.T) { testTx(t, newStore) })
	t.Run("Outbox", func(t *testing.T) { testOutbox(t, newStore) })
	t.Run("Gauges", func(t *testing.T) { testGauges(t, newStore) })
	t.Run("Idempotency", func(t *testing.T) { testIdempotency(t, newStore) })
	t.Run("Installation", func(t *testing.T) { testInstallation(t, newStore) })
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func wantErr(t *testing.T, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error = %v, want errors.Is(_, %v)", err, target)
	}
}

func jsonEqual(t *testing.T, got, want []byte) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("got invalid JSON %q: %v", got, err)
	}
	if err := json.Unmarshal(want, &w); err != nil {
		t.Fatalf("want invalid JSON %q: %v", want, err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("JSON = %s, want %s", got, want)
	}
}

var errBoom = errors.New("boom")
