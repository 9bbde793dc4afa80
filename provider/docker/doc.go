// Package docker is the provider that runs each worker as one container of a Docker
// Engine, reached over its API with the official Go client (github.com/moby/moby/client:
// the maintained module of the Docker Engine's client since v29; the older
// github.com/docker/docker module is frozen at v28 as "+incompatible" without semantic
// import versioning. Its MinAPIVersion 1.40 covers Debian 12's docker.io 20.10, API
// 1.41). No docker CLI is run.
//
// # A worker is a container
//
//   - Image: the job's (WorkerSpec.Image, or Config.DefaultImage). Any image works,
//     including one without a shell or libc: the agent is the hodei binary itself
//     (Config.AgentBinary, default the running executable), statically linked
//     (CGO_ENABLED=0; New refuses a dynamically linked one), bind-mounted read-only at
//     AgentPath and used as the entrypoint: `/.hodei/hodei worker`.
//   - Environment: HODEI_SERVER, HODEI_WORKER_ID, HODEI_ONE_TIME_PASSWORD (the secret:
//     only here, never in argv or a label), HODEI_WORKER_IDLE_TIMEOUT and
//     HODEI_WORKER_CGROUP_MEMORY=1 (the agent leaves memory to the container's cgroup
//     instead of RLIMIT_AS, and reports an OOM kill of its job as "out of memory (limit
//     64Mi)", exit 137). Config.Env is added.
//   - Labels: hodei.worker, hodei.job, hodei.owner (the replica that created it) and
//     hodei.installation (Config.Installation: the database's installation id, shared
//     by its replicas), so a sweep finds what belongs to this control plane after a
//     crash (List) and only that.
//   - Limits, enforced by the engine: Resources.MemoryBytes as a hard memory limit
//     (swap included, so no swap), Resources.CPUMillis as NanoCPUs, Config.PidsLimit.
//   - Network: Config.Network (default "host", so the agent reaches a server on
//     127.0.0.1; in production use a network from which the containers reach the
//     server's URL, and set --server-url accordingly).
//   - Name: hodei-worker-<worker id>; Create is idempotent by that name (a container
//     created but not started by an earlier call is started).
//
// The image: PullNever needs it in the engine already; PullIfNotPresent pulls it when
// missing; PullAlways pulls every time. A missing image under never, or a failed pull,
// is a provider.PermanentError naming the image and the engine's reason: the job fails
// at once instead of being provisioned again.
//
// # Exits
//
// The provider follows the engine's event stream (type container, label hodei.worker,
// events die and oom) from New on, re-subscribing with backoff (and from the last event
// seen) when the stream breaks. A container of this owner (label hodei.owner =
// Config.Owner) that dies is reported to the OnExit handler with its exit code: the
// control plane treats it as a lost worker at once. When the engine reported it out of
// memory first, the error matches provider.ErrOOMKilled ("out of memory (limit 64Mi):
// …"), and the control plane fails the job with exit code 137 instead of recovering it.
//
// # Out of memory
//
// The job runs as the agent's child in the container's memory cgroup. The agent makes
// the job the OOM killer's first choice (oom_score_adj 1000, inherited by the job's
// children), so normally the kernel kills the job, the agent survives, reads the
// cgroup's oom_kill counter and reports the result "out of memory (limit 64Mi)", exit
// 137. Should the container itself die of it (the agent killed, or a limit too small
// for the agent to start), the oom event makes the exit notice say so (above). Other replicas' containers are left to
// their owners (or, when the owner is dead, to the control plane's heartbeat rules),
// as the local provider reports only its own children.
//
// Destroy stops the container (SIGTERM, then SIGKILL after Config.GracePeriod), then
// removes it with its anonymous volumes; a missing container is not an error. Status
// comes from inspect. Capacity: this installation's containers that run (any
// owner replica) count against Config.MaxWorkers, except those this provider is
// destroying.
//
// # One engine, several installations
//
// List, the capacity count and the event subscription filter on
// hodei.installation=Config.Installation: two installations (two databases) may share
// an engine, and neither's sweep removes, counts or hears the other's containers.
// Containers created before the label existed are not seen (remove them by hand).
//
// Known limits: exits of containers whose owner replica is dead are left to the control
// plane's heartbeat rules. A database restored into a second installation keeps the
// first's installation id (store.Store.InstallationID).
package docker
