package imagetar_test

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hodei-jobs/hodei/internal/dockertest"
	"github.com/hodei-jobs/hodei/internal/imagetar"
	"github.com/hodei-jobs/hodei/internal/kubetest"
)

func TestMain(m *testing.M) { os.Exit(kubetest.Wrap(dockertest.Wrap(m)).Run()) }

func TestBadInputNamesTheField(t *testing.T) {
	for _, tc := range []struct {
		img  imagetar.Image
		want string
	}{
		{imagetar.Image{}, "Tags: at least one tag"},
		{imagetar.Image{Tags: []string{"Upper/x:1"}}, `Tags: "Upper/x:1"`},
		{imagetar.Image{Tags: []string{"a:1"}, Files: []imagetar.File{{Path: "x"}, {Path: "/x"}}}, `Files[1]: path "/x" appears twice`},
		{imagetar.Image{Tags: []string{"a:1"}, Files: []imagetar.File{{Path: "/"}}}, `Files[0]: path "/" names no file`},
	} {
		_, err := imagetar.Write(io.Discard, tc.img)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Write(%+v) = %v, want an error containing %q", tc.img, err, tc.want)
		}
	}
}

// TestDockerLoadRunsImage loads a busybox image written by imagetar into a real Docker
// Engine (docker load's API) and runs it.
func TestDockerLoadRunsImage(t *testing.T) {
	e := dockertest.Get(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	img, err := imagetar.Busybox("hodei-test/imagetar-busybox:1")
	if err != nil {
		t.Fatal(err)
	}
	img.Env = append(img.Env, "GREETING=from-imagetar")
	path := filepath.Join(t.TempDir(), "img.tar")
	if _, err := imagetar.WriteFile(path, img); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := e.Client.ImageLoad(ctx, f)
	if err != nil {
		t.Fatalf("docker load: %v", err)
	}
	out, _ := io.ReadAll(res)
	res.Close()
	if _, err := e.Client.ImageInspect(ctx, "hodei-test/imagetar-busybox:1"); err != nil {
		t.Fatalf("image not there after docker load (%s): %v", out, err)
	}
	dockerBin, err := exec.LookPath("docker")
	if err != nil {
		// The CLI is part of docker.io; without it, inspect is what we can check.
		t.Fatalf("docker CLI: %v", err)
	}
	run, err := exec.CommandContext(ctx, dockerBin, "-H", e.Host, "run", "--rm", "--network", "host",
		"hodei-test/imagetar-busybox:1", "sh", "-c", "echo $GREETING; ls /tmp && echo tmp-ok").CombinedOutput()
	if err != nil || !strings.Contains(string(run), "from-imagetar") || !strings.Contains(string(run), "tmp-ok") {
		t.Fatalf("docker run: %v: %s", err, run)
	}
}

// TestAgentImageCopiesItselfInAPod builds the agent image as make agent-image does,
// imports it into the test node's containerd (ctr images import) and runs the
// kubernetes provider's pattern: an init container from the agent image runs
// `hodei-agent copy-self /agent` into an emptyDir, and a busybox container runs the
// copied agent.
func TestAgentImageCopiesItselfInAPod(t *testing.T) {
	c := kubetest.Get(t)
	ns := c.Namespace(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dir := t.TempDir()
	agent := filepath.Join(dir, "hodei-agent")
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", agent, "github.com/hodei-jobs/hodei/cmd/hodei-agent")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build hodei-agent: %v: %s", err, out)
	}
	if err := imagetar.CheckStatic(agent); err != nil {
		t.Fatal(err)
	}
	tarPath := filepath.Join(dir, "agent-image.tar")
	mk := exec.CommandContext(ctx, "go", "run", "github.com/hodei-jobs/hodei/internal/imagetar/mkimage",
		"-o", tarPath, "-tag", "hodei/agent:test", "-entrypoint", "/hodei-agent", agent+"=/hodei-agent")
	if out, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("mkimage: %v: %s", err, out)
	}
	if err := c.ImportImage(ctx, tarPath); err != nil {
		t.Fatal(err)
	}
	no := false
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "agent-copy"},
		Spec: corev1.PodSpec{
			HostNetwork: true, RestartPolicy: corev1.RestartPolicyNever, AutomountServiceAccountToken: &no,
			Volumes: []corev1.Volume{{Name: "agent", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
			InitContainers: []corev1.Container{{
				Name: "copy-agent", Image: "hodei/agent:test", ImagePullPolicy: corev1.PullNever,
				Args:         []string{"copy-self", "/agent"},
				VolumeMounts: []corev1.VolumeMount{{Name: "agent", MountPath: "/agent"}},
			}},
			Containers: []corev1.Container{{
				Name: "job", Image: c.BusyboxImage, ImagePullPolicy: corev1.PullNever,
				Command:      []string{"sh", "-c", "ls -l /agent/hodei-agent && /agent/hodei-agent --help"},
				VolumeMounts: []corev1.VolumeMount{{Name: "agent", MountPath: "/agent"}},
			}},
		},
	}
	if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var p *corev1.Pod
	for {
		var err error
		p, err = c.Client.CoreV1().Pods(ns).Get(ctx, "agent-copy", metav1.GetOptions{})
		if err == nil && (p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed) {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("pod never ended: %+v; kubelet: %s", p.Status, c.ComponentLog("kubelet"))
		case <-time.After(200 * time.Millisecond):
		}
	}
	rc, err := c.Client.CoreV1().Pods(ns).GetLogs("agent-copy", &corev1.PodLogOptions{Container: "job"}).Stream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	logs, _ := io.ReadAll(rc)
	rc.Close()
	if p.Status.Phase != corev1.PodSucceeded || !strings.Contains(string(logs), "Run the worker agent") {
		t.Fatalf("phase %s, job container's output:\n%s", p.Status.Phase, logs)
	}
	init, err := c.Client.CoreV1().Pods(ns).GetLogs("agent-copy", &corev1.PodLogOptions{Container: "copy-agent"}).DoRaw(ctx)
	if err != nil || !strings.Contains(string(init), "copied to /agent/hodei-agent") {
		t.Fatalf("init container's output %q, %v", init, err)
	}
}
