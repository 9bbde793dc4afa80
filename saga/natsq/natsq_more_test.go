package natsq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hodei-jobs/hodei/internal/pgtest"
	"github.com/hodei-jobs/hodei/saga"
	"github.com/hodei-jobs/hodei/store"
)

// An operator who mistypes a setting is told which field is wrong.
func TestQueueConfigValidateNamesTheField(t *testing.T) {
	cases := []struct {
		field string
		mut   func(*QueueConfig)
	}{
		{"Stream", func(c *QueueConfig) { c.Stream = "a.b" }},
		{"SubjectPrefix", func(c *QueueConfig) { c.SubjectPrefix = "x.>" }},
		{"SubjectPrefix", func(c *QueueConfig) { c.SubjectPrefix = ".x" }},
		{"SubjectPrefix", func(c *QueueConfig) { c.SubjectPrefix = "x." }},
		{"Consumer", func(c *QueueConfig) { c.Consumer = "c d" }},
		{"AckWait", func(c *QueueConfig) { c.AckWait = time.Millisecond }},
		{"MaxDeliver", func(c *QueueConfig) { c.MaxDeliver = -1 }},
		{"MaxAckPending", func(c *QueueConfig) { c.MaxAckPending = -1 }},
		{"PullBatch", func(c *QueueConfig) { c.PullBatch = 20000 }},
		{"DuplicateWindow", func(c *QueueConfig) { c.DuplicateWindow = time.Millisecond }},
	}
	for _, tc := range cases {
		var c QueueConfig
		tc.mut(&c)
		c.setDefaults()
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), "QueueConfig."+tc.field) {
			t.Errorf("%s: Validate() = %v, want an error naming QueueConfig.%s", tc.field, err, tc.field)
		}
	}
}

func TestWakerConfigValidateNamesTheField(t *testing.T) {
	n := startNATS(t)
	for _, tc := range []struct {
		field string
		cfg   WakerConfig
	}{
		{"Subject", WakerConfig{Subject: "hodei.*"}},
		{"Subject", WakerConfig{Subject: "hodei.wake."}},
		{"Buffer", WakerConfig{Buffer: -3}},
	} {
		_, err := NewWaker(n.nc, tc.cfg)
		if err == nil || !strings.Contains(err.Error(), "WakerConfig."+tc.field) {
			t.Errorf("NewWaker(%+v) = %v, want an error naming WakerConfig.%s", tc.cfg, err, tc.field)
		}
	}
	if _, err := NewWaker(nil, WakerConfig{}); err == nil {
		t.Error("NewWaker(nil conn) succeeded")
	}
	if _, err := NewTaskQueue(context.Background(), nil, QueueConfig{}); err == nil {
		t.Error("NewTaskQueue(nil js) succeeded")
	}
}

// A bad configuration is refused before anything is created on the server.
func TestNewTaskQueueWithBadConfigCreatesNothing(t *testing.T) {
	n := startNATS(t)
	_, err := NewTaskQueue(context.Background(), n.js, QueueConfig{Stream: "bad.name", Storage: jetstream.MemoryStorage})
	if err == nil || !strings.Contains(err.Error(), "QueueConfig.Stream") {
		t.Fatalf("NewTaskQueue = %v, want an error naming QueueConfig.Stream", err)
	}
	names := n.js.StreamNames(context.Background())
	for name := range names.Name() {
		t.Errorf("stream %q created by a refused configuration", name)
	}
}

