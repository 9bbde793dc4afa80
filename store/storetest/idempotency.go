package storetest

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/hodei-jobs/hodei/store"
)

func testIdempotency(t *testing.T, newStore func(t *testing.T) store.Store) {
	t.Run("GetPutConflict", func(t *testing.T) {
		ctx, s := ctxT(t), newStore(t)
		_, err := s.Idempotency().Get(ctx, "k")
		wantErr(t, err, store.ErrNotFound)
		must(t, s.Idempotency().Put(ctx, "k", "job.create", json.RawMessage(`{"job_id":"j1"}`)))
		got, err := s.Idempotency().Get(ctx, "k")
		must(t, err)
		jsonEqual(t, got, []byte(`{"job_id":"j1"}`))
		wantErr(t, s.Idempotency().Put(ctx, "k", "job.create", json.RawMessage(`{"job_id":"j2"}`)), store.ErrConflict)
		got, err = s.Idempotency().Get(ctx, "k")
		must(t, err)
		jsonEqual(t, got, []byte(`{"job_id":"j1"}`))

		must(t, s.Idempotency().Put(ctx, "no-result", "job.cancel", nil))
		got, err = s.Idempotency().Get(ctx, "no-result")
		must(t, err)
		if len(got) != 0 && string(got) != "null" {
			t.Fatalf("nil result stored as %q", got)
		}
	})

	t.Run("RolledBackPutLeavesNoKey", func(t *testing.T) {
		ctx, s := ctxT(t), newStore(t)
		err := s.InTx(ctx, func(ctx context.Context) error {
			must(t, s.Idempotency().Put(ctx, "k", "job.create", json.RawMessage(`{}`)))
			if _, err := s.Idempotency().Get(ctx, "k"); err != nil {
				t.Errorf("key not visible inside its transaction: %v", err)
			}
			return errBoom
		})
		wantErr(t, err, errBoom)
		_, err = s.Idempotency().Get(ctx, "k")
		wantErr(t, err, store.ErrNotFound)
		must(t, s.Idempotency().Put(ctx, "k", "job.create", json.RawMessage(`{}`))) // retry allowed
	})
}
