// Package leadership elects one leader among the control-plane replicas that share a
// database: a lease row with a TTL (store.LeaderStore), modelled on River's
// internal/leadership. The leader runs the work that must happen once for the whole
// platform (the capacity scheduler and the cleanup scan, see jobs/doc.go); every
// replica keeps running saga runners, relays, API handlers and the checks of the
// workers its own node started.
//
// # States
//
//	           TryElect won (row free, expired, or already ours)
//	follower ─────────────────────────────────────────────▶ leader
//	   ▲  └─ TryElect lost: remember who leads; retry every RenewInterval, │
//	   │     or at the lease's expiry if that comes first                  │ Renew every RenewInterval
//	   │                                                                   │ (expires_at = attempt start + TTL)
//	   └──── Renew says the term is over (ErrNotFound), or no Renew ◀──────┘
//	         succeeded within the trust window (TTL − TTL/4 after the
//	         start of the last successful attempt)
//	leader ── Run's ctx ends ──▶ Resign (delete our row; up to 3 tries, 2s each) ──▶ stopped
//
// A term is named by its ElectedAt: Renew and Resign act only on the term the caller
// holds, so a replica that lost its lease cannot extend or delete its successor's.
//
// # Times
//
// Every time is read from Config.Now and written by the caller: the drivers store
// them and compare them, never read the database's clock. The lease's expiry is the
// renewing attempt's start plus TTL, and the holder trusts itself to lead only until
// that start plus TTL − TTL/4 (the trust window, measured on its own clock), so it
// stops acting before any other replica may take the row, as long as the replicas'
// clocks agree within TTL/4 (NTP keeps them within milliseconds). A leader whose
// renewals fail (database gone, pool exhausted) steps down when its trust window ends.
//
// # What the leader's loops see
//
// IsLeader reports the state now; Changed returns a channel closed at the next change,
// so a loop waits for it instead of polling (jobs wakes its scheduler there). A loop
// that checked IsLeader and then loses leadership finishes the pass it began; what it
// writes must therefore stay correct when two replicas briefly both think they lead
// (a paused process that wakes after its TTL): jobs keeps its scheduler's advisory lock
// for that reason (jobs/doc.go, "Leader").
//
// # Failover
//
// A leader that stops gracefully resigns: the others see the row gone at their next
// attempt, within RenewInterval (TTL/3). A leader that dies (SIGKILL, lost machine)
// leaves its row until it expires: the others retry at that expiry, so a new leader
// is elected within TTL of the last renewal.
//
// # One process
//
// With SQLite (hodei dev) there is one process: NewAlwaysLeader returns an Elector that
// leads from the start and never touches a store.
package leadership
