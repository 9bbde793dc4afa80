package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/informers"
	k8s "k8s.io/client-go/kubernetes"
	listersv1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/provider"
)

// Name is the provider's registry name.
const Name = "kubernetes"

// Where the agent lives in every worker pod: the init container copies it into an
// emptyDir mounted at AgentDir, and the job's container runs AgentPath.
const (
	AgentDir  = "/.hodei"
	AgentPath = AgentDir + "/hodei-agent"
)

// AgentCopyCommand is the agent's subcommand that copies the binary to a path: the
// init container runs the agent image's entrypoint (the static agent) with
// AgentCopyCommand AgentPath.
const AgentCopyCommand = "copy-self"

// Pod and Secret labels (the same names as the docker provider's).
const (
	LabelWorker       = "hodei.worker"
	LabelJob          = "hodei.job"
	LabelOwner        = "hodei.owner"
	LabelInstallation = "hodei.installation"
)

// Environment variables the worker receives (the agent's, see agent.Config).
const (
	EnvServer       = "HODEI_SERVER"
	EnvWorkerID     = "HODEI_WORKER_ID"
	EnvOTP          = "HODEI_ONE_TIME_PASSWORD"
	EnvIdleTimeout  = "HODEI_WORKER_IDLE_TIMEOUT"
	EnvCgroupMemory = "HODEI_WORKER_CGROUP_MEMORY"
	EnvCACertPEM    = "HODEI_CA_CERT_PEM"
)

// SecretKey is the key of the one-time password in a worker's Secret.
const SecretKey = "one-time-password"

// jobContainer and initContainer are the pod's container names.
const (
	jobContainer  = "job"
	initContainer = "hodei-agent"
)

// Security loosens the worker containers' default security context (no privilege
// escalation, every capability dropped, seccomp RuntimeDefault).
type Security struct {
	// AllowPrivilegeEscalation lets the job's processes gain privileges (setuid).
	AllowPrivilegeEscalation bool
	// KeepCapabilities keeps the runtime's default capabilities instead of dropping all.
	KeepCapabilities bool
	// AddCapabilities are added (NET_BIND_SERVICE, ...).
	AddCapabilities []string
	// Seccomp is the profile type: RuntimeDefault (default), Unconfined, or
	// Localhost/<profile>.
	Seccomp string
	// RunAsUser, when set, is the containers' uid; RunAsNonRoot refuses uid 0.
	RunAsUser    *int64
	RunAsNonRoot bool
}

