// Package agent is the worker agent (`hodei worker`): it registers with the control
// plane using the one-time password its provider gave it, keeps a bidirectional Connect
// stream to it, runs the jobs it is sent and reports their logs and results.
//
// # Life cycle
//
//	Register(worker_id, one-time password) ─▶ session token (+ heartbeat interval)
//	   │  Unauthenticated / PermissionDenied / InvalidArgument … : *RegistrationError,
//	   │  no retry (the password is single-use); transient errors retried ≤ RegisterTimeout
//	   ▼
//	Connect (Authorization: Bearer <token>) ◀──────────── reconnect, exponential backoff
//	   │  first message: a heartbeat; then every unacknowledged message  (100ms … 5s, ±20%)
//	   │  heartbeats every interval (server's value, default 5s)
//	   │  RunJob ─▶ JobStarted, LogBatch…, JobResult   (a RunJob already seen is ignored)
//	   │  CancelJob ─▶ SIGTERM to the job's group, SIGKILL after the grace period
//	   ▼
//	result acked, nothing running ─▶ exit 0 after IdleTimeout (30s; the local provider
//	                                  passes 1ms) unless destroyed first
//
// Several servers: Config.ServerURL (HODEI_SERVER) may list several replicas' URLs,
// comma-separated. The agent uses one at a time, starting with the first, and moves to
// the next after a failed registration attempt, a failed connection or a broken stream
// (a replica that died, or one that shut down gracefully and ended the stream with
// "server shutting down; reconnect"). Any replica serves any worker's stream and the
// session token is valid on all of them, so the job keeps running across the switch
// and its pending messages are re-sent on the new stream.
//
// The agent is ephemeral: one worker runs the job it was provisioned for. The result's
// ack means the server recorded it durably, so the agent may leave: the idle timer is
// stopped while a job runs or a result is unacknowledged and armed with IdleTimeout
// when that ends. With a short IdleTimeout the agent has exited by the time the server
// destroys it, which makes the destroy cheap. With
// no job at all it exits after FirstJobTimeout (5m). Without a stream for
// ReconnectTimeout (10m) it stops its job and exits non-zero.
//
// # Reused workers (warm pools)
//
// With Config.MaxJobs above 1 (HODEI_WORKER_MAX_JOBS, set by the provider for a warm
// pool's worker) the agent runs up to MaxJobs jobs, one at a time, and nothing of one
// job reaches the next: the job's environment and secrets exist only in its process
// (built afresh per RunJob), its directory (also its TMPDIR) is removed when it ends,
// its process group is SIGKILLed when its main process ends, and on Linux the agent is
// the child subreaper (PR_SET_CHILD_SUBREAPER) of everything its jobs start, so a
// process that left the group (setsid, a daemon) is re-parented to it: before the
// result is sent, the agent SIGKILLs and reaps every child it has left (killStrays).
// Files a job writes outside its directory (an absolute path such as /var/tmp/x) are
// not removed; the server reuses a worker only within one namespace. While jobs
// remain it waits FirstJobTimeout for the next; a RunJob beyond MaxJobs, or while a
// job runs, gets a failed result and runs nothing.
//
// # Delivery
//
// JobStarted, LogBatch and JobResult are "reliable": kept in order until the server
// acks their message_id, and all re-sent, in order and with the same message_id, on
// every new stream. The result is also re-sent every ResultResend (3s) on a live stream
// until acked. An ack of a result also drops the same job's earlier started/log
// messages (the server handles one stream's messages in order, so it has them), so a
// server that acks only results is fine. Log lines carry a per-job seq from 1: the
// server's store is idempotent on (job_id, seq). Unacked log batches are capped at
// MaxPendingLogBytes (oldest dropped, logged). Every RunJob/CancelJob with a message_id
// is acked back (fire-and-forget).
//
// # Execution (exec.go)
//
//   - argv: run directly; the command is looked up in the job's PATH.
//   - script: written to a 0700 file in a private 0700 per-job directory (os.MkdirTemp),
//     run as `<interpreter> <file>` (default /bin/sh); the directory is removed when
//     the job ends. It is also the default working directory.
//   - environment: PATH and HOME of the agent (or a standard PATH and /), then
//     HODEI_JOB_ID, then the job's env. Nothing else of the agent's environment (the
//     one-time password, the server URL) reaches the job.
//   - the job leads its own process group (Setpgid). The agent observes the leader's
//     exit with waitid(WNOWAIT), so the group id cannot be recycled while it still
//     signals the group; it then waits up to 1s for stdout/stderr to drain and SIGKILLs
//     whatever is left in the group (a job ends when its main process does), then reaps.
//   - memory: RLIMIT_AS = spec.resources.memory_bytes (else HODEI_WORKER_MEMORY_BYTES),
//     applied with prlimit(2) right after the start (a few microseconds during which the
//     job runs unlimited). CPU shares are not enforced.
//   - output: stdout and stderr are read line by line (lines over 64 KiB split at a rune
//     boundary, invalid UTF-8 replaced, trailing CR dropped); lines get a seq in arrival
//     order and leave in batches of at most 100 lines or 250 ms after the batch's first
//     line. Order is preserved within each stream.
//   - result: exit status; killed by a signal → exit code 128+signo and error
//     "terminated by signal SIGx"; could not start → 127 (not found) or 126 and the error.
//
// When the agent itself is terminated (SIGTERM → ctx cancelled) it stops the job's
// group (SIGTERM, SIGKILL after ShutdownGrace = 2s) before exiting, so no job process
// outlives it; if the agent is SIGKILLed, the local provider's Destroy sweeps the
// worker's session.
package agent
