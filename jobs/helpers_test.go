package jobs_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/command"
	"github.com/hodei-jobs/hodei/domain"
	hodeiv1 "github.com/hodei-jobs/hodei/gen/hodei/v1"
	"github.com/hodei-jobs/hodei/internal/pgtest"
	"github.com/hodei-jobs/hodei/internal/protoconv"
	"github.com/hodei-jobs/hodei/jobs"
	"github.com/hodei-jobs/hodei/provider"
	"github.com/hodei-jobs/hodei/saga"
	"github.com/hodei-jobs/hodei/store"
	"github.com/hodei-jobs/hodei/store/postgres"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// fakeCloud is a test double of an external provider (a cloud API cannot run here): it
// records Create and Destroy calls and, in auto mode, plays the worker agent by calling
// the Service exactly as the API does for a real agent (RegisterWorker; JobStarted,
// AppendLogs and JobFinished when a RunJob arrives on the channel). The exit code of a
// job is its env FAKE_EXIT (default 0); FAKE_HANG=1 never finishes.
type fakeCloud struct {
	t    *testing.T
	auto bool
	svc  func() *jobs.Service

	mu        sync.Mutex
	otps      map[string]string // worker → last password given
	live      map[string]bool
	maxLive   int
	creates   map[string]int
	destroyed map[string]bool
	exited    map[string]bool // died by themselves (kill), not destroyed
	ran       map[string]int  // job → RunJobs received
	msgs      map[string]bool // RunJob message ids handled

	dropRun   atomic.Pointer[func(workerID string, j *domain.Job) bool]
	canceller atomic.Pointer[func(ctx context.Context, workerID string, c domain.CancelRequest) error]
}

func newFakeCloud(t *testing.T, auto bool) *fakeCloud {
	return &fakeCloud{t: t, auto: auto, otps: map[string]string{}, live: map[string]bool{},
		creates: map[string]int{}, destroyed: map[string]bool{}, exited: map[string]bool{}, ran: map[string]int{},
		msgs: map[string]bool{}}
}

func (f *fakeCloud) Name() string { return "fake" }
func (f *fakeCloud) Capabilities() provider.Capabilities {
	return provider.Capabilities{MaxWorkers: 100}
}

func (f *fakeCloud) Create(ctx context.Context, spec provider.WorkerSpec) error {
	if err := spec.Validate(); err != nil {
		return err
	}
	f.mu.Lock()
	f.creates[spec.WorkerID]++
	f.otps[spec.WorkerID] = spec.OneTimePassword
	already := f.live[spec.WorkerID]
	f.live[spec.WorkerID] = true
	f.maxLive = max(f.maxLive, len(f.live))
	f.mu.Unlock()
	if f.auto && !already {
		go f.register(spec.WorkerID, spec.OneTimePassword)
	}
	return nil
}

func (f *fakeCloud) register(workerID, otp string) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := f.svc().RegisterWorker(ctx, workerID, otp); err != nil {
		f.t.Errorf("fake agent %s: register: %v", workerID, err)
	}
}

func (f *fakeCloud) Destroy(ctx context.Context, workerID string) error {
	f.mu.Lock()
	delete(f.live, workerID)
	f.destroyed[workerID] = true
	f.mu.Unlock()
	return nil
}

// kill makes the worker die by itself (as a SIGKILL would): Status reports it exited.
func (f *fakeCloud) kill(workerID string) {
	f.mu.Lock()
	delete(f.live, workerID)
	f.exited[workerID] = true
	f.mu.Unlock()
}

func (f *fakeCloud) Status(ctx context.Context, workerID string) (provider.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.live[workerID]:
		return provider.StatusRunning, nil
	case f.destroyed[workerID], f.exited[workerID]:
		return provider.StatusExited, nil
	}
	return provider.StatusUnknown, nil
}

// List returns the workers the fake runs (the sweep's view of the provider).
func (f *fakeCloud) List(ctx context.Context) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ids := make([]string, 0, len(f.live))
	for id := range f.live {
		ids = append(ids, id)
	}
	return ids, nil
}

func (f *fakeCloud) wasDestroyed(workerID string) (bool, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.destroyed[workerID], f.creates[workerID]
}

