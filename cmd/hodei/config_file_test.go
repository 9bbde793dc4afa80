package main

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/hodei-jobs/hodei/config"
)

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "hodei.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// flagsAfterConfig runs `hodei NAME ARGS` with its RunE replaced by one that applies
// the config file and returns the flags' values as the real RunE would see them.
func flagsAfterConfig(t *testing.T, name string, args ...string) (map[string]string, error) {
	t.Helper()
	root := newRootCmd()
	cmd, _, err := root.Find([]string{name})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if _, err := applyConfigFile(cmd); err != nil {
			return err
		}
		cmd.Flags().VisitAll(func(f *pflag.Flag) { got[f.Name] = f.Value.String() })
		return nil
	}
	root.SetArgs(append([]string{name}, args...))
	root.SetOut(&strings.Builder{})
	return got, root.Execute()
}

func TestConfigFilePrecedence(t *testing.T) {
	path := writeConfig(t, `listen: 127.0.0.1:7171
max_workers: 3
providers: [local, docker]
provider_strategy: least-loaded
heartbeat_interval: 2s
cleanup_dry_run: true
log_level: debug
docker:
  max_workers: 5
  network: none
  labels: {zone: b, gpu: "true"}
`)
	for _, v := range []string{envListen, envMaxWorkers, envProviders, envHeartbeatInterval, envDockerMaxWorkers, envDockerNetwork, envServerConfig} {
		t.Setenv(v, "")
	}
	// File over defaults.
	got, err := flagsAfterConfig(t, "dev", "--config", path)
	if err != nil {
		t.Fatal(err)
	}
	for flag, want := range map[string]string{
		"listen": "127.0.0.1:7171", "max-workers": "3", "provider": "[local,docker]", "heartbeat-interval": "2s",
		"cleanup-dry-run": "true", "log-level": "debug", "docker-max-workers": "5", "docker-network": "none",
		"docker-labels":    "[gpu=true,zone=b]",
		"creating-timeout": (5 * time.Minute).String(), // not in the file: its default
	} {
		if got[flag] != want {
			t.Errorf("file: --%s = %q, want %q", flag, got[flag], want)
		}
	}
	// HODEI_* over the file, the flag over both; HODEI_SERVER_CONFIG names the file.
	t.Setenv(envServerConfig, path)
	t.Setenv(envListen, "127.0.0.1:7272")
	t.Setenv(envDockerMaxWorkers, "7")
	t.Setenv(envProviders, "docker")
	got, err = flagsAfterConfig(t, "dev", "--listen", "127.0.0.1:7373", "--docker-network", "host")
	if err != nil {
		t.Fatal(err)
	}
	for flag, want := range map[string]string{
		"listen": "127.0.0.1:7373", "docker-network": "host", // flag
		"docker-max-workers": "7", "provider": "[docker]", // variable
		"max-workers": "3", "heartbeat-interval": "2s", // file
	} {
		if got[flag] != want {
			t.Errorf("precedence: --%s = %q, want %q", flag, got[flag], want)
		}
	}
}

func TestConfigFileRefused(t *testing.T) {
	t.Setenv(envServerConfig, "")
	for body, want := range map[string]string{
		"docker:\n  max_workers: many\n":     `hodei.yaml:2: docker.max_workers: want an integer, got "many"`,
		"listen: x\nheartbeat_intervl: 1s\n": `hodei.yaml:2: unknown key heartbeat_intervl`,
		// A key of hodei server only: named, not ignored.
		"database_url: postgres://x\n": `hodei.yaml:1: database_url is not a setting of hodei dev`,
		// The flag's own parser runs on the file's value.
		"providers: [local, local]\n": `--provider: "local" given twice`,
		"provider_strategy: random\n": `--provider-strategy: "random": want first-fit or least-loaded`,
		// Warm pools: the file-only list is checked key by key, and each pool by the
		// job service, naming it.
		"pools:\n  - provider: local\n    min_idel: 1\n":                  `hodei.yaml:3: unknown key pools[0].min_idel`,
		"pools:\n  - provider: local\n    min_idle: 3\n    max_idle: 2\n": `pools[0].max_idle 2 out of range [min_idle 3, 10000]`,
		"warm_max_jobs: 0\n": `--warm-max-jobs: must be at least 1, got 0`,
	} {
		path := writeConfig(t, body)
		out, err := runHodei(t, "dev", "--config", path, "--data-dir", filepath.Join(t.TempDir(), "unused"))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want %q\n%s", body, err, want, out)
		}
		if !strings.HasPrefix(want, "--") && !strings.Contains(err.Error(), filepath.Dir(path)) {
			t.Errorf("%q: error does not name the file: %v", body, err)
		}
	}
	if _, err := runHodei(t, "server", "--config", filepath.Join(t.TempDir(), "missing.yaml")); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("missing file: %v", err)
	}
}

