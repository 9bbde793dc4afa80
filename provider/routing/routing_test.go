package routing_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/messaging"
	"github.com/hodei-jobs/hodei/provider"
	"github.com/hodei-jobs/hodei/provider/routing"
)

// nodeProvider is a provider whose workers exist on one node only: it answers for the
// workers it was told it runs and records the operations it performed.
type nodeProvider struct {
	shared bool
	mu     sync.Mutex
	runs   map[string]bool
	ops    []string
}

func (p *nodeProvider) Name() string { return "p" }
func (p *nodeProvider) Capabilities() provider.Capabilities {
	return provider.Capabilities{MaxWorkers: 4, Shared: p.shared}
}
func (p *nodeProvider) Create(context.Context, provider.WorkerSpec) error { return nil }
func (p *nodeProvider) Destroy(_ context.Context, id string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ops = append(p.ops, "destroy "+id)
	delete(p.runs, id)
	return nil
}
func (p *nodeProvider) Status(_ context.Context, id string) (provider.Status, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ops = append(p.ops, "status "+id)
	if p.runs[id] {
		return provider.StatusRunning, nil
	}
	return provider.StatusUnknown, nil
}

func (p *nodeProvider) opsDone() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.ops...)
}

type node struct {
	r *routing.Router
	p *nodeProvider
}

func startNode(t *testing.T, ctx context.Context, url, id string, shared bool) node {
	t.Helper()
	nc, _, err := messaging.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	p := &nodeProvider{shared: shared, runs: map[string]bool{}}
	reg := provider.NewRegistry()
	if err := reg.Register("p", p); err != nil {
		t.Fatal(err)
	}
	r, err := routing.New(nc, id, reg, routing.Config{Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	stop, err := r.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return node{r: r, p: p}
}

func TestRoutesNodeLocalOperationsToTheOwner(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	emb, err := messaging.StartEmbedded(ctx, messaging.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Shutdown()
	a := startNode(t, ctx, emb.ClientURL(), "node-a", false)
	b := startNode(t, ctx, emb.ClientURL(), "node-b", false)
	a.p.runs["w1"] = true

	// From node b, the worker node a owns is running: node a's provider answered.
	st, err := b.r.Status(ctx, routing.Target{WorkerID: "w1", Provider: "p", Owner: "node-a"})
	if err != nil || st != provider.StatusRunning {
		t.Fatalf("Status from b of a's worker = %q, %v; want running", st, err)
	}
	if err := b.r.Destroy(ctx, routing.Target{WorkerID: "w1", Provider: "p", Owner: "node-a"}); err != nil {
		t.Fatalf("Destroy from b of a's worker: %v", err)
	}
	if got := a.p.opsDone(); len(got) != 2 || got[0] != "status w1" || got[1] != "destroy w1" {
		t.Fatalf("node a performed %v, want [status w1 destroy w1]", got)
	}
	if got := b.p.opsDone(); len(got) != 0 {
		t.Fatalf("node b's own provider performed %v for a worker it does not own", got)
	}
	// Own workers run here.
	if _, err := a.r.Status(ctx, routing.Target{WorkerID: "w2", Provider: "p", Owner: "node-a"}); err != nil {
		t.Fatal(err)
	}
	if got := a.p.opsDone(); len(got) != 3 {
		t.Fatalf("node a performed %v, want its own status call too", got)
	}

	// A dead owner is an error, never "unknown, so gone".
	start := time.Now()
	_, err = b.r.Status(ctx, routing.Target{WorkerID: "w3", Provider: "p", Owner: "node-dead"})
	if !errors.Is(err, routing.ErrOwnerUnreachable) {
		t.Fatalf("Status of a dead node's worker: %v, want ErrOwnerUnreachable", err)
	}
	if time.Since(start) > time.Second {
		t.Fatalf("no-responder answer took %s", time.Since(start))
	}
	if err := b.r.Destroy(ctx, routing.Target{WorkerID: "w3", Provider: "p", Owner: "node-dead"}); !errors.Is(err, routing.ErrOwnerUnreachable) {
		t.Fatalf("Destroy of a dead node's worker: %v, want ErrOwnerUnreachable", err)
	}
}

func TestSharedProvidersRunAnywhere(t *testing.T) {
	ctx := context.Background()
	p := &nodeProvider{shared: true, runs: map[string]bool{"w1": true}}
	reg := provider.NewRegistry()
	if err := reg.Register("p", p); err != nil {
		t.Fatal(err)
	}
	r, err := routing.New(nil, "node-b", reg, routing.Config{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := r.Status(ctx, routing.Target{WorkerID: "w1", Provider: "p", Owner: "node-a"})
	if err != nil || st != provider.StatusRunning {
		t.Fatalf("shared provider Status = %q, %v", st, err)
	}

	// Node-local without a bus: another node's worker is unreachable.
	p.shared = false
	if _, err := r.Status(ctx, routing.Target{WorkerID: "w1", Provider: "p", Owner: "node-a"}); !errors.Is(err, routing.ErrOwnerUnreachable) {
		t.Fatalf("node-local Status without a bus: %v, want ErrOwnerUnreachable", err)
	}
	if _, err := r.Status(ctx, routing.Target{WorkerID: "w1", Provider: "nope", Owner: "node-b"}); !errors.Is(err, provider.ErrNotRegistered) {
		t.Fatalf("unknown provider: %v, want ErrNotRegistered", err)
	}
	if _, err := routing.New(nil, "a.b", reg, routing.Config{}); err == nil {
		t.Fatal("node id with a dot accepted")
	}
}