// Config configures the kubernetes provider.
type Config struct {
	// Kubeconfig is a kubeconfig file; "" uses the in-cluster configuration, else
	// $KUBECONFIG (or ~/.kube/config).
	Kubeconfig string
	// REST, when set, is used instead of Kubeconfig.
	REST *rest.Config
	// Namespace the worker pods and their Secrets live in; default "default".
	Namespace string
	// ServerURL is the control plane's URL as the pods reach it; it replaces the
	// spec's ServerURL when set (--kube-server-url).
	ServerURL string
	// AgentImage holds the static agent (make agent-image); required.
	AgentImage string
	// AgentImagePull is the agent image's pull policy; default IfNotPresent.
	AgentImagePull corev1.PullPolicy
	// DefaultImage runs workers whose spec names no image; "" refuses them.
	DefaultImage string
	// ServiceAccount of the pods ("": the namespace's default). Its token is not mounted.
	ServiceAccount string
	// MaxWorkers is the capacity; default 16.
	MaxWorkers int
	// UnschedulableTimeout: a pod the scheduler could not place for this long fails
	// its provisioning with the scheduler's message; default 2m.
	UnschedulableTimeout time.Duration
	// HostNetwork runs the pods in the node's network namespace (tests on a cluster
	// without CNI). Default false.
	HostNetwork bool
	// NodeSelector, Tolerations and PodLabels go into every pod spec (PodLabels also
	// onto the Secrets).
	NodeSelector map[string]string
	Tolerations  []corev1.Toleration
	PodLabels    map[string]string
	// Security loosens the default security context.
	Security Security
	// RequestPercent is the share of the job's cpu and memory limits requested
	// (1..100); default 100: requests = limits (Guaranteed QoS).
	RequestPercent int
	// GracePeriod is the pods' terminationGracePeriodSeconds and Destroy's grace;
	// default 5s (whole seconds).
	GracePeriod time.Duration
	// DeadlineGrace is added to a job's timeout for the pod's activeDeadlineSeconds
	// (a backstop: the control plane ends timed-out jobs itself); default 1m.
	DeadlineGrace time.Duration
	// Owner is this replica's node id (hodei.owner); exits are reported for its pods
	// only. Default "hodei".
	Owner string
	// Installation is the control plane's installation id (hodei.installation): List,
	// the capacity count and the informer see only this installation's pods. Default
	// "hodei".
	Installation string
	// Env is extra KEY=VALUE environment for every worker.
	Env []string
	// IdleTimeout is HODEI_WORKER_IDLE_TIMEOUT (default 1ms).
	IdleTimeout time.Duration
	// Labels are the provider's labels, matched by jobs' selectors.
	Labels map[string]string
	// Logger; default slog.Default().
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.Namespace == "" {
		c.Namespace = "default"
	}
	if c.AgentImagePull == "" {
		c.AgentImagePull = corev1.PullIfNotPresent
	}
	if c.MaxWorkers == 0 {
		c.MaxWorkers = 16
	}
	if c.UnschedulableTimeout == 0 {
		c.UnschedulableTimeout = 2 * time.Minute
	}
	if c.RequestPercent == 0 {
		c.RequestPercent = 100
	}
	if c.GracePeriod == 0 {
		c.GracePeriod = 5 * time.Second
	}
	if c.DeadlineGrace == 0 {
		c.DeadlineGrace = time.Minute
	}
	if c.Owner == "" {
		c.Owner = "hodei"
	}
	if c.Installation == "" {
		c.Installation = "hodei"
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = time.Millisecond
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate checks the configuration (after defaults), naming the field at fault.
func (c *Config) Validate() error {
	switch {
	case c.AgentImage == "":
		return errors.New("kubernetes: Config.AgentImage is empty (--kube-agent-image: an image holding the static agent, see make agent-image)")
	case c.MaxWorkers < 0:
		return fmt.Errorf("kubernetes: Config.MaxWorkers is negative (%d)", c.MaxWorkers)
	case c.UnschedulableTimeout < 0:
		return fmt.Errorf("kubernetes: Config.UnschedulableTimeout is negative (%s)", c.UnschedulableTimeout)
	case c.GracePeriod < 0:
		return fmt.Errorf("kubernetes: Config.GracePeriod is negative (%s)", c.GracePeriod)
	case c.DeadlineGrace < 0:
		return fmt.Errorf("kubernetes: Config.DeadlineGrace is negative (%s)", c.DeadlineGrace)
	case c.RequestPercent < 1 || c.RequestPercent > 100:
		return fmt.Errorf("kubernetes: Config.RequestPercent %d out of range [1, 100]", c.RequestPercent)
	}
	if errs := validation.IsDNS1123Label(c.Namespace); len(errs) > 0 {
		return fmt.Errorf("kubernetes: Config.Namespace %q: %s", c.Namespace, strings.Join(errs, "; "))
	}
	if c.ServiceAccount != "" {
		if errs := validation.IsDNS1123Subdomain(c.ServiceAccount); len(errs) > 0 {
			return fmt.Errorf("kubernetes: Config.ServiceAccount %q: %s", c.ServiceAccount, strings.Join(errs, "; "))
		}
	}
	switch c.AgentImagePull {
	case corev1.PullAlways, corev1.PullNever, corev1.PullIfNotPresent:
	default:
		return fmt.Errorf("kubernetes: Config.AgentImagePull %q: want Always, Never or IfNotPresent", c.AgentImagePull)
	}
	for _, v := range []struct {
		field string
		id    string
	}{{"Owner", c.Owner}, {"Installation", c.Installation}} {
		if errs := validation.IsValidLabelValue(v.id); len(errs) > 0 {
			return fmt.Errorf("kubernetes: Config.%s %q is not a label value: %s", v.field, v.id, strings.Join(errs, "; "))
		}
	}
	for _, m := range []struct {
		field string
		kv    map[string]string
	}{{"NodeSelector", c.NodeSelector}, {"PodLabels", c.PodLabels}} {
		for k, v := range m.kv {
			if errs := validation.IsQualifiedName(k); len(errs) > 0 {
				return fmt.Errorf("kubernetes: Config.%s key %q: %s", m.field, k, strings.Join(errs, "; "))
			}
			if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
				return fmt.Errorf("kubernetes: Config.%s[%s] value %q: %s", m.field, k, v, strings.Join(errs, "; "))
			}
			if m.field == "PodLabels" && strings.HasPrefix(k, "hodei.") {
				return fmt.Errorf("kubernetes: Config.%s key %q: hodei.* labels are the provider's own", m.field, k)
			}
		}
	}
	for i, t := range c.Tolerations {
		switch t.Operator {
		case "", corev1.TolerationOpEqual, corev1.TolerationOpExists:
		default:
			return fmt.Errorf("kubernetes: Config.Tolerations[%d].Operator %q: want Equal or Exists", i, t.Operator)
		}
		switch t.Effect {
		case "", corev1.TaintEffectNoSchedule, corev1.TaintEffectPreferNoSchedule, corev1.TaintEffectNoExecute:
		default:
			return fmt.Errorf("kubernetes: Config.Tolerations[%d].Effect %q: want NoSchedule, PreferNoSchedule or NoExecute", i, t.Effect)
		}
	}
	switch s := c.Security.Seccomp; {
	case s == "", s == string(corev1.SeccompProfileTypeRuntimeDefault), s == string(corev1.SeccompProfileTypeUnconfined):
	case strings.HasPrefix(s, string(corev1.SeccompProfileTypeLocalhost)+"/") && len(s) > len("Localhost/"):
	default:
		return fmt.Errorf("kubernetes: Config.Security.Seccomp %q: want RuntimeDefault, Unconfined or Localhost/<profile>", s)
	}
	for _, kv := range c.Env {
		if !strings.Contains(kv, "=") {
			return fmt.Errorf("kubernetes: Config.Env entry %q is not KEY=VALUE", kv)
		}
	}
	return nil
}

// RESTConfig is the client configuration Config names: REST, else the Kubeconfig
// file, else the in-cluster configuration, else $KUBECONFIG (or ~/.kube/config).
func (c *Config) RESTConfig() (*rest.Config, error) {
	if c.REST != nil {
		return rest.CopyConfig(c.REST), nil
	}
	if c.Kubeconfig != "" {
		rc, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("kubernetes: Config.Kubeconfig %s: %w", c.Kubeconfig, err)
		}
		return rc, nil
	}
	rc, err := rest.InClusterConfig()
	if err == nil {
		return rc, nil
	}
	if !errors.Is(err, rest.ErrNotInCluster) {
		return nil, fmt.Errorf("kubernetes: in-cluster configuration: %w", err)
	}
	rc, err = clientcmd.NewNonInteractiveDeferredLoadingClientConfig(clientcmd.NewDefaultClientConfigLoadingRules(),
		&clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubernetes: not in a cluster and no kubeconfig (--kubeconfig, $KUBECONFIG): %w", err)
	}
	return rc, nil
}

