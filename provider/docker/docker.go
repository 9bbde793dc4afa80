package docker

import (
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/events"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/client"

	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/internal/backoff"
	"github.com/hodei-jobs/hodei/provider"
)

// Name is the provider's registry name.
const Name = "docker"

// AgentPath is where the agent binary is mounted in every worker container.
const AgentPath = "/.hodei/hodei"

// Container labels.
const (
	LabelWorker = "hodei.worker"
	LabelJob    = "hodei.job"
	LabelOwner  = "hodei.owner"
	// LabelInstallation holds Config.Installation: List, the capacity count and the
	// exit events see only the containers that carry this installation's id.
	LabelInstallation = "hodei.installation"
)

// Environment variables the worker receives (the agent's, see agent.Config).
const (
	EnvServer       = "HODEI_SERVER"
	EnvWorkerID     = "HODEI_WORKER_ID"
	EnvOTP          = "HODEI_ONE_TIME_PASSWORD"
	EnvIdleTimeout  = "HODEI_WORKER_IDLE_TIMEOUT"
	EnvCgroupMemory = "HODEI_WORKER_CGROUP_MEMORY"
	EnvCACertPEM    = "HODEI_CA_CERT_PEM"
)

// Config configures the docker provider.
type Config struct {
	// Host is the engine's address (unix:///var/run/docker.sock, tcp://host:2376);
	// default DOCKER_HOST, else the platform's default socket.
	Host string
	// AgentBinary is the static hodei binary mounted into every container; default
	// os.Executable(). It must be statically linked (CGO_ENABLED=0).
	AgentBinary string
	// DefaultImage runs workers whose spec names no image; "" refuses them.
	DefaultImage string
	// Network is the containers' network mode; default "host".
	Network string
	// MaxWorkers is the capacity; default max(2, 4·NumCPU).
	MaxWorkers int
	// GracePeriod between SIGTERM and SIGKILL in Destroy; default 5s (whole seconds).
	GracePeriod time.Duration
	// PidsLimit bounds the processes of one container; default 1024.
	PidsLimit int64
	// Owner is this replica's node id, recorded as hodei.owner; exits are reported
	// for its containers only. Default "hodei".
	Owner string
	// Installation is the control plane's installation id (store.Store's
	// InstallationID: one per database, shared by its replicas), recorded as
	// hodei.installation. Containers of other installations on the same engine are
	// neither listed (so a sweep never removes them), nor counted against MaxWorkers,
	// nor reported when they exit. Default "hodei".
	Installation string
	// Env is extra KEY=VALUE environment for every worker.
	Env []string
	// IdleTimeout is HODEI_WORKER_IDLE_TIMEOUT (default 1ms: the agent exits once its
	// result is acknowledged).
	IdleTimeout time.Duration
	// Labels are the provider's labels, matched by jobs' selectors.
	Labels map[string]string
	// Logger; default slog.Default().
	Logger *slog.Logger
}

func (c *Config) setDefaults() error {
	if c.AgentBinary == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("docker: Config.AgentBinary empty and os.Executable failed: %w", err)
		}
		c.AgentBinary = exe
	}
	if c.Network == "" {
		c.Network = "host"
	}
	if c.MaxWorkers == 0 {
		c.MaxWorkers = max(2, 4*runtime.NumCPU())
	}
	if c.GracePeriod == 0 {
		c.GracePeriod = 5 * time.Second
	}
	if c.PidsLimit == 0 {
		c.PidsLimit = 1024
	}
	if c.Owner == "" {
		c.Owner = "hodei"
	}
	if c.Installation == "" {
		c.Installation = "hodei"
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = time.Millisecond
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Validate checks the configuration (after defaults).
func (c *Config) Validate() error {
	switch {
	case c.MaxWorkers < 0:
		return fmt.Errorf("docker: Config.MaxWorkers is negative (%d)", c.MaxWorkers)
	case c.GracePeriod < 0:
		return fmt.Errorf("docker: Config.GracePeriod is negative (%s)", c.GracePeriod)
	case c.PidsLimit < 0:
		return fmt.Errorf("docker: Config.PidsLimit is negative (%d)", c.PidsLimit)
	case !filepath.IsAbs(c.AgentBinary):
		return fmt.Errorf("docker: Config.AgentBinary %q is not an absolute path", c.AgentBinary)
	}
	for _, kv := range c.Env {
		if !strings.Contains(kv, "=") {
			return fmt.Errorf("docker: Config.Env entry %q is not KEY=VALUE", kv)
		}
	}
	return checkStatic(c.AgentBinary)
}

// checkStatic refuses a dynamically linked agent: it could not run in an image
// without the same libc (or any libc).
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("docker: Config.AgentBinary: %w", err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("docker: Config.AgentBinary %s is dynamically linked; build it with CGO_ENABLED=0 go build ./cmd/hodei", path)
		}
	}
	return nil
}

