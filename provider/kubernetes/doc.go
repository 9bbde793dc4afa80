// Package kubernetes is the provider that runs each worker as one Pod of a Kubernetes
// cluster, through client-go (no kubectl is run). It is a shared provider: every
// replica of the control plane reaches the same API server, so any replica may operate
// any worker.
//
// # A worker is a Pod
//
//   - Name hodei-worker-<worker id> in Config.Namespace, restartPolicy Never, labels
//     hodei.worker, hodei.job, hodei.owner (the replica that created it) and
//     hodei.installation (the database's installation id), plus Config.PodLabels.
//   - The agent: an init container runs Config.AgentImage (FROM scratch, holding only
//     the static hodei-agent) with `copy-self /.hodei/hodei-agent`: the agent copies
//     itself into an emptyDir mounted at /.hodei in both containers. The job's
//     container runs the job's image with /.hodei/hodei-agent as its command, so any
//     image works (the pattern Tekton and Argo use).
//   - The one-time password lives in a per-worker Secret of the same name, created
//     after the pod with an ownerReference to it (the garbage collector deletes it with
//     the pod) and read through secretKeyRef: it never appears in the pod spec. kubelet
//     does not start the job's container before the Secret exists. Destroy deletes it
//     too, without waiting for the collector.
//   - Resources: the job's cpu and memory as limits, and Config.RequestPercent of them
//     as requests (default 100: requests = limits, Guaranteed QoS), on both containers
//     (the init container then adds nothing to the pod's request).
//   - activeDeadlineSeconds: the job's timeout plus Config.DeadlineGrace (a backstop;
//     the control plane ends a timed-out job itself). Workers of warm pools get none.
//   - Security context by default: allowPrivilegeEscalation false, every capability
//     dropped, seccomp RuntimeDefault; Config.Security loosens it. The service
//     account's token is not mounted.
//   - imagePullPolicy from the job's --pull: never → Never, always → Always, else
//     IfNotPresent.
//   - Config.HostNetwork (default false) runs the pod in its node's network namespace,
//     for clusters (and tests) where pods cannot reach the server's URL otherwise;
//     Config.ServerURL is the control plane's address as pods reach it.
//
// # Watching
//
// One shared informer follows the pods of this installation (label selector
// hodei.worker, hodei.installation=Config.Installation) in the namespace. For the pods
// of this owner it reports, once per pod, to the OnExit handler:
//
//   - a pod whose phase is final, whose job container terminated, or whose init
//     container failed: an exit (the control plane treats it as a lost worker at
//     once), with the container's exit code; OOMKilled matches provider.ErrOOMKilled
//     ("out of memory (limit 64Mi): …");
//   - a pod deleted from outside: an exit ("pod … was deleted");
//   - a container waiting on ErrImagePull, ImagePullBackOff, ErrImageNeverPull or
//     InvalidImageName: a provider.Permanent exit naming the image: the control plane
//     fails the job still provisioning on it at once (jobs' failUnstartable) instead of
//     retrying it;
//   - a pod the scheduler marked Unschedulable for longer than
//     Config.UnschedulableTimeout (checked on a timer against the informer's cache): an
//     exit with the scheduler's message; the provisioning fails and the job's retry
//     policy applies.
//
// Capacity counts this installation's live pods in the informer's cache (any owner),
// less those being destroyed. Destroy deletes the pod with Config.GracePeriod and waits
// until it is gone (deleting it at once when it is still there half a minute after its
// grace period: a node that does not answer). Status reads the pod from the API server,
// so it works for pods created by an earlier process. List (the sweep) lists the pods by
// label.
//
// The client configuration: Config.Kubeconfig, else the in-cluster configuration, else
// $KUBECONFIG or ~/.kube/config. The pods need get/list/watch/create/delete on pods and
// create/delete on secrets in the namespace (deploy/kubernetes has such a Role).
package kubernetes
