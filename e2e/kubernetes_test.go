package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hodei-jobs/hodei/internal/imagetar"
	"github.com/hodei-jobs/hodei/internal/kubetest"
)

// kubeAgentImage builds the static hodei-agent into an image FROM scratch holding only
// it as the entrypoint (what make agent-image writes), imports it into the node and
// returns its reference.
func kubeAgentImage(t testing.TB, c *kubetest.Cluster) string {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "hodei-agent")
	build := exec.Command("go", "build", "-o", bin, "./cmd/hodei-agent")
	build.Dir = hodeiBinModDir(t)
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/hodei-agent: %v\n%s", err, out)
	}
	body, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	img := imagetar.Image{Tags: []string{"hodei/agent-e2e:v1"}, Entrypoint: []string{"/hodei-agent"},
		Files: []imagetar.File{{Path: "hodei-agent", Mode: 0o755, Body: body}}}
	tar := filepath.Join(dir, "agent.tar")
	if _, err := imagetar.WriteFile(tar, img); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := c.ImportImage(ctx, tar); err != nil {
		t.Fatal(err)
	}
	return "hodei/agent-e2e:v1"
}

func hodeiBinModDir(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

// startKubeDev starts `hodei dev --provider kubernetes` on the test cluster's node, in
// namespace ns, with host-network pods.
func startKubeDev(t testing.TB, c *kubetest.Cluster, ns, agent string, extra ...string) *server {
	t.Helper()
	args := append([]string{"--provider", "kubernetes", "--kubeconfig", c.Kubeconfig, "--kube-namespace", ns,
		"--kube-agent-image", agent, "--kube-host-network", "--kube-max-workers", "3",
		"--heartbeat-interval", "1s", "--cleanup-interval", "1s"}, extra...)
	return startServerArgs(t, backendDev, 0, args...)
}

// workerObjects counts the worker pods and Secrets left in ns.
func workerObjects(t testing.TB, c *kubetest.Cluster, ns string) (pods, secrets int) {
	t.Helper()
	ctx := context.Background()
	pl, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "hodei.worker"})
	if err != nil {
		t.Fatal(err)
	}
	sl, err := c.Client.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{LabelSelector: "hodei.worker"})
	if err != nil {
		t.Fatal(err)
	}
	return len(pl.Items), len(sl.Items)
}

