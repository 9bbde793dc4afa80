// Package provider defines how the control plane obtains workers: a Provider creates,
// destroys and inspects the infrastructure that runs one `hodei worker` agent (a local
// process, a container, a pod), and a Registry maps provider names to the providers
// configured at start-up.
//
// Contract every Provider keeps:
//
//   - Create is idempotent per WorkerID: creating a worker that already exists (running
//     or exited) returns nil without starting a second one. The one-time password and
//     any other secret reach the worker through its environment or a secret store,
//     never through its command line.
//   - Destroy is idempotent: destroying an unknown or already destroyed worker returns
//     nil. It ends every process the worker started (for local: the whole process
//     session), gracefully first (SIGTERM) and forcefully after a grace period.
//   - Status reports StatusRunning, StatusExited or StatusUnknown (no record of the
//     worker). It works for workers created by an earlier instance of the provider
//     (a restarted control plane), so that state must live outside the process.
//   - Capabilities reports the capacity (MaxWorkers) the scheduler must respect, the
//     resource limits the provider enforces, whether it is Shared, whether it runs
//     container Images (and RequiresImage), and its Labels (matched by jobs'
//     selectors; see jobs' "Providers" documentation for the selection).
//   - Create failures that repeating cannot fix (an image that does not exist, a spec
//     the provider refuses) are wrapped with Permanent; the job then fails at once.
//     Other failures are retried by the provisioning saga.
//   - Optional capabilities are named interfaces with compile-time assertions in the
//     implementations: Lister (the sweep), ExitNotifier (exits at once; an exit for
//     exceeding the memory limit matches ErrOOMKilled).
//
// Implementations: provider/local (processes, node-local), provider/docker (containers
// on a Docker Engine, shared). provider/providertest is the conformance suite both
// pass.
//
// Implementations are safe for concurrent use.
//
// The Registry is a plain value built when the server starts (no package-level
// registration): the server constructs each configured provider and registers it by
// name, in the order given (Ordered: the order selection tries them in); the first
// registered provider is the default.
package provider
