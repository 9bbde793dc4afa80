package docker_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/internal/dockertest"
	"github.com/hodei-jobs/hodei/provider"
	"github.com/hodei-jobs/hodei/provider/docker"
	"github.com/hodei-jobs/hodei/provider/providertest"
)

func TestMain(m *testing.M) { dockertest.Main(m) }

// testInstallation is the installation id of the tests' providers.
const testInstallation = "inst-test"

func newProvider(t *testing.T, e *dockertest.Engine, maxWorkers int) *docker.Provider {
	t.Helper()
	return newProviderOf(t, e, maxWorkers, testInstallation, "node-"+t.Name())
}

func newProviderOf(t *testing.T, e *dockertest.Engine, maxWorkers int, installation, owner string) *docker.Provider {
	t.Helper()
	// Built first: on a cold build cache the static agent takes longer to build than
	// the engine has to answer.
	agent := providertest.Agent(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := docker.New(ctx, docker.Config{Host: e.Host, AgentBinary: agent, MaxWorkers: maxWorkers,
		GracePeriod: time.Second, Owner: owner, Installation: installation})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func inspect(t *testing.T, e *dockertest.Engine, id string) (client.ContainerInspectResult, bool) {
	c, err := e.Client.ContainerInspect(context.Background(), "hodei-worker-"+id, client.ContainerInspectOptions{})
	if cerrdefs.IsNotFound(err) {
		return c, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return c, true
}

// The docker provider passes the provider conformance suite with real containers.
func TestConformance(t *testing.T) {
	e := dockertest.Get(t)
	providertest.Run(t, providertest.Harness{
		New: func(t *testing.T, maxWorkers int) provider.Provider { return newProvider(t, e, maxWorkers) },
		Spec: func(s provider.WorkerSpec) provider.WorkerSpec {
			s.Image, s.Pull = e.Image, domain.PullNever
			return s
		},
		Kill: func(t *testing.T, id string) {
			if _, err := e.Client.ContainerKill(context.Background(), "hodei-worker-"+id, client.ContainerKillOptions{}); err != nil {
				t.Fatal(err)
			}
		},
		Exists: func(t *testing.T, id string) bool {
			_, ok := inspect(t, e, id)
			return ok
		},
		Exposed: func(t *testing.T, id string) []string {
			c, ok := inspect(t, e, id)
			if !ok {
				t.Fatalf("no container for worker %s", id)
			}
			seen := append([]string{c.Container.Path}, c.Container.Args...)
			seen = append(seen, c.Container.Config.Cmd...)
			seen = append(seen, c.Container.Config.Entrypoint...)
			for k, v := range c.Container.Config.Labels {
				seen = append(seen, k+"="+v)
			}
			logs, err := e.Client.ContainerLogs(context.Background(), c.Container.ID, client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true})
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(logs)
			logs.Close()
			return append(seen, string(b))
		},
	})
}

// A container gets the job's limits, the labels, the host network and the agent as
// its read-only entrypoint.
func TestContainerShape(t *testing.T) {
	e := dockertest.Get(t)
	p := newProvider(t, e, 2)
	ctx := context.Background()
	id := "shape-1"
	t.Cleanup(func() { _ = p.Destroy(context.Background(), id) })
	err := p.Create(ctx, provider.WorkerSpec{WorkerID: id, OneTimePassword: "pw", ServerURL: "http://127.0.0.1:1", JobID: "job-1",
		Image: e.Image, Pull: domain.PullNever, Owner: "node-a",
		Resources: domain.Resources{CPUMillis: 500, MemoryBytes: 64 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	c, ok := inspect(t, e, id)
	if !ok {
		t.Fatal("no container")
	}
	hc := c.Container.HostConfig
	if hc.Memory != 64<<20 || hc.MemorySwap != 64<<20 || hc.NanoCPUs != 500_000_000 || hc.PidsLimit == nil || *hc.PidsLimit != 1024 {
		t.Errorf("limits: memory %d swap %d nanocpus %d pids %v", hc.Memory, hc.MemorySwap, hc.NanoCPUs, hc.PidsLimit)
	}
	if hc.NetworkMode != "host" {
		t.Errorf("network %q; want host", hc.NetworkMode)
	}
	if len(hc.Mounts) != 1 || hc.Mounts[0].Target != docker.AgentPath || !hc.Mounts[0].ReadOnly {
		t.Errorf("mounts %+v; want the agent read-only at %s", hc.Mounts, docker.AgentPath)
	}
	l := c.Container.Config.Labels
	if l[docker.LabelWorker] != id || l[docker.LabelJob] != "job-1" || l[docker.LabelOwner] != "node-a" ||
		l[docker.LabelInstallation] != testInstallation {
		t.Errorf("labels %v", l)
	}
	if got := strings.Join(c.Container.Config.Entrypoint, " "); got != docker.AgentPath+" worker" {
		t.Errorf("entrypoint %q", got)
	}
}

// A missing image under pull=never, and an image that cannot be pulled (no registry is
// reachable here), are permanent errors naming the image, and leave no container.
func TestMissingImageIsPermanent(t *testing.T) {
	e := dockertest.Get(t)
	p := newProvider(t, e, 2)
	for _, pull := range []domain.PullPolicy{domain.PullNever, domain.PullIfNotPresent} {
		id := "missing-" + string(pull)
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		err := p.Create(ctx, provider.WorkerSpec{WorkerID: id, OneTimePassword: "pw", ServerURL: "http://127.0.0.1:1",
			Image: "hodei-test/does-not-exist:1", Pull: pull})
		cancel()
		if err == nil || !provider.IsPermanent(err) || !strings.Contains(err.Error(), "hodei-test/does-not-exist:1") {
			t.Errorf("pull %s: Create = %v; want a permanent error naming the image", pull, err)
		}
		if _, ok := inspect(t, e, id); ok {
			t.Errorf("pull %s: a container exists", pull)
		}
	}
}

func TestNewRefusesDynamicAgent(t *testing.T) {
	e := dockertest.Get(t)
	_, err := docker.New(context.Background(), docker.Config{Host: e.Host, AgentBinary: "/bin/bash"})
	if err == nil || !strings.Contains(err.Error(), "CGO_ENABLED=0") {
		t.Fatalf("New with a dynamic agent = %v; want an error telling how to build a static one", err)
	}
}

// A worker container killed by its memory limit (here its main process itself grows
// past 64Mi: a container made directly with the provider's labels, since the agent
// makes its job, not itself, the OOM killer's choice) is reported as an exit matching
// provider.ErrOOMKilled, naming the limit, from the engine's oom and die events.
func TestOOMKilledContainerReported(t *testing.T) {
	e := dockertest.Get(t)
	p := newProvider(t, e, 2)
	exits := make(chan error, 4)
	p.OnExit(func(id string, err error) {
		if id == "oom-1" {
			exits <- err
		}
	})
	ctx := context.Background()
	t.Cleanup(func() { _ = p.Destroy(context.Background(), "oom-1") })
	c, err := e.Client.ContainerCreate(ctx, client.ContainerCreateOptions{Name: "hodei-worker-oom-1",
		Config: &container.Config{Image: e.Image, Cmd: []string{"sh", "-c", "x=$(head -c 300000000 /dev/zero | tr '\\0' a); echo $x"},
			Labels: map[string]string{docker.LabelWorker: "oom-1", docker.LabelOwner: "node-" + t.Name(),
				docker.LabelInstallation: testInstallation}},
		HostConfig: &container.HostConfig{NetworkMode: "none", Resources: container.Resources{Memory: 64 << 20, MemorySwap: 64 << 20}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Client.ContainerStart(ctx, c.ID, client.ContainerStartOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exits:
		if !errors.Is(err, provider.ErrOOMKilled) || !strings.Contains(err.Error(), "out of memory (limit 64Mi)") {
			t.Fatalf("exit error %v; want ErrOOMKilled naming the limit 64Mi", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("no exit reported within 60s")
	}
}

// Two installations (two databases, so two installation ids) on one engine, even with
// replicas of the same node id: each lists, counts and hears the exits of its own
// containers only, so one's sweep never removes the other's workers and one's
// containers take no slot of the other's capacity.
func TestTwoInstallationsOnOneEngine(t *testing.T) {
	e := dockertest.Get(t)
	a := newProviderOf(t, e, 1, "inst-a", "node-same")
	b := newProviderOf(t, e, 1, "inst-b", "node-same")
	exits := map[string]chan string{"a": make(chan string, 8), "b": make(chan string, 8)}
	a.OnExit(func(id string, _ error) { exits["a"] <- id })
	b.OnExit(func(id string, _ error) { exits["b"] <- id })
	ctx := context.Background()
	for name, p := range map[string]*docker.Provider{"a": a, "b": b} {
		id := name + "-1"
		t.Cleanup(func() { _ = p.Destroy(context.Background(), id) })
		// Each has one slot: the other installation's live container must not take it.
		if err := p.Create(ctx, provider.WorkerSpec{WorkerID: id, OneTimePassword: "pw", ServerURL: "http://127.0.0.1:1",
			JobID: "job-" + id, Image: e.Image, Pull: domain.PullNever}); err != nil {
			t.Fatalf("installation %s: create %s: %v", name, id, err)
		}
	}
	for name, p := range map[string]*docker.Provider{"a": a, "b": b} {
		ids, err := p.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Join(ids, ",") != name+"-1" {
			t.Errorf("installation %s lists %v; want only %s-1", name, ids, name)
		}
	}
	if _, err := e.Client.ContainerKill(ctx, "hodei-worker-b-1", client.ContainerKillOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case id := <-exits["b"]:
		if id != "b-1" {
			t.Fatalf("installation b heard the exit of %s", id)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("installation b did not hear its container's exit")
	}
	// The die event reached the engine's subscribers; a's filter left it out.
	select {
	case id := <-exits["a"]:
		t.Fatalf("installation a heard the exit of %s", id)
	case <-time.After(time.Second):
	}
	if st, err := a.Status(ctx, "a-1"); err != nil || st != provider.StatusRunning {
		t.Errorf("installation a's worker: %v %v; want running", st, err)
	}
}
