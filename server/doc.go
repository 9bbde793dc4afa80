// Package server assembles a Hodei control-plane replica and runs it (Run).
//
// Start-up, in order: create DataDir; open the store of Config.Driver (PostgreSQL:
// migrate Config.DatabaseURL, then open a pgx pool; SQLite: open Config.SQLitePath,
// default DataDir/hodei.db, which migrates it and puts it in WAL mode); connect
// to NATS (Config.NATSURL) or start it embedded with its JetStream store in
// DataDir/nats (flock-ed; a second server on the same DataDir falls back to a
// temporary store); ensure the HODEI_EVENTS stream; build the command bus and its three
// dispatchers (command.InTxChain, command.EdgeChain, command.ActivityChain; tracing
// through the global OpenTelemetry provider, a no-op unless installed):
//
//	in a transaction (saga steps, jobs.Service's own transactions): Logging → Tracing → Idempotency → Bus
//	at the edge (outbox relay, jobs.Service's API-facing methods):  Logging → Tracing → Retry → Idempotency → Bus
//	saga activities (provider calls, worker messages; no transaction): Logging → Tracing → Bus
//
// register the saga definitions (jobs.RegisterSagas) and build the saga engine with the
// NATS task queue and waker (saga/natsq); register the local provider (state in
// DataDir/workers, Binary os.Executable(), MaxWorkers from Config) and start this node's
// provider/routing.Router (it answers, on "hodei.node.<id>.provider", the Destroy and
// Status other replicas route to the workers this node owns; Config.NodeTimeout bounds
// a routed call); listen (so that the
// URL handed to workers is the real address); build jobs.Service (it registers the
// command handlers), the outbox relay (BusSink through the edge dispatcher, and
// the JetStream publisher) and the API (api package) with /readyz probing the database
// and NATS. Nothing outside the store opening depends on the driver: every part takes
// store.Store (the scheduler's capacity lock is SchedulingStore.Lock, an advisory lock
// on PostgreSQL and the single writer connection on SQLite; /readyz calls Store.Ping).
//
// # SQLite: one process
//
// The SQLite driver must be the only user of its file (store/sqlite's package doc).
// Run does not enforce that; its caller does: `hodei dev` takes LockDataDir (an flock
// on DataDir/LOCK holding its pid) before Run opens anything, and a second `hodei dev`
// on the directory fails with a *DataDirInUseError without touching it.
//
// Loops (one errgroup; the first failure stops them all and is returned): leader
// election, saga engine, outbox relay, scheduler, cleanup, orchestrator, job-event
// listener (wakes WatchJob/StreamLogs streams), HTTP.
//
// # Leader
//
// The replica's id is "hodei-" + DataDir/instance-id when the caller holds the data dir
// (Config.DataDirLocked; the saga runner id is the same), else "hodei-" + a random UUID.
// On PostgreSQL the replicas elect one leader with a lease row (internal/leadership,
// Config.LeaderTTL); with SQLite the one process always leads. jobs.Service runs the
// scheduler's passes and the cleanup scan only on the leader (jobs/doc.go, "Leader"); a
// job submitted on a follower wakes the leader's scheduler through its job.queued event
// on NATS. /readyz's body and GET /api/v1/admin/status (`hodei admin status`) name the
// replica and the leader. On shutdown the leader resigns, so another replica leads at
// once instead of after the TTL.
//
// Shutdown on ctx's end (SIGTERM in `hodei server`), a graceful drain: the base context
// of all requests is cancelled so long-lived streams end (a worker's stream ends with
// Unavailable "server shutting down; reconnect", which hands it over: the agent
// reconnects to the next of its servers, Config.WorkerServers, or to this address once
// the replica is back); http.Server.Shutdown stops accepting and drains the rest
// (ShutdownTimeout, then connections are closed); the loops stop claiming: the saga
// engine releases the sagas it claimed and had not started, and lets the running ones
// finish their steps for at most ShutdownTimeout (saga.Config.DrainTimeout), the outbox
// relay marks its batch in flight; NATS, the embedded server and the store are closed
// last. Workers are NOT killed: a job in progress keeps running, its worker re-sends its
// unacknowledged messages on its new stream; the sagas continue from the database.
package server