// Provider runs workers as containers. Safe for concurrent use.
type Provider struct {
	cfg    Config
	cli    *client.Client
	log    *slog.Logger
	onExit atomic.Pointer[func(workerID string, exitErr error)]

	mu         sync.Mutex
	destroying map[string]bool

	stop     context.CancelFunc
	watching sync.WaitGroup
}

var (
	_ provider.Provider     = (*Provider)(nil)
	_ provider.Lister       = (*Provider)(nil)
	_ provider.ExitNotifier = (*Provider)(nil)
)

// New connects to the engine (it must answer within ctx) and starts following its
// events. Close stops that.
func New(ctx context.Context, cfg Config) (*Provider, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	opts := []client.Opt{client.FromEnv}
	if cfg.Host != "" {
		opts = append(opts, client.WithHost(cfg.Host))
	}
	cli, err := client.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("docker: client for Config.Host %q: %w", cfg.Host, err)
	}
	if _, err := cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		cli.Close()
		return nil, fmt.Errorf("docker: engine at %s does not answer: %w", cli.DaemonHost(), err)
	}
	wctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	p := &Provider{cfg: cfg, cli: cli, log: cfg.Logger.With("provider", Name), destroying: map[string]bool{}, stop: stop}
	ready := make(chan struct{})
	p.watching.Go(func() { p.watch(wctx, ready) })
	select {
	case <-ready:
	case <-ctx.Done():
	}
	return p, nil
}

// Close stops following the engine's events and closes the client.
func (p *Provider) Close() error {
	p.stop()
	p.watching.Wait()
	return p.cli.Close()
}

// OnExit sets the handler of this owner's container exits (see the package doc).
func (p *Provider) OnExit(handler func(workerID string, exitErr error)) {
	if handler == nil {
		p.onExit.Store(nil)
		return
	}
	p.onExit.Store(&handler)
}

// Name returns "docker".
func (p *Provider) Name() string { return Name }

// Capabilities: shared (any replica reaches the engine), memory, cpu and pids enforced.
func (p *Provider) Capabilities() provider.Capabilities {
	return provider.Capabilities{MaxWorkers: p.cfg.MaxWorkers, Shared: true,
		Enforced: []string{"memory", "cpu", "pids"}, Images: true, RequiresImage: p.cfg.DefaultImage == "",
		Labels: maps.Clone(p.cfg.Labels)}
}

func containerName(workerID string) string { return "hodei-worker-" + workerID }

func validWorkerID(id string) bool {
	if len(id) == 0 || len(id) > 200 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case (c == '.' || c == '_' || c == '-') && i > 0:
		default:
			return false
		}
	}
	return true
}

func checkWorkerID(id string) error {
	if !validWorkerID(id) {
		return fmt.Errorf("docker: worker id %q: want 1-200 characters of [A-Za-z0-9._-], not starting with . - or _", id)
	}
	return nil
}