// waitDestroyed waits up to 5s for Destroy of workerID (it runs after the commit of
// DestroyWorker, in a goroutine).
func (f *fakeCloud) waitDestroyed(workerID string) (bool, int) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		destroyed, creates := f.wasDestroyed(workerID)
		if destroyed || time.Now().After(deadline) {
			return destroyed, creates
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (f *fakeCloud) otp(workerID string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.otps[workerID]
}

// RunJob is the WorkerChannel: the fake agent runs the job (once per RunJob message id,
// as the real agent drops a re-sent copy).
func (f *fakeCloud) RunJob(ctx context.Context, workerID string, j *domain.Job) error {
	if drop := f.dropRun.Load(); drop != nil && (*drop)(workerID, j) {
		return errors.New("fake agent: RunJob lost (fault hook)")
	}
	id := fmt.Sprintf("run/%s/%d", j.ID, j.Attempt)
	f.mu.Lock()
	f.ran[j.ID]++
	first := !f.msgs[id]
	f.msgs[id] = true
	f.mu.Unlock()
	if f.auto && first {
		go f.run(workerID, &hodeiv1.RunJob{JobId: j.ID, Spec: protoconv.SpecToProto(j.Spec), Attempt: int32(j.Attempt)})
	}
	return nil
}

// CancelJob is the WorkerChannel's cancel: handed to the canceller set by a test, if any.
func (f *fakeCloud) CancelJob(ctx context.Context, workerID string, c domain.CancelRequest) error {
	if h := f.canceller.Load(); h != nil {
		return (*h)(ctx, workerID, c)
	}
	return nil
}

// setCanceller routes CancelJob messages to fn.
func (f *fakeCloud) setCanceller(fn func(ctx context.Context, workerID string, c domain.CancelRequest) error) {
	f.canceller.Store(&fn)
}

func (f *fakeCloud) run(workerID string, rj *hodeiv1.RunJob) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	svc := f.svc()
	env := rj.GetSpec().GetEnv()
	if err := svc.JobStarted(ctx, workerID, rj.GetJobId(), time.Now()); err != nil {
		f.t.Errorf("fake agent: started: %v", err)
		return
	}
	if env["FAKE_HANG"] == "1" {
		return
	}
	out := []*store.LogLine{{Seq: 1, Stream: store.StreamStdout, Line: "hello from " + rj.GetJobId()}}
	if err := svc.AppendLogs(ctx, workerID, rj.GetJobId(), out); err != nil {
		f.t.Errorf("fake agent: logs: %v", err)
		return
	}
	code, _ := strconv.Atoi(env["FAKE_EXIT"])
	if err := svc.JobFinished(ctx, workerID, jobs.JobResult{JobID: rj.GetJobId(), ExitCode: code}); err != nil {
		f.t.Errorf("fake agent: finished: %v", err)
	}
}

// env is one test's database, engine and Service.
type env struct {
	t      *testing.T
	st     *postgres.Store
	cloud  *fakeCloud
	svc    *jobs.Service
	engine *saga.Engine
	d      command.Dispatcher // the bus behind the idempotency middleware, as the sagas use it
	logs   *syncBuffer
	clock  *clock

	current atomic.Pointer[jobs.Service]
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// clock is the Service's credential clock: real time plus a settable offset.
type clock struct {
	mu  sync.Mutex
	off time.Duration
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.off)
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.off += d
	c.mu.Unlock()
}

type envOpts struct {
	capacity     int
	manual       bool // the fake agent does nothing by itself
	regTimeout   time.Duration
	noScheduler  bool
	noEngineLoop bool
	// leader, if set, builds the Service's Config.Leader over the test's store.
	leader func(st store.Store) jobs.Leadership
	// pools are the Service's warm pools (Config.Pools).
	pools []jobs.PoolConfig
	// providers, if set, builds the registry over the fake cloud (default: the cloud
	// alone); strategy is the Service's Config.ProviderStrategy.
	providers func(t *testing.T, cloud *fakeCloud) *provider.Registry
	strategy  jobs.Strategy
	// wrap, if set, wraps the store the engine, the bus and the Service use (fault
	// injection: lossyStore).
	wrap func(st store.Store) store.Store
}

