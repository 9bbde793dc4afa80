// Package auth decides who may call the API: API tokens, roles, namespaces, the one
// interceptor (and REST middleware) that checks every call against the API's policy
// table, failed-authentication rate limiting, and the audit trail.
//
// # Tokens
//
// A token is "hodei_" followed by 32 random bytes (base64url). Only its SHA-256 is
// stored (store.TokenStore), with a name (unique), a role, the namespaces it sees
// ("*": all), an optional expiry and a revocation time. NewToken makes one; the secret
// is shown once to whoever created it and never logged, stored or returned again.
// Every request looks its token up in the store (no cache), so a revocation or an
// expiry takes effect on the next request. A server stream (WatchJob, StreamLogs)
// runs in a context from Guard: it ends with Unauthenticated at its token's expiry,
// and within Config.RecheckInterval (500ms) of a revocation, as the tokens of open
// streams are looked up again at that interval (one lookup per token, none while no
// stream is open). Bootstrap tokens (`hodei server
// --admin-token`, or the file of --bootstrap-token-file which the server stores as the
// token "bootstrap") are admin tokens over every namespace.
//
// # Roles and policies
//
//	viewer < submitter < admin
//
// Every Connect procedure and REST route has a Policy in the API's table (api/policy.go):
// the least role it needs, whether it is public (health probes), and the audit action
// its success records. A procedure or route without a policy is refused (and a test
// builds the procedure × role table from the service descriptors, so a new RPC without
// one fails it). The interceptor checks the role; namespace scope is checked by the
// handlers with Principal.CanSee, and a job in a namespace the caller cannot see is
// NotFound, never PermissionDenied, so its existence does not leak.
//
// # Modes
//
//	Config.Required (--auth)   every call needs a valid token, from loopback too
//	not required               a valid token is used if sent (a bad one is refused);
//	                           without one the caller is "anonymous": a submitter over
//	                           every namespace, and an admin only from loopback when no
//	                           bootstrap token is configured (the behaviour before auth)
//
// # Failures
//
// A missing, unknown, expired or revoked token is Unauthenticated (HTTP 401); a role
// too low PermissionDenied (403). Each failed authentication counts against a bucket:
// a revoked or expired stored token against that token, anything else (no token, a
// malformed header, a token nobody issued) against the client address (host, not
// port). After Config.MaxFailures within Config.FailureWindow further failures of the
// bucket are ResourceExhausted (429) until the window ends; a valid token is never
// refused for its address's failures. The buckets live in the process: each replica
// counts its own. Failures are logged with the address and the reason, never the token.
//
// # Audit
//
// Every successful call whose policy names an action (submit, cancel, resume, token
// create and revoke, secret set and delete, dead-letter requeue, namespace limits) and
// every refused request is appended to the audit trail (store.AuditStore): refusals of
// the interceptor, and of the handlers (PermissionDenied for a namespace the token may
// not use; the NotFound of a job in a namespace it cannot see, marked with Hidden and
// recorded with outcome "hidden"); also a stream ended by its token
// ("auth.stream_ended"). Each record holds time, actor (token name, "anonymous"), action,
// procedure or route, target, namespace, outcome, client address. The trail is
// append-only: the API has no route that changes it and the migrations refuse UPDATE
// and DELETE.
package auth
