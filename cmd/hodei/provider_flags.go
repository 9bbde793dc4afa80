package main

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"

	"github.com/hodei-jobs/hodei/config"
	"github.com/hodei-jobs/hodei/provider/kubernetes"
	"github.com/hodei-jobs/hodei/provider/local"
	"github.com/hodei-jobs/hodei/server"
)

// Environment variables of the provider flags (hodei server and hodei dev).
const (
	envProviders          = "HODEI_PROVIDERS"
	envProviderStrategy   = "HODEI_PROVIDER_STRATEGY"
	envLocalMaxWorkers    = "HODEI_LOCAL_MAX_WORKERS"
	envDockerHost         = "HODEI_DOCKER_HOST"
	envDockerMaxWorkers   = "HODEI_DOCKER_MAX_WORKERS"
	envDockerNetwork      = "HODEI_DOCKER_NETWORK"
	envDockerAgent        = "HODEI_DOCKER_AGENT"
	envDockerDefaultImage = "HODEI_DOCKER_DEFAULT_IMAGE"
	envDockerLabels       = "HODEI_DOCKER_LABELS"
	envKubeconfig         = "HODEI_KUBECONFIG"
	envKubeNamespace      = "HODEI_KUBE_NAMESPACE"
	envKubeMaxWorkers     = "HODEI_KUBE_MAX_WORKERS"
	envKubeServerURL      = "HODEI_KUBE_SERVER_URL"
	envKubeAgentImage     = "HODEI_KUBE_AGENT_IMAGE"
	envKubeDefaultImage   = "HODEI_KUBE_DEFAULT_IMAGE"
	envKubeServiceAccount = "HODEI_KUBE_SERVICE_ACCOUNT"
	envKubeUnschedulable  = "HODEI_KUBE_UNSCHEDULABLE_TIMEOUT"
	envKubeHostNetwork    = "HODEI_KUBE_HOST_NETWORK"
	envKubeRequestPercent = "HODEI_KUBE_REQUEST_PERCENT"
	envKubeLabels         = "HODEI_KUBE_LABELS"
	envWarmWorkers        = "HODEI_WARM_WORKERS"
	envWarmMaxJobs        = "HODEI_WARM_MAX_JOBS"
)

// providerFlags are the flags choosing and configuring the worker providers.
type providerFlags struct {
	providers    []string
	localMax     int
	dockerLabels []string
	kubeLabels   []string
}

