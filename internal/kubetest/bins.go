package kubetest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Version is the Kubernetes release the harness builds and runs. The wrapper module in
// kubebuild/ pins it (k8s.io/kubernetes and its staging modules); change both together.
const Version = "v1.37.2"

// EnvKubeBinDir names the variable that points the harness at a directory holding
// kube-apiserver, kubelet, kube-scheduler and kube-controller-manager, instead of the
// cache (~/.cache/hodei/kube/<Version>/, built on first use).
const EnvKubeBinDir = "HODEI_TEST_KUBE_BIN_DIR"

// components are the binaries built from k8s.io/kubernetes/cmd/<name>.
var components = []string{"kube-apiserver", "kubelet", "kube-scheduler", "kube-controller-manager"}

// cacheDir returns ~/.cache/hodei/kube/<Version> (or $XDG_CACHE_HOME/hodei/kube/…).
func cacheDir() (string, error) {
	base, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(base, "hodei", "kube", Version), nil
}

// repoRoot returns the directory of the hodei module (the tests run inside it).
func repoRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("not inside the hodei module (go env GOMOD is empty)")
	}
	return filepath.Dir(mod), nil
}

// Binaries returns the directory holding the four Kubernetes binaries, building the
// missing ones into the cache first (progress on standard error). Several processes may
// call it at once: an flock on the cache directory lets one build while the others
// wait. `make ensure-kube` calls it (./kubebins) so that a first build happens before
// the tests and outside their timeouts.
func Binaries(ctx context.Context) (string, error) {
	if d := os.Getenv(EnvKubeBinDir); d != "" {
		for _, c := range components {
			if !isExec(filepath.Join(d, c)) {
				return "", fmt.Errorf("%s=%s has no executable %s", EnvKubeBinDir, d, c)
			}
		}
		return d, nil
	}
	dir, err := cacheDir()
	if err != nil {
		return "", err
	}
	if allPresent(dir) {
		return dir, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("lock %s: %w", dir, err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	root, err := repoRoot(ctx)
	if err != nil {
		return "", err
	}
	for _, c := range components {
		out := filepath.Join(dir, c)
		if isExec(out) {
			continue
		}
		if err := build(ctx, filepath.Join(root, "internal", "kubetest", "kubebuild"), c, out); err != nil {
			return "", err
		}
	}
	return dir, nil
}

// build runs the same command as the wrapper's documented build (kubebuild/), so that a
// machine that built the binaries by hand reuses the Go build cache.
func build(ctx context.Context, modDir, component, out string) error {
	hint := map[string]string{"kube-apiserver": "~5 min", "kubelet": "~1.5 min",
		"kube-scheduler": "~1 min", "kube-controller-manager": "~2 min"}[component]
	fmt.Fprintf(os.Stderr, "kubetest: building %s %s (first time %s; cached in %s)\n", component, Version, hint, filepath.Dir(out))
	start := time.Now()
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath",
		"-ldflags", "-s -w -X k8s.io/component-base/version.gitVersion="+Version,
		"-o", out+".tmp", "k8s.io/kubernetes/cmd/"+component)
	cmd.Dir = modDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-mod=mod", "GOWORK=off")
	if b, err := cmd.CombinedOutput(); err != nil {
		os.Remove(out + ".tmp")
		return fmt.Errorf("build %s (in %s): %w\n%s", component, modDir, err, tail(string(b), 3000))
	}
	if err := os.Rename(out+".tmp", out); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "kubetest: built %s in %s\n", component, time.Since(start).Round(time.Second))
	return nil
}

func allPresent(dir string) bool {
	for _, c := range components {
		if !isExec(filepath.Join(dir, c)) {
			return false
		}
	}
	return true
}

func isExec(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}

func tail(s string, n int) string {
	if len(s) > n {
		s = s[len(s)-n:]
	}
	return strings.TrimSpace(s)
}

// buildPause builds the sandbox program (./pause) statically into out.
func buildPause(ctx context.Context, out string) error {
	root, err := repoRoot(ctx)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w", "-o", out, "./internal/kubetest/pause")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build the pause program: %w\n%s", err, tail(string(b), 2000))
	}
	return nil
}
