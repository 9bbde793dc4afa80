// Package api serves Hodei's Connect API: JobService for users and WorkerAgentService
// for worker agents, plus /healthz and /readyz, on one port. connect-go speaks the
// Connect, gRPC and gRPC-Web protocols; the server runs HTTP/1.1 and unencrypted HTTP/2
// (h2c) together (Protocols, NewHTTPServer), so bidirectional streams work without TLS.
//
// The handlers hold no job logic. Writes go to JobLogic/WorkerLogic (jobs.Service),
// reads to the store; both are small interfaces defined in logic.go. Conversions
// between domain and protobuf types are in convert.go (a job's state is the domain's
// state name, "RUNNING").
//
// # Errors
//
//	invalid spec (domain.ValidationErrors)  InvalidArgument, every field named, nothing written
//	bad request field (id, page_size, …)    InvalidArgument naming the field
//	store.ErrNotFound                       NotFound
//	illegal state transition                FailedPrecondition
//	credential errors (mapped by the server
//	through ErrorCode lists)                Unauthenticated, PermissionDenied (reused OTP)
//	message over MaxMessageBytes (4 MiB)    ResourceExhausted (connect's read limit)
//
// # WatchJob and StreamLogs
//
// Both re-read the store: on a notification (Notifier: this replica's own writes, and
// job events of every replica received from NATS core subjects hodei.events.job.>) and
// on a poll tick (JobOptions.PollInterval, 200ms), so they work across replicas and a
// lost notification costs one tick. WatchJob sends the job first, then whenever its
// state or attempt changed, and ends after a terminal state. StreamLogs sends stored
// lines after after_seq; with follow it keeps going until it has seen a terminal state
// and then read every line stored before it (the worker sends logs before its result on
// one ordered stream).
//
// # Worker stream (WorkerAgentService.Connect)
//
//	worker                                   server (replica holding the stream)
//	  Register(worker_id, otp) ───────────▶ RegisterWorker ─▶ session token
//	  Connect, Authorization: Bearer <token> ▶ AuthenticateSession (else Unauthenticated)
//	                                          subscribe hodei.worker.<id>.inbox (NATS core)
//	                                          Heartbeat (a stream opening counts as one)
//	                         ◀── RunJob / CancelJob ── PendingRun, PendingCancel (every connect)
//	                         ◀── RunJob / CancelJob ── Hub.RunJob / CancelJob from any replica
//	  ack(message_id) ────────────────────▶ answers the Hub delivery waiting for it
//	  heartbeat ──────────────────────────▶ Heartbeat (server clock; no ack)
//	  logs ───────────────────────────────▶ AppendLogs, then Ack(message_id)
//	  started ────────────────────────────▶ JobStarted, then Ack(message_id)
//	  result ─────────────────────────────▶ JobFinished (durable), then Ack(message_id)
//
// Messages are handled in order by one goroutine per stream; all sends go through one
// other goroutine. An ack is sent only after the message was recorded. A message that
// can never be valid ends the stream with InvalidArgument; one refused for good by the
// logic (not this worker's job, job already over) is acked and logged so that the
// worker stops re-sending it; a failure that may pass (database down) ends the stream
// with Unavailable, so the worker reconnects and re-sends what was not acked.
//
// When a stream ends for any reason other than this server's shutdown (the client went
// away, a stream error), Connect tells the logic (WorkerDisconnected
// in jobs.Service: the worker's job is recovered unless the worker is heard of again
// within a grace period; a reconnect's opening heartbeat counts). A client that goes
// away cancels the request context too, so shutdown is told apart by NewHTTPServer's
// base context, which it also stores in every request context; on a server not made by
// NewHTTPServer every end counts as a disconnect.
//
// Server→worker messages are acknowledged (Hub): a delivery is a NATS request on the
// worker's inbox subject; the replica holding the stream forwards the message and
// answers the request when the agent acks its message id. No stream (no responder) or
// no ack in time is an error, and the sender (jobs) sends again. The Hub owns the
// message ids (RunMessageID, CancelMessageID): a re-sent message has the same id, and
// the agent acts on an id once. WorkerOptions.Drop is a fault hook for tests that drops
// messages on their way to the stream.
//
// # Admin API (admin.go)
//
// AdminService (ResumeJob, ListDeadLetters, RequeueDeadLetter, ListJobSagas,
// GetSagaHistory) and the same operations as JSON REST routes, mounted by NewMux when
// MuxConfig.Admin is set:
//
//	POST /api/v1/admin/jobs/{job_id}/resume   {"resolution": "retry"|"manually_fixed"|"cancelled", "notes": "…"}
//	GET  /api/v1/admin/jobs/{job_id}/sagas
//	GET  /api/v1/admin/sagas/{saga_id}?category=C…  (sagas.go: the saga and its history)
//	GET  /api/v1/admin/outbox/dead-letters?limit=N
//	POST /api/v1/admin/outbox/{id}/requeue
//
// REST answers are protobuf JSON with snake_case names; errors are {"error": "…"} with
// 400 (bad field, unknown JSON field, named), 401 (token), 403, 404, 409 (job not in
// MANUAL_INTERVENTION_REQUIRED, row not a dead letter), 413 (body over 64 KiB).
//
// GetSagaHistory reads through a SagaReader (the saga engine): the saga's row and its
// decoded events, each with its category (saga.CategoryOf) and its data as a JSON
// object, optionally only some categories. It is how `hodei saga show` works against
// any server, `hodei dev` included.
//
// Access: every JobService and AdminService procedure and every REST route has a policy
// in one table (policy.go: least role, audit action), checked by package auth's one
// interceptor and one REST middleware (MuxConfig.Auth); a procedure or route without
// one is refused, and TestPolicyTable builds the procedure × role table from the
// service descriptors. JobService handlers check namespaces (auth.CanSee): a job the
// caller may not see is NotFound with the same message as a missing one (marked
// auth.Hidden, so that the refusal is audited), ListJobs keeps the caller's
// namespaces. WatchJob and StreamLogs run in the interceptor's auth.Guard context:
// they end with Unauthenticated when their token is revoked or expires. Without tokens configured the admin API answers only
// loopback clients (PermissionDenied / 403 for others); AdminOptions.Token is a
// bootstrap admin token. CreateToken, ListTokens, RevokeToken and ListAudit
// (tokens.go) serve `hodei token` and `hodei audit`.
//
// # Shutdown
//
// http.Server.Shutdown waits for requests to finish but does not end streams. The
// server therefore gives every request a base context (NewHTTPServer) that it cancels
// when shutdown begins: watch and log streams end cleanly, worker streams end with
// Unavailable and the workers reconnect to the next server.
package api
