package saga

import (
	"context"
	"sync"
	"time"
)

// Clock is the engine's time source. Due-ness of timers, backoffs and claims is always
// computed from it and passed to the store (the database's now() is never used for it),
// so tests can drive time.
type Clock interface {
	Now() time.Time
}

// SystemClock is the wall clock.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// ManualClock is a Clock that moves only when told; for tests. Safe for concurrent use.
type ManualClock struct {
	mu  sync.Mutex
	now time.Time
}

// NewManualClock returns a clock stopped at t.
func NewManualClock(t time.Time) *ManualClock { return &ManualClock{now: t} }

// Now returns the clock's time.
func (c *ManualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *ManualClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// Waker tells runners that a saga may have work (a signal arrived, a timer fired, a saga
// started). Wake-ups are best effort: runners also poll the database, so a lost wake-up
// only costs latency. Implementations must be safe for concurrent use.
type Waker interface {
	// Wake announces sagaID. It is called after the change that made the saga runnable
	// committed and must not block for long.
	Wake(ctx context.Context, sagaID string) error
	// Wakeups delivers announced saga ids (from any process, for networked wakers) until
	// ctx ends; the channel is then closed. Slow receivers may miss ids.
	Wakeups(ctx context.Context) <-chan string
}

// LocalWaker is an in-process Waker: every Wakeups subscriber gets every id, dropped when
// its buffer is full.
type LocalWaker struct {
	mu   sync.Mutex
	subs map[chan string]struct{}
}

// NewLocalWaker returns a Waker for runners in this process.
func NewLocalWaker() *LocalWaker { return &LocalWaker{subs: map[chan string]struct{}{}} }

// Wake sends sagaID to every subscriber that has room.
func (w *LocalWaker) Wake(_ context.Context, sagaID string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	for ch := range w.subs {
		select {
		case ch <- sagaID:
		default:
		}
	}
	return nil
}

// Wakeups subscribes until ctx ends.
func (w *LocalWaker) Wakeups(ctx context.Context) <-chan string {
	ch := make(chan string, 256)
	w.mu.Lock()
	w.subs[ch] = struct{}{}
	w.mu.Unlock()
	go func() {
		<-ctx.Done()
		w.mu.Lock()
		delete(w.subs, ch)
		close(ch)
		w.mu.Unlock()
	}()
	return ch
}

// Task is one delivery of a saga id by a TaskQueue.
type Task interface {
	SagaID() string
	// Ack removes the task: the runner handled the saga (or found nothing to do).
	Ack(ctx context.Context) error
	// Nak asks for redelivery after delay (the saga was held by another runner).
	Nak(ctx context.Context, delay time.Duration) error
}

// TaskQueue hands runnable sagas to runners (at-least-once). It is an accelerator, never
// the source of truth: the runner claims the saga row before running it, and its
// database poll finds sagas whose task was lost. Implementations must be safe for
// concurrent use.
type TaskQueue interface {
	// Enqueue offers sagaID to some runner. Called after the change committed.
	Enqueue(ctx context.Context, sagaID string) error
	// Tasks delivers tasks until ctx ends (then the channel is closed). A queue that
	// delivers nothing may return a nil channel.
	Tasks(ctx context.Context) (<-chan Task, error)
}

// PollQueue is the TaskQueue of a database-poll-only deployment: Enqueue records nothing
// beyond the saga row's runnable_at (already committed) and Tasks never delivers; the
// runner's poll claims the saga.
type PollQueue struct{}

// Enqueue does nothing: the saga row is the queue.
func (PollQueue) Enqueue(context.Context, string) error { return nil }

// Tasks returns a nil channel.
func (PollQueue) Tasks(context.Context) (<-chan Task, error) { return nil, nil }
