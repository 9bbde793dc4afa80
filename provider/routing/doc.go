// Package routing runs provider operations on the node that may perform them.
//
// A worker has one owner (DESIGN.md §3, invariant 8). A shared provider (Docker engine
// over its API, Kubernetes; provider.Capabilities.Shared) is reached alike from every
// replica, so any replica operates its workers. A node-local provider (local processes)
// knows only the workers its own process started: an operation on such a worker must run
// on the node recorded as the worker's owner. The Router does that:
//
//	Destroy / Status (worker W, provider P, owner N)
//	   ├─ P is shared, or N is this node ──▶ P, here
//	   └─ otherwise ──▶ NATS request on "hodei.node.<N>.provider" ──▶ the Router of
//	                    node N (Serve) runs it on its P and answers
//
// "Not mine" is never "gone": when node N does not answer (no responder, or no answer
// within Config.Timeout) the operation fails with an error matching ErrOwnerUnreachable,
// and the caller decides (retry; after its retries, the job needs a human, or the worker
// is declared lost and recovery takes over). Create is not routed: a node-local worker is
// created by the node that then owns it, so its one-time password never crosses the
// message bus.
//
// Requests carry only a provider name and a worker id, and the operations are idempotent
// (provider contract), so a request that is answered late or twice is harmless.
package routing
