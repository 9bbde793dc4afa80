package natsq

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hodei-jobs/hodei/command"
	"github.com/hodei-jobs/hodei/internal/pgtest"
	"github.com/hodei-jobs/hodei/messaging"
	"github.com/hodei-jobs/hodei/saga"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// natsEnv is an embedded NATS server with one client connection.
type natsEnv struct {
	srv *messaging.Embedded
	nc  *nats.Conn
	js  jetstream.JetStream
}

func startNATS(t *testing.T) *natsEnv {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	srv, err := messaging.StartEmbedded(ctx, messaging.Options{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatalf("start embedded NATS: %v", err)
	}
	t.Cleanup(srv.Shutdown)
	nc, js := connect(t, srv)
	return &natsEnv{srv: srv, nc: nc, js: js}
}

func connect(t *testing.T, srv *messaging.Embedded) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, js, err := messaging.Connect(context.Background(), srv.ClientURL())
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc, js
}

func newQueue(t *testing.T, js jetstream.JetStream, mut func(*QueueConfig)) *TaskQueue {
	t.Helper()
	cfg := QueueConfig{Storage: jetstream.MemoryStorage}
	if mut != nil {
		mut(&cfg)
	}
	q, err := NewTaskQueue(context.Background(), js, cfg)
	if err != nil {
		t.Fatalf("NewTaskQueue: %v", err)
	}
	return q
}

func recv(t *testing.T, ch <-chan saga.Task, within time.Duration) saga.Task {
	t.Helper()
	select {
	case tk, ok := <-ch:
		if !ok {
			t.Fatal("task channel closed")
		}
		return tk
	case <-time.After(within):
		t.Fatalf("no task within %s", within)
	}
	return nil
}

func noTask(t *testing.T, ch <-chan saga.Task, within time.Duration) {
	t.Helper()
	select {
	case tk := <-ch:
		t.Fatalf("unexpected task for saga %s", tk.SagaID())
	case <-time.After(within):
	}
}

func streamMsgs(t *testing.T, q *TaskQueue) uint64 {
	t.Helper()
	info, err := q.stream.Info(context.Background())
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	return info.State.Msgs
}

func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestQueueConfigValidate(t *testing.T) {
	bad := []QueueConfig{
		{Stream: "a.b"}, {SubjectPrefix: "x.>"}, {Consumer: "c d"}, {AckWait: time.Millisecond},
		{MaxDeliver: -1}, {PullBatch: 20000}, {DuplicateWindow: time.Millisecond},
	}
	for _, c := range bad {
		c.setDefaults()
		if err := c.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil, want an error", c)
		}
	}
	var c QueueConfig
	c.setDefaults()
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	if c.AckWait != 30*time.Second || c.MaxDeliver != 5 || c.Stream != "HODEI_SAGA_TASKS" {
		t.Fatalf("defaults = %+v", c)
	}
}