// Every flag of `hodei server` and `hodei dev` has its key in config.File, of a type
// its flag parses, and every key that is not file-only has its flag.
func TestConfigFileKeysMatchFlags(t *testing.T) {
	keys := map[string]reflect.Type{}
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		for i := range t.NumField() {
			f := t.Field(i)
			k, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if f.Tag.Get("config") == "file-only" {
				continue
			}
			if f.Type.Kind() == reflect.Struct && prefix == "" {
				walk(f.Type, k+".")
				continue
			}
			keys[prefix+k] = f.Type
		}
	}
	walk(reflect.TypeFor[config.File](), "")
	flagType := map[string][]string{
		"string": {"string"}, "int": {"int"}, "bool": {"bool"}, "duration": {"time.Duration"},
		"stringSlice": {"[]string", "map[string]string"}, "stringArray": {"[]string"},
	}
	used := map[string]bool{}
	root := newRootCmd()
	for _, name := range []string{"server", "dev"} {
		cmd, _, err := root.Find([]string{name})
		if err != nil {
			t.Fatal(err)
		}
		cmd.LocalNonPersistentFlags().VisitAll(func(f *pflag.Flag) {
			if f.Name == "help" || f.Name == "config" {
				return
			}
			key := config.KeyForFlag(f.Name)
			typ, ok := keys[key]
			if !ok {
				t.Errorf("hodei %s --%s has no key %s in config.File", name, f.Name, key)
				return
			}
			used[key] = true
			if !strings.Contains(strings.Join(flagType[f.Value.Type()], " "), typ.String()) {
				t.Errorf("hodei %s --%s is a %s flag but key %s is %s", name, f.Name, f.Value.Type(), key, typ)
			}
		})
	}
	for k := range keys {
		if !used[k] {
			t.Errorf("config.File key %s has no flag --%s in hodei server or hodei dev", k, config.FlagForKey(k))
		}
	}
}

// TestDevFromConfigFile starts `hodei dev` configured by a file only and checks that it
// listens and keeps its data where the file says.
func TestDevFromConfigFile(t *testing.T) {
	for _, v := range []string{envListen, envDevDataDir, envServerConfig, envProviders} {
		t.Setenv(v, "")
	}
	dataDir := filepath.Join(t.TempDir(), "from-file")
	path := writeConfig(t, "listen: 127.0.0.1:0\ndata_dir: "+dataDir+"\nlocal:\n  max_workers: 2\n")
	root := newRootCmd()
	out, logs := &lockedBuffer{}, &lockedBuffer{}
	root.SetOut(out)
	root.SetErr(logs)
	root.SetArgs([]string{"dev", "--config", path})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	deadline := time.After(60 * time.Second)
	for !strings.Contains(out.String(), "data in "+dataDir+" ") {
		select {
		case err := <-done:
			t.Fatalf("hodei dev exited: %v\n%s\n%s", err, out, logs)
		case <-deadline:
			t.Fatalf("no banner naming %s: %q\n%s", dataDir, out, logs)
		case <-time.After(20 * time.Millisecond):
		}
	}
	if !regexp.MustCompile(`^hodei dev listening on http://127\.0\.0\.1:\d+\n`).MatchString(out.String()) {
		t.Errorf("banner: %q", out)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "hodei.db")); err != nil {
		t.Errorf("no database in the file's data_dir: %v", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("hodei dev returned %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("hodei dev did not stop")
	}
}
