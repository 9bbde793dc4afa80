package providertest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/hodei-jobs/hodei/api"
	hodeiv1 "github.com/hodei-jobs/hodei/gen/hodei/v1"
	"github.com/hodei-jobs/hodei/gen/hodei/v1/hodeiv1connect"
	"github.com/hodei-jobs/hodei/provider"
)

// Harness adapts one provider to the suite.
type Harness struct {
	// New returns a fresh provider with the given capacity; the suite does not close it
	// (use t.Cleanup).
	New func(t *testing.T, maxWorkers int) provider.Provider
	// Spec completes a spec with what the provider needs (an image for docker).
	Spec func(spec provider.WorkerSpec) provider.WorkerSpec
	// Kill ends the worker from outside the provider (SIGKILL, docker kill).
	Kill func(t *testing.T, workerID string)
	// Exists reports whether anything of the worker is left (a process, a container).
	Exists func(t *testing.T, workerID string) bool
	// Exposed returns what others can see of a running worker: argv, labels, logs.
	Exposed func(t *testing.T, workerID string) []string
}

// Run runs the conformance suite.
func Run(t *testing.T, h Harness) {
	t.Run("CreateRegistersRunsAndDestroyLeavesNothing", func(t *testing.T) { createDestroy(t, h) })
	t.Run("DestroyUnknownIsNoError", func(t *testing.T) {
		p := h.New(t, 2)
		if err := p.Destroy(context.Background(), "never-created-1"); err != nil {
			t.Fatalf("Destroy(unknown) = %v; want nil", err)
		}
		if st, err := p.Status(context.Background(), "never-created-1"); err != nil || st != provider.StatusUnknown {
			t.Fatalf("Status(unknown) = %s, %v; want unknown", st, err)
		}
	})
	t.Run("ExternalKillIsReportedAsExit", func(t *testing.T) { externalKill(t, h) })
	t.Run("ListShowsLeftovers", func(t *testing.T) { listLeftovers(t, h) })
	t.Run("Capacity", func(t *testing.T) { capacity(t, h) })
	t.Run("InvalidSpec", func(t *testing.T) { invalidSpec(t, h) })
	t.Run("PasswordNotExposed", func(t *testing.T) { passwordNotExposed(t, h) })
}

// registrar is the registration endpoint: it accepts every password and records it.
type registrar struct {
	hodeiv1connect.UnimplementedWorkerAgentServiceHandler
	mu   sync.Mutex
	regs map[string][]string // worker id → passwords presented
	news chan string
}

func (r *registrar) Register(_ context.Context, req *connect.Request[hodeiv1.RegisterRequest]) (*connect.Response[hodeiv1.RegisterResponse], error) {
	r.mu.Lock()
	r.regs[req.Msg.GetWorkerId()] = append(r.regs[req.Msg.GetWorkerId()], req.Msg.GetOneTimePassword())
	r.mu.Unlock()
	select {
	case r.news <- req.Msg.GetWorkerId():
	default:
	}
	return connect.NewResponse(&hodeiv1.RegisterResponse{WorkerId: req.Msg.GetWorkerId(), SessionToken: "t-" + req.Msg.GetWorkerId(),
		HeartbeatInterval: durationpb.New(time.Second)}), nil
}

func (r *registrar) passwords(id string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.regs[id])
}

// serve starts the endpoint on 127.0.0.1 and returns its URL.
func serve(t *testing.T) (*registrar, string) {
	r := &registrar{regs: map[string][]string{}, news: make(chan string, 64)}
	mux := http.NewServeMux()
	mux.Handle(hodeiv1connect.NewWorkerAgentServiceHandler(r))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := api.NewHTTPServer(mux, context.Background())
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return r, "http://" + ln.Addr().String()
}

var seq struct {
	mu sync.Mutex
	n  int
}

func newID(t *testing.T) string {
	seq.mu.Lock()
	seq.n++
	n := seq.n
	seq.mu.Unlock()
	return fmt.Sprintf("pt-%d-%d-%d", os.Getpid(), time.Now().UnixNano()%1e9, n)
}

