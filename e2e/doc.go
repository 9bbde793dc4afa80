// Package e2e holds the end-to-end tests of Hodei Jobs. They build the hodei binary once
// per test binary, and for every test start a throwaway PostgreSQL database
// (internal/pgtest) and a real `hodei server` process on a free port, which starts real
// `hodei worker` processes through the local provider. The tests then drive the CLI
// binary as a user would (`hodei job run …`, exit codes, standard output and error) and
// look at the processes on the machine (/proc) to check capacity and clean-up.
//
// The package has no non-test code besides this comment. Run it with
//
//	go test ./e2e/
//
// A failing test prints the server's log (stdout and stderr). Set HODEI_E2E_VERBOSE=1 to
// print it for passing tests too.
package e2e