func (pf *providerFlags) define(cmd *cobra.Command, cfg *server.Config) {
	f := cmd.Flags()
	f.StringSliceVar(&pf.providers, "provider", []string{"local"},
		"worker provider to run: local (processes on this machine), docker (containers on a Docker Engine) or kubernetes (pods); repeatable, in the order jobs try them")
	bindEnv(cmd, "provider", envProviders)
	stringFlagEnv(cmd, &cfg.ProviderStrategy, "provider-strategy", envProviderStrategy, "first-fit",
		"how a job that several providers can run picks one with room: first-fit (the first in --provider order) or least-loaded (the lowest share of its capacity in use)")
	f.IntVar(&pf.localMax, "local-max-workers", 0, "most local workers at once (same as --max-workers; 0: max(2, 4 x CPUs))")
	bindEnv(cmd, "local-max-workers", envLocalMaxWorkers)
	stringFlagEnv(cmd, &cfg.Docker.Host, "docker-host", envDockerHost, "",
		"Docker Engine address, e.g. unix:///var/run/docker.sock or tcp://host:2376 (default $DOCKER_HOST, else the local socket)")
	f.IntVar(&cfg.Docker.MaxWorkers, "docker-max-workers", 0, "most docker workers (containers) at once (0: max(2, 4 x CPUs))")
	bindEnv(cmd, "docker-max-workers", envDockerMaxWorkers)
	stringFlagEnv(cmd, &cfg.Docker.Network, "docker-network", envDockerNetwork, "host",
		"network of the worker containers: host (they reach a server on 127.0.0.1), or a network from which they reach --server-url")
	stringFlagEnv(cmd, &cfg.Docker.AgentBinary, "docker-agent", envDockerAgent, "",
		"static hodei binary (CGO_ENABLED=0) mounted into containers as their entrypoint (default: this executable)")
	stringFlagEnv(cmd, &cfg.Docker.DefaultImage, "docker-default-image", envDockerDefaultImage, "",
		"image for jobs that name none (empty: such jobs run on other providers)")
	f.StringSliceVar(&pf.dockerLabels, "docker-labels", nil, "labels K=V of the docker provider, matched by jobs' --selector (comma-separated)")
	bindEnv(cmd, "docker-labels", envDockerLabels)
	stringFlagEnv(cmd, &cfg.Kube.Kubeconfig, "kubeconfig", envKubeconfig, "",
		"kubeconfig file of the kubernetes provider (default: the in-cluster configuration, else $KUBECONFIG or ~/.kube/config)")
	stringFlagEnv(cmd, &cfg.Kube.Namespace, "kube-namespace", envKubeNamespace, "default", "namespace of the worker pods and their Secrets")
	f.IntVar(&cfg.Kube.MaxWorkers, "kube-max-workers", 0, "most kubernetes workers (pods) at once (0: 16)")
	bindEnv(cmd, "kube-max-workers", envKubeMaxWorkers)
	stringFlagEnv(cmd, &cfg.Kube.ServerURL, "kube-server-url", envKubeServerURL, "",
		"this control plane's URL as worker pods reach it, e.g. http://hodei.hodei.svc:7070 (default --server-url)")
	stringFlagEnv(cmd, &cfg.Kube.AgentImage, "kube-agent-image", envKubeAgentImage, "",
		"image holding the static agent (make agent-image: hodei/agent:<version>); its init container copies the agent into each pod")
	stringFlagEnv(cmd, &cfg.Kube.DefaultImage, "kube-default-image", envKubeDefaultImage, "",
		"image for jobs that name none (empty: such jobs run on other providers)")
	stringFlagEnv(cmd, &cfg.Kube.ServiceAccount, "kube-service-account", envKubeServiceAccount, "",
		"service account of the worker pods (empty: the namespace's default; its token is not mounted)")
	f.DurationVar(&cfg.Kube.UnschedulableTimeout, "kube-unschedulable-timeout", 2*time.Minute,
		"a worker pod the scheduler cannot place for this long fails its job's provisioning with the scheduler's message")
	bindEnv(cmd, "kube-unschedulable-timeout", envKubeUnschedulable)
	f.BoolVar(&cfg.Kube.HostNetwork, "kube-host-network", false,
		"run worker pods in their node's network (hostNetwork: for clusters whose pods cannot reach the server otherwise, and tests)")
	bindEnv(cmd, "kube-host-network", envKubeHostNetwork)
	f.IntVar(&cfg.Kube.RequestPercent, "kube-request-percent", 100,
		"share (1-100) of a job's cpu and memory limits that its pod requests (100: requests = limits)")
	bindEnv(cmd, "kube-request-percent", envKubeRequestPercent)
	f.StringSliceVar(&pf.kubeLabels, "kube-labels", nil, "labels K=V of the kubernetes provider, matched by jobs' --selector (comma-separated)")
	bindEnv(cmd, "kube-labels", envKubeLabels)
	f.IntVar(&cfg.WarmWorkers, "warm-workers", 0,
		"idle workers of the first provider kept registered, so that a job that matches one starts with no provisioning (0: none; they count against the provider's capacity)")
	bindEnv(cmd, "warm-workers", envWarmWorkers)
	f.IntVar(&cfg.WarmMaxJobs, "warm-max-jobs", 1,
		"jobs one warm worker runs, one after another and within one namespace, before it is replaced (1: one job each)")
	bindEnv(cmd, "warm-max-jobs", envWarmMaxJobs)
}

