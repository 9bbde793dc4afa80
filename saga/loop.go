package saga

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hodei-jobs/hodei/store"
)

// RunOnce claims up to BatchSize runnable sagas and advances each as far as it can
// (until it completes, parks, backs off or loses its claim), Concurrency at a time. It
// returns how many sagas it claimed.
func (e *Engine) RunOnce(ctx context.Context) (int, error) {
	recs, err := e.sagas.Claim(ctx, e.cfg.RunnerID, e.cfg.Clock.Now(), e.cfg.Lease, e.cfg.BatchSize)
	if err != nil {
		return 0, err
	}
	e.runClaimed(ctx, recs)
	return len(recs), nil
}

// RunSaga claims saga id if it is runnable and free, and advances it. It reports whether
// it got the claim.
func (e *Engine) RunSaga(ctx context.Context, id string) (bool, error) {
	rec, err := e.sagas.ClaimByID(ctx, id, e.cfg.RunnerID, e.cfg.Clock.Now(), e.cfg.Lease)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, e.advance(ctx, rec)
}

// runClaimed advances recs (just claimed by this runner), Concurrency at a time, with
// their histories preloaded in one query where possible, and returns when all are done.
func (e *Engine) runClaimed(ctx context.Context, recs []*store.SagaRecord) {
	hist := e.preload(ctx, recs)
	sem := make(chan struct{}, e.cfg.Concurrency)
	var wg sync.WaitGroup
	for _, rec := range recs {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := e.advanceFrom(ctx, rec, hist[rec.ID]); err != nil && ctx.Err() == nil {
				e.log.Error("saga run failed", "saga", rec.ID, "err", err)
			}
		})
	}
	wg.Wait()
}

// claimedSaga is a saga claimed by Run, with its preloaded history (if any) and the
// task deliveries that asked for it.
type claimedSaga struct {
	rec   *store.SagaRecord
	hist  []*store.SagaEvent
	st    *sagaState // its state, when a hand-off brought it (then hist is nil)
	tasks []Task
}

// Run fires timers and runs sagas until ctx ends, and returns nil then. Concurrency
// workers advance claimed sagas; one loop claims work for them, keeping at most
// Concurrency+BatchSize sagas claimed (running or queued): on every poll tick (timers,
// then up to BatchSize runnable sagas; again as soon as half a batch of slots is free
// while polls come back full), and on wake-ups and tasks, which are gathered while more
// are ready and claimed together with one ClaimIDs. A task is acked once its saga was run (or was not
// claimable: held elsewhere, parked or finished) and naked when the run failed. On
// return, sagas claimed and not started are released.
func (e *Engine) Run(ctx context.Context) error {
	if e.cfg.ReleaseOnStart {
		if err := e.releaseEarlierRun(ctx); err != nil {
			return err
		}
	}
	wake := e.cfg.Waker.Wakeups(ctx)
	tasks, err := e.cfg.Queue.Tasks(ctx)
	if err != nil {
		return fmt.Errorf("saga: task queue: %w", err)
	}
	tick := time.NewTicker(e.cfg.PollInterval)
	defer tick.Stop()

	l := e.newLoop(wake, tasks)
	if hand := make(chan handed, l.capacity); !e.cfg.NoHandoff && e.hand.open(hand) {
		l.hand = hand
	}
	// The running sagas' context outlives ctx by at most DrainTimeout (a graceful
	// shutdown finishes the steps in flight); stop waits for them.
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	if e.cfg.DrainTimeout > 0 {
		stopDrain := context.AfterFunc(ctx, func() {
			t := time.AfterFunc(e.cfg.DrainTimeout, cancelWork)
			context.AfterFunc(work, func() { t.Stop() })
		})
		defer stopDrain()
	} else {
		stopWork := context.AfterFunc(ctx, cancelWork)
		defer stopWork()
	}
	for range e.cfg.Concurrency {
		l.workers.Go(func() { l.serve(work) })
	}
	defer l.stop(ctx)
	return l.run(ctx, tick.C)
}

// releaseEarlierRun hands back the claims still held under this runner's id by an
// earlier process (Config.ReleaseOnStart), so they need not wait for their leases.
func (e *Engine) releaseEarlierRun(ctx context.Context) error {
	n, err := e.st.Sagas().ReleaseRunner(ctx, e.cfg.RunnerID)
	if err != nil {
		return fmt.Errorf("saga: release the claims of an earlier run of %s: %w", e.cfg.RunnerID, err)
	}
	if n > 0 {
		e.log.Info("released claims held by an earlier run of this runner", "claims", n)
	}
	return nil
}

