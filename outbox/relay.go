package outbox

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/hodei-jobs/hodei/command"
	"github.com/hodei-jobs/hodei/store"
)

// Relay moves outbox rows to their destination: commands to a CommandSink, events to an
// EventPublisher. Many relays (goroutines, processes, replicas) may run on one table:
// each claim is a lease that no other claim can take. See the package documentation.
type Relay struct {
	st     store.OutboxStore
	cmds   CommandSink
	events EventPublisher
	cfg    Config

	stats relayStats
}

type relayStats struct {
	wakeups, polls          atomic.Int64
	claims, claimed         atomic.Int64
	claimedOnWake           atomic.Int64
	claimedOnPoll           atomic.Int64
	completed, retried      atomic.Int64
	deadLettered, abandoned atomic.Int64
	reaped                  atomic.Int64
}

// Stats is a snapshot of a relay's counters.
type Stats struct {
	Wakeups       int64 // wake-ups received from the store (LISTEN/NOTIFY or in-process)
	Polls         int64 // safety-poll ticks that ran a claim
	Claims        int64 // Claim calls
	Claimed       int64 // rows claimed
	ClaimedOnWake int64 // rows claimed in a drain started by a wake-up
	ClaimedOnPoll int64 // rows claimed in a drain started by a poll tick (the rest: at start)
	Completed     int64 // rows marked COMPLETED
	Retried       int64 // rows sent to RETRY
	DeadLettered  int64 // rows sent to DEAD_LETTER
	Abandoned     int64 // rows left leased at shutdown (the reaper returns them)
	Reaped        int64 // expired leases this relay's reaper released
}

// NewRelay returns a relay over st. cmds executes command rows; events publishes event
// rows (nil: event rows fail and are retried, then dead-lettered, with an error saying no
// publisher is configured — give a relay that can meet events a publisher).
func NewRelay(st store.OutboxStore, cmds CommandSink, events EventPublisher, cfg Config) (*Relay, error) {
	if st == nil {
		return nil, errors.New("outbox: NewRelay: store is nil")
	}
	if cmds == nil {
		return nil, errors.New("outbox: NewRelay: CommandSink is nil")
	}
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Relay{st: st, cmds: cmds, events: events, cfg: cfg}, nil
}

// ID is the relay id written to the rows it leases.
func (r *Relay) ID() string { return r.cfg.RelayID }

// Stats returns the relay's counters.
func (r *Relay) Stats() Stats {
	s := &r.stats
	return Stats{
		Wakeups: s.wakeups.Load(), Polls: s.polls.Load(), Claims: s.claims.Load(),
		Claimed: s.claimed.Load(), ClaimedOnWake: s.claimedOnWake.Load(), ClaimedOnPoll: s.claimedOnPoll.Load(),
		Completed: s.completed.Load(), Retried: s.retried.Load(),
		DeadLettered: s.deadLettered.Load(), Abandoned: s.abandoned.Load(), Reaped: s.reaped.Load(),
	}
}

// Run relays rows until ctx ends. It claims whenever the store signals a wake-up (rows
// were committed here or, through NOTIFY, elsewhere), on every PollInterval tick, and once
// at start; each time it drains: claims batch after batch until a claim comes back short.
// A reaper goroutine returns expired leases every ReapInterval.
//
// When ctx ends Run stops claiming, lets the in-flight batch finish and be marked (for at
// most ShutdownTimeout; after that the batch is abandoned to the reaper, and handlers still
// running are not waited for: their outcome is dropped) and returns nil.
// Store errors do not stop Run: they are logged and the next wake-up or poll tries again.
func (r *Relay) Run(ctx context.Context) error {
	// work outlives ctx by at most ShutdownTimeout so that the in-flight batch can finish.
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	stopTimer := context.AfterFunc(ctx, func() {
		t := time.AfterFunc(r.cfg.ShutdownTimeout, cancelWork)
		context.AfterFunc(work, func() { t.Stop() })
	})
	defer stopTimer()

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.reapLoop(ctx)
	}()
	defer wg.Wait()

	wake := r.st.Wakeups(ctx)
	poll := time.NewTicker(r.cfg.PollInterval)
	defer poll.Stop()

	if r.cfg.ReleaseOnStart {
		n, err := r.st.ReleaseClaims(ctx, r.cfg.RelayID)
		switch {
		case err != nil:
			r.cfg.Logger.Warn("outbox: releasing the previous run's leases failed; they wait for the reaper",
				"relay", r.cfg.RelayID, "err", err)
		case n > 0:
			r.cfg.Logger.Info("outbox: released the previous run's leases", "relay", r.cfg.RelayID, "rows", n)
		}
	}

	r.drain(ctx, work, drainStart)
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-wake:
			if !ok { // the store stopped its wake-ups (ctx ended, or the store closed)
				wake = nil
				continue
			}
			r.stats.wakeups.Add(1)
			r.drain(ctx, work, drainWake)
		case <-poll.C:
			r.stats.polls.Add(1)
			r.drain(ctx, work, drainPoll)
		}
	}
}

