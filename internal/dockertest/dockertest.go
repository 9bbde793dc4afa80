package dockertest

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/hodei-jobs/hodei/internal/mountroot"
)

// EnvDockerHost names the variable that points the tests at an existing engine.
const EnvDockerHost = "HODEI_TEST_DOCKER_HOST"

// BusyboxPath is where Debian's busybox-static installs its binary.
const BusyboxPath = "/bin/busybox"

const installHint = `install Debian's Docker Engine and static busybox with
    apt-get install -y docker.io busybox-static
(or run "make test", which installs them), or set ` + EnvDockerHost + ` to an engine's socket`

// applets are the busybox links of the test image.
var applets = []string{"sh", "echo", "cat", "sleep", "true", "false", "head", "tr", "ls",
	"kill", "env", "id", "dd", "yes", "ps", "grep", "wc", "seq", "printf", "test", "["}

// Engine is a running Docker Engine and the test image imported into it.
type Engine struct {
	// Host is the engine's address, e.g. unix:///tmp/hdk123/docker.sock.
	Host string
	// Image is the local busybox image (FROM scratch; PATH=/bin).
	Image string
	// Client is connected to Host.
	Client *client.Client

	dir  string
	cmd  *exec.Cmd
	done chan struct{}
}

// Start starts a private dockerd (or connects to HODEI_TEST_DOCKER_HOST) and imports
// the test image. Stop ends it.
func Start(ctx context.Context) (*Engine, error) {
	e := &Engine{}
	if h := os.Getenv(EnvDockerHost); h != "" {
		e.Host = h
	} else if err := e.startDaemon(ctx); err != nil {
		return nil, err
	}
	cli, err := client.New(client.WithHost(e.Host))
	if err != nil {
		e.Stop()
		return nil, fmt.Errorf("dockertest: client for %s: %w", e.Host, err)
	}
	e.Client = cli
	if err := e.waitReady(ctx); err != nil {
		e.Stop()
		return nil, err
	}
	img, err := ImportBusybox(ctx, cli)
	if err != nil {
		e.Stop()
		return nil, err
	}
	e.Image = img
	return e, nil
}

func (e *Engine) startDaemon(ctx context.Context) error {
	bin, err := exec.LookPath("dockerd")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/dockerd"); serr != nil {
			return fmt.Errorf("dockertest: dockerd not found; %s", installHint)
		}
		bin = "/usr/sbin/dockerd"
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("dockertest: dockerd needs root (running as uid %d); or set %s", os.Geteuid(), EnvDockerHost)
	}
	dir, err := os.MkdirTemp("", "hdk")
	if err != nil {
		return err
	}
	e.dir = dir
	e.Host = "unix://" + filepath.Join(dir, "docker.sock")
	var errs []error
	for _, driver := range []string{"", "vfs"} {
		if err := e.launch(ctx, bin, driver); err != nil {
			errs = append(errs, err)
			continue
		}
		return nil
	}
	os.RemoveAll(dir)
	return fmt.Errorf("dockertest: dockerd did not start: %w", errors.Join(errs...))
}

// noRegistryEnv keeps the engine's pulls on loopback: a test that pulls (a missing
// image under --pull if-not-present) would otherwise resolve and dial Docker Hub. With
// a proxy on a loopback port where nothing listens (9, discard), every pull fails at
// once with "proxyconnect … connection refused" and no packet leaves the machine.
var noRegistryEnv = []string{"HTTP_PROXY=http://127.0.0.1:9", "HTTPS_PROXY=http://127.0.0.1:9",
	"http_proxy=http://127.0.0.1:9", "https_proxy=http://127.0.0.1:9", "NO_PROXY=", "no_proxy="}

// launch starts dockerd with storage driver (empty: its default) and waits for its
// socket; it fails if dockerd exits first.
func (e *Engine) launch(ctx context.Context, bin, driver string) error {
	args := []string{
		"--data-root", filepath.Join(e.dir, "data"),
		"--exec-root", filepath.Join(e.dir, "exec"),
		"--pidfile", filepath.Join(e.dir, "dockerd.pid"),
		"-H", e.Host,
		"--bridge=none", "--iptables=false", "--ip6tables=false",
		"--ip-forward=false", "--ip-masq=false", "--userland-proxy=false",
		"--log-level=warn",
	}
	if driver != "" {
		args = append(args, "--storage-driver="+driver)
	}
	logPath := filepath.Join(e.dir, "dockerd.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	// In a chroot whose root is not a mount point (a debootstrap tree, as on a fresh test
	// machine), dockerd's image unpacking fails to remount "/" ("remount /, flags:
	// 0x84000: invalid argument"): mountroot gives it a root that is one.
	cmd, err := mountroot.Command(filepath.Join(e.dir, "root"), bin, args...)
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), noRegistryEnv...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", bin, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	sock := strings.TrimPrefix(e.Host, "unix://")
	deadline := time.NewTimer(60 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if _, err := os.Stat(sock); err == nil {
			e.cmd, e.done = cmd, done
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("dockerd (storage driver %q) exited during start-up: %s", driverName(driver), tail(logPath))
		case <-ctx.Done():
			_ = cmd.Process.Kill()
			<-done
			return ctx.Err()
		case <-deadline.C:
			_ = cmd.Process.Kill()
			<-done
			return fmt.Errorf("dockerd (storage driver %q) made no socket within 60s: %s", driverName(driver), tail(logPath))
		case <-tick.C:
		}
	}
}