// Create starts the worker's container; idempotent per WorkerID.
func (p *Provider) Create(ctx context.Context, spec provider.WorkerSpec) error {
	if err := spec.Validate(); err != nil {
		return provider.Permanent(err)
	}
	if err := checkWorkerID(spec.WorkerID); err != nil {
		return provider.Permanent(err)
	}
	image := spec.Image
	if image == "" {
		image = p.cfg.DefaultImage
	}
	if image == "" {
		return provider.Permanent(errors.New("docker: WorkerSpec.Image is empty and the provider has no default image (Config.DefaultImage)"))
	}
	name := containerName(spec.WorkerID)
	if c, err := p.cli.ContainerInspect(ctx, name, client.ContainerInspectOptions{}); err == nil {
		if c.Container.State != nil && c.Container.State.Status == container.StateCreated {
			// Created by an earlier call that did not start it.
			return p.start(ctx, spec.WorkerID, name)
		}
		return nil
	} else if !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("docker: create worker %s: inspect: %w", spec.WorkerID, err)
	}
	began := time.Now()
	if n, err := p.alive(ctx); err != nil {
		return fmt.Errorf("docker: create worker %s: count workers: %w", spec.WorkerID, err)
	} else if n >= p.cfg.MaxWorkers {
		return fmt.Errorf("docker: create worker %s: %w: %d of MaxWorkers=%d workers alive",
			spec.WorkerID, provider.ErrCapacity, n, p.cfg.MaxWorkers)
	}
	counted := time.Now()
	if err := p.ensureImage(ctx, image, spec.Pull); err != nil {
		return err
	}
	imaged := time.Now()
	grace := int((p.cfg.GracePeriod + time.Second - 1) / time.Second)
	cfg := &container.Config{
		Image:      image,
		Entrypoint: []string{AgentPath, "worker"},
		Cmd:        []string{},
		Env:        p.env(spec),
		Labels: map[string]string{LabelWorker: spec.WorkerID, LabelJob: spec.JobID, LabelOwner: p.ownerOf(spec),
			LabelInstallation: p.cfg.Installation},
		StopTimeout: &grace,
	}
	pids := p.cfg.PidsLimit
	host := &container.HostConfig{
		NetworkMode: container.NetworkMode(p.cfg.Network),
		Mounts:      []mount.Mount{{Type: mount.TypeBind, Source: p.cfg.AgentBinary, Target: AgentPath, ReadOnly: true}},
		Resources: container.Resources{
			NanoCPUs:  spec.Resources.CPUMillis * 1_000_000,
			PidsLimit: &pids,
		},
	}
	if m := spec.Resources.MemoryBytes; m > 0 {
		host.Memory, host.MemorySwap = m, m // hard limit, no swap
	}
	if _, err := p.cli.ContainerCreate(ctx, client.ContainerCreateOptions{Name: name, Config: cfg, HostConfig: host}); err != nil {
		if cerrdefs.IsConflict(err) { // a concurrent Create of the same worker
			return nil
		}
		if cerrdefs.IsInvalidArgument(err) || cerrdefs.IsNotFound(err) {
			return provider.Permanent(fmt.Errorf("docker: create worker %s (image %s): %w", spec.WorkerID, image, err))
		}
		return fmt.Errorf("docker: create worker %s (image %s): %w", spec.WorkerID, image, err)
	}
	created := time.Now()
	if err := p.start(ctx, spec.WorkerID, name); err != nil {
		return err
	}
	ms := func(a, b time.Time) float64 { return float64(b.Sub(a).Microseconds()) / 1000 }
	p.log.InfoContext(ctx, "worker started", "worker_id", spec.WorkerID, "job_id", spec.JobID, "image", image, "container", name,
		"count_ms", ms(began, counted), "image_ms", ms(counted, imaged), "create_ms", ms(imaged, created), "start_ms", ms(created, time.Now()))
	return nil
}

func (p *Provider) ownerOf(spec provider.WorkerSpec) string {
	if spec.Owner != "" {
		return spec.Owner
	}
	return p.cfg.Owner
}