func spec(h Harness, id, url string) provider.WorkerSpec {
	s := provider.WorkerSpec{WorkerID: id, OneTimePassword: "otp-" + id + "-s3cr3t", ServerURL: url, JobID: "job-" + id}
	if h.Spec != nil {
		s = h.Spec(s)
	}
	return s
}

func waitFor(t *testing.T, what string, d time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func destroyAtEnd(t *testing.T, p provider.Provider, id string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = p.Destroy(ctx, id)
	})
}

func createDestroy(t *testing.T, h Harness) {
	ctx := context.Background()
	reg, url := serve(t)
	p := h.New(t, 4)
	id := newID(t)
	s := spec(h, id, url)
	destroyAtEnd(t, p, id)
	if err := p.Create(ctx, s); err != nil {
		t.Fatalf("Create: %v", err)
	}
	if err := p.Create(ctx, s); err != nil {
		t.Fatalf("Create again (idempotent): %v", err)
	}
	waitFor(t, "the agent registers", 30*time.Second, func() bool { return len(reg.passwords(id)) > 0 })
	if got := reg.passwords(id); got[0] != s.OneTimePassword {
		t.Fatalf("registered with password %q; want the spec's", got[0])
	}
	if st, err := p.Status(ctx, id); err != nil || st != provider.StatusRunning {
		t.Fatalf("Status after registration = %s, %v; want running", st, err)
	}
	time.Sleep(300 * time.Millisecond) // a second copy would have registered by now
	if n := len(reg.passwords(id)); n != 1 {
		t.Fatalf("%d registrations; want 1 (Create twice must start one worker)", n)
	}
	if err := p.Destroy(ctx, id); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	if h.Exists(t, id) {
		t.Fatal("something of the worker is left after Destroy")
	}
	if err := p.Destroy(ctx, id); err != nil {
		t.Fatalf("Destroy again: %v", err)
	}
	if st, err := p.Status(ctx, id); err != nil || st != provider.StatusUnknown {
		t.Fatalf("Status after Destroy = %s, %v; want unknown", st, err)
	}
}