// loop is Run's claiming loop and the state it shares with Run's workers. Only the
// goroutine running run (and stop, after it) touches queue, inflight, more, wake and
// tasks; workers only receive from work and send to finished.
//
// Its invariant: inflight (sagas claimed by this loop and not finished: queued or
// running) never exceeds capacity, Concurrency+BatchSize, because every claim asks for at
// most capacity-inflight sagas. Up to Concurrency sagas run and a batch is queued behind
// them; a backlogged runner claims again once refill (half a batch) slots are free, so
// workers rarely wait for the claiming loop and claims stay large.
type loop struct {
	e        *Engine
	wake     <-chan string    // wake-ups (nil once closed)
	tasks    <-chan Task      // task deliveries (nil once closed or without a queue)
	hand     chan handed      // sagas claimed by this process's writes (handoff.go); nil: none
	work     chan claimedSaga // claimed sagas handed to a worker
	finished chan struct{}    // one value per saga a worker finished; never blocks
	workers  sync.WaitGroup
	capacity int
	refill   int
	queue    []claimedSaga // claimed, not yet handed to a worker
	inflight int           // claimed and not finished: queued or running
	more     bool          // the last poll came back full: more sagas are probably runnable
}

// newLoop returns Run's loop over wake and tasks, with capacity Concurrency+BatchSize.
func (e *Engine) newLoop(wake <-chan string, tasks <-chan Task) *loop {
	capacity := e.cfg.Concurrency + e.cfg.BatchSize
	return &loop{e: e, wake: wake, tasks: tasks, work: make(chan claimedSaga),
		finished: make(chan struct{}, capacity), capacity: capacity, refill: max(1, e.cfg.BatchSize/2)}
}

// run polls once (timers and sagas), then hands queued sagas to workers and claims more
// on poll ticks, on finished sagas (while polls come back full) and on wake-ups and
// tasks, until ctx ends; it returns nil then. While capacity sagas are claimed it
// leaves wake-ups and tasks where they are.
func (l *loop) run(ctx context.Context, tick <-chan time.Time) error {
	l.poll(ctx, true)
	for {
		var (
			out  chan<- claimedSaga
			head claimedSaga
		)
		if len(l.queue) > 0 {
			out, head = l.work, l.queue[0]
		}
		wakeC, taskC, handC := l.wake, l.tasks, l.hand
		if l.inflight >= l.capacity {
			// full: leave wake-ups, tasks and hand-offs where they are (a hand-off that
			// finds the channel full is released and announced by its sender)
			wakeC, taskC, handC = nil, nil, nil
		}
		select {
		case <-ctx.Done():
			return nil
		case out <- head:
			l.queue[0] = claimedSaga{}
			l.queue = l.queue[1:]
		case <-l.finished:
			l.inflight--
			if l.more && l.capacity-l.inflight >= l.refill {
				l.poll(ctx, false)
			}
		case <-tick:
			l.poll(ctx, true)
		case id, ok := <-wakeC:
			if !ok {
				l.wake = nil
				continue
			}
			l.gather(ctx, id, nil)
		case t, ok := <-taskC:
			if !ok {
				l.tasks = nil
				continue
			}
			l.gather(ctx, t.SagaID(), t)
		case h := <-handC:
			if h.st != nil {
				l.queue = append(l.queue, claimedSaga{rec: h.rec, st: h.st})
				l.inflight++
			} else {
				l.enqueue(ctx, []*store.SagaRecord{h.rec}, nil)
			}
		}
	}
}

// serve is a worker: it advances each saga it receives until work is closed, then
// finishes it (see finish).
func (l *loop) serve(ctx context.Context) {
	for c := range l.work {
		err := l.e.advanceWith(ctx, c.rec, c.hist, c.st)
		l.finish(ctx, c, err)
	}
}

// finish settles a saga a worker ran: its tasks are acked when the run succeeded (or
// ended because ctx did) and naked with a PollInterval delay when it failed, and one slot
// is reported free on finished (buffered to capacity, so this never blocks).
func (l *loop) finish(ctx context.Context, c claimedSaga, err error) {
	e := l.e
	failed := err != nil && ctx.Err() == nil
	if failed {
		e.log.Error("saga run failed", "saga", c.rec.ID, "err", err)
	}
	for _, t := range c.tasks {
		if failed {
			_ = t.Nak(ctx, e.cfg.PollInterval)
		} else {
			_ = t.Ack(ctx)
		}
	}
	l.finished <- struct{}{}
}