// drainReason says what started a drain (for Stats).
type drainReason int

const (
	drainStart drainReason = iota
	drainWake
	drainPoll
)

// drain claims and processes batches until a claim returns fewer than BatchSize rows,
// ctx ends, or the store fails.
func (r *Relay) drain(ctx, work context.Context, why drainReason) {
	for ctx.Err() == nil {
		msgs, err := r.st.Claim(ctx, r.cfg.RelayID, r.cfg.BatchSize, r.cfg.Lease)
		r.stats.claims.Add(1)
		if err != nil {
			if ctx.Err() == nil {
				r.cfg.Logger.Warn("outbox: claim failed", "relay", r.cfg.RelayID, "err", err)
			}
			return
		}
		r.stats.claimed.Add(int64(len(msgs)))
		switch why {
		case drainWake:
			r.stats.claimedOnWake.Add(int64(len(msgs)))
		case drainPoll:
			r.stats.claimedOnPoll.Add(int64(len(msgs)))
		}
		if len(msgs) > 0 {
			r.process(work, msgs)
		}
		if len(msgs) < r.cfg.BatchSize {
			return
		}
	}
}

// process executes one claimed batch and records the outcome of every row. If work ends
// before the batch is executed (shutdown timeout) the rows are abandoned: they stay
// leased until the reaper returns them.
func (r *Relay) process(work context.Context, msgs []*store.OutboxMessage) {
	results := make([]error, len(msgs))
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.execute(work, msgs, results)
	}()
	select {
	case <-done:
	case <-work.Done():
		select {
		case <-done: // finished at the same moment: keep the results
		default:
			r.stats.abandoned.Add(int64(len(msgs)))
			r.cfg.Logger.Warn("outbox: batch abandoned at shutdown; the reaper will return it",
				"relay", r.cfg.RelayID, "rows", len(msgs))
			return
		}
	}
	r.settle(work, msgs, results)
}

// execute fills results[i] with the outcome of msgs[i]: events published as one batch,
// commands dispatched at most Concurrency at a time.
func (r *Relay) execute(ctx context.Context, msgs []*store.OutboxMessage, results []error) {
	var cmdIdx, evIdx []int
	for i, m := range msgs {
		if m.Kind == store.KindEvent {
			evIdx = append(evIdx, i)
		} else {
			cmdIdx = append(cmdIdx, i)
		}
	}
	var wg sync.WaitGroup
	if len(evIdx) > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.publish(ctx, msgs, evIdx, results)
		}()
	}
	workers := min(r.cfg.Concurrency, len(cmdIdx))
	if workers <= 1 {
		for _, i := range cmdIdx {
			results[i] = r.dispatch(ctx, msgs[i])
		}
	} else {
		var next atomic.Int64
		wg.Add(workers)
		for range workers {
			go func() {
				defer wg.Done()
				for {
					n := int(next.Add(1)) - 1
					if n >= len(cmdIdx) {
						return
					}
					i := cmdIdx[n]
					results[i] = r.dispatch(ctx, msgs[i])
				}
			}()
		}
	}
	wg.Wait()
}

func (r *Relay) dispatch(ctx context.Context, m *store.OutboxMessage) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("outbox: command %s (row %d) panicked: %v", m.Type, m.ID, p)
		}
	}()
	ctx, span := dispatchSpan(extractTrace(ctx, m.TraceContext), m)
	defer func() { endSpan(span, err) }()
	return r.cmds.DispatchEncoded(ctx, m.Type, m.Payload)
}

