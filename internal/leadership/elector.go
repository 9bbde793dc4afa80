package leadership

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/hodei-jobs/hodei/store"
)

// DefaultName is the lease every replica of one platform competes for.
const DefaultName = "hodei"

// Config tunes an Elector. Zero fields get defaults (setDefaults); Validate names the
// first bad field.
type Config struct {
	// Name of the lease (default DefaultName).
	Name string
	// ID names this replica in the lease row (required). It must name one live process:
	// a second process with the same id would lead alongside it.
	ID string
	// TTL is how long a lease lasts without renewal (default 15s, range [100ms, 10m]):
	// a leader that dies is replaced within TTL.
	TTL time.Duration
	// RenewInterval is how often the leader renews and a follower tries to be elected
	// (default TTL/3, at most TTL/2).
	RenewInterval time.Duration
	// Now is the clock (default time.Now).
	Now    func() time.Time
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.Name == "" {
		c.Name = DefaultName
	}
	if c.TTL == 0 {
		c.TTL = 15 * time.Second
	}
	if c.RenewInterval == 0 {
		c.RenewInterval = c.TTL / 3
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate reports the first invalid field.
func (c *Config) Validate() error {
	switch {
	case c.ID == "":
		return errors.New("leadership: Config.ID is empty")
	case len(c.ID) > 200:
		return fmt.Errorf("leadership: Config.ID is %d bytes, more than 200", len(c.ID))
	case c.TTL < 100*time.Millisecond || c.TTL > 10*time.Minute:
		return fmt.Errorf("leadership: Config.TTL %s out of range [100ms, 10m]", c.TTL)
	case c.RenewInterval < 10*time.Millisecond || c.RenewInterval > c.TTL/2:
		return fmt.Errorf("leadership: Config.RenewInterval %s out of range [10ms, TTL/2 = %s]", c.RenewInterval, c.TTL/2)
	}
	return nil
}

// Status is what an Elector knows about the leadership, for display.
type Status struct {
	// ID of this replica.
	ID string `json:"id"`
	// Leading: this replica leads.
	Leading bool `json:"leading"`
	// Leader is the id of the replica that leads as last seen ("" when none is known:
	// before the first attempt, or when the last lease seen had expired).
	Leader string `json:"leader,omitempty"`
	// Until is when the leader's lease expires as last seen (zero when Leader is "").
	Until time.Time `json:"until,omitzero"`
}

// Elector takes part in the election of one lease for one replica. Run it once;
// its other methods are safe for concurrent use, before, during and after Run.
type Elector struct {
	cfg    Config
	leases store.LeaderStore // nil: always leader
	log    *slog.Logger

	mu      sync.Mutex
	status  Status
	changed chan struct{} // closed and replaced at each change of status.Leading
}

// New returns an Elector for the leases of st.
func New(st store.LeaderStore, cfg Config) (*Elector, error) {
	if st == nil {
		return nil, errors.New("leadership: New needs a LeaderStore")
	}
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Elector{cfg: cfg, leases: st, log: cfg.Logger.With("component", "leadership", "id", cfg.ID),
		status: Status{ID: cfg.ID}, changed: make(chan struct{})}, nil
}

// NewAlwaysLeader returns an Elector that leads from the start and never asks a store:
// for a platform of one process (SQLite, hodei dev).
func NewAlwaysLeader(id string) (*Elector, error) {
	if id == "" {
		return nil, errors.New("leadership: NewAlwaysLeader needs an id")
	}
	return &Elector{cfg: Config{ID: id}, log: slog.New(slog.DiscardHandler),
		status: Status{ID: id, Leading: true, Leader: id}, changed: make(chan struct{})}, nil
}

// ID is this replica's id.
func (e *Elector) ID() string { return e.cfg.ID }

// IsLeader reports whether this replica leads now.
func (e *Elector) IsLeader() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.status.Leading
}

// Leader returns who leads, as far as this replica knows ("" when it knows of none).
func (e *Elector) Leader() string { return e.Status().Leader }

// Status returns this replica's view of the leadership.
func (e *Elector) Status() Status {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.status
}

// Changed returns a channel that is closed at the next change of IsLeader (this
// replica gaining or losing leadership). Ask again after it closed.
func (e *Elector) Changed() <-chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.changed
}

func (e *Elector) setLeading(lease store.Lease) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.status.Leader, e.status.Until = lease.Holder, lease.ExpiresAt
	if !e.status.Leading {
		e.status.Leading = true
		close(e.changed)
		e.changed = make(chan struct{})
	}
}

// setFollowing records that this replica does not lead and who does (the zero lease:
// nobody known).
func (e *Elector) setFollowing(lease store.Lease) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.status.Leader, e.status.Until = lease.Holder, lease.ExpiresAt
	if e.status.Leading {
		e.status.Leading = false
		close(e.changed)
		e.changed = make(chan struct{})
	}
}

