package command

import (
	"log/slog"

	"go.opentelemetry.io/otel/trace"

	"github.com/hodei-jobs/hodei/store"
)

// The three dispatchers of a Hodei process. Every caller, the server and the tests alike,
// builds them with these constructors, so that what the tests dispatch through is what
// runs in production:
//
//	InTxChain: logging ─▶ tracing ─▶ idempotency ─▶ Bus
//	EdgeChain: logging ─▶ tracing ─▶ retry ─▶ idempotency ─▶ Bus
//	ActivityChain: logging ─▶ tracing ─▶ Bus
//
// InTxChain is for dispatches that run inside a transaction (saga steps, which the
// engine runs in the step's transaction, and handlers or loops that dispatch while
// their own InTx is open): idempotency joins the caller's transaction, and an error,
// Transient or not, goes back to the caller, whose transaction rolls back and whose
// retry (the saga runner's step retry, the next cleanup run) starts afresh.
//
// EdgeChain is for dispatches outside any transaction (API handlers, the outbox relay's
// BusSink, a service method called by the API): each attempt opens its own
// transaction, so a Transient failure is retried from scratch. Dispatching through it
// with a transaction in ctx fails with ErrRetryInTransaction.
//
// ActivityChain is for the commands saga activities dispatch (saga.Config's
// ActivityDispatcher): their handlers act on the outside world (a provider call, a
// message to a worker) and must hold no transaction while they do, so there is no
// idempotency middleware (it would open one) and no retry (the saga step's retry policy
// retries the activity, recording each attempt). Their handlers are idempotent by the
// identity of what they act on (a worker id, a job attempt).

// ChainConfig configures InTxChain and EdgeChain.
type ChainConfig struct {
	// Idempotency holds the stores the idempotency middleware records keys in
	// (required; StoreDeps builds it from a store.Store).
	Idempotency IdempotencyDeps
	// Logger is the Logging middleware's logger (default slog.Default()).
	Logger *slog.Logger
	// TracerProvider is the Tracing middleware's provider (default the global one,
	// a no-op unless installed).
	TracerProvider trace.TracerProvider
	// Retry configures EdgeChain's Retry middleware; InTxChain does not retry.
	Retry RetryConfig
}

// StoreDeps returns the idempotency dependencies of st: its transactions and its key
// table.
func StoreDeps(st store.Store) IdempotencyDeps {
	return IdempotencyDeps{Tx: st, Keys: st.Idempotency()}
}

// InTxChain returns the dispatcher for callers inside a transaction: logging, tracing
// and idempotency around bus, no retry. It panics on a missing dependency or an invalid
// config, like the middleware it is made of (a start-up programming error).
func InTxChain(bus *Bus, cfg ChainConfig) Dispatcher {
	return Chain(bus,
		Logging(cfg.Logger),
		Tracing(cfg.TracerProvider),
		Idempotency(cfg.Idempotency, bus),
	)
}

// EdgeChain returns the dispatcher for callers outside any transaction: InTxChain's
// middleware with Retry(cfg.Retry) between tracing and idempotency, so that every
// attempt runs in a fresh transaction and the dispatch is logged and traced once. It
// panics like InTxChain.
func EdgeChain(bus *Bus, cfg ChainConfig) Dispatcher {
	return Chain(bus,
		Logging(cfg.Logger),
		Tracing(cfg.TracerProvider),
		Retry(cfg.Retry),
		Idempotency(cfg.Idempotency, bus),
	)
}

// ActivityChain returns the dispatcher of saga activities: logging and tracing around
// bus, nothing that opens a transaction or retries.
func ActivityChain(bus *Bus, cfg ChainConfig) Dispatcher {
	return Chain(bus, Logging(cfg.Logger), Tracing(cfg.TracerProvider))
}