// apply checks the provider flags and puts them into cfg.
func (pf *providerFlags) apply(cmd *cobra.Command, cfg *server.Config) error {
	seen := map[string]bool{}
	cfg.Providers = nil
	for _, p := range pf.providers {
		p = strings.TrimSpace(p)
		if p != "local" && p != "docker" && p != kubernetes.Name {
			return fmt.Errorf("--provider: %q: want local, docker or kubernetes", p)
		}
		if seen[p] {
			return fmt.Errorf("--provider: %q given twice", p)
		}
		if p == local.Name {
			if err := local.CheckPlatform(); err != nil {
				return fmt.Errorf("--provider local: %w", err)
			}
		}
		seen[p] = true
		cfg.Providers = append(cfg.Providers, p)
	}
	switch cfg.ProviderStrategy {
	case "first-fit", "least-loaded":
	default:
		return fmt.Errorf("--provider-strategy: %q: want first-fit or least-loaded", cfg.ProviderStrategy)
	}
	if pf.localMax < 0 {
		return fmt.Errorf("--local-max-workers: must not be negative, got %d", pf.localMax)
	}
	if cmd.Flags().Changed("local-max-workers") || pf.localMax > 0 {
		cfg.MaxWorkers = pf.localMax
	}
	if cfg.Docker.MaxWorkers < 0 {
		return fmt.Errorf("--docker-max-workers: must not be negative, got %d", cfg.Docker.MaxWorkers)
	}
	if cfg.WarmWorkers < 0 {
		return fmt.Errorf("--warm-workers: must not be negative, got %d", cfg.WarmWorkers)
	}
	if cfg.WarmMaxJobs < 1 {
		return fmt.Errorf("--warm-max-jobs: must be at least 1, got %d", cfg.WarmMaxJobs)
	}
	labels, err := parseKV("--docker-labels", pf.dockerLabels)
	if err != nil {
		return err
	}
	cfg.Docker.Labels = labels
	if cfg.Kube.MaxWorkers < 0 {
		return fmt.Errorf("--kube-max-workers: must not be negative, got %d", cfg.Kube.MaxWorkers)
	}
	if cfg.Kube.UnschedulableTimeout <= 0 {
		return fmt.Errorf("--kube-unschedulable-timeout: must be positive, got %s", cfg.Kube.UnschedulableTimeout)
	}
	if cfg.Kube.RequestPercent < 1 || cfg.Kube.RequestPercent > 100 {
		return fmt.Errorf("--kube-request-percent: want 1 to 100, got %d", cfg.Kube.RequestPercent)
	}
	if slices.Contains(cfg.Providers, kubernetes.Name) && cfg.Kube.AgentImage == "" {
		return errors.New("--kube-agent-image: required with --provider kubernetes (an image holding the static agent: make agent-image)")
	}
	if cfg.Kube.Labels, err = parseKV("--kube-labels", pf.kubeLabels); err != nil {
		return err
	}
	return nil
}

// kubeFromFile copies the kube section's file-only keys (node_selector, tolerations,
// pod_labels, security) into cfg; provider/kubernetes checks them when it starts.
func kubeFromFile(loaded *config.Loaded, cfg *server.Config) {
	k := loaded.File.Kube
	cfg.Kube.NodeSelector = maps.Clone(k.NodeSelector)
	cfg.Kube.PodLabels = maps.Clone(k.PodLabels)
	cfg.Kube.Tolerations = nil
	for _, t := range k.Tolerations {
		cfg.Kube.Tolerations = append(cfg.Kube.Tolerations, corev1.Toleration{Key: t.Key,
			Operator: corev1.TolerationOperator(t.Operator), Value: t.Value, Effect: corev1.TaintEffect(t.Effect),
			TolerationSeconds: t.TolerationSeconds})
	}
	s := k.Security
	cfg.Kube.Security = kubernetes.Security{AllowPrivilegeEscalation: s.AllowPrivilegeEscalation,
		KeepCapabilities: s.KeepCapabilities, AddCapabilities: slices.Clone(s.AddCapabilities), Seccomp: s.Seccomp,
		RunAsUser: s.RunAsUser, RunAsNonRoot: s.RunAsNonRoot}
}