func newEnv(t *testing.T, o envOpts) *env {
	t.Helper()
	e := &env{t: t, st: pgtest.NewStore(t), cloud: newFakeCloud(t, !o.manual), logs: &syncBuffer{}, clock: &clock{}}
	e.cloud.svc = func() *jobs.Service { return e.current.Load() }
	e.start(o)
	t.Cleanup(e.stop)
	return e
}

// start builds a control plane (bus, engine, Service) over e's database and runs its
// loops, as a server process does.
func (e *env) start(o envOpts) {
	t := e.t
	t.Helper()
	bus := command.NewBus()
	reg := saga.NewRegistry()
	if err := jobs.RegisterSagas(reg); err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	// Wired as server.Run wires it: the engine's steps dispatch through the in-transaction
	// chain; jobs.New builds the Service's own chains from the same constructors.
	var st store.Store = e.st
	if o.wrap != nil {
		st = o.wrap(st)
	}
	chain := command.ChainConfig{Idempotency: command.StoreDeps(st), Logger: logger}
	d := command.InTxChain(bus, chain)
	eng, err := saga.New(st, reg, d, saga.Config{PollInterval: 20 * time.Millisecond,
		Lease: 10 * time.Second, Concurrency: 8, Logger: logger, ActivityDispatcher: command.ActivityChain(bus, chain)})
	if err != nil {
		t.Fatal(err)
	}
	e.engine = eng
	e.d = d
	capacity := o.capacity
	if capacity == 0 {
		capacity = 4
	}
	var leader jobs.Leadership
	if o.leader != nil {
		leader = o.leader(st)
	}
	providers := newProviders(t, e.cloud)
	if o.providers != nil {
		providers = o.providers(t, e.cloud)
	}
	svc, err := jobs.New(st, bus, eng, providers, e.cloud, jobs.Config{ServerURL: "http://127.0.0.1:1",
		Leader: leader, ProviderStrategy: o.strategy, Pools: o.pools,
		Capacity: capacity, RegistrationTimeout: o.regTimeout, SchedulerPoll: 50 * time.Millisecond,
		SweepInterval: 100 * time.Millisecond,
		Logger:        logger, Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	e.svc = svc
	e.current.Store(svc)
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	if !o.noEngineLoop {
		e.wg.Add(1)
		go func() { defer e.wg.Done(); _ = eng.Run(ctx) }()
	}
	if !o.noScheduler {
		e.startScheduler(ctx, &e.wg)
	}
}

// stop ends the control plane's loops (a crash, as far as the database can tell: no
// step is in flight when the test calls it, and nothing is cleaned up).
func (e *env) stop() {
	e.cancel()
	e.wg.Wait()
}

func (e *env) startScheduler(ctx context.Context, wg *sync.WaitGroup) {
	wg.Add(1)
	go func() { defer wg.Done(); _ = e.svc.RunScheduler(ctx) }()
}

func (e *env) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	e.t.Cleanup(cancel)
	return ctx
}

func spec(env map[string]string) domain.JobSpec {
	return domain.JobSpec{Command: []string{"echo", "hi"}, Env: env}
}

// waitJob polls until the job is in one of states (or fails the test after 20s).
func (e *env) waitJob(id string, states ...domain.JobState) *domain.Job {
	e.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		j, err := e.st.Jobs().Get(context.Background(), id)
		if err != nil {
			e.t.Fatal(err)
		}
		for _, s := range states {
			if j.State == s {
				return j
			}
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("job %s is %s after 20s, want %v (last error %q)", id, j.State, states, j.LastError)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitSaga polls until the saga is in state.
func (e *env) waitSaga(id string, state saga.State) {
	e.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		info, err := e.engine.Get(context.Background(), id)
		if err == nil && info.State == state {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("saga %s: %+v (err %v), want %s", id, info, err, state)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (e *env) count(sql string, args ...any) int {
	e.t.Helper()
	var n int
	if err := e.st.Pool().QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

func newProviders(t *testing.T, p provider.Provider) *provider.Registry {
	t.Helper()
	r := provider.NewRegistry()
	if err := r.Register(p.Name(), p); err != nil {
		t.Fatal(err)
	}
	return r
}
