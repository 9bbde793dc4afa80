// Package providertest is the conformance suite every provider passes (as
// store/storetest is for store drivers): Run(t, harness) exercises a real provider
// with real workers (processes, containers) that run the real agent (the hodei binary,
// built static by Agent) against a registration endpoint served here on 127.0.0.1.
//
// The endpoint is the WorkerAgentService's Register (accepting the password the
// provider was given, and recording it) with no job stream: a registered agent then
// keeps reconnecting, which is "running" for the suite. The suite checks:
//
//   - Create → the agent registers with the spec's worker id and password → Status
//     running; Create again is a no-op (one registration);
//   - Destroy ends the worker and leaves nothing (Harness.Exists), is idempotent, and
//     a worker never created destroys without error; Status is then unknown;
//   - a worker killed from outside (Harness.Kill) is reported to the ExitNotifier
//     with an error, and Status says exited;
//   - List shows what was created and not destroyed (what the sweep destroys);
//   - Create beyond MaxWorkers fails with provider.ErrCapacity; an invalid spec fails;
//   - the password is in no argv, label or log the outside world sees
//     (Harness.Exposed).
package providertest
