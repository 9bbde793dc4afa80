package command

// Idempotency middleware: exactly-once effects for commands that carry a key.
//
// The key is recorded in the same transaction as the handler's effect, and only when the
// handler succeeded:
//
//	InTx ─▶ Get(key) ── found ──▶ decode stored result, handler NOT run ─▶ commit (no-op)
//	           │
//	       not found
//	           ▼
//	   handler(ctx with tx) ── error ──▶ rollback: no effect, no key; a retry runs again (*)
//	           │ ok
//	           ▼
//	   Put(key, json(result)) ── ErrConflict ──▶ rollback ─▶ return the winner's result
//	           │ ok
//	           ▼
//	        commit: effect and key together
//
// (*) Unless a concurrent dispatch with the same key committed meanwhile (the handler
// typically failed on a unique constraint the winner's effect holds, such as the job id):
// after the rollback the key is looked up once more and the winner's result returned.
//
// Only effects written through the transaction that travels in ctx (store ports called
// with the ctx the handler receives) are exactly-once. A handler's external side effects
// (HTTP calls, NATS publishes, provisioning a worker) may run more than once — when the
// transaction fails to commit, or when two dispatches with one key race and the loser's
// work is rolled back — so they must be idempotent themselves, or be deferred to the
// outbox (written in the same transaction) or to an AfterCommit callback.
//
// A repeated key answers with the stored result decoded by ResultDecoder (the Bus): it is
// the JSON round trip of the first result, so result types must survive encoding/json.
//
// Joined transactions. When ctx already carries a transaction, InTx joins it and this
// middleware cannot roll back the handler's writes on its own (the driver has no
// savepoints). A lost race is then reported as a Transient error wrapping
// store.ErrConflict: the caller's transaction must roll back, and its retry finds the
// winner's key. The middleware tells the two cases apart by the context InTx hands to fn:
// a runner that starts a transaction must put it in a new context (that is how it
// travels), a runner that joins hands back the caller's.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/hodei-jobs/hodei/store"
)

// TxRunner runs fn in a transaction carried by the ctx it hands to fn, or joins the
// transaction ctx already carries. store.Store satisfies it.
type TxRunner interface {
	InTx(ctx context.Context, fn func(ctx context.Context) error) error
}

// KeyStore records idempotency keys with their results; store.IdempotencyStore
// satisfies it. Get returns store.ErrNotFound for an unknown key; Put writes in ctx's
// transaction and returns store.ErrConflict when the key already exists (also when a
// concurrent transaction inserted it and committed first).
type KeyStore interface {
	Get(ctx context.Context, key string) (json.RawMessage, error)
	Put(ctx context.Context, key, cmdType string, result json.RawMessage) error
}

// ResultDecoder turns a stored result back into the handler's result type. *Bus
// satisfies it.
type ResultDecoder interface {
	DecodeResult(cmdType string, payload []byte) (any, error)
}

// IdempotencyDeps are the stores the Idempotency middleware needs. With a store.Store
// st: IdempotencyDeps{Tx: st, Keys: st.Idempotency()}.
type IdempotencyDeps struct {
	Tx   TxRunner
	Keys KeyStore
}

// Validate reports a missing dependency.
func (d IdempotencyDeps) Validate() error {
	switch {
	case d.Tx == nil:
		return errors.New("command: IdempotencyDeps.Tx is nil")
	case d.Keys == nil:
		return errors.New("command: IdempotencyDeps.Keys is nil")
	}
	return nil
}

// errLostRace rolls back the transaction of a dispatch whose Put lost to a concurrent
// dispatch with the same key. It never leaves this file.
var errLostRace = errors.New("command: idempotency key recorded by a concurrent dispatch")

// Idempotency returns middleware that runs each command with a non-empty idempotency key
// at most once to success (see the file comment for the exact guarantee). Commands with
// an empty key pass straight through. It panics if deps or results are missing, a
// start-up programming error.
func Idempotency(deps IdempotencyDeps, results ResultDecoder) Middleware {
	if err := deps.Validate(); err != nil {
		panic(err)
	}
	if results == nil {
		panic("command: Idempotency needs a ResultDecoder")
	}
	return func(next Dispatcher) Dispatcher {
		return &idempotent{deps: deps, results: results, next: next}
	}
}

type idempotent struct {
	deps    IdempotencyDeps
	results ResultDecoder
	next    Dispatcher
}

// idemCtxKey marks the context passed to InTx so that joining can be detected (its type
// is a pointer, so comparing contexts never panics).
type idemCtxKey struct{}

func (m *idempotent) DispatchAny(ctx context.Context, cmd Command) (any, error) {
	key := cmd.IdempotencyKey()
	if key == "" {
		return m.next.DispatchAny(ctx, cmd)
	}
	typ := cmd.CommandType()
	outer := context.WithValue(ctx, idemCtxKey{}, key)
	var (
		res    any
		joined bool
	)
	err := m.deps.Tx.InTx(outer, func(ctx context.Context) error {
		joined = ctx == outer
		stored, err := m.deps.Keys.Get(ctx, key)
		switch {
		case err == nil:
			res, err = m.decode(typ, key, stored)
			return err
		case !errors.Is(err, store.ErrNotFound):
			return fmt.Errorf("command %s: look up idempotency key %q: %w", typ, key, err)
		}
		r, err := m.next.DispatchAny(ctx, cmd)
		if err != nil {
			return err // rolls back the effect; the key is not recorded
		}
		payload, err := json.Marshal(r)
		if err != nil {
			return fmt.Errorf("command %s: encode result of key %q (type %T) for the idempotency store: %w", typ, key, r, err)
		}
		if err := m.deps.Keys.Put(ctx, key, typ, payload); err != nil {
			if errors.Is(err, store.ErrConflict) {
				return errLostRace
			}
			return fmt.Errorf("command %s: record idempotency key %q: %w", typ, key, err)
		}
		res = r
		return nil
	})
	if err == nil {
		return res, nil
	}
	lost := errors.Is(err, errLostRace)
	conflict := fmt.Errorf("command %s: idempotency key %q recorded by a concurrent dispatch: %w", typ, key, store.ErrConflict)
	if joined {
		if lost { // our writes sit in the caller's transaction: it must roll back and retry
			return nil, Transient(conflict)
		}
		return nil, err
	}
	// Our transaction rolled back. If a concurrent dispatch with this key has committed
	// meanwhile — we lost the race at Put (the unique index made Put wait for the
	// winner), or our handler failed on a constraint the winner's effect holds (the same
	// job id) — the key's answer is the winner's result.
	stored, gerr := m.deps.Keys.Get(ctx, key)
	switch {
	case gerr == nil:
		return m.decode(typ, key, stored)
	case lost:
		return nil, Transient(fmt.Errorf("%w; reading the winner's result: %w", conflict, gerr))
	}
	return nil, err
}

func (m *idempotent) decode(typ, key string, stored json.RawMessage) (any, error) {
	if len(stored) == 0 {
		stored = json.RawMessage("null")
	}
	r, err := m.results.DecodeResult(typ, stored)
	if err != nil {
		return nil, fmt.Errorf("command %s: decode stored result of idempotency key %q: %w", typ, key, err)
	}
	return r, nil
}