func (p *Provider) start(ctx context.Context, workerID, name string) error {
	if _, err := p.cli.ContainerStart(ctx, name, client.ContainerStartOptions{}); err != nil {
		// A container that cannot start (bad mount, bad entrypoint) will never start.
		_, rerr := p.cli.ContainerRemove(context.WithoutCancel(ctx), name, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
		if rerr != nil && !cerrdefs.IsNotFound(rerr) {
			p.log.Warn("could not remove a container that failed to start", "worker_id", workerID, "err", rerr)
		}
		return provider.Permanent(fmt.Errorf("docker: start worker %s: %w", workerID, err))
	}
	return nil
}

func (p *Provider) env(spec provider.WorkerSpec) []string {
	env := []string{EnvIdleTimeout + "=" + p.cfg.IdleTimeout.String(), EnvCgroupMemory + "=1"}
	env = append(env, p.cfg.Env...)
	env = append(env, spec.AgentEnv()...)
	if spec.CACertPEM != "" { // the CA bundle of an https:// server: not a secret
		env = append(env, EnvCACertPEM+"="+spec.CACertPEM)
	}
	if spec.TraceParent != "" { // the job's trace, joined by the agent's registration
		env = append(env, "TRACEPARENT="+spec.TraceParent)
	}
	return append(env,
		EnvServer+"="+spec.ServerURL,
		EnvWorkerID+"="+spec.WorkerID,
		EnvOTP+"="+spec.OneTimePassword,
	)
}

// ensureImage makes the image present according to pull. Missing under never, or a
// failed pull, is permanent.
func (p *Provider) ensureImage(ctx context.Context, image string, pull domain.PullPolicy) error {
	if pull == "" {
		pull = domain.PullIfNotPresent
	}
	if pull != domain.PullAlways {
		_, err := p.cli.ImageInspect(ctx, image)
		if err == nil {
			return nil
		}
		if !cerrdefs.IsNotFound(err) {
			return fmt.Errorf("docker: inspect image %s: %w", image, err)
		}
		if pull == domain.PullNever {
			return provider.Permanent(fmt.Errorf("image %s not found (pull policy never)", image))
		}
	}
	resp, err := p.cli.ImagePull(ctx, image, client.ImagePullOptions{})
	if err == nil {
		err = resp.Wait(ctx)
		resp.Close()
	}
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("docker: pull image %s: %w", image, err)
		}
		return provider.Permanent(fmt.Errorf("image %s could not be pulled: %w", image, err))
	}
	return nil
}

// alive counts this installation's running containers, less those being destroyed.
func (p *Provider) alive(ctx context.Context) (int, error) {
	res, err := p.cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: p.mine()})
	if err != nil {
		return 0, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, c := range res.Items {
		if c.State == container.StateExited || c.State == container.StateDead || c.State == container.StateRemoving {
			continue
		}
		if !p.destroying[c.Labels[LabelWorker]] {
			n++
		}
	}
	return n, nil
}

// Status reports running (created, running, paused, restarting), exited, or unknown.
func (p *Provider) Status(ctx context.Context, workerID string) (provider.Status, error) {
	if err := checkWorkerID(workerID); err != nil {
		return provider.StatusUnknown, err
	}
	c, err := p.cli.ContainerInspect(ctx, containerName(workerID), client.ContainerInspectOptions{})
	if cerrdefs.IsNotFound(err) {
		return provider.StatusUnknown, nil
	}
	if err != nil {
		return provider.StatusUnknown, fmt.Errorf("docker: status of worker %s: %w", workerID, err)
	}
	if c.Container.State == nil {
		return provider.StatusUnknown, nil
	}
	switch c.Container.State.Status {
	case container.StateExited, container.StateDead, container.StateRemoving:
		return provider.StatusExited, nil
	}
	return provider.StatusRunning, nil
}

// Destroy stops the container (SIGTERM, SIGKILL after the grace period) and removes
// it with its anonymous volumes. Idempotent.
func (p *Provider) Destroy(ctx context.Context, workerID string) error {
	if err := checkWorkerID(workerID); err != nil {
		return err
	}
	p.mu.Lock()
	p.destroying[workerID] = true
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.destroying, workerID)
		p.mu.Unlock()
	}()
	name := containerName(workerID)
	grace := int((p.cfg.GracePeriod + time.Second - 1) / time.Second)
	if _, err := p.cli.ContainerStop(ctx, name, client.ContainerStopOptions{Timeout: &grace}); err != nil && !cerrdefs.IsNotFound(err) {
		p.log.WarnContext(ctx, "stop failed; removing by force", "worker_id", workerID, "err", err)
	}
	_, err := p.cli.ContainerRemove(ctx, name, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
	if err != nil && !cerrdefs.IsNotFound(err) {
		if cerrdefs.IsConflict(err) && strings.Contains(err.Error(), "already in progress") {
			return p.waitGone(ctx, name)
		}
		return fmt.Errorf("docker: destroy worker %s: %w", workerID, err)
	}
	p.log.DebugContext(ctx, "worker destroyed", "worker_id", workerID)
	return nil
}

