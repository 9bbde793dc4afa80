package kubetest

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/hodei-jobs/hodei/internal/imagetar"
)

// serviceIP is the first address of --service-cluster-ip-range (the "kubernetes"
// Service). Nothing is routed to it: Pods use the host's network.
const (
	serviceRange = "10.231.0.0/24"
	serviceIP    = "10.231.0.1"
)

// NodeName is the name of the node a node cluster registers (--hostname-override):
// an IP, so that its InternalIP is loopback and the API server reaches the kubelet
// (logs, exec) over 127.0.0.1.
const NodeName = "127.0.0.1"

// Images the node has without a registry (imported at start).
const (
	PauseImage = "hodei-test/pause:1"
)

// Timings are the durations of a cluster's start, measured from the empty directory.
type Timings struct {
	APIReady  time.Duration // etcd and kube-apiserver answering /readyz
	NodeReady time.Duration // the node Ready (0 for an API-only cluster)
}

// Cluster is a running test cluster: etcd, kube-apiserver, kube-scheduler and
// kube-controller-manager, and for a node cluster containerd (CRI) and a kubelet.
type Cluster struct {
	// Config reaches the API server as an admin (O=system:masters).
	Config *rest.Config
	// Kubeconfig is the path of a kubeconfig file with the same credentials.
	Kubeconfig string
	// Client is a clientset on Config.
	Client kubernetes.Interface
	// Node is NodeName for a node cluster, "" for an API-only one.
	Node string
	// BusyboxImage is a job image on the node (Debian's static busybox, PATH=/bin),
	// "" for an API-only cluster.
	BusyboxImage string
	// Dir holds everything of the cluster (removed by Stop).
	Dir string
	// Timings of the start.
	Timings Timings

	started time.Time
	pki     *pki
	bins    string

	etcd, apiserver, scheduler, controllers *proc
	containerd, kubelet                     *proc

	ctrSocket   string
	snapshotter string
	cgroupRoot  string
	sysctls     map[string]string
}

// Options choose what Start runs.
type Options struct {
	// Node adds containerd and a kubelet (needs root, cgroups, runc).
	Node bool
}