func TestEnqueueDeliverAck(t *testing.T) {
	n := startNATS(t)
	q := newQueue(t, n.js, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tasks, err := q.Tasks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Enqueue(ctx, "saga-1"); err != nil {
		t.Fatal(err)
	}
	tk := recv(t, tasks, 5*time.Second)
	if tk.SagaID() != "saga-1" {
		t.Fatalf("SagaID = %q, want saga-1", tk.SagaID())
	}
	if err := tk.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	// Work-queue retention: the acked task leaves the stream.
	eventually(t, 5*time.Second, "acked task removed from the stream", func() bool { return streamMsgs(t, q) == 0 })
	noTask(t, tasks, 200*time.Millisecond)

	cancel()
	eventually(t, 5*time.Second, "channel closed after cancel", func() bool {
		select {
		case _, ok := <-tasks:
			return !ok
		default:
			return false
		}
	})
}

func TestSecondEnqueueIsNotDeduplicated(t *testing.T) {
	n := startNATS(t)
	q := newQueue(t, n.js, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for range 2 {
		if err := q.Enqueue(ctx, "same"); err != nil {
			t.Fatal(err)
		}
	}
	if got := streamMsgs(t, q); got != 2 {
		t.Fatalf("stream holds %d messages after two Enqueue calls, want 2", got)
	}
	tasks, err := q.Tasks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		tk := recv(t, tasks, 5*time.Second)
		if tk.SagaID() != "same" {
			t.Fatalf("SagaID = %q", tk.SagaID())
		}
		_ = tk.Ack(ctx)
	}
}

func TestUnackedTaskIsRedeliveredAfterAckWait(t *testing.T) {
	n := startNATS(t)
	q := newQueue(t, n.js, func(c *QueueConfig) { c.AckWait = 300 * time.Millisecond })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tasks, err := q.Tasks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Enqueue(ctx, "slow"); err != nil {
		t.Fatal(err)
	}
	first := recv(t, tasks, 5*time.Second)
	start := time.Now()
	// No ack: it must not come back before AckWait, and must come back after it.
	noTask(t, tasks, 150*time.Millisecond)
	second := recv(t, tasks, 5*time.Second)
	if el := time.Since(start); el < 250*time.Millisecond {
		t.Fatalf("redelivered after %s, before AckWait", el)
	}
	if second.SagaID() != "slow" || first.SagaID() != "slow" {
		t.Fatalf("ids %q, %q", first.SagaID(), second.SagaID())
	}
	if d := second.(*task).Deliveries(); d != 2 {
		t.Fatalf("Deliveries = %d, want 2", d)
	}
	if err := second.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "acked task removed", func() bool { return streamMsgs(t, q) == 0 })
}

