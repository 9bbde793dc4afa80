package kubetest_test

import (
	"context"
	"io"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hodei-jobs/hodei/internal/kubetest"
)

func TestMain(m *testing.M) { kubetest.Main(m) }

func busyboxPod(c *kubetest.Cluster, name, script string) *corev1.Pod {
	no := false
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			HostNetwork:                   true,
			RestartPolicy:                 corev1.RestartPolicyNever,
			AutomountServiceAccountToken:  &no,
			TerminationGracePeriodSeconds: func() *int64 { g := int64(2); return &g }(),
			Containers: []corev1.Container{{
				Name: "main", Image: c.BusyboxImage, ImagePullPolicy: corev1.PullNever,
				Command: []string{"sh", "-c", script},
			}},
		},
	}
}

// waitPod polls the Pod until cond holds (or fails the test after 2 minutes).
func waitPod(t *testing.T, c *kubetest.Cluster, ns, name, what string, cond func(*corev1.Pod) bool) *corev1.Pod {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for {
		p, err := c.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil && cond(p) {
			return p
		}
		select {
		case <-ctx.Done():
			t.Fatalf("pod %s/%s never %s (last: %+v, %v); kubelet log: %s", ns, name, what, podStatus(p), err, c.ComponentLog("kubelet"))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func podStatus(p *corev1.Pod) any {
	if p == nil {
		return nil
	}
	return p.Status
}

func TestPodRunsAndLogsAreReadable(t *testing.T) {
	c := kubetest.Get(t)
	ns := c.Namespace(t)
	ctx := context.Background()
	if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, busyboxPod(c, "hello", "echo hello-from-pod; sleep 300"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p := waitPod(t, c, ns, "hello", "Running", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning })
	if p.Spec.NodeName != kubetest.NodeName {
		t.Fatalf("scheduled on %q, want %q", p.Spec.NodeName, kubetest.NodeName)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		rc, err := c.Client.CoreV1().Pods(ns).GetLogs("hello", &corev1.PodLogOptions{}).Stream(ctx)
		var b []byte
		if err == nil {
			b, _ = io.ReadAll(rc)
			rc.Close()
		}
		if strings.Contains(string(b), "hello-from-pod") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("logs %q, %v", b, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestOOMPodIsOOMKilled(t *testing.T) {
	c := kubetest.Get(t)
	ns := c.Namespace(t)
	// The shell doubles a string until the 24 MiB limit kills it.
	pod := busyboxPod(c, "oom", `x=a; while :; do x="$x$x"; done`)
	lim := corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("24Mi"), corev1.ResourceCPU: resource.MustParse("500m")}
	pod.Spec.Containers[0].Resources = corev1.ResourceRequirements{Limits: lim, Requests: lim}
	if _, err := c.Client.CoreV1().Pods(ns).Create(context.Background(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p := waitPod(t, c, ns, "oom", "terminated", func(p *corev1.Pod) bool {
		return len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].State.Terminated != nil
	})
	term := p.Status.ContainerStatuses[0].State.Terminated
	if term.Reason != "OOMKilled" || term.ExitCode != 137 {
		t.Fatalf("terminated with reason %q, exit code %d; want OOMKilled, 137", term.Reason, term.ExitCode)
	}
	waitPod(t, c, ns, "oom", "Failed", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodFailed })
}

// TestDeletingPodKillsProcess finds the container's process on this machine by a unique
// argument and checks it is gone once the Pod is deleted.
func TestDeletingPodKillsProcess(t *testing.T) {
	c := kubetest.Get(t)
	ns := c.Namespace(t)
	marker := "kubetest-marker-" + ns
	ctx := context.Background()
	if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, busyboxPod(c, "victim", "sleep 3000; echo "+marker), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitPod(t, c, ns, "victim", "Running", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning })
	pids := func() string {
		out, _ := exec.Command("pgrep", "-f", marker).Output()
		return strings.TrimSpace(string(out))
	}
	deadline := time.Now().Add(30 * time.Second)
	for pids() == "" {
		if time.Now().After(deadline) {
			t.Fatalf("no process with %q while the pod runs", marker)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := c.Client.CoreV1().Pods(ns).Delete(ctx, "victim", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(60 * time.Second)
	for {
		left := pids()
		if left == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %s still alive 60 s after the pod's deletion", left)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
