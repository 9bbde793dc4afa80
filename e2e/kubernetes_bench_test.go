package e2e

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	hodeiv1 "github.com/hodei-jobs/hodei/gen/hodei/v1"
	"github.com/hodei-jobs/hodei/internal/kubetest"
)

// BenchmarkKubernetesSubmitToRunning measures, on the test cluster's node, the time from
// SubmitJob to the job's RUNNING on the kubernetes provider (worker Pod with the agent
// injected by an init container, its Secret, registration, RunJob), and in the same run
// the time a bare Pod of the same image, created through client-go, takes to reach
// Running: the floor the provider builds on. One job and one Pod per iteration, one at
// a time; it reports p50/p95 of both and their ratio. Run it with a fixed count:
//
//	go test ./e2e -run '^$' -bench KubernetesSubmitToRunning -benchtime 20x
func BenchmarkKubernetesSubmitToRunning(b *testing.B) {
	c := kubetest.Get(b)
	agent := kubeAgentImage(b, c)
	ns := c.Namespace(b)
	s := startKubeDev(b, c, ns, agent)
	ctx := context.Background()
	var jobs, pods []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		jobs = append(jobs, kubeJobToRunning(b, ctx, s, c.BusyboxImage))
		pods = append(pods, barePodToRunning(b, ctx, c, ns, fmt.Sprintf("bare-%d", i)))
	}
	b.StopTimer()
	jp50, jp95 := percentile(jobs, 50), percentile(jobs, 95)
	pp50, pp95 := percentile(pods, 50), percentile(pods, 95)
	b.ReportMetric(jp50.Seconds()*1000, "job-p50-ms")
	b.ReportMetric(jp95.Seconds()*1000, "job-p95-ms")
	b.ReportMetric(pp50.Seconds()*1000, "pod-p50-ms")
	b.ReportMetric(pp95.Seconds()*1000, "pod-p95-ms")
	b.ReportMetric(jp50.Seconds()/pp50.Seconds(), "p50-ratio")
	b.Logf("%d samples: submit→RUNNING p50 %s p95 %s; bare Pod→Running p50 %s p95 %s; ratio of p50s %.2f",
		len(jobs), jp50, jp95, pp50, pp95, jp50.Seconds()/pp50.Seconds())
}

// kubeJobToRunning submits a short job on the kubernetes provider, returns the time to
// its RUNNING (polled every 10 ms) and waits for it to succeed.
func kubeJobToRunning(b *testing.B, ctx context.Context, s *server, image string) time.Duration {
	b.Helper()
	spec := &hodeiv1.JobSpec{Command: []string{"sh", "-c", "sleep 1"}, Image: image, Pull: "never", Provider: "kubernetes"}
	began := time.Now()
	res, err := s.api.SubmitJob(ctx, connect.NewRequest(&hodeiv1.SubmitJobRequest{Spec: spec}))
	if err != nil {
		b.Fatalf("submit: %v", err)
	}
	id := res.Msg.GetJob().GetId()
	var took time.Duration
	deadline := time.Now().Add(2 * time.Minute)
	for took == 0 {
		g, err := s.api.GetJob(ctx, connect.NewRequest(&hodeiv1.GetJobRequest{Id: id}))
		if err != nil {
			b.Fatalf("get job %s: %v", id, err)
		}
		switch st := g.Msg.GetJob().GetState(); st {
		case "RUNNING", "SUCCEEDED":
			took = time.Since(began)
		case "FAILED", "CANCELLED", "TIMED_OUT", "MANUAL_INTERVENTION_REQUIRED":
			b.Fatalf("job %s ended %s (%s) before RUNNING", id, st, g.Msg.GetJob().GetLastError())
		}
		if time.Now().After(deadline) {
			b.Fatalf("job %s not RUNNING within 2m", id)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st := s.waitJobState(id, "ended", 2*time.Minute); st != "SUCCEEDED" {
		b.Fatalf("job %s ended %s", id, st)
	}
	return took
}

// barePodToRunning creates a Pod of the busybox image (host network, as the
// provider's), returns the time to its Running phase and deletes it.
func barePodToRunning(b *testing.B, ctx context.Context, c *kubetest.Cluster, ns, name string) time.Duration {
	b.Helper()
	no := false
	grace := int64(0)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{HostNetwork: true, RestartPolicy: corev1.RestartPolicyNever, AutomountServiceAccountToken: &no,
			TerminationGracePeriodSeconds: &grace,
			Containers: []corev1.Container{{Name: "main", Image: c.BusyboxImage, ImagePullPolicy: corev1.PullNever,
				Command: []string{"sh", "-c", "sleep 1"}}}},
	}
	began := time.Now()
	if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		b.Fatalf("create pod: %v", err)
	}
	defer func() {
		_ = c.Client.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &grace})
	}()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		p, err := c.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil && (p.Status.Phase == corev1.PodRunning || p.Status.Phase == corev1.PodSucceeded) {
			return time.Since(began)
		}
		if err == nil && p.Status.Phase == corev1.PodFailed {
			b.Fatalf("pod %s failed: %+v", name, p.Status)
		}
		if time.Now().After(deadline) {
			b.Fatalf("pod %s not Running within 2m (%v)", name, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// percentile returns the p-th percentile of ds (nearest rank).
func percentile(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[max(i-1, 0)]
}