func externalKill(t *testing.T, h Harness) {
	ctx := context.Background()
	reg, url := serve(t)
	p := h.New(t, 4)
	n, ok := p.(provider.ExitNotifier)
	if !ok {
		t.Fatalf("%s does not implement provider.ExitNotifier", p.Name())
	}
	type exit struct {
		id  string
		err error
	}
	exits := make(chan exit, 16)
	n.OnExit(func(id string, err error) { exits <- exit{id, err} })
	id := newID(t)
	destroyAtEnd(t, p, id)
	if err := p.Create(ctx, spec(h, id, url)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the agent registers", 30*time.Second, func() bool { return len(reg.passwords(id)) > 0 })
	h.Kill(t, id)
	timeout := time.After(20 * time.Second)
	for {
		select {
		case e := <-exits:
			if e.id != id {
				continue
			}
			if e.err == nil {
				t.Fatal("a killed worker was reported as a clean exit")
			}
			waitFor(t, "Status exited", 10*time.Second, func() bool {
				st, _ := p.Status(ctx, id)
				return st == provider.StatusExited
			})
			return
		case <-timeout:
			t.Fatal("the kill was not reported to the exit handler within 20s")
		}
	}
}

func listLeftovers(t *testing.T, h Harness) {
	ctx := context.Background()
	_, url := serve(t)
	p := h.New(t, 4)
	l, ok := p.(provider.Lister)
	if !ok {
		t.Fatalf("%s does not implement provider.Lister", p.Name())
	}
	a, b := newID(t), newID(t)
	for _, id := range []string{a, b} {
		destroyAtEnd(t, p, id)
		if err := p.Create(ctx, spec(h, id, url)); err != nil {
			t.Fatal(err)
		}
	}
	ids, err := l.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(ids, a) || !slices.Contains(ids, b) {
		t.Fatalf("List = %v; want %s and %s", ids, a, b)
	}
	if err := p.Destroy(ctx, a); err != nil {
		t.Fatal(err)
	}
	ids, err = l.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(ids, a) || !slices.Contains(ids, b) {
		t.Fatalf("List after destroying %s = %v; want only %s of the two", a, ids, b)
	}
}

func capacity(t *testing.T, h Harness) {
	ctx := context.Background()
	_, url := serve(t)
	p := h.New(t, 1)
	if got := p.Capabilities().MaxWorkers; got != 1 {
		t.Fatalf("Capabilities().MaxWorkers = %d; want 1", got)
	}
	a, b := newID(t), newID(t)
	destroyAtEnd(t, p, a)
	destroyAtEnd(t, p, b)
	if err := p.Create(ctx, spec(h, a, url)); err != nil {
		t.Fatal(err)
	}
	err := p.Create(ctx, spec(h, b, url))
	if !errors.Is(err, provider.ErrCapacity) {
		t.Fatalf("Create beyond MaxWorkers = %v; want provider.ErrCapacity", err)
	}
	if h.Exists(t, b) {
		t.Fatal("a worker refused for capacity exists")
	}
	if err := p.Destroy(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := p.Create(ctx, spec(h, b, url)); err != nil {
		t.Fatalf("Create after a Destroy freed the slot: %v", err)
	}
}

func invalidSpec(t *testing.T, h Harness) {
	ctx := context.Background()
	_, url := serve(t)
	p := h.New(t, 2)
	for name, mod := range map[string]func(*provider.WorkerSpec){
		"no password":     func(s *provider.WorkerSpec) { s.OneTimePassword = "" },
		"no server":       func(s *provider.WorkerSpec) { s.ServerURL = "" },
		"bad worker id":   func(s *provider.WorkerSpec) { s.WorkerID = "../escape" },
		"negative memory": func(s *provider.WorkerSpec) { s.Resources.MemoryBytes = -1 },
	} {
		s := spec(h, newID(t), url)
		mod(&s)
		if err := p.Create(ctx, s); err == nil {
			destroyAtEnd(t, p, s.WorkerID)
			t.Errorf("Create with %s = nil; want an error", name)
		}
	}
}

func passwordNotExposed(t *testing.T, h Harness) {
	ctx := context.Background()
	reg, url := serve(t)
	p := h.New(t, 2)
	id := newID(t)
	s := spec(h, id, url)
	destroyAtEnd(t, p, id)
	if err := p.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the agent registers", 30*time.Second, func() bool { return len(reg.passwords(id)) > 0 })
	seen := h.Exposed(t, id)
	if len(seen) == 0 {
		t.Fatal("Exposed returned nothing to check")
	}
	for _, v := range seen {
		if strings.Contains(v, s.OneTimePassword) {
			t.Fatalf("the password is visible outside the worker's environment: %q", v)
		}
	}
}

var agent struct {
	once sync.Once
	path string
	err  error
}

// Agent builds (once per test binary) a static hodei binary (CGO_ENABLED=0) and
// returns its path: one directory per user and checkout under the system's temporary
// directory (as e2e's binary), replaced atomically so that a concurrent test binary's
// workers keep theirs.
func Agent(t testing.TB) string {
	t.Helper()
	agent.once.Do(func() {
		goBin, err := exec.LookPath("go")
		if err != nil {
			goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		out, err := exec.Command(goBin, "env", "GOMOD").Output()
		if err != nil {
			agent.err = fmt.Errorf("go env GOMOD: %w", err)
			return
		}
		modDir := filepath.Dir(strings.TrimSpace(string(out)))
		sum := sha256.Sum256([]byte(modDir))
		dir := filepath.Join(os.TempDir(), fmt.Sprintf("hodei-agent-%d-%s", os.Getuid(), hex.EncodeToString(sum[:6])))
		if err := os.MkdirAll(dir, 0o700); err != nil {
			agent.err = err
			return
		}
		agent.path = filepath.Join(dir, "hodei")
		tmp := fmt.Sprintf("%s.%d", agent.path, os.Getpid())
		build := exec.Command(goBin, "build", "-o", tmp, "./cmd/hodei")
		build.Dir = modDir
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			agent.err = fmt.Errorf("CGO_ENABLED=0 go build ./cmd/hodei: %w\n%s", err, out)
			return
		}
		agent.err = os.Rename(tmp, agent.path)
	})
	if agent.err != nil {
		t.Fatal(agent.err)
	}
	return agent.path
}