// waitGone waits for a removal another caller started.
func (p *Provider) waitGone(ctx context.Context, name string) error {
	for {
		_, err := p.cli.ContainerInspect(ctx, name, client.ContainerInspectOptions{})
		if cerrdefs.IsNotFound(err) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("docker: destroy %s: %w", name, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// mine filters the engine's containers down to this installation's workers.
func (p *Provider) mine() client.Filters {
	return client.Filters{}.Add("label", LabelWorker, LabelInstallation+"="+p.cfg.Installation)
}

// List returns the worker ids of this installation's containers (labelled hodei.worker
// and hodei.installation=Config.Installation), running or not.
func (p *Provider) List(ctx context.Context) ([]string, error) {
	res, err := p.cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: p.mine()})
	if err != nil {
		return nil, fmt.Errorf("docker: list workers: %w", err)
	}
	ids := make([]string, 0, len(res.Items))
	for _, c := range res.Items {
		if id := c.Labels[LabelWorker]; validWorkerID(id) {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// limitOf is " (limit 64Mi)" for a container with a memory limit, else "".
func (p *Provider) limitOf(containerID string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := p.cli.ContainerInspect(ctx, containerID, client.ContainerInspectOptions{})
	if err != nil || c.Container.HostConfig == nil || c.Container.HostConfig.Memory <= 0 {
		return ""
	}
	return " (limit " + domain.FormatMemory(c.Container.HostConfig.Memory) + ")"
}

// watch follows the engine's container events until ctx ends; ready is closed once
// the first subscription is made (or failed).
func (p *Provider) watch(ctx context.Context, ready chan struct{}) {
	pace := backoff.Pacer{Base: 100 * time.Millisecond, Max: 5 * time.Second, Jitter: 0.2}
	var since time.Time
	oom := map[string]bool{} // containers the engine reported out of memory
	first := true
	for ctx.Err() == nil {
		opts := client.EventsListOptions{Filters: client.Filters{}.Add("type", string(events.ContainerEventType)).
			Add("label", LabelWorker, LabelInstallation+"="+p.cfg.Installation).
			Add("event", string(events.ActionDie), string(events.ActionOOM))}
		if !since.IsZero() {
			opts.Since = strconv.FormatInt(since.Unix(), 10)
		}
		sctx, cancel := context.WithCancel(ctx)
		res := p.cli.Events(sctx, opts)
		if first {
			close(ready)
			first = false
		}
		err := p.follow(sctx, res, &since, oom, &pace)
		cancel()
		if ctx.Err() != nil {
			return
		}
		d := pace.Next()
		p.log.Warn("engine event stream ended; following it again", "err", err, "in", d)
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
	}
}

func (p *Provider) follow(ctx context.Context, res client.EventsResult, since *time.Time, oom map[string]bool, pace *backoff.Pacer) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-res.Err:
			return err
		case m := <-res.Messages:
			pace.Reset()
			if m.Time > 0 {
				*since = time.Unix(m.Time, 0)
			}
			p.handleEvent(m, oom)
		}
	}
}

func (p *Provider) handleEvent(m events.Message, oom map[string]bool) {
	attrs := m.Actor.Attributes
	id := attrs[LabelWorker]
	if !validWorkerID(id) || attrs[LabelOwner] != p.cfg.Owner || attrs[LabelInstallation] != p.cfg.Installation {
		return
	}
	switch m.Action {
	case events.ActionOOM:
		oom[m.Actor.ID] = true
	case events.ActionDie:
		killed := oom[m.Actor.ID]
		delete(oom, m.Actor.ID)
		code := attrs["exitCode"]
		var err error
		switch {
		case killed:
			err = fmt.Errorf("%w%s: the worker's container was killed (exit code %s)", provider.ErrOOMKilled, p.limitOf(m.Actor.ID), code)
		case code != "0":
			err = fmt.Errorf("container exited with code %s", code)
		}
		p.log.Info("worker container exited", "worker_id", id, "exit_code", code, "oom", killed)
		if h := p.onExit.Load(); h != nil {
			(*h)(id, err)
		}
	}
}