// Start starts a cluster in a fresh temporary directory. Stop ends it and removes
// everything it made.
func Start(ctx context.Context, opts Options) (c *Cluster, err error) {
	dir, err := os.MkdirTemp("", "hk")
	if err != nil {
		return nil, err
	}
	c = &Cluster{Dir: dir, started: time.Now()}
	defer func() {
		if err != nil {
			c.Stop()
			c = nil
		}
	}()
	if c.bins, err = Binaries(ctx); err != nil {
		return nil, fmt.Errorf("kubetest: Kubernetes binaries: %w", err)
	}
	// Timings count from here: the binaries exist, the directories are empty.
	c.started = time.Now()
	if c.pki, err = newPKI(dir); err != nil {
		return nil, fmt.Errorf("kubetest: certificates: %w", err)
	}
	if err := c.startAPI(ctx); err != nil {
		return nil, fmt.Errorf("kubetest: %w", err)
	}
	c.Timings.APIReady = time.Since(c.started)
	if opts.Node {
		if err := c.StartNode(ctx); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func (c *Cluster) path(parts ...string) string {
	return filepath.Join(append([]string{c.Dir}, parts...)...)
}

func (c *Cluster) startAPI(ctx context.Context) error {
	etcdBin, err := exec.LookPath("etcd")
	if err != nil {
		return fmt.Errorf("etcd not found: %s", installHint)
	}
	ports, err := freePorts(5)
	if err != nil {
		return err
	}
	etcdClient, etcdPeer, apiPort, schedPort, cmPort := ports[0], ports[1], ports[2], ports[3], ports[4]
	clientURL := "http://127.0.0.1:" + strconv.Itoa(etcdClient)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(etcdPeer)
	c.etcd, err = startProc(c.Dir, "etcd", etcdBin,
		"--name=kubetest", "--data-dir="+c.path("etcd"),
		"--listen-client-urls="+clientURL, "--advertise-client-urls="+clientURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=kubetest="+peerURL, "--logger=zap", "--log-level=warn")
	if err != nil {
		return err
	}
	if err := waitFor(ctx, 60*time.Second, c.etcd, "etcd health", func() error {
		resp, err := http.Get(clientURL + "/health")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if !bytes.Contains(b, []byte(`"true"`)) {
			return fmt.Errorf("health %s", b)
		}
		return nil
	}); err != nil {
		return err
	}
	p := c.pki
	c.apiserver, err = startProc(c.Dir, "kube-apiserver", filepath.Join(c.bins, "kube-apiserver"),
		"--etcd-servers="+clientURL,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", "--secure-port="+strconv.Itoa(apiPort),
		"--tls-cert-file="+p.serverCert, "--tls-private-key-file="+p.serverKey,
		"--client-ca-file="+p.caCert,
		"--service-account-key-file="+p.saPub, "--service-account-signing-key-file="+p.saKey,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-cluster-ip-range="+serviceRange,
		"--endpoint-reconciler-type=none",
		// RBAC, so that Roles mean something (SubjectAccessReview); the components and
		// the tests are system:masters.
		"--authorization-mode=RBAC",
		"--kubelet-preferred-address-types=InternalIP,Hostname",
		"--kubelet-client-certificate="+p.adminCert, "--kubelet-client-key="+p.adminKey,
		"--allow-privileged=true",
		"--profiling=false",
		"--v=0")
	if err != nil {
		return err
	}
	host := "https://127.0.0.1:" + strconv.Itoa(apiPort)
	c.Config = &rest.Config{
		Host:            host,
		TLSClientConfig: rest.TLSClientConfig{CAData: p.caPEM, CertData: p.adminCertPEM, KeyData: p.adminKeyPEM},
		QPS:             100, Burst: 200,
		Timeout: 60 * time.Second,
	}
	c.Kubeconfig = c.path("admin.kubeconfig")
	if err := os.WriteFile(c.Kubeconfig, []byte(kubeconfig(host, p)), 0o600); err != nil {
		return err
	}
	if c.Client, err = kubernetes.NewForConfig(c.Config); err != nil {
		return err
	}
	if err := waitFor(ctx, 120*time.Second, c.apiserver, "kube-apiserver /readyz", func() error {
		b, err := c.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err != nil {
			return fmt.Errorf("%w: %s", err, b)
		}
		return nil
	}); err != nil {
		return err
	}
	common := func(port int, name string) []string {
		return []string{"--kubeconfig=" + c.Kubeconfig,
			"--authentication-kubeconfig=" + c.Kubeconfig, "--authorization-kubeconfig=" + c.Kubeconfig,
			"--leader-elect=false", "--bind-address=127.0.0.1", "--secure-port=" + strconv.Itoa(port),
			"--cert-dir=" + c.path(name), "--profiling=false", "--v=0"}
	}
	c.scheduler, err = startProc(c.Dir, "kube-scheduler", filepath.Join(c.bins, "kube-scheduler"), common(schedPort, "scheduler")...)
	if err != nil {
		return err
	}
	c.controllers, err = startProc(c.Dir, "kube-controller-manager", filepath.Join(c.bins, "kube-controller-manager"),
		append(common(cmPort, "controller-manager"),
			"--service-account-private-key-file="+p.saKey, "--root-ca-file="+p.caCert,
			"--use-service-account-credentials=false",
			"--node-monitor-grace-period=40s")...)
	return err
}

func kubeconfig(host string, p *pki) string {
	b64 := base64.StdEncoding.EncodeToString
	return `apiVersion: v1
kind: Config
clusters:
- name: kubetest
  cluster:
    server: ` + host + `
    certificate-authority-data: ` + b64(p.caPEM) + `
users:
- name: admin
  user:
    client-certificate-data: ` + b64(p.adminCertPEM) + `
    client-key-data: ` + b64(p.adminKeyPEM) + `
contexts:
- name: kubetest
  context:
    cluster: kubetest
    user: admin
current-context: kubetest
`
}

// waitFor polls check every 50 ms (100 ms after the first second) until it succeeds,
// p exits, or timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, p *proc, what string, check func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	var last error
	for {
		if last = check(); last == nil {
			return nil
		}
		if p != nil && p.exited() {
			return fmt.Errorf("waiting for %s: %w", what, p.errExited())
		}
		d := 50 * time.Millisecond
		if time.Since(start) > time.Second {
			d = 100 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			msg := ""
			if p != nil {
				msg = "; " + p.name + " log: " + tailFile(p.log, 2500)
			}
			return fmt.Errorf("waiting for %s: %v (last: %v)%s", what, ctx.Err(), last, msg)
		case <-time.After(d):
		}
	}
}

// Namespace creates a namespace for the test (deleted at its end) and waits until its
// "default" ServiceAccount exists (the controller-manager makes it; Pods are refused
// before).
func (c *Cluster) Namespace(t interface {
	Helper()
	Fatalf(string, ...any)
	Cleanup(func())
	Name() string
}) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	ns, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "kt-", Labels: map[string]string{"hodei.test": sanitizeLabel(t.Name())}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("kubetest: create namespace: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = c.Client.CoreV1().Namespaces().Delete(ctx, ns.Name, metav1.DeleteOptions{})
	})
	if err := c.waitServiceAccount(ctx, ns.Name); err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	return ns.Name
}

func (c *Cluster) waitServiceAccount(ctx context.Context, ns string) error {
	for {
		_, err := c.Client.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		if err == nil {
			return nil
		}
		if !apierrors.IsNotFound(err) {
			return fmt.Errorf("service account %s/default: %w", ns, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("service account %s/default not created by the controller-manager: %w; log: %s",
				ns, ctx.Err(), tailFile(c.controllers.log, 1500))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func sanitizeLabel(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' {
			b.WriteRune(r)
		} else {
			b.WriteRune('_')
		}
		if b.Len() >= 60 {
			break
		}
	}
	return strings.Trim(b.String(), "-_.")
}

// ComponentLog returns the end of a component's log ("etcd", "kube-apiserver",
// "kube-scheduler", "kube-controller-manager", "containerd", "kubelet"), for test
// failure messages.
func (c *Cluster) ComponentLog(name string) string {
	return tailFile(c.path("logs", name+".log"), 4000)
}

// busyboxTag names the busybox image by its binary's hash.
func busyboxImage() (imagetar.Image, error) {
	img, err := imagetar.Busybox("hodei-test/busybox:latest")
	if err != nil {
		return img, err
	}
	for _, f := range img.Files {
		if f.Path == "bin/busybox" {
			img.Tags = []string{"hodei-test/busybox:" + shortHash(f.Body)}
		}
	}
	return img, nil
}

var errNoNode = errors.New("kubetest: this cluster has no node (started API-only)")
