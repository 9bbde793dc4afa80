package kubernetes_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/internal/imagetar"
	"github.com/hodei-jobs/hodei/internal/kubetest"
	"github.com/hodei-jobs/hodei/provider"
	"github.com/hodei-jobs/hodei/provider/kubernetes"
	"github.com/hodei-jobs/hodei/provider/providertest"
)

func TestMain(m *testing.M) { kubetest.Main(m) }

const testInstallation = "inst-test"

var agentImage struct {
	once sync.Once
	ref  string
	err  error
}

// testAgentImage builds the static cmd/hodei-agent into an image FROM scratch holding
// only it as the entrypoint (what make agent-image writes) and imports it into the node.
func testAgentImage(t *testing.T, c *kubetest.Cluster) string {
	t.Helper()
	agentImage.once.Do(func() {
		dir, err := os.MkdirTemp("", "hodei-kube-agent")
		if err != nil {
			agentImage.err = err
			return
		}
		defer os.RemoveAll(dir)
		bin := filepath.Join(dir, "hodei-agent")
		out, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			agentImage.err = err
			return
		}
		build := exec.Command("go", "build", "-o", bin, "./cmd/hodei-agent")
		build.Dir = filepath.Dir(strings.TrimSpace(string(out)))
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			agentImage.err = &buildError{err: err, out: string(out)}
			return
		}
		body, err := os.ReadFile(bin)
		if err != nil {
			agentImage.err = err
			return
		}
		img := imagetar.Image{Tags: []string{"hodei/agent-test:v1"}, Entrypoint: []string{"/hodei-agent"},
			Files: []imagetar.File{{Path: "hodei-agent", Mode: 0o755, Body: body}}}
		tar := filepath.Join(dir, "agent.tar")
		if _, err := imagetar.WriteFile(tar, img); err != nil {
			agentImage.err = err
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := c.ImportImage(ctx, tar); err != nil {
			agentImage.err = err
			return
		}
		agentImage.ref = "hodei/agent-test:v1"
	})
	if agentImage.err != nil {
		t.Fatal(agentImage.err)
	}
	return agentImage.ref
}

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string {
	return "go build ./cmd/hodei-agent: " + e.err.Error() + "\n" + e.out
}

type env struct {
	c  *kubetest.Cluster
	ns string
}

func newEnv(t *testing.T) env {
	c := kubetest.Get(t)
	testAgentImage(t, c)
	return env{c: c, ns: c.Namespace(t)}
}

