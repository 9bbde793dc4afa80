package natstest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// serverModule is the module whose main package is nats-server.
const serverModule = "github.com/nats-io/nats-server/v2"

// EnvDebianServer names another nats-server binary of the 2.9 line to use instead of
// Debian's.
const EnvDebianServer = "HODEI_TEST_NATS_SERVER_29"

const debianHint = `Debian's nats-server (2.9 line) was not found at /usr/sbin/nats-server or on PATH.
Install it with
    apt-get install -y nats-server
or run "make test", which installs it (scripts/ensure-nats.sh); or set ` + EnvDebianServer + `
to a nats-server 2.9 binary.`

var buildMu sync.Mutex // one build at a time within a test binary

// ModuleServer returns a nats-server binary built from the module version that go.mod
// requires, building it on first use into the user's cache directory.
func ModuleServer() (string, error) {
	buildMu.Lock()
	defer buildMu.Unlock()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	out, err := exec.Command(goBin, "list", "-m", "-f", "{{.Version}}", serverModule).Output()
	if err != nil {
		return "", fmt.Errorf("natstest: go list -m %s: %w", serverModule, err)
	}
	version := strings.TrimSpace(string(out))
	if version == "" {
		return "", fmt.Errorf("natstest: go.mod does not require %s", serverModule)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "hodei", "natstest", version)
	bin := filepath.Join(dir, "nats-server")
	if fi, err := os.Stat(bin); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("natstest: %w", err)
	}
	tmp := fmt.Sprintf("%s.%d", bin, os.Getpid())
	build := exec.Command(goBin, "build", "-o", tmp, serverModule)
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		_ = os.Remove(tmp)
		return "", fmt.Errorf("natstest: go build %s@%s: %w\n%s", serverModule, version, err, out)
	}
	// Atomic: a concurrent test binary keeps the file it started.
	if err := os.Rename(tmp, bin); err != nil {
		return "", fmt.Errorf("natstest: %w", err)
	}
	return bin, nil
}

// DebianServer returns Debian's nats-server binary (or the one EnvDebianServer names)
// and checks that it is of the 2.9 line.
func DebianServer() (string, error) {
	bin := os.Getenv(EnvDebianServer)
	if bin == "" {
		if _, err := os.Stat("/usr/sbin/nats-server"); err == nil {
			bin = "/usr/sbin/nats-server"
		} else if p, err := exec.LookPath("nats-server"); err == nil {
			bin = p
		} else {
			return "", errors.New("natstest: " + debianHint)
		}
	}
	v, err := Version(bin)
	if err != nil {
		return "", err
	}
	if !strings.HasPrefix(v, "2.9.") {
		return "", fmt.Errorf("natstest: %s is nats-server %s, not of the 2.9 line\n%s", bin, v, debianHint)
	}
	return bin, nil
}

var versionRE = regexp.MustCompile(`v?(\d+\.\d+\.\d+\S*)`)

// Version runs bin --version and returns the version, e.g. "2.9.10".
func Version(bin string) (string, error) {
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("natstest: %s --version: %w (%s)", bin, err, bytes.TrimSpace(out))
	}
	m := versionRE.FindSubmatch(out)
	if m == nil {
		return "", fmt.Errorf("natstest: %s --version printed %q: no version", bin, out)
	}
	return string(m[1]), nil
}

// Node is one nats-server process of a Cluster.
type Node struct {
	Name        string
	bin         string
	dir         string // config file and JetStream store
	clientPort  int
	clusterPort int
	routes      []int // the other nodes' cluster ports
	clusterName string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	log  bytes.Buffer
}

// Cluster is a set of nats-server processes with JetStream; one node is a standalone
// server, more form a cluster.
type Cluster struct {
	t     testing.TB
	Nodes []*Node
}

// Start starts n nodes of bin (n == 1: a standalone server, no cluster block) and
// waits until JetStream answers on every node. They are killed when the test ends, and
// their logs printed if it failed.
func Start(t testing.TB, bin string, n int) *Cluster {
	t.Helper()
	if n < 1 {
		t.Fatalf("natstest.Start: n %d below 1", n)
	}
	root := t.TempDir()
	c := &Cluster{t: t}
	ports := freePorts(t, 2*n)
	for i := range n {
		nd := &Node{Name: fmt.Sprintf("n%d", i+1), bin: bin, dir: filepath.Join(root, fmt.Sprintf("n%d", i+1)),
			clientPort: ports[2*i], clusterPort: ports[2*i+1]}
		if n > 1 {
			nd.clusterName = "hodei-test"
			for j := range n {
				if j != i {
					nd.routes = append(nd.routes, ports[2*j+1])
				}
			}
		}
		c.Nodes = append(c.Nodes, nd)
	}
	t.Cleanup(func() {
		for _, nd := range c.Nodes {
			nd.Kill()
			if t.Failed() {
				t.Logf("nats-server %s log (tail):\n%s", nd.Name, tail(nd.Log(), 60))
			}
		}
	})
	for _, nd := range c.Nodes {
		if err := nd.Start(); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := c.WaitJetStream(ctx); err != nil {
		t.Fatal(err)
	}
	return c
}

// URLs returns every node's client URL, comma-separated (what nats.Connect and
// hodei server --nats-url take).
func (c *Cluster) URLs() string {
	urls := make([]string, len(c.Nodes))
	for i, nd := range c.Nodes {
		urls[i] = nd.ClientURL()
	}
	return strings.Join(urls, ",")
}

// WaitJetStream waits until every running node answers a JetStream account request
// (in a cluster: a meta leader is elected and the node knows it).
func (c *Cluster) WaitJetStream(ctx context.Context) error {
	for _, nd := range c.Nodes {
		if !nd.Running() {
			continue
		}
		if err := nd.WaitJetStream(ctx); err != nil {
			return err
		}
	}
	return nil
}

// ClientURL is the node's nats:// URL.
func (n *Node) ClientURL() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.clientPort) }