// Two replicas with the same configuration share the one durable consumer: a task
// enqueued by one is delivered once, to whichever pulls it.
func TestReplicasShareTheConsumer(t *testing.T) {
	n := startNATS(t)
	q1 := newQueue(t, n.js, nil)
	nc2, js2 := connect(t, n.srv)
	_ = nc2
	q2 := newQueue(t, js2, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	t2, err := q2.Tasks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := q1.Enqueue(ctx, "from-replica-1"); err != nil {
		t.Fatal(err)
	}
	tk := recv(t, t2, 5*time.Second)
	if tk.SagaID() != "from-replica-1" {
		t.Fatalf("SagaID = %q", tk.SagaID())
	}
	if err := tk.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	t1, err := q1.Tasks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	noTask(t, t1, 200*time.Millisecond)
}

// A second queue with another consumer name on the same work-queue stream would split
// (or duplicate) tasks; NATS refuses it and the error names the consumer.
func TestSecondConsumerOnTheStreamIsRefused(t *testing.T) {
	n := startNATS(t)
	newQueue(t, n.js, nil)
	_, err := NewTaskQueue(context.Background(), n.js, QueueConfig{Consumer: "other-runners", Storage: jetstream.MemoryStorage})
	if err == nil || !strings.Contains(err.Error(), "other-runners") {
		t.Fatalf("NewTaskQueue with a second consumer = %v, want an error naming the consumer", err)
	}
}

// A stream of the same name that is not a work queue (someone else's) is not silently
// taken over.
func TestExistingStreamOfAnotherKindIsRefused(t *testing.T) {
	n := startNATS(t)
	if _, err := n.js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "TASKS",
		Subjects: []string{"tasks.>"}, Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatal(err)
	}
	_, err := NewTaskQueue(context.Background(), n.js, QueueConfig{Stream: "TASKS", SubjectPrefix: "tasks",
		Storage: jetstream.MemoryStorage})
	if err == nil || !strings.Contains(err.Error(), "ensure stream TASKS") {
		t.Fatalf("NewTaskQueue over a limits stream = %v, want an error naming the stream", err)
	}
}

func TestEnqueueErrors(t *testing.T) {
	n := startNATS(t)
	q := newQueue(t, n.js, nil)
	ctx := context.Background()
	if err := q.Enqueue(ctx, ""); err == nil {
		t.Fatal("Enqueue of an empty id succeeded")
	}
	if got := streamMsgs(t, q); got != 0 {
		t.Fatalf("stream holds %d messages after a refused Enqueue", got)
	}
	// The stream is gone (deleted by an operator): Enqueue reports it rather than
	// pretending the task is queued, so the engine logs it and relies on its poll.
	if err := n.js.DeleteStream(ctx, q.cfg.Stream); err != nil {
		t.Fatal(err)
	}
	ctx2, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err := q.Enqueue(ctx2, "orphan")
	if err == nil || !strings.Contains(err.Error(), "orphan") || !strings.Contains(err.Error(), DefaultStream) {
		t.Fatalf("Enqueue without a stream = %v, want an error naming the saga and the stream", err)
	}
}

// Nak without a delay hands the task back at once (not after AckWait).
func TestNakWithoutDelayRedeliversAtOnce(t *testing.T) {
	n := startNATS(t)
	q := newQueue(t, n.js, nil) // AckWait 30s
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tasks, err := q.Tasks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Enqueue(ctx, "again"); err != nil {
		t.Fatal(err)
	}
	first := recv(t, tasks, 5*time.Second)
	if d := first.(*task).Deliveries(); d != 1 {
		t.Fatalf("first Deliveries = %d, want 1", d)
	}
	if err := first.Nak(ctx, 0); err != nil {
		t.Fatal(err)
	}
	second := recv(t, tasks, 5*time.Second)
	if second.SagaID() != "again" || second.(*task).Deliveries() != 2 {
		t.Fatalf("redelivery: %q, deliveries %d", second.SagaID(), second.(*task).Deliveries())
	}
	if err := second.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "acked task removed", func() bool { return streamMsgs(t, q) == 0 })
}