func driverName(d string) string {
	if d == "" {
		return "default"
	}
	return d
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return strings.TrimSpace(string(b))
}

func (e *Engine) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var last error
	for {
		if _, err := e.Client.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err == nil {
			return nil
		} else {
			last = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("dockertest: engine at %s does not answer: %w", e.Host, last)
		case <-e.exited():
			return fmt.Errorf("dockertest: dockerd exited: %s", tail(filepath.Join(e.dir, "dockerd.log")))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (e *Engine) exited() <-chan struct{} {
	if e.done == nil {
		return nil
	}
	return e.done
}

// Stop stops the private dockerd (SIGTERM: it stops its containers; SIGKILL after 20s)
// and removes its directory. With HODEI_TEST_DOCKER_HOST it only closes the client.
func (e *Engine) Stop() {
	if e.Client != nil {
		_ = e.Client.Close()
	}
	if e.cmd != nil {
		_ = e.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-e.done:
		case <-time.After(20 * time.Second):
			_ = syscall.Kill(-e.cmd.Process.Pid, syscall.SIGKILL)
			<-e.done
		}
	}
	if e.dir != "" {
		// dockerd leaves its default network namespace (an nsfs mount) under the exec
		// root; unmount what is left under the directory before removing it.
		unmountUnder(e.dir)
		_ = os.RemoveAll(e.dir)
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
		if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			points = append(points, f[4])
		}
	}
	for i := len(points) - 1; i >= 0; i-- {
		_ = syscall.Unmount(points[i], syscall.MNT_DETACH)
	}
}

// CheckStatic returns an error unless path is a statically linked ELF executable (no
// program interpreter), which is what a FROM scratch image can run.
func CheckStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked (it has a program interpreter)", path)
		}
	}
	return nil
}

// ImportBusybox imports (once per engine: the tag is the binary's hash) an image
// holding /bin/busybox, links for common applets, and /tmp, with PATH=/bin, and returns
// its reference.
func ImportBusybox(ctx context.Context, cli *client.Client) (string, error) {
	if err := CheckStatic(BusyboxPath); err != nil {
		return "", fmt.Errorf("dockertest: the test image needs Debian's static busybox: %w; %s", err, installHint)
	}
	bb, err := os.ReadFile(BusyboxPath)
	if err != nil {
		return "", fmt.Errorf("dockertest: %w; %s", err, installHint)
	}
	sum := sha256.Sum256(bb)
	ref := "hodei-test/busybox:" + hex.EncodeToString(sum[:6])
	if _, err := cli.ImageInspect(ctx, ref); err == nil {
		return ref, nil
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	now := time.Now()
	add := func(h *tar.Header, body []byte) error {
		h.ModTime = now
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		_, err := tw.Write(body)
		return err
	}
	errs := []error{
		add(&tar.Header{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755}, nil),
		add(&tar.Header{Name: "tmp/", Typeflag: tar.TypeDir, Mode: 0o1777}, nil),
		add(&tar.Header{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(bb))}, bb),
	}
	for _, a := range applets {
		errs = append(errs, add(&tar.Header{Name: "bin/" + a, Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777}, nil))
	}
	errs = append(errs, tw.Close())
	if err := errors.Join(errs...); err != nil {
		return "", fmt.Errorf("dockertest: build image tar: %w", err)
	}
	rc, err := cli.ImageImport(ctx, client.ImageImportSource{Source: &buf, SourceName: "-"}, ref,
		client.ImageImportOptions{Changes: []string{"ENV PATH=/bin", "CMD [\"sh\"]"}})
	if err != nil {
		return "", fmt.Errorf("dockertest: import %s: %w", ref, err)
	}
	out, _ := io.ReadAll(rc)
	rc.Close()
	if _, err := cli.ImageInspect(ctx, ref); err != nil {
		return "", fmt.Errorf("dockertest: import %s: %w (engine said %s)", ref, err, bytes.TrimSpace(out))
	}
	return ref, nil
}

// shared is the one engine of this test binary, started by the first Get.
type shared struct {
	once sync.Once
	e    *Engine
	err  error
}

var (
	mu  sync.Mutex
	one *shared
)

// Get returns this test binary's engine, starting it on first use, and fails the test
// (never skips) when it cannot. Call Main (or wrap the tests with Wrap) so that it is
// stopped at the end.
func Get(t testing.TB) *Engine {
	t.Helper()
	mu.Lock()
	if one == nil {
		one = &shared{}
	}
	s := one
	mu.Unlock()
	s.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		s.e, s.err = Start(ctx)
	})
	if s.err != nil {
		t.Fatalf("%v", s.err)
	}
	return s.e
}

// Runner is what testing.M provides.
type Runner interface{ Run() int }

// Wrap returns m whose Run also stops the engine Get may have started.
func Wrap(m Runner) Runner { return wrapped{m} }

type wrapped struct{ m Runner }

func (w wrapped) Run() int {
	code := w.m.Run()
	mu.Lock()
	s := one
	one = nil
	mu.Unlock()
	if s != nil && s.e != nil {
		s.e.Stop()
	}
	return code
}

// Main runs the tests and stops the engine; call it from TestMain of packages that
// need Docker and no other helper's Main.
func Main(m *testing.M) { os.Exit(Wrap(m).Run()) }
