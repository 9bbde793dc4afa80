// Package local is the provider that runs each worker as a child process of the control
// plane on the same machine: `<Binary> worker`.
//
// # Process model
//
// Each worker starts in a new session (SysProcAttr.Setsid, which also makes it the leader
// of a new process group, pgid = sid = pid). The agent runs each job in a process group
// of its own inside that session. Destroy therefore works on the session:
//
//  1. if the agent still runs: SIGTERM to its process group (the agent terminates its
//     job's group, SIGTERM then SIGKILL after its own shorter grace, and exits), then
//     wait for the agent's exit through the provider's own Wait on it (no polling), at
//     most Config.GracePeriod (default 5 s);
//  2. one scan of /proc/<pid>/stat for processes still in the session: they escaped the
//     agent's cleanup (or the agent was SIGKILLed, or outlived the grace period) and get
//     SIGKILL, repeated until the session is empty. A process that called setsid()
//     itself escapes; that is the limit of a process-based provider (containers do
//     better).
//
// An ephemeral agent exits by itself as soon as its job's result is acknowledged
// (HODEI_WORKER_IDLE_TIMEOUT = Config.IdleTimeout, default 1ms), so Destroy usually
// finds it gone and costs one /proc scan (three system calls per process). Workers of an
// earlier instance (pid record only) are watched through their leader's stat every
// 50 ms instead of Wait. A worker whose Destroy began no longer counts against
// MaxWorkers. List returns the workers with a pid record, so the control plane can
// destroy those it no longer knows (a Destroy lost in a crash).
//
// # Platforms
//
// Linux reads processes from /proc/<pid>/stat (proc_linux.go). macOS has no /proc:
// the same facts come from sysctl kern.proc.pid / kern.proc.all and getsid(2)
// (proc_darwin.go; the recorded start time is p_starttime in microseconds), and the
// agent cannot apply memory limits there (a job asking for one is refused). Windows
// has neither sessions nor POSIX signals: New (and hodei dev --provider local) refuse
// it with CheckPlatform's error, which points to --provider docker.
//
// Secrets (the one-time password) travel only in the environment: HODEI_SERVER,
// HODEI_WORKER_ID, HODEI_ONE_TIME_PASSWORD (+ HODEI_WORKER_MEMORY_BYTES when the job
// asks for memory). The worker does not inherit the server's environment (which holds
// the database URL); it gets PATH, HOME, TMPDIR, LANG and Config.Env only.
//
// # State across restarts
//
// For every worker a JSON record `<StateDir>/<workerID>.pid` holds its pid and its start
// time (field 22 of /proc/<pid>/stat, clock ticks since boot). A new Provider on the
// same StateDir (a restarted server) uses it for Status and Destroy; the start time
// guards against a recycled pid, so a stranger is never signalled. While a session
// member lives the kernel does not hand its session id out again, so "pid alive with a
// different start time" means the old session is gone. Worker stdout/stderr go to
// `<StateDir>/<workerID>.log` (removed by Destroy unless Config.KeepLogs).
//
// Children started by this instance are reaped by a goroutine blocked in Wait (no
// zombies). Children of a previous instance were re-parented when it died and are
// reaped by their new parent.
//
// # Capacity and resources
//
// Config.MaxWorkers (default max(2, 4·NumCPU)) bounds the workers alive at once,
// counting those of previous instances found in StateDir; Create beyond it fails with
// provider.ErrCapacity. The scheduler normally keeps below it.
//
// Enforced: memory, as RLIMIT_AS (address space) on the job process: the provider
// passes Resources.MemoryBytes to the agent (HODEI_WORKER_MEMORY_BYTES) and the agent
// applies it to the job with prlimit(2) right after starting it (the job's spec value
// wins if set). Address space is not resident memory: runtimes that reserve large
// virtual ranges (JVM, Go) need a generous limit. Not enforced: CPU (CPUMillis is a
// share of cores, which needs cgroups; RLIMIT_CPU limits total CPU seconds, a different
// thing), disk, network.
package local