func TestNakRedeliversAfterDelay(t *testing.T) {
	n := startNATS(t)
	q := newQueue(t, n.js, nil) // AckWait 30s: only the nak can bring it back quickly
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tasks, err := q.Tasks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Enqueue(ctx, "busy"); err != nil {
		t.Fatal(err)
	}
	tk := recv(t, tasks, 5*time.Second)
	start := time.Now()
	if err := tk.Nak(ctx, 200*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	again := recv(t, tasks, 5*time.Second)
	if el := time.Since(start); el < 150*time.Millisecond {
		t.Fatalf("naked task back after %s, before its 200ms delay", el)
	}
	if again.SagaID() != "busy" {
		t.Fatalf("SagaID = %q", again.SagaID())
	}
	_ = again.Ack(ctx)
}

type deadCall struct {
	id         string
	deliveries int
}

func TestMaxDeliverCallsOnDeadTask(t *testing.T) {
	n := startNATS(t)
	dead := make(chan deadCall, 4)
	q := newQueue(t, n.js, func(c *QueueConfig) {
		c.AckWait = 100 * time.Millisecond
		c.MaxDeliver = 2
		c.OnDeadTask = func(_ context.Context, id string, deliveries int) error {
			dead <- deadCall{id, deliveries}
			return nil
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tasks, err := q.Tasks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Enqueue(ctx, "poison"); err != nil {
		t.Fatal(err)
	}
	// Never ack: two deliveries, then the advisory.
	recv(t, tasks, 5*time.Second)
	recv(t, tasks, 5*time.Second)
	select {
	case c := <-dead:
		if c.id != "poison" || c.deliveries != 2 {
			t.Fatalf("OnDeadTask(%q, %d), want (poison, 2)", c.id, c.deliveries)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("OnDeadTask not called after MaxDeliver deliveries")
	}
	noTask(t, tasks, 300*time.Millisecond)
	eventually(t, 5*time.Second, "dead task deleted from the stream", func() bool { return streamMsgs(t, q) == 0 })
}

func TestWakerWakesEverySubscriber(t *testing.T) {
	n := startNATS(t)
	nc2, _ := connect(t, n.srv) // a second process
	w1, err := NewWaker(n.nc, WakerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	w2, err := NewWaker(nc2, WakerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sub1, sub2 := w1.Wakeups(ctx), w2.Wakeups(ctx)
	if err := w1.Wake(ctx, "wake-me"); err != nil {
		t.Fatal(err)
	}
	for i, ch := range []<-chan string{sub1, sub2} {
		select {
		case id := <-ch:
			if id != "wake-me" {
				t.Fatalf("subscriber %d got %q", i, id)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("subscriber %d not woken", i)
		}
	}
	cancel()
	for i, ch := range []<-chan string{sub1, sub2} {
		select {
		case _, ok := <-ch:
			if ok {
				t.Fatalf("subscriber %d: value after cancel", i)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("subscriber %d: channel not closed after cancel", i)
		}
	}
	if err := w1.Wake(context.Background(), ""); err == nil {
		t.Fatal("Wake with an empty id succeeded")
	}
}

// nopWaker never wakes anyone, so a test can show that the task queue (or the poll)
// alone drove a saga.
type nopWaker struct{}

func (nopWaker) Wake(context.Context, string) error { return nil }
func (nopWaker) Wakeups(ctx context.Context) <-chan string {
	ch := make(chan string)
	go func() { <-ctx.Done(); close(ch) }()
	return ch
}

// nopCmd is the command the test sagas' steps dispatch.
type nopCmd struct {
	Key string `json:"key"`
}

func (nopCmd) CommandType() string      { return "test.nop" }
func (c nopCmd) IdempotencyKey() string { return c.Key }

type sagaEnv struct {
	reg   *saga.Registry
	mu    sync.Mutex
	calls map[string]int
}

func newSagaEnv(t *testing.T) (*sagaEnv, commandBus) {
	t.Helper()
	e := &sagaEnv{reg: saga.NewRegistry(), calls: map[string]int{}}
	bus := newBus(func(c nopCmd) {
		e.mu.Lock()
		e.calls[c.Key]++
		e.mu.Unlock()
	})
	step := func(ctx context.Context, sc *saga.StepContext) (any, error) {
		return sc.Dispatch(ctx, nopCmd{Key: sc.Key()})
	}
	if err := e.reg.Register(saga.Definition{Name: "three", Version: 1, Steps: []saga.Step{
		{Name: "a", Do: step}, {Name: "b", Do: step}, {Name: "c", Do: step}}}); err != nil {
		t.Fatal(err)
	}
	return e, bus
}

func waitState(t *testing.T, eng *saga.Engine, id string, want saga.State, within time.Duration) {
	t.Helper()
	var last saga.State
	eventually(t, within, "saga "+id+" to reach "+string(want), func() bool {
		info, err := eng.Get(context.Background(), id)
		if err != nil {
			t.Fatalf("Get: %v", err)
		}
		last = info.State
		return last == want
	})
}

func runEngine(t *testing.T, eng *saga.Engine) context.CancelFunc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- eng.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return cancel
}

func TestEngineRunsSagaFromNATSTask(t *testing.T) {
	n := startNATS(t)
	st := pgtest.NewStore(t)
	se, bus := newSagaEnv(t)
	q := newQueue(t, n.js, nil)
	// No waker and a poll far in the future: only the task can start the run.
	eng, err := saga.New(st, se.reg, bus, saga.Config{RunnerID: "r1", Queue: q, Waker: nopWaker{},
		PollInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	runEngine(t, eng)
	time.Sleep(100 * time.Millisecond) // let Run's first poll pass (it finds nothing)
	id := saga.IDFor("three", "task")
	if _, _, err := eng.Start(context.Background(), "three", id, map[string]string{"x": "y"}); err != nil {
		t.Fatal(err)
	}
	waitState(t, eng, id, saga.StateCompleted, 15*time.Second)
	eventually(t, 5*time.Second, "task acked", func() bool { return streamMsgs(t, q) == 0 })
	se.mu.Lock()
	defer se.mu.Unlock()
	if len(se.calls) != 3 {
		t.Fatalf("commands dispatched: %v, want one per step", se.calls)
	}
}

func TestEngineRunsSagaFromNATSWakeup(t *testing.T) {
	n := startNATS(t)
	st := pgtest.NewStore(t)
	se, bus := newSagaEnv(t)
	w, err := NewWaker(n.nc, WakerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	runner, err := saga.New(st, se.reg, bus, saga.Config{RunnerID: "runner", Waker: w, PollInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	runEngine(t, runner)
	// The saga is started by another process, whose waker publishes over NATS.
	nc2, _ := connect(t, n.srv)
	w2, err := NewWaker(nc2, WakerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	starter, err := saga.New(st, se.reg, bus, saga.Config{RunnerID: "starter", Waker: w2, PollInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	id := saga.IDFor("three", "wake")
	if _, _, err := starter.Start(context.Background(), "three", id, nil); err != nil {
		t.Fatal(err)
	}
	waitState(t, runner, id, saga.StateCompleted, 15*time.Second)
}

func TestLostTaskIsRunByThePoll(t *testing.T) {
	n := startNATS(t)
	st := pgtest.NewStore(t)
	se, bus := newSagaEnv(t)
	q := newQueue(t, n.js, nil)
	eng, err := saga.New(st, se.reg, bus, saga.Config{RunnerID: "r1", Queue: q, Waker: nopWaker{},
		PollInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	id := saga.IDFor("three", "lost")
	if _, _, err := eng.Start(context.Background(), "three", id, nil); err != nil {
		t.Fatal(err)
	}
	if got := streamMsgs(t, q); got != 1 {
		t.Fatalf("stream holds %d tasks after Start, want 1", got)
	}
	if err := q.stream.Purge(context.Background()); err != nil { // the task is lost
		t.Fatal(err)
	}
	runEngine(t, eng)
	waitState(t, eng, id, saga.StateCompleted, 15*time.Second)
}

func TestDeadTaskIsRecordedInHistory(t *testing.T) {
	n := startNATS(t)
	st := pgtest.NewStore(t)
	se, bus := newSagaEnv(t)
	var eng *saga.Engine
	recorded := make(chan error, 1)
	q := newQueue(t, n.js, func(c *QueueConfig) {
		c.AckWait = 100 * time.Millisecond
		c.MaxDeliver = 2
		c.OnDeadTask = func(ctx context.Context, id string, deliveries int) error {
			err := RecordDeadTask(ctx, eng, id, deliveries)
			recorded <- err
			return err
		}
	})
	eng, err := saga.New(st, se.reg, bus, saga.Config{RunnerID: "r1", Queue: q, Waker: nopWaker{}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// A runner that takes tasks and never acks them (it crashes on this saga, say).
	tasks, err := q.Tasks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	id := saga.IDFor("three", "poison")
	if _, _, err := eng.Start(ctx, "three", id, nil); err != nil {
		t.Fatal(err)
	}
	recv(t, tasks, 5*time.Second)
	recv(t, tasks, 5*time.Second)
	select {
	case err := <-recorded:
		if err != nil {
			t.Fatalf("RecordDeadTask: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("dead task not recorded")
	}
	hist, err := eng.History(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, ev := range hist {
		if ev.Type == saga.EventSignalReceived {
			t.Fatalf("the dead task was recorded as a signal (it would wake the saga): %+v", ev)
		}
		if ev.Type == saga.EventIncidentRecorded && ev.Data.Name == DeadTaskIncident {
			var p DeadTask
			if err := json.Unmarshal([]byte(ev.Data.Error), &p); err != nil {
				t.Fatalf("dead-task detail %q: %v", ev.Data.Error, err)
			}
			found = p.Deliveries == 2 && !p.At.IsZero()
		}
	}
	if !found {
		t.Fatalf("history has no %s incident with 2 deliveries: %+v", DeadTaskIncident, hist)
	}
	// The saga is not lost: the database poll still runs it to completion.
	for range 10 {
		if _, err := eng.RunOnce(ctx); err != nil {
			t.Fatal(err)
		}
		if info, _ := eng.Get(ctx, id); info != nil && info.State == saga.StateCompleted {
			return
		}
	}
	info, _ := eng.Get(ctx, id)
	t.Fatalf("saga state %v after the dead task, want COMPLETED", info)
}

type commandBus = *command.Bus

// newBus returns a real command bus whose nop handler calls seen.
func newBus(seen func(nopCmd)) *command.Bus {
	bus := command.NewBus()
	command.Register(bus, command.HandlerFunc[nopCmd, struct{}](func(_ context.Context, c nopCmd) (struct{}, error) {
		seen(c)
		return struct{}{}, nil
	}))
	return bus
}