// Provider runs workers as pods. Safe for concurrent use.
type Provider struct {
	cfg    Config
	cs     k8s.Interface
	pods   listersv1.PodLister
	log    *slog.Logger
	onExit atomic.Pointer[func(workerID string, exitErr error)]

	mu         sync.Mutex
	destroying map[string]bool
	reported   map[string]bool // pod UIDs whose exit was reported

	stop     context.CancelFunc
	watching sync.WaitGroup
}

var (
	_ provider.Provider     = (*Provider)(nil)
	_ provider.Lister       = (*Provider)(nil)
	_ provider.ExitNotifier = (*Provider)(nil)
)

// New connects to the API server (it must answer within ctx) and starts the shared pod
// informer on this installation's label selector; Close stops it.
func New(ctx context.Context, cfg Config) (*Provider, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	rc, err := cfg.RESTConfig()
	if err != nil {
		return nil, err
	}
	if rc.UserAgent == "" {
		rc.UserAgent = "hodei"
	}
	cs, err := k8s.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: client for %s: %w", rc.Host, err)
	}
	if _, err := cs.CoreV1().Pods(cfg.Namespace).List(ctx, metav1.ListOptions{Limit: 1}); err != nil {
		return nil, fmt.Errorf("kubernetes: API server %s: list pods in namespace %s: %w", rc.Host, cfg.Namespace, err)
	}
	wctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	p := &Provider{cfg: cfg, cs: cs, log: cfg.Logger.With("provider", Name), destroying: map[string]bool{},
		reported: map[string]bool{}, stop: stop}
	factory := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace(cfg.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = p.selector().String() }))
	inf := factory.Core().V1().Pods()
	if _, err := inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { p.observe(obj, false) },
		UpdateFunc: func(_, obj any) { p.observe(obj, false) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			p.observe(obj, true)
		},
	}); err != nil {
		stop()
		return nil, fmt.Errorf("kubernetes: pod informer: %w", err)
	}
	p.pods = inf.Lister()
	factory.Start(wctx.Done())
	p.watching.Go(func() { <-wctx.Done(); factory.Shutdown() })
	if !cache.WaitForCacheSync(ctx.Done(), inf.Informer().HasSynced) {
		stop()
		p.watching.Wait()
		return nil, fmt.Errorf("kubernetes: pod informer did not sync: %w", context.Cause(ctx))
	}
	p.watching.Go(func() { p.watchUnschedulable(wctx) })
	return p, nil
}

