package jobs_test

import (
	"context"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/command"
	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/jobs"
	"github.com/hodei-jobs/hodei/provider"
	"github.com/hodei-jobs/hodei/saga"
	"github.com/hodei-jobs/hodei/store/sqlite"
)

// slowProvider's Create blocks for up to block (a container or pod create can take
// seconds), reporting when it starts and whether it is still inside.
type slowProvider struct {
	block   time.Duration
	entered chan struct{}
	once    sync.Once
	inside  atomic.Bool
}

func (p *slowProvider) Name() string { return "slow" }
func (p *slowProvider) Capabilities() provider.Capabilities {
	return provider.Capabilities{MaxWorkers: 1}
}
func (p *slowProvider) Create(ctx context.Context, spec provider.WorkerSpec) error {
	p.inside.Store(true)
	defer p.inside.Store(false)
	p.once.Do(func() { close(p.entered) })
	select {
	case <-time.After(p.block):
	case <-ctx.Done():
	}
	return nil
}
func (p *slowProvider) Destroy(context.Context, string) error { return nil }
func (p *slowProvider) Status(context.Context, string) (provider.Status, error) {
	return provider.StatusUnknown, nil
}

// A provider whose Create blocks 3 s holds no transaction: on SQLite, whose only writer
// a transaction would hold, another job's submit completes during the call.
func TestSlowCreateHoldsNoTransaction(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "hodei.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	bus := command.NewBus()
	reg := saga.NewRegistry()
	if err := jobs.RegisterSagas(reg); err != nil {
		t.Fatal(err)
	}
	chain := command.ChainConfig{Idempotency: command.StoreDeps(st)}
	eng, err := saga.New(st, reg, command.InTxChain(bus, chain), saga.Config{PollInterval: 20 * time.Millisecond,
		Lease: 10 * time.Second, ActivityDispatcher: command.ActivityChain(bus, chain)})
	if err != nil {
		t.Fatal(err)
	}
	p := &slowProvider{block: 3 * time.Second, entered: make(chan struct{})}
	providers := provider.NewRegistry()
	if err := providers.Register("slow", p); err != nil {
		t.Fatal(err)
	}
	svc, err := jobs.New(st, bus, eng, providers, newFakeCloud(t, false), jobs.Config{ServerURL: "http://127.0.0.1:1",
		SchedulerPoll: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	loops, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { stop(); wg.Wait() }()
	wg.Go(func() { _ = eng.Run(loops) })
	wg.Go(func() { _ = svc.RunScheduler(loops) })

	spec := domain.JobSpec{Command: []string{"true"}}
	first, err := svc.Submit(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.entered:
	case <-ctx.Done():
		t.Fatal("the provider's Create was never called")
	}
	// A transaction held across the call would keep this submit waiting for SQLite's
	// write lock for the whole 3 s; it must be done well within them.
	sctx, scancel := context.WithTimeout(ctx, 2*time.Second)
	defer scancel()
	second, err := svc.Submit(sctx, spec)
	if err != nil {
		t.Fatalf("submit during a blocked Create: %v", err)
	}
	if !p.inside.Load() {
		t.Fatal("Create returned before the second submit completed: the test proves nothing")
	}
	for _, id := range []string{first.ID, second.ID} {
		if _, err := st.Jobs().Get(ctx, id); err != nil {
			t.Fatalf("job %s: %v", id, err)
		}
	}
	// The worker's password was committed before Create was called.
	w, err := st.Workers().List(ctx, domain.WorkerCreating)
	if err != nil || len(w) != 1 || w[0].Owner != "local" {
		t.Fatalf("CREATING workers %+v, %v; want one owned by node local", w, err)
	}
}