func waitNoWorkerObjects(t *testing.T, c *kubetest.Cluster, ns string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		p, s := workerObjects(t, c, ns)
		if p == 0 && s == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d worker pods and %d Secrets left after %s", p, s, d)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Jobs run as pods through the real binary: output and exit code, OOM, a missing
// image, cancel and timeout (no pod or Secret left), a pod deleted from outside.
func TestKubernetesJobs(t *testing.T) {
	c := kubetest.Get(t)
	agent := kubeAgentImage(t, c)
	ns := c.Namespace(t)
	s := startKubeDev(t, c, ns, agent)
	img := c.BusyboxImage

	t.Run("RunPrintsAndExits", func(t *testing.T) {
		r := s.hodei("job", "run", "--provider", "kubernetes", "--image", img, "--pull", "never", "--", "sh", "-c", "echo hi; exit 5")
		if !strings.Contains(r.stdout, "hi\n") || r.code != 5 {
			t.Fatalf("%v; want hi and exit 5", r)
		}
		waitNoWorkerObjects(t, c, ns, time.Minute)
	})
	t.Run("OutOfMemoryFails", func(t *testing.T) {
		id := s.submit("--image", img, "--pull", "never", "--memory", "64Mi", "--",
			"sh", "-c", "sleep 1; x=$(head -c 300000000 /dev/zero | tr '\\0' a); echo survived")
		s.waitJobState(id, "FAILED", 2*time.Minute)
		j := s.getJob(id)
		if !strings.Contains(j.GetLastError(), "out of memory (limit 64Mi)") {
			t.Fatalf("exit %d, error %q; want out of memory (limit 64Mi)", j.GetExitCode(), j.GetLastError())
		}
	})
	t.Run("MissingImageFailsFast", func(t *testing.T) {
		start := time.Now()
		id := s.submit("--image", "hodei-test/nope:1", "--pull", "never", "--max-attempts", "3", "--", "true")
		s.waitJobState(id, "FAILED", 30*time.Second)
		j := s.getJob(id)
		if !strings.Contains(j.GetLastError(), "hodei-test/nope:1") || j.GetAttempt() != 1 {
			t.Fatalf("error %q attempt %d; want the image named, attempt 1", j.GetLastError(), j.GetAttempt())
		}
		t.Logf("missing image failed the job in %s", time.Since(start).Round(time.Millisecond))
		waitNoWorkerObjects(t, c, ns, time.Minute)
	})
	t.Run("CancelDeletesThePod", func(t *testing.T) {
		id := s.submit("--image", img, "--pull", "never", "--", "sleep", "300")
		s.waitJobState(id, "RUNNING", time.Minute)
		s.mustHodei("job", "cancel", id)
		s.waitJobState(id, "CANCELLED", time.Minute)
		waitNoWorkerObjects(t, c, ns, time.Minute)
	})
	t.Run("TimeoutDeletesThePod", func(t *testing.T) {
		id := s.submit("--image", img, "--pull", "never", "--timeout", "2s", "--", "sleep", "300")
		s.waitJobState(id, "ended", time.Minute)
		waitNoWorkerObjects(t, c, ns, time.Minute)
	})
	t.Run("PodDeletedFromOutsideIsRecovered", func(t *testing.T) {
		id := s.submit("--image", img, "--pull", "never", "--max-attempts", "3", "--", "sh", "-c", "sleep 4; echo done")
		s.waitJobState(id, "RUNNING", time.Minute)
		first := s.getJob(id).GetWorkerId()
		ctx := context.Background()
		zero := int64(0)
		if err := c.Client.CoreV1().Pods(ns).Delete(ctx, "hodei-worker-"+first, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil && !apierrors.IsNotFound(err) {
			t.Fatal(err)
		}
		s.waitJobState(id, "SUCCEEDED", 2*time.Minute)
		if w := s.getJob(id).GetWorkerId(); w == first {
			t.Fatalf("job ended on worker %s, the deleted pod's; want a new pod", w)
		}
		waitNoWorkerObjects(t, c, ns, time.Minute)
	})
}

// A job whose pod no node can take (a node selector nothing matches) fails its
// provisioning with the scheduler's message after --kube-unschedulable-timeout.
func TestKubernetesUnschedulable(t *testing.T) {
	c := kubetest.Get(t)
	agent := kubeAgentImage(t, c)
	ns := c.Namespace(t)
	cfg := filepath.Join(t.TempDir(), "hodei.yaml")
	if err := os.WriteFile(cfg, []byte("kube:\n  node_selector:\n    hodei-test/pool: nowhere\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startKubeDev(t, c, ns, agent, "--config", cfg, "--kube-unschedulable-timeout", "2s")
	id := s.submit("--image", c.BusyboxImage, "--pull", "never", "--max-attempts", "1", "--", "true")
	s.waitJobState(id, "FAILED", time.Minute)
	if e := s.getJob(id).GetLastError(); !strings.Contains(e, "unschedulable") || !strings.Contains(e, "node") {
		t.Fatalf("error %q; want the scheduler's message", e)
	}
	waitNoWorkerObjects(t, c, ns, time.Minute)
}

// The server is SIGKILLed while a job runs in a pod and started again: the job ends,
// and no pod or Secret is left afterwards.
func TestKubernetesServerKilledMidJob(t *testing.T) {
	c := kubetest.Get(t)
	agent := kubeAgentImage(t, c)
	ns := c.Namespace(t)
	s := startKubeDev(t, c, ns, agent)
	id := s.submit("--image", c.BusyboxImage, "--pull", "never", "--", "sh", "-c", "sleep 4; echo done")
	s.waitJobState(id, "RUNNING", time.Minute)
	s.kill()
	if p, sec := workerObjects(t, c, ns); p != 1 || sec != 1 {
		t.Fatalf("%d pods and %d Secrets after the server died; want the job's one of each", p, sec)
	}
	s.startProcess()
	if st := s.waitJobState(id, "ended", 2*time.Minute); st != "SUCCEEDED" {
		t.Fatalf("job ended %s (%q); want SUCCEEDED", st, s.getJob(id).GetLastError())
	}
	waitNoWorkerObjects(t, c, ns, time.Minute)
}