func (e env) provider(t *testing.T, maxWorkers int, adjust func(*kubernetes.Config)) *kubernetes.Provider {
	t.Helper()
	cfg := kubernetes.Config{REST: e.c.Config, Namespace: e.ns, AgentImage: testAgentImage(t, e.c),
		AgentImagePull: corev1.PullNever, MaxWorkers: maxWorkers, HostNetwork: true, GracePeriod: time.Second,
		Owner: "node-a", Installation: testInstallation}
	if adjust != nil {
		adjust(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := kubernetes.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func (e env) pod(t *testing.T, id string) (*corev1.Pod, bool) {
	t.Helper()
	pod, err := e.c.Client.CoreV1().Pods(e.ns).Get(context.Background(), kubernetes.PodName(id), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return pod, true
}

func (e env) secretExists(t *testing.T, id string) bool {
	t.Helper()
	_, err := e.c.Client.CoreV1().Secrets(e.ns).Get(context.Background(), kubernetes.PodName(id), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	return true
}

// The kubernetes provider passes the provider conformance suite with real pods.
func TestConformance(t *testing.T) {
	e := newEnv(t)
	providertest.Run(t, providertest.Harness{
		New: func(t *testing.T, maxWorkers int) provider.Provider { return e.provider(t, maxWorkers, nil) },
		Spec: func(s provider.WorkerSpec) provider.WorkerSpec {
			s.Image, s.Pull = e.c.BusyboxImage, domain.PullNever
			return s
		},
		Kill: func(t *testing.T, id string) { killAgent(t, id) },
		Exists: func(t *testing.T, id string) bool {
			_, ok := e.pod(t, id)
			return ok || e.secretExists(t, id)
		},
		Exposed: func(t *testing.T, id string) []string {
			pod, ok := e.pod(t, id)
			if !ok {
				t.Fatalf("no pod for worker %s", id)
			}
			spec, err := json.Marshal(pod)
			if err != nil {
				t.Fatal(err)
			}
			seen := []string{string(spec)}
			for _, c := range []string{"hodei-agent", "job"} {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				b, err := e.c.Client.CoreV1().Pods(e.ns).GetLogs(pod.Name, &corev1.PodLogOptions{Container: c}).DoRaw(ctx)
				cancel()
				if err == nil {
					seen = append(seen, string(b))
				}
			}
			return seen
		},
	})
}

// A pod gets restartPolicy Never, the labels, the job's limits as requests and limits,
// the restricted security context, the agent through its init container, the password
// only through a Secret owned by the pod, and activeDeadlineSeconds from the timeout.
func TestPodShape(t *testing.T) {
	e := kubetest.API(t)
	ns := e.Namespace(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := kubernetes.New(ctx, kubernetes.Config{REST: e.Config, Namespace: ns, AgentImage: "hodei/agent:v9",
		Owner: "node-a", Installation: testInstallation, NodeSelector: map[string]string{"disk": "ssd"},
		PodLabels: map[string]string{"team": "ci"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	id := "shape-1"
	err = p.Create(ctx, provider.WorkerSpec{WorkerID: id, OneTimePassword: "otp-s3cr3t", ServerURL: "http://127.0.0.1:1",
		JobID: "job-1", Image: "busybox:1", Pull: domain.PullAlways, Timeout: 90 * time.Second,
		Resources: domain.Resources{CPUMillis: 500, MemoryBytes: 64 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	pod, err := e.Client.CoreV1().Pods(ns).Get(ctx, kubernetes.PodName(id), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	spec, _ := json.Marshal(pod)
	if strings.Contains(string(spec), "otp-s3cr3t") {
		t.Fatal("the password is in the pod")
	}
	if pod.Spec.RestartPolicy != corev1.RestartPolicyNever || pod.Spec.HostNetwork {
		t.Errorf("restartPolicy %s hostNetwork %v; want Never, false", pod.Spec.RestartPolicy, pod.Spec.HostNetwork)
	}
	l := pod.Labels
	if l[kubernetes.LabelWorker] != id || l[kubernetes.LabelJob] != "job-1" || l[kubernetes.LabelOwner] != "node-a" ||
		l[kubernetes.LabelInstallation] != testInstallation || l["team"] != "ci" {
		t.Errorf("labels %v", l)
	}
	if pod.Spec.NodeSelector["disk"] != "ssd" {
		t.Errorf("node selector %v", pod.Spec.NodeSelector)
	}
	if d := pod.Spec.ActiveDeadlineSeconds; d == nil || *d != 150 {
		t.Errorf("activeDeadlineSeconds %v; want 150 (90s timeout + 1m grace)", d)
	}
	if len(pod.Spec.InitContainers) != 1 || pod.Spec.InitContainers[0].Image != "hodei/agent:v9" {
		t.Fatalf("init containers %+v; want the agent image", pod.Spec.InitContainers)
	}
	job := pod.Spec.Containers[0]
	if job.Image != "busybox:1" || job.ImagePullPolicy != corev1.PullAlways || strings.Join(job.Command, " ") != kubernetes.AgentPath {
		t.Errorf("job container image %s pull %s command %v", job.Image, job.ImagePullPolicy, job.Command)
	}
	lim, req := job.Resources.Limits, job.Resources.Requests
	if lim.Cpu().MilliValue() != 500 || lim.Memory().Value() != 64<<20 || req.Cpu().MilliValue() != 500 || req.Memory().Value() != 64<<20 {
		t.Errorf("resources %+v; want 500m / 64Mi as requests and limits", job.Resources)
	}
	sc := job.SecurityContext
	if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.Capabilities == nil ||
		len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" || sc.SeccompProfile == nil ||
		sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("security context %+v; want no escalation, drop ALL, RuntimeDefault", sc)
	}
	var fromSecret bool
	for _, v := range job.Env {
		if v.Name == kubernetes.EnvOTP && v.ValueFrom != nil && v.ValueFrom.SecretKeyRef != nil &&
			v.ValueFrom.SecretKeyRef.Name == pod.Name {
			fromSecret = true
		}
	}
	if !fromSecret {
		t.Errorf("env %+v; want %s from the pod's Secret", job.Env, kubernetes.EnvOTP)
	}
	sec, err := e.Client.CoreV1().Secrets(ns).Get(ctx, pod.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if string(sec.Data[kubernetes.SecretKey]) != "otp-s3cr3t" || len(sec.OwnerReferences) != 1 ||
		sec.OwnerReferences[0].UID != pod.UID || sec.OwnerReferences[0].Kind != "Pod" {
		t.Errorf("secret %+v; want the password, owned by the pod", sec.ObjectMeta)
	}
	// Deleting the pod from outside takes the Secret with it (the garbage collector).
	if err := e.Client.CoreV1().Pods(ns).Delete(ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64(0))}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the Secret is garbage-collected with its pod", 60*time.Second, func() bool {
		_, err := e.Client.CoreV1().Secrets(ns).Get(ctx, pod.Name, metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	})
}

// A pod the scheduler cannot place (a node selector nothing matches) is reported as an
// exit with the scheduler's message after the unschedulable timeout.
func TestUnschedulableIsReported(t *testing.T) {
	e := kubetest.API(t)
	ns := e.Namespace(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := kubernetes.New(ctx, kubernetes.Config{REST: e.Config, Namespace: ns, AgentImage: "hodei/agent:v9",
		Owner: "node-a", Installation: testInstallation, NodeSelector: map[string]string{"hodei.test/nothing": "matches"},
		UnschedulableTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	exits := make(chan error, 4)
	p.OnExit(func(id string, err error) {
		if id == "unsched-1" {
			exits <- err
		}
	})
	if err := p.Create(ctx, provider.WorkerSpec{WorkerID: "unsched-1", OneTimePassword: "x", ServerURL: "http://127.0.0.1:1",
		Image: "busybox:1"}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exits:
		if err == nil || !strings.Contains(err.Error(), "unschedulable") || provider.IsPermanent(err) {
			t.Fatalf("exit %v; want a non-permanent unschedulable exit with the scheduler's message", err)
		}
		t.Logf("exit: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("no exit within 60s for an unschedulable pod")
	}
}

// A job image the node does not have, under --pull never, is a permanent exit naming
// the image within seconds.
func TestMissingImageIsPermanentExit(t *testing.T) {
	e := newEnv(t)
	p := e.provider(t, 4, nil)
	exits := make(chan error, 4)
	p.OnExit(func(id string, err error) {
		if id == "noimg-1" {
			exits <- err
		}
	})
	ctx := context.Background()
	start := time.Now()
	if err := p.Create(ctx, provider.WorkerSpec{WorkerID: "noimg-1", OneTimePassword: "x", ServerURL: "http://127.0.0.1:1",
		Image: "hodei/does-not-exist:1", Pull: domain.PullNever}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exits:
		if err == nil || !provider.IsPermanent(err) || !strings.Contains(err.Error(), "hodei/does-not-exist:1") {
			t.Fatalf("exit %v; want a permanent error naming the image", err)
		}
		t.Logf("reported in %s: %v", time.Since(start).Round(time.Millisecond), err)
	case <-time.After(60 * time.Second):
		t.Fatal("no exit within 60s for a missing image")
	}
	if err := p.Destroy(ctx, "noimg-1"); err != nil {
		t.Fatal(err)
	}
}

// killAgent SIGKILLs the worker's agent process on this machine (the node is local):
// its container ends with exit code 137, as a kill from outside would end it.
func killAgent(t *testing.T, id string) {
	t.Helper()
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	killed := 0
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", d.Name(), "environ"))
		if err != nil || !slices.Contains(strings.Split(string(env), "\x00"), kubernetes.EnvWorkerID+"="+id) {
			continue
		}
		if syscall.Kill(pid, syscall.SIGKILL) == nil {
			killed++
		}
	}
	if killed == 0 {
		t.Fatalf("no process of worker %s found", id)
	}
}

func waitFor(t *testing.T, what string, d time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting until %s", d, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