// selector is this installation's worker pods: hodei.worker set, hodei.installation
// equal to Config.Installation.
func (p *Provider) selector() labels.Selector {
	sel, err := labels.Parse(LabelWorker + "," + LabelInstallation + "=" + p.cfg.Installation)
	if err != nil { // Validate checked the installation as a label value
		panic(err)
	}
	return sel
}

// Close stops the informer.
func (p *Provider) Close() error {
	p.stop()
	p.watching.Wait()
	return nil
}

// OnExit sets the handler of this owner's pod exits (see the package doc).
func (p *Provider) OnExit(handler func(workerID string, exitErr error)) {
	if handler == nil {
		p.onExit.Store(nil)
		return
	}
	p.onExit.Store(&handler)
}

// Name returns "kubernetes".
func (p *Provider) Name() string { return Name }

// Capabilities: shared (any replica reaches the API server), memory and cpu enforced.
func (p *Provider) Capabilities() provider.Capabilities {
	return provider.Capabilities{MaxWorkers: p.cfg.MaxWorkers, Shared: true, Enforced: []string{"memory", "cpu"},
		Images: true, RequiresImage: p.cfg.DefaultImage == "", Labels: maps.Clone(p.cfg.Labels)}
}

// PodName is the name of worker workerID's pod (and of its Secret).
func PodName(workerID string) string { return "hodei-worker-" + workerID }

// checkWorkerID: the id is a label value and, prefixed, a DNS-1123 subdomain.
func checkWorkerID(id string) error {
	if len(validation.IsValidLabelValue(id)) > 0 || len(validation.IsDNS1123Subdomain(PodName(id))) > 0 || id == "" {
		return fmt.Errorf("kubernetes: worker id %q: want 1-63 characters of [a-z0-9.-], starting and ending with a letter or digit", id)
	}
	return nil
}

// Create starts the worker's pod, then its Secret (owned by the pod); idempotent per
// WorkerID: an existing pod is kept and its Secret made sure of.
func (p *Provider) Create(ctx context.Context, spec provider.WorkerSpec) error {
	if err := spec.Validate(); err != nil {
		return provider.Permanent(err)
	}
	if err := checkWorkerID(spec.WorkerID); err != nil {
		return provider.Permanent(err)
	}
	image := spec.Image
	if image == "" {
		image = p.cfg.DefaultImage
	}
	if image == "" {
		return provider.Permanent(errors.New("kubernetes: WorkerSpec.Image is empty and the provider has no default image (Config.DefaultImage)"))
	}
	pods := p.cs.CoreV1().Pods(p.cfg.Namespace)
	name := PodName(spec.WorkerID)
	began := time.Now()
	pod, err := pods.Get(ctx, name, metav1.GetOptions{})
	switch {
	case err == nil:
		// Created by an earlier call; its Secret may be missing.
	case apierrors.IsNotFound(err):
		if n := p.alive(); n >= p.cfg.MaxWorkers {
			return fmt.Errorf("kubernetes: create worker %s: %w: %d of MaxWorkers=%d workers alive",
				spec.WorkerID, provider.ErrCapacity, n, p.cfg.MaxWorkers)
		}
		want, err := p.podFor(spec, image)
		if err != nil {
			return provider.Permanent(err)
		}
		pod, err = pods.Create(ctx, want, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) { // a concurrent Create of the same worker
			pod, err = pods.Get(ctx, name, metav1.GetOptions{})
		}
		if apierrors.IsInvalid(err) || apierrors.IsForbidden(err) && !apierrors.IsUnauthorized(err) && strings.Contains(err.Error(), "exceeded quota") {
			return provider.Permanent(fmt.Errorf("kubernetes: create pod of worker %s (image %s): %w", spec.WorkerID, image, err))
		}
		if err != nil {
			return fmt.Errorf("kubernetes: create pod of worker %s (image %s): %w", spec.WorkerID, image, err)
		}
	default:
		return fmt.Errorf("kubernetes: create worker %s: get pod: %w", spec.WorkerID, err)
	}
	podded := time.Now()
	if err := p.ensureSecret(ctx, spec, pod); err != nil {
		return err
	}
	ms := func(a, b time.Time) float64 { return float64(b.Sub(a).Microseconds()) / 1000 }
	p.log.InfoContext(ctx, "worker pod created", "worker_id", spec.WorkerID, "job_id", spec.JobID, "image", image,
		"pod", name, "namespace", p.cfg.Namespace, "pod_ms", ms(began, podded), "secret_ms", ms(podded, time.Now()))
	return nil
}