// stop ends Run: no more sagas go to workers; the sagas claimed and never started are
// released at once (also when ctx is done) and their tasks naked without delay, so
// another runner can take them; then it waits for the running sagas to finish.
func (l *loop) stop(ctx context.Context) {
	if l.hand != nil {
		l.e.hand.close()
		l.e.drainHandoffs(ctx, l.hand)
	}
	close(l.work)
	for _, c := range l.queue { // claimed, never started: hand back at once
		l.e.release(ctx, c.rec.ID)
		for _, t := range c.tasks {
			_ = t.Nak(context.WithoutCancel(ctx), 0)
		}
	}
	l.workers.Wait()
}

// poll fires due timers (when timers is set), then claims up to BatchSize runnable sagas,
// never more than the free slots, and queues them. more records whether the claim came
// back full (or no slot was free), which lets a finished saga trigger the next poll.
func (l *loop) poll(ctx context.Context, timers bool) {
	e := l.e
	if timers {
		e.releaseStaleTakes(ctx) // handoff.go
		if _, err := e.FireDueTimers(ctx); err != nil && ctx.Err() == nil {
			e.log.Error("saga timer poll failed", "err", err)
		}
	}
	free := l.capacity - l.inflight
	if free <= 0 {
		l.more = true
		return
	}
	limit := min(e.cfg.BatchSize, free)
	recs, err := e.sagas.Claim(ctx, e.cfg.RunnerID, e.cfg.Clock.Now(), e.cfg.Lease, limit)
	if err != nil {
		if ctx.Err() == nil {
			e.log.Error("saga poll failed", "err", err)
		}
		l.more = false
		return
	}
	l.more = len(recs) == limit
	l.enqueue(ctx, recs, nil)
}

// gather collects the id of a wake-up or task and those that are ready right after it
// (as many as there are free slots, at most BatchSize), and claims them together with
// one ClaimIDs. The tasks of the sagas it claims ride with them (acked or naked by
// finish or stop); the tasks of sagas it could not claim (held elsewhere, parked or
// finished: the holder or the poll has them) are acked; if the claim fails, every task
// gathered is naked with a PollInterval delay.
func (l *loop) gather(ctx context.Context, id string, t Task) {
	e := l.e
	ids, byID := l.collect(id, t, min(e.cfg.BatchSize, l.capacity-l.inflight))
	recs, err := e.sagas.ClaimIDs(ctx, ids, e.cfg.RunnerID, e.cfg.Clock.Now(), e.cfg.Lease)
	if err != nil {
		if ctx.Err() == nil {
			e.log.Error("saga claim failed", "sagas", len(ids), "err", err)
		}
		for _, ts := range byID {
			for _, t := range ts {
				_ = t.Nak(context.WithoutCancel(ctx), e.cfg.PollInterval)
			}
		}
		return
	}
	l.enqueue(ctx, recs, byID)
	for _, ts := range byID { // held elsewhere or not runnable: the holder or the poll has it
		for _, t := range ts {
			_ = t.Ack(ctx)
		}
	}
}

// collect returns id and the distinct saga ids of the wake-ups and tasks ready right
// now, until there are room of them (id always counts), with the tasks by saga id
// (every id is a key, possibly with no task). It never blocks.
func (l *loop) collect(id string, t Task, room int) ([]string, map[string][]Task) {
	ids := []string{id}
	byID := map[string][]Task{id: nil}
	add := func(id string, t Task) {
		if _, seen := byID[id]; !seen {
			ids = append(ids, id)
		}
		if t != nil {
			byID[id] = append(byID[id], t)
		}
	}
	if t != nil {
		byID[id] = []Task{t}
	}
	for len(ids) < room {
		select {
		case id, ok := <-l.wake:
			if !ok {
				l.wake = nil
				continue
			}
			add(id, nil)
		case t, ok := <-l.tasks:
			if !ok {
				l.tasks = nil
				continue
			}
			add(t.SagaID(), t)
		default:
			return ids, byID
		}
	}
	return ids, byID
}

// enqueue queues claimed sagas behind those already queued, with their preloaded
// histories and, taken out of byID (which may be nil), the tasks that asked for them,
// and counts them as in flight.
func (l *loop) enqueue(ctx context.Context, recs []*store.SagaRecord, byID map[string][]Task) {
	hist := l.e.preload(ctx, recs)
	for _, r := range recs {
		l.queue = append(l.queue, claimedSaga{rec: r, hist: hist[r.ID], tasks: byID[r.ID]})
		delete(byID, r.ID)
	}
	l.inflight += len(recs)
}
