// Package natstest runs real nats-server processes for tests: single servers and
// clusters with JetStream (file storage) on loopback ports, which a test may kill,
// pause (SIGSTOP), stop and restart on the same ports and store.
//
// Two builds of the server are used:
//
//   - ModuleServer builds nats-server from the module proxy at the version go.mod
//     requires (the one Hodei embeds), once per version, into the user's cache
//     directory (os.UserCacheDir()/hodei/natstest/VERSION/nats-server). The build needs
//     only the Go toolchain and the module cache (or the proxy).
//   - DebianServer finds Debian's nats-server package (bookworm ships the 2.9 line,
//     what `apt-get install nats-server` gives operators), installed by `make test`
//     through scripts/ensure-nats.sh. HODEI_TEST_NATS_SERVER_29 names another binary.
//
// A test that needs a binary that is missing fails with the command that installs it;
// nothing is skipped.
//
// Each node is a child process of the test binary, in its own process group, with a
// parent-death signal (SIGKILL), its JetStream store in the test's temporary
// directory, listening on 127.0.0.1 only (client and route ports), so nothing outlives
// a crashed test binary and nothing leaves the machine. A cluster's nodes route to one
// another with explicit routes (no gossip beyond them).
package natstest