func (r *Relay) publish(ctx context.Context, msgs []*store.OutboxMessage, idx []int, results []error) {
	if r.events == nil {
		for _, i := range idx {
			results[i] = errNoPublisher
		}
		return
	}
	evs := make([]*store.OutboxMessage, len(idx))
	spans := make([]trace.Span, len(idx))
	for j, i := range idx {
		evs[j] = msgs[i]
		spans[j] = publishSpan(extractTrace(ctx, msgs[i].TraceContext), msgs[i])
	}
	// One batch for all: each event's span covers the whole batch's publication.
	errs := r.events.Publish(ctx, evs)
	for j, i := range idx {
		if j < len(errs) {
			results[i] = errs[j]
		} else {
			results[i] = fmt.Errorf("outbox: EventPublisher returned %d results for %d events", len(errs), len(evs))
		}
		endSpan(spans[j], results[i])
	}
}

// settle marks the successes COMPLETED in one statement and records every failure.
func (r *Relay) settle(ctx context.Context, msgs []*store.OutboxMessage, results []error) {
	ok := make([]int64, 0, len(msgs))
	for i, m := range msgs {
		if results[i] == nil {
			ok = append(ok, m.ID)
		}
	}
	if len(ok) > 0 {
		n, err := r.st.Complete(ctx, r.cfg.RelayID, ok...)
		switch {
		case err != nil:
			r.cfg.Logger.Warn("outbox: complete failed; rows will be redelivered after the lease",
				"relay", r.cfg.RelayID, "rows", len(ok), "err", err)
		case n < len(ok):
			r.cfg.Logger.Warn("outbox: lease lost before complete; rows will be redelivered",
				"relay", r.cfg.RelayID, "rows", len(ok)-n)
		}
		r.stats.completed.Add(int64(n))
	}
	for i, m := range msgs {
		if results[i] != nil {
			r.fail(ctx, m, results[i])
		}
	}
}

// fail schedules a retry of m, or dead-letters it when its attempts are spent or the
// error is permanent (an event row only for a permanent error: Config.MaxAttempts). m.Attempts already counts the attempt that failed (Claim
// incremented it), so the n-th failure waits Backoff(n-1): BaseBackoff first.
func (r *Relay) fail(ctx context.Context, m *store.OutboxMessage, cause error) {
	maxAttempts := m.MaxAttempts
	if maxAttempts <= 0 {
		maxAttempts = r.cfg.MaxAttempts
	}
	dead := IsPermanent(cause) || m.Attempts >= maxAttempts
	maxBackoff := r.cfg.MaxBackoff
	if m.Kind == store.KindEvent && !IsPermanent(cause) {
		// Never given up, and retried at least every EventMaxBackoff (Config).
		dead = false
		maxBackoff = min(maxBackoff, max(r.cfg.EventMaxBackoff, r.cfg.BaseBackoff))
	}
	var retryAt time.Time
	if !dead {
		retryAt = r.cfg.Now().Add(command.Backoff(m.Attempts-1, r.cfg.BaseBackoff, maxBackoff, r.cfg.Jitter, r.cfg.Rand))
	}
	if err := r.st.Fail(ctx, r.cfg.RelayID, m.ID, cause.Error(), retryAt, dead); err != nil {
		r.cfg.Logger.Warn("outbox: recording a failure failed; the row will be redelivered after the lease",
			"relay", r.cfg.RelayID, "id", m.ID, "err", err)
		return
	}
	if dead {
		r.stats.deadLettered.Add(1)
		r.cfg.Logger.Warn("outbox: row dead-lettered", "relay", r.cfg.RelayID, "id", m.ID,
			"kind", m.Kind, "type", m.Type, "attempts", m.Attempts, "err", cause)
	} else {
		r.stats.retried.Add(1)
	}
}

func (r *Relay) reapLoop(ctx context.Context) {
	t := time.NewTicker(r.cfg.ReapInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n, err := r.st.ReapExpired(ctx)
			if err != nil {
				if ctx.Err() == nil {
					r.cfg.Logger.Warn("outbox: reap failed", "relay", r.cfg.RelayID, "err", err)
				}
				continue
			}
			r.stats.reaped.Add(int64(n))
		}
	}
}
