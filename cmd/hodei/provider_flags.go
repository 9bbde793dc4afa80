package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

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
	envWarmWorkers        = "HODEI_WARM_WORKERS"
	envWarmMaxJobs        = "HODEI_WARM_MAX_JOBS"
)

// providerFlags are the flags choosing and configuring the worker providers.
type providerFlags struct {
	providers    []string
	localMax     int
	dockerLabels []string
}

func (pf *providerFlags) define(cmd *cobra.Command, cfg *server.Config) {
	f := cmd.Flags()
	f.StringSliceVar(&pf.providers, "provider", []string{"local"},
		"worker provider to run: local (processes on this machine) or docker (containers on a Docker Engine); repeatable, in the order jobs try them")
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
		if p != "local" && p != "docker" {
			return fmt.Errorf("--provider: %q: want local or docker", p)
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
	return nil
}