// ensureSecret creates the worker's Secret with the pod as its owner (the garbage
// collector deletes it with the pod). kubelet starts the job container once it exists.
func (p *Provider) ensureSecret(ctx context.Context, spec provider.WorkerSpec, pod *corev1.Pod) error {
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name:            pod.Name,
			Namespace:       p.cfg.Namespace,
			Labels:          p.labelsOf(spec),
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Pod", Name: pod.Name, UID: pod.UID}},
		},
		Type:      corev1.SecretTypeOpaque,
		Immutable: new(true),
		Data:      map[string][]byte{SecretKey: []byte(spec.OneTimePassword)},
	}
	_, err := p.cs.CoreV1().Secrets(p.cfg.Namespace).Create(ctx, sec, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("kubernetes: create secret of worker %s: %w", spec.WorkerID, err)
	}
	return nil
}

func (p *Provider) ownerOf(spec provider.WorkerSpec) string {
	if spec.Owner != "" && len(validation.IsValidLabelValue(spec.Owner)) == 0 {
		return spec.Owner
	}
	return p.cfg.Owner
}

func (p *Provider) labelsOf(spec provider.WorkerSpec) map[string]string {
	l := maps.Clone(p.cfg.PodLabels)
	if l == nil {
		l = map[string]string{}
	}
	l[LabelWorker] = spec.WorkerID
	l[LabelOwner] = p.ownerOf(spec)
	l[LabelInstallation] = p.cfg.Installation
	if len(validation.IsValidLabelValue(spec.JobID)) == 0 {
		l[LabelJob] = spec.JobID
	}
	return l
}

// pullPolicy maps a job's --pull to the container's imagePullPolicy.
func pullPolicy(pull domain.PullPolicy) corev1.PullPolicy {
	switch pull {
	case domain.PullNever:
		return corev1.PullNever
	case domain.PullAlways:
		return corev1.PullAlways
	}
	return corev1.PullIfNotPresent
}

// securityContext is the containers' security context: restricted by default,
// loosened by Config.Security.
func (p *Provider) securityContext() *corev1.SecurityContext {
	s := p.cfg.Security
	sc := &corev1.SecurityContext{AllowPrivilegeEscalation: new(s.AllowPrivilegeEscalation)}
	caps := &corev1.Capabilities{}
	if !s.KeepCapabilities {
		caps.Drop = []corev1.Capability{"ALL"}
	}
	for _, c := range s.AddCapabilities {
		caps.Add = append(caps.Add, corev1.Capability(c))
	}
	if len(caps.Drop) > 0 || len(caps.Add) > 0 {
		sc.Capabilities = caps
	}
	switch prof := s.Seccomp; {
	case prof == "" || prof == string(corev1.SeccompProfileTypeRuntimeDefault):
		sc.SeccompProfile = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}
	case prof == string(corev1.SeccompProfileTypeUnconfined):
		sc.SeccompProfile = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined}
	default:
		sc.SeccompProfile = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeLocalhost,
			LocalhostProfile: new(strings.TrimPrefix(prof, "Localhost/"))}
	}
	if s.RunAsUser != nil {
		sc.RunAsUser = new(*s.RunAsUser)
	}
	if s.RunAsNonRoot {
		sc.RunAsNonRoot = new(true)
	}
	return sc
}

// resources: limits from the job, requests RequestPercent of them.
func (p *Provider) resources(r domain.Resources) corev1.ResourceRequirements {
	var rr corev1.ResourceRequirements
	if r.CPUMillis <= 0 && r.MemoryBytes <= 0 {
		return rr
	}
	rr.Limits, rr.Requests = corev1.ResourceList{}, corev1.ResourceList{}
	pct := int64(p.cfg.RequestPercent)
	if r.CPUMillis > 0 {
		rr.Limits[corev1.ResourceCPU] = *resource.NewMilliQuantity(r.CPUMillis, resource.DecimalSI)
		rr.Requests[corev1.ResourceCPU] = *resource.NewMilliQuantity(max(1, r.CPUMillis*pct/100), resource.DecimalSI)
	}
	if r.MemoryBytes > 0 {
		rr.Limits[corev1.ResourceMemory] = *resource.NewQuantity(r.MemoryBytes, resource.BinarySI)
		rr.Requests[corev1.ResourceMemory] = *resource.NewQuantity(max(1, r.MemoryBytes/100*pct), resource.BinarySI)
		if pct == 100 {
			rr.Requests[corev1.ResourceMemory] = rr.Limits[corev1.ResourceMemory]
		}
	}
	return rr
}

