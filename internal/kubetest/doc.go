// Package kubetest gives tests a real single-node Kubernetes cluster: client-go talks
// to a real kube-apiserver, and Pods run as real containers on this machine.
//
// # Use
//
//	func TestMain(m *testing.M) { kubetest.Main(m) }   // or pgtest.Main(kubetest.Wrap(m))
//
//	c := kubetest.Get(t)      // a cluster with its node Ready (started on first use)
//	c := kubetest.API(t)      // API only: no node (Pods stay Pending); cheaper, no root
//	ns := c.Namespace(t)      // a fresh namespace, deleted at the test's end
//	c.Client, c.Config        // kubernetes.Interface and *rest.Config (admin)
//	c.Kubeconfig              // a kubeconfig file with the same credentials
//	c.Node                    // "127.0.0.1" (NodeName), "" for API-only
//	c.BusyboxImage            // a job image on the node (imagePullPolicy: Never)
//	c.ImportImage(ctx, tar)   // a docker-archive tar into containerd's k8s.io namespace
//	c.ComponentLog("kubelet") // the end of a component's log, for failure messages
//
// One cluster per test binary, started by the first Get or API and stopped by Main's
// wrapper; Get on an API-only cluster adds the node to it. Tests fail (never skip)
// when it cannot start, with the command that installs what is missing.
//
// # What runs
//
// Everything under a fresh temporary directory (/tmp/hkNNN), on 127.0.0.1 and free
// ports:
//
//   - etcd (Debian etcd-server);
//   - kube-apiserver with its own CA, a serving certificate for 127.0.0.1/localhost and
//     an admin client certificate (O=system:masters), all made with crypto/x509, and an
//     RSA service-account key; --authorization-mode=RBAC (Roles mean something:
//     SubjectAccessReview answers as on a real cluster);
//   - kube-scheduler (Unschedulable conditions are real) and kube-controller-manager
//     (garbage collector: a Secret owned by a Pod goes with it; the service-account
//     and root-CA controllers make each namespace's "default" ServiceAccount and
//     kube-root-ca.crt, which Namespace waits for). Both use the admin kubeconfig and
//     no leader election. They run in the API-only mode too.
//   - node only: containerd (Debian, CRI plugin, private root/state/socket,
//     restrict_oom_score_adj = true because this machine's bounding set lacks
//     CAP_SYS_RESOURCE, overlayfs, or the native snapshotter when an overlay mount
//     fails, e.g. in a chroot; runc root under the directory; a loopback-only CNI
//     network so that the node is Ready) and a kubelet (cgroupfs, failCgroupV1: false,
//     --hostname-override=127.0.0.1 so the node's InternalIP is loopback and
//     apiserver→kubelet traffic (logs, exec) stays on it, anonymous auth with
//     AlwaysAllow, image GC thresholds 100/99, low evictionHard, its own cgroup root
//     /hodei-kubetest-XXXX in every hierarchy so that two test binaries' kubelets never
//     garbage-collect each other's Pod cgroups, Pod logs under the directory).
//
// Pods must use hostNetwork: true (no bridge or NAT is allowed on the test machines)
// and imagePullPolicy: Never (there is no registry). The pause image is a tiny static
// Go program (./pause: blocks until SIGTERM, reaps orphans) built at start and put FROM
// scratch with internal/imagetar; the busybox image holds Debian's busybox-static.
//
// # Binaries
//
// kube-apiserver, kubelet, kube-scheduler and kube-controller-manager (Version) are
// taken from ~/.cache/hodei/kube/<Version>/ (or HODEI_TEST_KUBE_BIN_DIR), else built
// there from the Go module proxy with the wrapper module in kubebuild/ (a nested
// module, so ./... skips it): go build -trimpath, CGO_ENABLED=0,
// -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=<Version>". An flock on
// the cache directory makes concurrent test binaries build once. A cold build takes
// minutes (kube-apiserver about 5 on an idle 2-core machine); later runs reuse the
// cache. scripts/ensure-kube.sh installs the Debian parts (make test-kube, make test).
//
// # Teardown
//
// Stop leaves nothing, in this order: Pods deleted (1 s grace) and awaited, kubelet
// stopped, containerd's remaining tasks killed and containers removed (the shims
// exit), containerd, the controller-manager, the scheduler, the API server and etcd
// stopped (SIGTERM, then SIGKILL to the process group), mounts under the directory
// detached deepest first (the kubelet bind-mounts its root), the cgroup root removed
// leaves first, the sysctls the kubelet changes (kernel.panic, kernel.panic_on_oops,
// vm.overcommit_memory) restored, the directory removed. Components get a
// parent-death SIGKILL, so a killed test binary does not leave them running (its
// cgroups and mounts then stay until the machine restarts).
package kubetest
