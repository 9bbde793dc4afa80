// Package devtest holds the process-level tests of `hodei dev`: they build the hodei
// binary once (TestMain, into a temporary directory), start `hodei dev` as a real
// process on a temporary data directory and a free port, and drive it with the real
// CLI (`hodei job run|submit|get|list|logs --server URL`, `hodei saga show`), as a user would. Nothing
// external is needed: no PostgreSQL, no NATS.
//
// How a test starts `hodei dev` (also usable by the e2e scenarios):
//
//	hodei dev --listen 127.0.0.1:0 --data-dir DIR [--max-workers N]
//
// then waits for the stdout line "hodei dev listening on URL" and polls URL/readyz
// until 200. To restart on the same address, pass the port of that URL as --listen.
// SIGTERM stops it (exit 0); its workers are separate processes (own sessions) with pid
// records in DIR/workers/*.pid, which the tests kill at cleanup.
//
// The package has no non-test code.
package devtest