// Run takes part in the election until ctx ends: it tries to be elected, and while it
// leads it renews its lease; when ctx ends a leader resigns (its lease row deleted, so
// that another replica leads at once) and Run returns nil. An always-leader Elector
// just waits for ctx.
func (e *Elector) Run(ctx context.Context) error {
	if e.leases == nil {
		<-ctx.Done()
		return nil
	}
	defer e.setFollowing(store.Lease{})
	for {
		lease, trustedUntil, ok := e.follow(ctx)
		if !ok {
			return nil
		}
		e.setLeading(lease)
		e.log.Info("leading", "ttl", e.cfg.TTL)
		e.lead(ctx, lease, trustedUntil)
		e.setFollowing(store.Lease{})
		if ctx.Err() != nil {
			return nil
		}
	}
}

// follow tries to be elected until it is (ok) or ctx ends. It returns the lease won and
// the end of the trust window.
func (e *Elector) follow(ctx context.Context) (store.Lease, time.Time, bool) {
	failures := 0
	for {
		start := e.cfg.Now()
		lease, won, err := e.elect(ctx, start)
		wait := e.jittered()
		switch {
		case ctx.Err() != nil:
			return store.Lease{}, time.Time{}, false
		case err != nil:
			failures++
			wait = min(backoff(failures), e.cfg.RenewInterval)
			e.log.Warn("leader election attempt failed; retrying", "err", err, "attempt", failures, "retry_in", wait)
		case won:
			return lease, e.trustedUntil(start), true
		default:
			failures = 0
			if lease.ExpiresAt.After(start) {
				e.setFollowing(lease)
				// Try again at the lease's expiry if that comes first: a leader that
				// died is replaced as soon as its lease allows.
				wait = max(min(wait, lease.ExpiresAt.Sub(start)+time.Millisecond), 0)
			} else {
				e.setFollowing(store.Lease{})
			}
		}
		if !sleep(ctx, wait) {
			return store.Lease{}, time.Time{}, false
		}
	}
}

func (e *Elector) elect(ctx context.Context, now time.Time) (store.Lease, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, e.cfg.RenewInterval)
	defer cancel()
	return e.leases.TryElect(ctx, e.cfg.Name, e.cfg.ID, now, now.Add(e.cfg.TTL))
}

// lead renews the lease every RenewInterval until its term is over, its trust window
// ends without a successful renewal, or ctx ends (then it resigns).
func (e *Elector) lead(ctx context.Context, lease store.Lease, trustedUntil time.Time) {
	failures := 0
	wait := e.cfg.RenewInterval
	for {
		if !sleep(ctx, wait) {
			e.resign(ctx, lease)
			return
		}
		start := e.cfg.Now()
		left := trustedUntil.Sub(start)
		if left <= 0 {
			e.log.Warn("stepping down: no renewal of the leader lease succeeded within its trust window",
				"trust_window", e.trustWindow())
			return
		}
		rctx, cancel := context.WithTimeout(ctx, left)
		renewed, err := e.leases.Renew(rctx, e.cfg.Name, e.cfg.ID, lease.ElectedAt, start.Add(e.cfg.TTL))
		cancel()
		switch {
		case ctx.Err() != nil:
			e.resign(ctx, lease)
			return
		case errors.Is(err, store.ErrNotFound):
			e.log.Warn("stepping down: the leader lease was taken over", "err", err)
			return
		case err != nil:
			failures++
			wait = min(backoff(failures), max(trustedUntil.Sub(e.cfg.Now()), 0))
			e.log.Warn("leader lease renewal failed; retrying", "err", err, "attempt", failures, "retry_in", wait)
		default:
			failures = 0
			lease, trustedUntil, wait = renewed, e.trustedUntil(start), e.cfg.RenewInterval
			e.setLeading(lease)
		}
	}
}

// resign deletes this replica's lease row (up to three attempts of 2s each, even
// though ctx ended), so that another replica leads at once instead of after the TTL.
func (e *Elector) resign(ctx context.Context, lease store.Lease) {
	ctx = context.WithoutCancel(ctx)
	for attempt := 1; attempt <= 3; attempt++ {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		ok, err := e.leases.Resign(rctx, e.cfg.Name, e.cfg.ID, lease.ElectedAt)
		cancel()
		if err == nil {
			e.log.Info("resigned leadership", "deleted", ok)
			return
		}
		e.log.Warn("resigning leadership failed", "err", err, "attempt", attempt)
		time.Sleep(backoff(attempt))
	}
	e.log.Warn("could not resign leadership; another replica leads when the lease expires", "ttl", e.cfg.TTL)
}

// trustWindow is how long after the start of a successful attempt this replica
// trusts its lease: TTL − TTL/4, so that it stops leading before the lease expires.
func (e *Elector) trustWindow() time.Duration { return e.cfg.TTL - e.cfg.TTL/4 }

func (e *Elector) trustedUntil(start time.Time) time.Time { return start.Add(e.trustWindow()) }

// jittered is RenewInterval plus up to 10% jitter, so that followers do not all ask at
// the same moment.
func (e *Elector) jittered() time.Duration {
	return e.cfg.RenewInterval + rand.N(e.cfg.RenewInterval/10+1)
}

// backoff is 100ms doubling per failure, capped at 5s.
func backoff(failures int) time.Duration {
	d := 100 * time.Millisecond << min(failures-1, 6)
	return min(d, 5*time.Second)
}

// sleep waits d or until ctx ends; it reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