func (p *Provider) env(spec provider.WorkerSpec, name string) ([]corev1.EnvVar, error) {
	plain := []string{EnvIdleTimeout + "=" + p.cfg.IdleTimeout.String(), EnvCgroupMemory + "=1"}
	plain = append(plain, p.cfg.Env...)
	plain = append(plain, spec.AgentEnv()...)
	if spec.CACertPEM != "" {
		plain = append(plain, EnvCACertPEM+"="+spec.CACertPEM)
	}
	if spec.TraceParent != "" {
		plain = append(plain, "TRACEPARENT="+spec.TraceParent)
	}
	server := spec.ServerURL
	if p.cfg.ServerURL != "" {
		server = p.cfg.ServerURL
	}
	plain = append(plain, EnvServer+"="+server, EnvWorkerID+"="+spec.WorkerID)
	env := make([]corev1.EnvVar, 0, len(plain)+1)
	for _, kv := range plain {
		k, v, _ := strings.Cut(kv, "=")
		if k == EnvOTP {
			return nil, fmt.Errorf("kubernetes: %s comes from the worker's Secret, not Config.Env", EnvOTP)
		}
		env = append(env, corev1.EnvVar{Name: k, Value: v})
	}
	env = append(env, corev1.EnvVar{Name: EnvOTP, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: name}, Key: SecretKey}}})
	return env, nil
}

// podFor is the worker's pod (see the package doc).
func (p *Provider) podFor(spec provider.WorkerSpec, image string) (*corev1.Pod, error) {
	name := PodName(spec.WorkerID)
	env, err := p.env(spec, name)
	if err != nil {
		return nil, err
	}
	res := p.resources(spec.Resources)
	mount := []corev1.VolumeMount{{Name: "hodei-agent", MountPath: AgentDir}}
	grace := int64((p.cfg.GracePeriod + time.Second - 1) / time.Second)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: p.cfg.Namespace, Labels: p.labelsOf(spec)},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			HostNetwork:                   p.cfg.HostNetwork,
			ServiceAccountName:            p.cfg.ServiceAccount,
			AutomountServiceAccountToken:  new(false),
			EnableServiceLinks:            new(false),
			TerminationGracePeriodSeconds: &grace,
			NodeSelector:                  maps.Clone(p.cfg.NodeSelector),
			Tolerations:                   slices.Clone(p.cfg.Tolerations),
			Volumes: []corev1.Volume{{Name: "hodei-agent", VolumeSource: corev1.VolumeSource{
				EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
			InitContainers: []corev1.Container{{
				Name:            initContainer,
				Image:           p.cfg.AgentImage,
				ImagePullPolicy: p.cfg.AgentImagePull,
				Args:            []string{AgentCopyCommand, AgentPath},
				VolumeMounts:    mount,
				Resources:       res,
				SecurityContext: p.securityContext(),
			}},
			Containers: []corev1.Container{{
				Name:            jobContainer,
				Image:           image,
				ImagePullPolicy: pullPolicy(spec.Pull),
				Command:         []string{AgentPath},
				Args:            []string{},
				Env:             env,
				VolumeMounts:    mount,
				Resources:       res,
				SecurityContext: p.securityContext(),
			}},
		},
	}
	if p.cfg.HostNetwork {
		pod.Spec.DNSPolicy = corev1.DNSClusterFirstWithHostNet
	}
	if spec.Timeout > 0 && spec.MaxJobs <= 1 {
		pod.Spec.ActiveDeadlineSeconds = new(int64((spec.Timeout + p.cfg.DeadlineGrace + time.Second - 1) / time.Second))
	}
	return pod, nil
}

// alive counts this installation's live pods (the informer's cache), less those being
// destroyed.
func (p *Provider) alive() int {
	pods, err := p.pods.Pods(p.cfg.Namespace).List(p.selector())
	if err != nil {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, pod := range pods {
		if ended(pod) || pod.DeletionTimestamp != nil || p.destroying[pod.Labels[LabelWorker]] {
			continue
		}
		n++
	}
	return n
}

// ended: the pod's phase is final, or its job container terminated.
func ended(pod *corev1.Pod) bool {
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return true
	}
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.Name == jobContainer && cs.State.Terminated != nil {
			return true
		}
	}
	for _, cs := range pod.Status.InitContainerStatuses {
		if t := cs.State.Terminated; t != nil && t.ExitCode != 0 {
			return true
		}
	}
	return false
}

