package kubetest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hodei-jobs/hodei/internal/imagetar"
)

const installHint = `install the node's Debian packages with
    apt-get install -y etcd-server containerd runc containernetworking-plugins busybox-static
(or run "make test-kube" / "make test", which run scripts/ensure-kube.sh)`

// sysctlsChanged are the kernel settings the kubelet changes at start; StartNode
// records them and Stop restores them.
var sysctlsChanged = []string{"kernel/panic", "kernel/panic_on_oops", "vm/overcommit_memory"}

func shortHash(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:6])
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// StartNode adds containerd (CRI) and a kubelet to an API-only cluster and waits until
// the node is Ready. Start with Options{Node: true} calls it.
func (c *Cluster) StartNode(ctx context.Context) error {
	if c.kubelet != nil {
		return nil
	}
	if err := c.startNode(ctx); err != nil {
		return fmt.Errorf("kubetest: node: %w", err)
	}
	c.Node = NodeName
	c.Timings.NodeReady = time.Since(c.started)
	return nil
}

func (c *Cluster) startNode(ctx context.Context) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("a kubelet and containerd need root (running as uid %d)", os.Geteuid())
	}
	var bins = map[string]string{}
	for _, b := range []string{"containerd", "ctr", "runc", "containerd-shim-runc-v2"} {
		p, err := exec.LookPath(b)
		if err != nil {
			return fmt.Errorf("%s not found: %s", b, installHint)
		}
		bins[b] = p
	}
	if _, err := os.Stat("/usr/lib/cni/loopback"); err != nil {
		return fmt.Errorf("/usr/lib/cni/loopback not found: %s", installHint)
	}
	// The images: pause (built here) and busybox, written as docker-archive tars.
	pauseBin := c.path("pause")
	pauseErr := make(chan error, 1)
	go func() { pauseErr <- buildPause(ctx, pauseBin) }()

	c.sysctls = map[string]string{}
	for _, k := range sysctlsChanged {
		if b, err := os.ReadFile("/proc/sys/" + k); err == nil {
			c.sysctls[k] = strings.TrimSpace(string(b))
		}
	}
	c.cgroupRoot = "/hodei-kubetest-" + randomHex(4)
	if err := makeCgroupRoot(c.cgroupRoot); err != nil {
		return err
	}
	c.snapshotter = "overlayfs"
	if err := probeOverlay(c.path("overlay-probe")); err != nil {
		// A chroot or a file system that cannot hold overlay mounts (as dockertest's
		// vfs fallback): the native snapshotter copies layers but works everywhere.
		c.snapshotter = "native"
	}
	ports, err := freePorts(3)
	if err != nil {
		return err
	}
	kubeletPort, healthzPort := ports[0], ports[1]
	c.ctrSocket = c.path("containerd.sock")
	cniDir := c.path("cni")
	if err := os.MkdirAll(cniDir, 0o755); err != nil {
		return err
	}
	// A loopback-only CNI network: the runtime reports its network ready (so does the
	// node), and Pods use hostNetwork; no bridge, no addresses.
	if err := os.WriteFile(filepath.Join(cniDir, "10-loopback.conflist"),
		[]byte(`{"cniVersion": "0.4.0", "name": "lo", "plugins": [{"type": "loopback"}]}`), 0o644); err != nil {
		return err
	}
	cfg := fmt.Sprintf(`version = 2
root = %q
state = %q

[grpc]
  address = %q

[ttrpc]
  address = %q

[debug]
  level = "warn"

[plugins."io.containerd.internal.v1.opt"]
  path = %q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  enable_selinux = false
  disable_apparmor = true
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = %q
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = %q
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %q
`, c.path("containerd", "root"), c.path("containerd", "state"), c.ctrSocket, c.ctrSocket+".ttrpc",
		c.path("containerd", "opt"), PauseImage, c.snapshotter, c.path("runc"), cniDir)
	if err := os.WriteFile(c.path("containerd.toml"), []byte(cfg), 0o644); err != nil {
		return err
	}
	c.containerd, err = startWithMountRoot(c.Dir, "containerd", bins["containerd"], "--config", c.path("containerd.toml"))
	if err != nil {
		return err
	}
	if err := waitFor(ctx, 60*time.Second, c.containerd, "containerd", func() error {
		_, err := c.ctr(ctx, "version")
		return err
	}); err != nil {
		return err
	}
	if err := <-pauseErr; err != nil {
		return err
	}
	pause, err := os.ReadFile(pauseBin)
	if err != nil {
		return err
	}
	bb, err := busyboxImage()
	if err != nil {
		return err
	}
	for _, img := range []imagetar.Image{
		{Tags: []string{PauseImage}, Entrypoint: []string{"/pause"}, Files: []imagetar.File{{Path: "pause", Mode: 0o755, Body: pause}}},
		bb,
	} {
		tarPath := c.path("images", strings.NewReplacer("/", "_", ":", "_").Replace(img.Tags[0])+".tar")
		if err := os.MkdirAll(filepath.Dir(tarPath), 0o755); err != nil {
			return err
		}
		if _, err := imagetar.WriteFile(tarPath, img); err != nil {
			return err
		}
		if err := c.ImportImage(ctx, tarPath); err != nil {
			return err
		}
	}
	c.BusyboxImage = bb.Tags[0]

	kcfg := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: %d
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: %d
cgroupDriver: cgroupfs
cgroupRoot: %s
failSwapOn: false
failCgroupV1: false
containerRuntimeEndpoint: unix://%s
podLogsDir: %s
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "1Mi"
  nodefs.available: "1%%"
  nodefs.inodesFree: "1%%"
  imagefs.available: "1%%"