// A runner that lost its connection learns that its ack or nak did not happen (the
// task comes back after AckWait); the error names the saga.
func TestAckAndNakOnAClosedConnectionFail(t *testing.T) {
	n := startNATS(t)
	nc, js := connect(t, n.srv)
	q := newQueue(t, js, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tasks, err := q.Tasks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Enqueue(ctx, "unlucky"); err != nil {
		t.Fatal(err)
	}
	tk := recv(t, tasks, 5*time.Second)
	nc.Close()
	if err := tk.Ack(ctx); err == nil || !strings.Contains(err.Error(), "unlucky") {
		t.Fatalf("Ack on a closed connection = %v, want an error naming the saga", err)
	}
	if err := tk.Nak(ctx, time.Second); err == nil || !strings.Contains(err.Error(), "unlucky") {
		t.Fatalf("Nak on a closed connection = %v, want an error naming the saga", err)
	}
	if err := tk.Nak(ctx, 0); err == nil {
		t.Fatal("Nak(0) on a closed connection succeeded")
	}
	// The task is still in the stream for another runner.
	q2 := newQueue(t, n.js, nil)
	if got := streamMsgs(t, q2); got != 1 {
		t.Fatalf("stream holds %d tasks, want the unacked one", got)
	}
	// And Tasks on the closed connection reports the failure instead of an idle channel.
	if _, err := q.Tasks(ctx); err == nil {
		t.Fatal("Tasks on a closed connection succeeded")
	}
}

// A message without a saga id (written by something else on the subject) is never
// handed to a runner and does not stay in the stream to be redelivered.
func TestTaskWithoutSagaIDIsDropped(t *testing.T) {
	n := startNATS(t)
	q := newQueue(t, n.js, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := n.js.Publish(ctx, DefaultSubjectPrefix+".run", nil); err != nil {
		t.Fatal(err)
	}
	if err := q.Enqueue(ctx, "real"); err != nil {
		t.Fatal(err)
	}
	tasks, err := q.Tasks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tk := recv(t, tasks, 5*time.Second)
	if tk.SagaID() != "real" {
		t.Fatalf("first task handed out is %q, want the one with an id", tk.SagaID())
	}
	if err := tk.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the empty task terminated and removed", func() bool { return streamMsgs(t, q) == 0 })
	noTask(t, tasks, 200*time.Millisecond)
}

// A task pulled but not yet handed out when the runner stops is given back at once, so
// another runner gets it without waiting AckWait (30s here).
func TestTaskPulledButNotHandedOutIsReturnedOnStop(t *testing.T) {
	n := startNATS(t)
	q := newQueue(t, n.js, nil)
	ctx1, cancel1 := context.WithCancel(context.Background())
	defer cancel1()
	if _, err := q.Tasks(ctx1); err != nil { // nobody reads this channel
		t.Fatal(err)
	}
	if err := q.Enqueue(context.Background(), "in-flight"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the task pulled by the stopping runner", func() bool {
		ci, err := q.consumer.Info(context.Background())
		return err == nil && ci.NumAckPending == 1
	})
	cancel1()
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	tasks, err := q.Tasks(ctx2)
	if err != nil {
		t.Fatal(err)
	}
	tk := recv(t, tasks, 5*time.Second) // well before AckWait
	if tk.SagaID() != "in-flight" {
		t.Fatalf("SagaID = %q", tk.SagaID())
	}
	_ = tk.Ack(ctx2)
}

// Tasks pulled ahead into the iterator's buffer but never handed out are returned when
// Tasks stops, so another runner gets them at once rather than after AckWait (30 s).
// Before, only the one waiting to be handed out was; the rest of the buffer was
// dropped by the iterator's Stop.
func TestBufferedTasksAreReturnedOnStop(t *testing.T) {
	n := startNATS(t)
	q := newQueue(t, n.js, nil)
	for _, id := range []string{"t1", "t2", "t3", "t4"} {
		if err := q.Enqueue(context.Background(), id); err != nil {
			t.Fatal(err)
		}
	}
	ctx1, cancel1 := context.WithCancel(context.Background())
	defer cancel1()
	first, err := q.Tasks(ctx1)
	if err != nil {
		t.Fatal(err)
	}
	tk := recv(t, first, 5*time.Second)
	_ = tk.Ack(ctx1)
	// The other three are pulled (PullBatch 32): one waits to be handed out, two sit in
	// the buffer.
	eventually(t, 5*time.Second, "three tasks pulled ahead", func() bool {
		ci, err := q.consumer.Info(context.Background())
		return err == nil && ci.NumAckPending == 3
	})
	cancel1()
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	second, err := q.Tasks(ctx2)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for range 3 {
		tk := recv(t, second, 5*time.Second) // well before AckWait
		got[tk.SagaID()] = true
		_ = tk.Ack(ctx2)
	}
	if got[tk.SagaID()] || len(got) != 3 {
		t.Fatalf("second runner got %v after %s was acked; want the other three", got, tk.SagaID())
	}
}

// Several Tasks calls share one advisory subscription: dead tasks are still recorded
// after one of them stops, and the subscription ends with the last one.
func TestDeadTaskRecordedWhileAnyTasksCallLasts(t *testing.T) {
	n := startNATS(t)
	dead := make(chan deadCall, 4)
	q := newQueue(t, n.js, func(c *QueueConfig) {
		c.AckWait = 100 * time.Millisecond
		c.MaxDeliver = 1
		c.OnDeadTask = func(_ context.Context, id string, deliveries int) error {
			dead <- deadCall{id, deliveries}
			return nil
		}
	})
	ctxA, cancelA := context.WithCancel(context.Background())
	ctxB, cancelB := context.WithCancel(context.Background())
	defer cancelB()
	tasksA, err := q.Tasks(ctxA)
	if err != nil {
		t.Fatal(err)
	}
	tasksB, err := q.Tasks(ctxB)
	if err != nil {
		t.Fatal(err)
	}
	cancelA()
	eventually(t, 5*time.Second, "first Tasks channel closed", func() bool {
		select {
		case _, ok := <-tasksA:
			return !ok
		default:
			return false
		}
	})
	if err := q.Enqueue(context.Background(), "poison-b"); err != nil {
		t.Fatal(err)
	}
	recv(t, tasksB, 5*time.Second) // never acked
	select {
	case c := <-dead:
		if c.id != "poison-b" || c.deliveries != 1 {
			t.Fatalf("OnDeadTask(%q, %d), want (poison-b, 1)", c.id, c.deliveries)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("dead task not recorded after one of two Tasks calls stopped")
	}
	cancelB()
	eventually(t, 5*time.Second, "advisory subscription dropped with the last Tasks call", func() bool {
		q.advMu.Lock()
		defer q.advMu.Unlock()
		return q.advRef == 0 && q.advSub == nil
	})
}

func advisory(t *testing.T, seq uint64, deliveries uint64) []byte {
	t.Helper()
	b, err := json.Marshal(maxDeliverAdvisory{Type: "io.nats.jetstream.advisory.v1.max_deliver",
		Stream: DefaultStream, Consumer: DefaultConsumer, StreamSeq: seq, Deliveries: deliveries})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Advisories that cannot be acted on (garbage, or a task already gone, e.g. acked just
// before the advisory was handled) record nothing; a recorder that fails does not keep
// the dead task in the stream to be reported again.
func TestAdvisoryEdgeCases(t *testing.T) {
	n := startNATS(t)
	var calls []deadCall
	fail := false
	q := newQueue(t, n.js, func(c *QueueConfig) {
		c.OnDeadTask = func(_ context.Context, id string, d int) error {
			calls = append(calls, deadCall{id, d})
			if fail {
				return errors.New("database down")
			}
			return nil
		}
	})
	q.handleAdvisory([]byte("not json"))
	q.handleAdvisory([]byte(`{"stream_seq":0}`))
	q.handleAdvisory(advisory(t, 42, 5)) // no such message
	if len(calls) != 0 {
		t.Fatalf("OnDeadTask called for unusable advisories: %+v", calls)
	}

	ctx := context.Background()
	if err := q.Enqueue(ctx, "dead-one"); err != nil {
		t.Fatal(err)
	}
	info, err := q.stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fail = true
	q.handleAdvisory(advisory(t, info.State.LastSeq, 5))
	if len(calls) != 1 || calls[0] != (deadCall{"dead-one", 5}) {
		t.Fatalf("OnDeadTask calls = %+v, want one for dead-one with 5 deliveries", calls)
	}
	if got := streamMsgs(t, q); got != 0 {
		t.Fatalf("dead task left in the stream (%d messages) after a failed record", got)
	}
	// The same advisory again (a second server's copy): the message is gone, nothing more.
	q.handleAdvisory(advisory(t, info.State.LastSeq, 5))
	if len(calls) != 1 {
		t.Fatalf("a repeated advisory was recorded again: %+v", calls)
	}
}

// recorderFunc is an IncidentRecorder made of a function.
type recorderFunc func(ctx context.Context, sagaID, kind, detail string) error

func (f recorderFunc) RecordIncident(ctx context.Context, sagaID, kind, detail string) error {
	return f(ctx, sagaID, kind, detail)
}

func TestRecordDeadTaskErrors(t *testing.T) {
	ctx := context.Background()
	if err := RecordDeadTask(ctx, nil, "s", 3); err == nil || !strings.Contains(err.Error(), "IncidentRecorder") {
		t.Fatalf("RecordDeadTask(nil recorder) = %v, want an error saying the engine is not wired", err)
	}
	inner := errors.New("disk full")
	err := RecordDeadTask(ctx, recorderFunc(func(context.Context, string, string, string) error { return inner }), "saga-9", 3)
	if !errors.Is(err, inner) || !strings.Contains(err.Error(), "saga-9") {
		t.Fatalf("RecordDeadTask with a failing recorder = %v, want the cause wrapped with the saga id", err)
	}

	// With the real engine: an unknown saga is reported as not found, and a finished
	// saga still takes the incident without changing state.
	st := pgtest.NewStore(t)
	se, bus := newSagaEnv(t)
	eng, err := saga.New(st, se.reg, bus, saga.Config{RunnerID: "r1", Waker: nopWaker{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := RecordDeadTask(ctx, eng, "no-such-saga", 5); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("RecordDeadTask for an unknown saga = %v, want store.ErrNotFound", err)
	}
	id := saga.IDFor("three", "finished")
	if _, _, err := eng.Start(ctx, "three", id, nil); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if _, err := eng.RunOnce(ctx); err != nil {
			t.Fatal(err)
		}
	}
	before, err := eng.Get(ctx, id)
	if err != nil || before.State != saga.StateCompleted {
		t.Fatalf("saga = %+v, %v; want COMPLETED", before, err)
	}
	if err := RecordDeadTask(ctx, eng, id, 5); err != nil {
		t.Fatalf("RecordDeadTask on a finished saga: %v", err)
	}
	after, _ := eng.Get(ctx, id)
	if after.State != saga.StateCompleted || after.LastSeq != before.LastSeq+1 {
		t.Fatalf("after the incident: state %s, seq %d (was %d); want COMPLETED and one more event",
			after.State, after.LastSeq, before.LastSeq)
	}
}

// On a closed connection the waker says so: Wake returns an error, and Wakeups closes
// its channel at once so the runner relies on its poll instead of waiting forever.
func TestWakerOnAClosedConnection(t *testing.T) {
	n := startNATS(t)
	nc, _ := connect(t, n.srv)
	w, err := NewWaker(nc, WakerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()
	if err := w.Wake(context.Background(), "s1"); err == nil || !strings.Contains(err.Error(), "s1") {
		t.Fatalf("Wake on a closed connection = %v, want an error naming the saga", err)
	}
	select {
	case _, ok := <-w.Wakeups(context.Background()):
		if ok {
			t.Fatal("a wake-up arrived on a closed connection")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wakeups channel not closed on a closed connection")
	}
}

// A subscriber that is behind loses wake-ups (bounded by Buffer) instead of holding
// them all, and still gets the ones sent once it reads again.
func TestSlowWakeupSubscriberDropsAndRecovers(t *testing.T) {
	n := startNATS(t)
	w, err := NewWaker(n.nc, WakerConfig{Buffer: 1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ids := w.Wakeups(ctx)
	const flood = 200
	for i := range flood {
		if err := w.Wake(ctx, fmt.Sprintf("flood-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	got := 0
	for quiet := false; !quiet; {
		select {
		case id := <-ids:
			if !strings.HasPrefix(id, "flood-") {
				t.Fatalf("unexpected id %q", id)
			}
			got++
		case <-time.After(300 * time.Millisecond):
			quiet = true
		}
	}
	if got == 0 || got >= flood {
		t.Fatalf("slow subscriber received %d of %d wake-ups, want some dropped and at least one", got, flood)
	}
	if err := w.Wake(ctx, "later"); err != nil {
		t.Fatal(err)
	}
	select {
	case id := <-ids:
		if id != "later" {
			t.Fatalf("got %q, want later", id)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no wake-up after the subscriber caught up")
	}
}
