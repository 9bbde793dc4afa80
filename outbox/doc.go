// Package outbox is Hodei's unified transactional outbox: one table for commands and
// events, written in the same transaction as the state change that causes them, and a
// relay that delivers each row at least once — commands to the command bus, events to
// NATS JetStream.
//
// # Writing
//
// PublishEvent writes an event row in the transaction ctx carries (or in one of its
// own). Rolled back: no row. Committed: a relay publishes it. The same key twice: one
// row. Command rows (Kind command) are inserted the same way through
// store.OutboxStore.Insert, with the command's JSON and its idempotency key; the relay
// executes them through a CommandSink. (The product writes no command rows today: the
// job path's deferred work runs as saga steps and activities. The Decorator that used to
// turn a dispatch into a command row had no user and was removed.)
//
// # Row life cycle
//
//	Insert ─▶ PENDING ───┐ Claim: leased until now+Lease,
//	                     ├──────────────────────────────▶ leased ─┬─ ok ──────────▶ COMPLETED
//	RETRY (when due) ────┘ attempts+1                             │
//	   ▲                                                          ├─ failed, attempts = max,
//	   │                                                          │  or permanent ▶ DEAD_LETTER
//	   └──────────── failed, attempts < max: now+backoff ─────────┤
//	                                                              └─ lease expired: the reaper
//	                                                                 releases it (due at once)
//
//	DEAD_LETTER ─Requeue─▶ PENDING (attempts 0)      PENDING, RETRY ─Cancel─▶ CANCELLED
//
// Backoff is command.Backoff: min(BaseBackoff·2^(n-1), MaxBackoff) ± Jitter after the n-th
// failure. Permanent errors (Permanent(err), command.ErrHandlerNotFound, a payload that
// does not decode) go straight to DEAD_LETTER; every other error is retried, transient
// or not, because the outbox is the durability layer. An event row is retried for as
// long as it takes (NATS may be away for minutes), with its delay capped at
// Config.EventMaxBackoff; only a command row runs out of attempts. ListDeadLetters and Requeue are the
// operator's tools.
//
// # Delivery
//
// Claims are leases (claimed_by, claim_expires_at) taken with FOR UPDATE SKIP LOCKED in a
// single statement, so no transaction is held while a batch runs and no row is ever held
// by two relays: run as many relays as you like. A relay that dies leaves its rows leased;
// the reaper (every relay runs one) releases expired leases and the rows are claimed
// again. Delivery is therefore at least once: command handlers are made exactly-once by
// the idempotency middleware (the key travels in the payload), and events carry the
// outbox id as Nats-Msg-Id so JetStream drops a re-publish within its duplicate window.
// Successes of a batch are marked in one statement; events of a batch are published
// asynchronously and their acknowledgements awaited together, for at most
// JetStreamPublisher.AckTimeout: an acknowledgement may never come (after a whole NATS
// cluster restart, a publish that reached no stream leader is dropped without an
// answer), and a relay waiting for it would hold its batch, and relay nothing else,
// forever. The events not acknowledged in time fail and are retried.
//
// # Wake-ups
//
// The relay sleeps on three things: a wake-up from the store, a safety poll tick
// (PollInterval) and shutdown. The PostgreSQL driver produces wake-ups without a per-row
// trigger (a pg_notify per row makes every inserting transaction take PostgreSQL's global
// notify lock at commit, which serialised committers and cut insert throughput by about
// two thirds here): after a transaction that inserted outbox rows commits, the driver
// signals the relays of its own process directly and asks a notifier goroutine for one
// NOTIFY, coalesced so that at most one is sent per NotifyInterval whatever the number of
// commits. Relays in other processes receive it on a dedicated LISTEN connection, which
// reconnects after a failure and then wakes its relay once (rows may have arrived while it
// was deaf). The poll only bounds the delay when everything else failed; it is never the
// primary path. A wake-up makes the relay drain: claim batch after batch until a claim
// returns fewer than BatchSize rows.
//
// # Shutdown
//
// When Run's context ends the relay stops claiming, finishes and marks the batch in
// flight (for at most ShutdownTimeout; past that the batch is left to the reaper) and
// returns.
package outbox
