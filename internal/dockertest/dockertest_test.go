package dockertest_test

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/hodei-jobs/hodei/internal/dockertest"
)

func TestMain(m *testing.M) { dockertest.Main(m) }

// The engine runs a container of the test image on the host network and no bridge
// exists.
func TestEngineRunsBusyboxOnHostNetwork(t *testing.T) {
	e := dockertest.Get(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	created, err := e.Client.ContainerCreate(ctx, client.ContainerCreateOptions{
		Config:     &container.Config{Image: e.Image, Cmd: []string{"sh", "-c", "echo hi; cat /proc/1/cgroup"}},
		HostConfig: &container.HostConfig{NetworkMode: "host"},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Client.ContainerRemove(context.Background(), created.ID, client.ContainerRemoveOptions{Force: true})
	if _, err := e.Client.ContainerStart(ctx, created.ID, client.ContainerStartOptions{}); err != nil {
		t.Fatal(err)
	}
	wait := e.Client.ContainerWait(ctx, created.ID, client.ContainerWaitOptions{Condition: container.WaitConditionNotRunning})
	select {
	case r := <-wait.Result:
		if r.StatusCode != 0 {
			t.Fatalf("exit %d", r.StatusCode)
		}
	case err := <-wait.Error:
		t.Fatal(err)
	}
	logs, err := e.Client.ContainerLogs(ctx, created.ID, client.ContainerLogsOptions{ShowStdout: true})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(logs)
	logs.Close()
	if !strings.Contains(string(b), "hi") || !strings.Contains(string(b), created.ID) {
		t.Fatalf("output %q: want hi and the container's cgroup", b)
	}
	nets, err := e.Client.NetworkList(ctx, client.NetworkListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nets.Items {
		if n.Driver == "bridge" {
			t.Errorf("engine has a bridge network %q; want none", n.Name)
		}
	}
}

func TestCheckStatic(t *testing.T) {
	if err := dockertest.CheckStatic(dockertest.BusyboxPath); err != nil {
		t.Fatal(err)
	}
	if err := dockertest.CheckStatic("/bin/bash"); err == nil {
		t.Error("CheckStatic(/bin/bash) = nil; want dynamically linked")
	}
}