serializeImagePulls: false
resolvConf: /etc/resolv.conf
nodeStatusUpdateFrequency: 4s
`, kubeletPort, healthzPort, c.cgroupRoot, c.ctrSocket, c.path("pod-logs"))
	if err := os.WriteFile(c.path("kubelet.yaml"), []byte(kcfg), 0o644); err != nil {
		return err
	}
	// kubelet looks up the mount point of its root dir in mountinfo; in a chroot (a
	// fresh CI machine) no mount covers the temp dir, so it becomes one (a bind mount
	// onto itself; teardown unmounts everything under the temp dir).
	if err := os.MkdirAll(c.path("kubelet"), 0o755); err != nil {
		return err
	}
	if err := syscall.Mount(c.path("kubelet"), c.path("kubelet"), "", syscall.MS_BIND, ""); err != nil {
		return fmt.Errorf("kubetest: bind-mount the kubelet root dir: %w", err)
	}
	c.kubelet, err = startProc(c.Dir, "kubelet", filepath.Join(c.bins, "kubelet"),
		"--config="+c.path("kubelet.yaml"), "--kubeconfig="+c.Kubeconfig,
		"--root-dir="+c.path("kubelet"), "--cert-dir="+c.path("kubelet-pki"),
		"--hostname-override="+NodeName, "--v=0")
	if err != nil {
		return err
	}
	return waitFor(ctx, 120*time.Second, c.kubelet, "node "+NodeName+" Ready", func() error {
		n, err := c.Client.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady {
				if cond.Status == corev1.ConditionTrue {
					return nil
				}
				return fmt.Errorf("Ready=%s: %s", cond.Status, cond.Message)
			}
		}
		return fmt.Errorf("no Ready condition yet")
	})
}

// ctr runs containerd's ctr against the node's containerd in the k8s.io namespace
// (the CRI plugin's).
func (c *Cluster) ctr(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "ctr", append([]string{"--address", c.ctrSocket, "--namespace", "k8s.io"}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, tail(string(out), 1000))
	}
	return string(out), nil
}

// ImportImage imports a docker-archive tar (docker save's format, or
// internal/imagetar's) into the node's containerd, where Pods with
// imagePullPolicy: Never find it by its tag.
func (c *Cluster) ImportImage(ctx context.Context, tarPath string) error {
	if c.containerd == nil {
		return errNoNode
	}
	if _, err := c.ctr(ctx, "images", "import", "--snapshotter", c.snapshotter, tarPath); err != nil {
		return fmt.Errorf("kubetest: import %s: %w", tarPath, err)
	}
	return nil
}

// probeOverlay mounts a small overlay under dir and unmounts it.
func probeOverlay(dir string) error {
	defer os.RemoveAll(dir)
	var ds []string
	for _, d := range []string{"lower", "upper", "work", "merged"} {
		ds = append(ds, filepath.Join(dir, d))
		if err := os.MkdirAll(ds[len(ds)-1], 0o755); err != nil {
			return err
		}
	}
	if err := syscall.Mount("overlay", ds[3], "overlay", 0,
		"lowerdir="+ds[0]+",upperdir="+ds[1]+",workdir="+ds[2]); err != nil {
		return err
	}
	return syscall.Unmount(ds[3], 0)
}

// cgroupHierarchies returns the cgroup (v1, and the v2 "unified") mount points under
// /sys/fs/cgroup, one per hierarchy (cpu and cpuacct are often links to one).
func cgroupHierarchies() []string {
	entries, _ := os.ReadDir("/sys/fs/cgroup")
	seen := map[string]bool{}
	var out []string
	for _, e := range entries {
		p, err := filepath.EvalSymlinks(filepath.Join("/sys/fs/cgroup", e.Name()))
		if err != nil || seen[p] {
			continue
		}
		if st, err := os.Stat(p); err != nil || !st.IsDir() {
			continue
		}
		seen[p] = true
		out = append(out, p)
	}
	return out
}

// makeCgroupRoot creates the kubelet's --cgroup-root in every hierarchy: each test
// binary's kubelet has its own "kubepods" tree, so that two clusters on one machine do
// not remove each other's Pod cgroups.
func makeCgroupRoot(root string) error {
	for _, h := range cgroupHierarchies() {
		d := filepath.Join(h, root)
		if err := os.Mkdir(d, 0o755); err != nil && !os.IsExist(err) {
			return fmt.Errorf("cgroup %s: %w", d, err)
		}
		// A new cpuset cgroup starts with no CPUs and memory nodes: copy the parent's.
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			if b, err := os.ReadFile(filepath.Join(h, f)); err == nil {
				_ = os.WriteFile(filepath.Join(d, f), b, 0o644)
			}
		}
	}
	return nil
}

// removeCgroupRoot kills what is left in root's cgroups and removes them, leaves first.
func removeCgroupRoot(root string) {
	for _, h := range cgroupHierarchies() {
		top := filepath.Join(h, root)
		var dirs []string
		_ = filepath.WalkDir(top, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
		for _, d := range dirs {
			if b, err := os.ReadFile(filepath.Join(d, "cgroup.procs")); err == nil {
				for _, f := range strings.Fields(string(b)) {
					if pid, err := strconv.Atoi(f); err == nil {
						_ = syscall.Kill(pid, syscall.SIGKILL)
					}
				}
			}
			for i := 0; i < 50; i++ {
				if err := syscall.Rmdir(d); err == nil || os.IsNotExist(err) {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	}
}

// unmountUnder detaches every mount point below dir (deepest first).
func unmountUnder(dir string) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var points []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			points = append(points, f[4])
		}
	}
	sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	for _, p := range points {
		_ = syscall.Unmount(p, syscall.MNT_DETACH)
	}
}

// Stop tears the cluster down in the order that leaves nothing: Pods deleted, kubelet
// stopped, containerd's remaining tasks and containers removed (their shims exit),
// containerd, the controllers, the API server and etcd stopped, mounts under the
// directory detached, the cgroups removed, the kubelet's sysctls restored, and the
// directory removed. It is safe on a partly started cluster.
func (c *Cluster) Stop() {
	if c == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if c.kubelet != nil && !c.kubelet.exited() && c.Client != nil {
		c.deleteAllPods(ctx)
	}
	c.kubelet.stop(15 * time.Second)
	if c.containerd != nil && !c.containerd.exited() {
		if out, err := c.ctr(ctx, "tasks", "ls", "-q"); err == nil {
			for _, id := range strings.Fields(out) {
				_, _ = c.ctr(ctx, "tasks", "kill", "-s", "SIGKILL", id)
				_, _ = c.ctr(ctx, "tasks", "delete", "-f", id)
			}
		}
		if out, err := c.ctr(ctx, "containers", "ls", "-q"); err == nil {
			for _, id := range strings.Fields(out) {
				_, _ = c.ctr(ctx, "containers", "delete", id)
			}
		}
	}
	c.containerd.stop(15 * time.Second)
	c.controllers.stop(10 * time.Second)
	c.scheduler.stop(10 * time.Second)
	c.apiserver.stop(20 * time.Second)
	c.etcd.stop(10 * time.Second)
	if c.Dir != "" {
		unmountUnder(c.Dir)
	}
	if c.cgroupRoot != "" {
		removeCgroupRoot(c.cgroupRoot)
	}
	for k, v := range c.sysctls {
		_ = os.WriteFile("/proc/sys/"+k, []byte(v), 0o644)
	}
	if c.Dir != "" {
		_ = os.RemoveAll(c.Dir)
	}
}

// deleteAllPods deletes every Pod (1 s grace) and waits up to 30 s until the kubelet has
// stopped them all.
func (c *Cluster) deleteAllPods(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	grace := int64(1)
	for {
		pods, err := c.Client.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
		if err != nil || len(pods.Items) == 0 {
			return
		}
		for _, p := range pods.Items {
			if p.DeletionTimestamp == nil {
				_ = c.Client.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &grace})
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}