// StoreDir is the node's JetStream store directory.
func (n *Node) StoreDir() string { return filepath.Join(n.dir, "js") }

func (n *Node) config() string {
	var b strings.Builder
	fmt.Fprintf(&b, "server_name: %q\nlisten: \"127.0.0.1:%d\"\n", n.Name, n.clientPort)
	fmt.Fprintf(&b, "jetstream {\n  store_dir: %q\n  max_memory_store: 64MB\n  max_file_store: 2GB\n}\n", n.StoreDir())
	if n.clusterName != "" {
		fmt.Fprintf(&b, "cluster {\n  name: %q\n  listen: \"127.0.0.1:%d\"\n  routes: [\n", n.clusterName, n.clusterPort)
		for _, p := range n.routes {
			fmt.Fprintf(&b, "    \"nats-route://127.0.0.1:%d\"\n", p)
		}
		b.WriteString("  ]\n}\n")
	}
	return b.String()
}

// Start starts the node's process (again, after Kill or Stop: same ports, same store)
// and waits until it accepts client connections.
func (n *Node) Start() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		select {
		case <-n.done:
		default:
			return fmt.Errorf("natstest: node %s is running", n.Name)
		}
	}
	if err := os.MkdirAll(n.dir, 0o700); err != nil {
		return fmt.Errorf("natstest: %w", err)
	}
	conf := filepath.Join(n.dir, "nats.conf")
	if err := os.WriteFile(conf, []byte(n.config()), 0o600); err != nil {
		return fmt.Errorf("natstest: %w", err)
	}
	cmd := exec.Command(n.bin, "-c", conf)
	cmd.Stdout, cmd.Stderr = &lockedWriter{mu: &n.mu, w: &n.log}, &lockedWriter{mu: &n.mu, w: &n.log}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	fmt.Fprintf(&n.log, "=== natstest: starting %s -c %s\n", n.bin, conf)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("natstest: start nats-server %s: %w", n.Name, err)
	}
	done := make(chan struct{})
	n.cmd, n.done = cmd, done
	go func() {
		err := cmd.Wait()
		n.mu.Lock()
		fmt.Fprintf(&n.log, "=== natstest: %s exited: %v\n", n.Name, err)
		n.mu.Unlock()
		close(done)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", n.clientPort), time.Second)
		if err == nil {
			_ = conn.Close()
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("natstest: nats-server %s exited at start:\n%s", n.Name, tail(n.log.String(), 30))
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("natstest: nats-server %s not accepting connections after 30s", n.Name)
		}
		n.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
		n.mu.Lock()
	}
}

// Running reports whether the node's process is alive (paused counts as alive).
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return false
	}
	select {
	case <-n.done:
		return false
	default:
		return true
	}
}

func (n *Node) signal(sig syscall.Signal) (done chan struct{}) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return nil
	}
	_ = n.cmd.Process.Signal(sig)
	return n.done
}

// Kill SIGKILLs the node and waits until it is gone (nothing if it is not running).
func (n *Node) Kill() {
	_ = n.signal(syscall.SIGCONT)
	if done := n.signal(syscall.SIGKILL); done != nil {
		<-done
	}
}

// Stop asks the node to shut down (SIGTERM) and waits up to 30s, then kills it.
func (n *Node) Stop() {
	_ = n.signal(syscall.SIGCONT)
	done := n.signal(syscall.SIGTERM)
	if done == nil {
		return
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		n.Kill()
	}
}

// Pause stops the process with SIGSTOP: its sockets stay open, nothing answers (a
// partition as its peers and clients see it). Resume continues it.
func (n *Node) Pause() { _ = n.signal(syscall.SIGSTOP) }

// Resume continues a paused node (SIGCONT).
func (n *Node) Resume() { _ = n.signal(syscall.SIGCONT) }

// Log returns what the node's process printed so far, over all its starts.
func (n *Node) Log() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.log.String()
}

// WaitJetStream waits until the node answers a JetStream account info request.
func (n *Node) WaitJetStream(ctx context.Context) error {
	nc, err := nats.Connect(n.ClientURL(), nats.Timeout(5*time.Second), nats.MaxReconnects(-1))
	if err != nil {
		return fmt.Errorf("natstest: connect %s: %w", n.Name, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("natstest: %w", err)
	}
	var last error
	for {
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, last = js.AccountInfo(actx)
		cancel()
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("natstest: JetStream of %s not ready: %w (last: %v)", n.Name, ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// freePorts returns n distinct free TCP ports on 127.0.0.1 (held open until all are
// picked, so they differ).
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	ls := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("natstest: free port: %v", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// lockedWriter writes to w under mu (the process's output goroutines and readers).
type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func tail(s string, n int) string {
	lines := strings.SplitAfter(s, "\n")
	if len(lines) <= n {
		return s
	}
	return "[… " + strconv.Itoa(len(lines)-n) + " lines cut …]\n" + strings.Join(lines[len(lines)-n:], "")
}
