package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/hodei-jobs/hodei/config"
	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/jobs"
)

// envServerConfig names the settings file of `hodei server` and `hodei dev`. It is not
// HODEI_CONFIG, which names the CLI's client config file (contexts, JSON): one shell
// variable must not point both commands at each other's file.
const envServerConfig = "HODEI_SERVER_CONFIG"

// serverConfigFlag defines --config on `hodei server` and `hodei dev`. It hides the
// root's client --config there (those commands have no use for contexts).
func serverConfigFlag(cmd *cobra.Command) {
	cmd.Flags().String("config", "",
		"settings file (YAML) with the same keys as these flags: --docker-max-workers is max_workers under docker:, --heartbeat-interval is heartbeat_interval; a flag or HODEI_* variable wins over the file")
	bindEnv(cmd, "config", envServerConfig)
}

// applyConfigFile reads the --config file, if any, and sets from it every flag of cmd
// that was neither given on the command line nor set from its HODEI_* variable
// (precedence: flag > variable > file > default). Values go through the flags' own
// parsers. The returned file (empty without --config) holds the file-only settings.
func applyConfigFile(cmd *cobra.Command) (*config.Loaded, error) {
	path, err := cmd.Flags().GetString("config")
	if err != nil {
		return nil, fmt.Errorf("internal error: %w", err)
	}
	if path == "" {
		return &config.Loaded{}, nil
	}
	loaded, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	for _, s := range loaded.Settings() {
		f := cmd.Flags().Lookup(s.Flag)
		if f == nil || s.Flag == "config" {
			return nil, fmt.Errorf("%s: %s is not a setting of hodei %s", s.Pos, s.Key, cmd.Name())
		}
		if f.Changed {
			continue
		}
		if env := envOf(f); env != "" {
			if v, ok := os.LookupEnv(env); ok && v != "" {
				continue
			}
		}
		if s.IsList {
			sv, ok := f.Value.(pflag.SliceValue)
			if !ok {
				return nil, fmt.Errorf("%s: %s: want one value, not a list", s.Pos, s.Key)
			}
			err = sv.Replace(s.List)
		} else {
			err = f.Value.Set(s.Value)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", s.Pos, s.Key, err)
		}
		f.Changed = true
	}
	return loaded, nil
}

// poolsFromFile is the file's pools section as the job service's pools, each checked
// (the error names the file and pools[i].key; the server checks the providers).
func poolsFromFile(loaded *config.Loaded) ([]jobs.PoolConfig, error) {
	var out []jobs.PoolConfig
	for i, p := range loaded.File.Pools {
		pc := jobs.PoolConfig{Name: p.Name, Provider: p.Provider, Image: p.Image, Pull: domain.PullPolicy(p.Pull),
			CPU: p.CPU, Memory: p.Memory, Namespace: p.Namespace, MinIdle: p.MinIdle, MaxIdle: p.MaxIdle, IdleTTL: p.IdleTTL,
			MaxJobsPerWorker: p.MaxJobsPerWorker}
		if err := pc.Check(i); err != nil {
			return nil, fmt.Errorf("%s: %w", loaded.Path, err)
		}
		out = append(out, pc)
	}
	return out, nil
}
