// Package command is Hodei's command bus: typed handlers registered by command type,
// an erased Dispatcher for middleware and the outbox relay, and a typed Dispatch[R] for
// callers.
//
//	caller ──Dispatch[R]──▶ logging ─▶ tracing ─▶ retry ─▶ idempotency ─▶ Bus ─▶ Handler[C,R]
//
// Middleware lives one per file (logging.go, retry.go, idempotency.go, tracing.go).
// chain.go builds the two dispatchers every process uses: InTxChain (no retry) for
// callers inside a transaction, such as saga steps, and EdgeChain (with retry) for
// callers outside one. Retry refuses a context that carries a transaction
// (ErrRetryInTransaction): retrying there would reuse a transaction that failed.
// The Bus holds no lock while a handler runs: handlers run concurrently and may dispatch
// nested commands. Errors are values: ErrHandlerNotFound, ErrTypeMismatch (via
// *TypeMismatchError), *HandlerError wrapping the handler's error, and Transient(err),
// the only errors that retry layers retry.
//
// Backoff is the one retry-delay formula (min(base·2^n, max) ± jitter) shared by Retry,
// the outbox relay and the saga runner. Idempotency records a command's key in the same
// transaction as its effect and only on success; its file comment states the exact
// guarantee. Package commandtest holds the contract checks (registered, round trip, type
// mismatch) that packages defining commands run in their tests.
package command