// Status reports running (pending or running), exited (its phase is final or its job
// container terminated), or unknown (no pod).
func (p *Provider) Status(ctx context.Context, workerID string) (provider.Status, error) {
	if err := checkWorkerID(workerID); err != nil {
		return provider.StatusUnknown, err
	}
	pod, err := p.cs.CoreV1().Pods(p.cfg.Namespace).Get(ctx, PodName(workerID), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return provider.StatusUnknown, nil
	}
	if err != nil {
		return provider.StatusUnknown, fmt.Errorf("kubernetes: status of worker %s: %w", workerID, err)
	}
	if ended(pod) {
		return provider.StatusExited, nil
	}
	return provider.StatusRunning, nil
}

// Destroy deletes the pod with the grace period (its Secret goes with it, and is
// deleted too) and waits until it is gone; after the grace period and half a minute
// more it deletes it at once (a node that does not answer). Idempotent.
func (p *Provider) Destroy(ctx context.Context, workerID string) error {
	if err := checkWorkerID(workerID); err != nil {
		return err
	}
	p.mu.Lock()
	p.destroying[workerID] = true
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.destroying, workerID)
		p.mu.Unlock()
	}()
	name := PodName(workerID)
	pods := p.cs.CoreV1().Pods(p.cfg.Namespace)
	grace := int64((p.cfg.GracePeriod + time.Second - 1) / time.Second)
	bg := metav1.DeletePropagationBackground
	err := pods.Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &grace, PropagationPolicy: &bg})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("kubernetes: destroy worker %s: delete pod: %w", workerID, err)
	}
	if err := p.cs.CoreV1().Secrets(p.cfg.Namespace).Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		p.log.WarnContext(ctx, "could not delete a worker's Secret; the garbage collector deletes it with its pod", "worker_id", workerID, "err", err)
	}
	forceAt := time.Now().Add(p.cfg.GracePeriod + 30*time.Second)
	forced := false
	for {
		_, err := pods.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			p.log.DebugContext(ctx, "worker destroyed", "worker_id", workerID)
			return nil
		}
		if err != nil && ctx.Err() == nil {
			p.log.DebugContext(ctx, "get pod during destroy", "worker_id", workerID, "err", err)
		}
		if !forced && time.Now().After(forceAt) {
			zero := int64(0)
			if err := pods.Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil && !apierrors.IsNotFound(err) {
				return fmt.Errorf("kubernetes: destroy worker %s: force delete: %w", workerID, err)
			}
			p.log.WarnContext(ctx, "pod not gone after its grace period; deleted at once", "worker_id", workerID)
			forced = true
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kubernetes: destroy worker %s: waiting for the pod to go: %w", workerID, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// List returns the worker ids of this installation's pods, running or not.
func (p *Provider) List(ctx context.Context) ([]string, error) {
	res, err := p.cs.CoreV1().Pods(p.cfg.Namespace).List(ctx, metav1.ListOptions{LabelSelector: p.selector().String()})
	if err != nil {
		return nil, fmt.Errorf("kubernetes: list workers: %w", err)
	}
	ids := make([]string, 0, len(res.Items))
	for _, pod := range res.Items {
		if id := pod.Labels[LabelWorker]; checkWorkerID(id) == nil {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// isPullFailure: a container waiting for this reason cannot get its image.
func isPullFailure(reason string) bool {
	switch reason {
	case "ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName":
		return true
	}
	return false
}

// observe reacts to the informer's view of one pod: an exit (see the package doc) is
// reported once per pod.
func (p *Provider) observe(obj any, deleted bool) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	id := pod.Labels[LabelWorker]
	if checkWorkerID(id) != nil || pod.Labels[LabelOwner] != p.cfg.Owner || pod.Labels[LabelInstallation] != p.cfg.Installation {
		return
	}
	uid := string(pod.UID)
	if deleted {
		p.mu.Lock()
		done := p.reported[uid]
		delete(p.reported, uid)
		p.mu.Unlock()
		if !done {
			p.report(id, uid, fmt.Errorf("pod %s was deleted", pod.Name), false)
		}
		return
	}
	if err, ok := exitOf(pod); ok {
		p.report(id, uid, err, true)
		return
	}
	if err := pullFailure(pod); err != nil {
		p.report(id, uid, err, true)
	}
}

// report calls the OnExit handler once per pod uid (keep: remember it until the pod
// is deleted).
func (p *Provider) report(id, uid string, err error, keep bool) {
	if keep {
		p.mu.Lock()
		done := p.reported[uid]
		p.reported[uid] = true
		p.mu.Unlock()
		if done {
			return
		}
	}
	p.log.Info("worker pod exited", "worker_id", id, "err", err)
	if h := p.onExit.Load(); h != nil {
		(*h)(id, err)
	}
}

// exitOf is the exit of an ended pod: nil for exit code 0, ErrOOMKilled (with the
// limit) for a container the kernel killed, else the container's exit or the pod's
// reason (DeadlineExceeded, Evicted).
func exitOf(pod *corev1.Pod) (error, bool) {
	if !ended(pod) {
		return nil, false
	}
	for _, statuses := range [][]corev1.ContainerStatus{pod.Status.InitContainerStatuses, pod.Status.ContainerStatuses} {
		for _, cs := range statuses {
			t := cs.State.Terminated
			if t == nil || (cs.Name == initContainer && t.ExitCode == 0) {
				continue
			}
			if t.Reason == "OOMKilled" {
				return fmt.Errorf("%w%s: the worker's container %s was killed (exit code %d)", provider.ErrOOMKilled,
					limitOf(pod, cs.Name), cs.Name, t.ExitCode), true
			}
			if t.ExitCode == 0 {
				return nil, true
			}
			msg := fmt.Sprintf("container %s exited with code %d", cs.Name, t.ExitCode)
			if t.Reason != "" && t.Reason != "Error" {
				msg += " (" + t.Reason + ")"
			}
			return errors.New(msg), true
		}
	}
	if pod.Status.Reason != "" {
		return fmt.Errorf("pod %s: %s: %s", pod.Status.Phase, pod.Status.Reason, pod.Status.Message), true
	}
	if pod.Status.Phase == corev1.PodSucceeded {
		return nil, true
	}
	return fmt.Errorf("pod %s", pod.Status.Phase), true
}

// limitOf is " (limit 64Mi)" for a container with a memory limit, else "".
func limitOf(pod *corev1.Pod, container string) string {
	for _, c := range slices.Concat(pod.Spec.InitContainers, pod.Spec.Containers) {
		if c.Name != container {
			continue
		}
		if q, ok := c.Resources.Limits[corev1.ResourceMemory]; ok && q.Value() > 0 {
			return " (limit " + domain.FormatMemory(q.Value()) + ")"
		}
	}
	return ""
}

// pullFailure is a permanent error naming the image when one of the pod's containers
// waits on an image that cannot be pulled.
func pullFailure(pod *corev1.Pod) error {
	for _, statuses := range [][]corev1.ContainerStatus{pod.Status.InitContainerStatuses, pod.Status.ContainerStatuses} {
		for _, cs := range statuses {
			w := cs.State.Waiting
			if w == nil || !isPullFailure(w.Reason) {
				continue
			}
			image := cs.Image
			for _, c := range slices.Concat(pod.Spec.InitContainers, pod.Spec.Containers) {
				if c.Name == cs.Name {
					image = c.Image
				}
			}
			return provider.Permanent(fmt.Errorf("image %s could not be pulled (%s): %s", image, w.Reason, w.Message))
		}
	}
	return nil
}

// unschedulable reports how long the pod has been unschedulable and the scheduler's
// message (false: it is not).
func unschedulable(pod *corev1.Pod, now time.Time) (time.Duration, string, bool) {
	if pod.Spec.NodeName != "" || pod.Status.Phase != corev1.PodPending || pod.DeletionTimestamp != nil {
		return 0, "", false
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
			return now.Sub(c.LastTransitionTime.Time), c.Message, true
		}
	}
	return 0, "", false
}

// watchUnschedulable fails the provisioning of pods unschedulable for longer than
// Config.UnschedulableTimeout (the scheduler updates the condition only when its
// reason changes, so this looks at the cache on a timer).
func (p *Provider) watchUnschedulable(ctx context.Context) {
	every := min(max(p.cfg.UnschedulableTimeout/4, 100*time.Millisecond), 5*time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pods, err := p.pods.Pods(p.cfg.Namespace).List(p.selector())
		if err != nil {
			continue
		}
		now := time.Now()
		for _, pod := range pods {
			if pod.Labels[LabelOwner] != p.cfg.Owner {
				continue
			}
			if d, msg, ok := unschedulable(pod, now); ok && d >= p.cfg.UnschedulableTimeout {
				p.report(pod.Labels[LabelWorker], string(pod.UID),
					fmt.Errorf("pod %s unschedulable for %s (--kube-unschedulable-timeout %s): %s", pod.Name,
						d.Round(time.Second), p.cfg.UnschedulableTimeout, msg), true)
			}
		}
	}
}
