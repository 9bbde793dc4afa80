package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/hodei-jobs/hodei/store"
)

// DefaultRetain is how long finished outbox rows (COMPLETED, CANCELLED) are kept by
// default (hodei server --retain-outbox).
const DefaultRetain = 24 * time.Hour

// PrunerConfig tunes a Pruner. Zero fields get defaults.
type PrunerConfig struct {
	// Retain is how long a finished row is kept after its last change (default
	// DefaultRetain; at least a minute). PENDING, RETRY and DEAD_LETTER rows are never
	// pruned.
	Retain time.Duration
	// Interval between runs (default 1m).
	Interval time.Duration
	// BatchSize is the most rows one DELETE removes (default 1000): each batch is its
	// own short statement, so no lock is held for long.
	BatchSize int
	// Pause between batches of one run (default 20ms), leaving room to other writers.
	Pause time.Duration
	// Leader, when set, restricts Run to the replica that leads (nil: always run).
	Leader interface{ IsLeader() bool }
	Logger *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

func (c *PrunerConfig) setDefaults() {
	if c.Retain == 0 {
		c.Retain = DefaultRetain
	}
	if c.Interval == 0 {
		c.Interval = time.Minute
	}
	if c.BatchSize == 0 {
		c.BatchSize = 1000
	}
	if c.Pause == 0 {
		c.Pause = 20 * time.Millisecond
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Validate reports the first invalid field.
func (c *PrunerConfig) Validate() error {
	switch {
	case c.Retain < time.Minute:
		return fmt.Errorf("outbox: PrunerConfig.Retain %s below 1m", c.Retain)
	case c.Interval < 10*time.Millisecond:
		return fmt.Errorf("outbox: PrunerConfig.Interval %s below 10ms", c.Interval)
	case c.BatchSize < 1 || c.BatchSize > 10000:
		return fmt.Errorf("outbox: PrunerConfig.BatchSize %d out of range [1, 10000]", c.BatchSize)
	case c.Pause < 0:
		return fmt.Errorf("outbox: PrunerConfig.Pause %s must not be negative", c.Pause)
	}
	return nil
}

// Pruner deletes finished outbox rows older than the retention, in small batches
// (River's job cleaner is the model). Run it on every replica with Leader set: only
// the leader prunes.
type Pruner struct {
	st  store.OutboxStore
	cfg PrunerConfig
}

// NewPruner returns a Pruner of st's finished rows.
func NewPruner(st store.OutboxStore, cfg PrunerConfig) (*Pruner, error) {
	if st == nil {
		return nil, errors.New("outbox: NewPruner: store is nil")
	}
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Pruner{st: st, cfg: cfg}, nil
}

// PruneOnce deletes every finished row older than the retention, batch after batch,
// and returns how many went; with dryRun it deletes nothing and counts them.
func (p *Pruner) PruneOnce(ctx context.Context, dryRun bool) (int, error) {
	before := p.cfg.Now().Add(-p.cfg.Retain)
	if dryRun {
		return p.st.PruneFinished(ctx, before, p.cfg.BatchSize, true)
	}
	total := 0
	for {
		n, err := p.st.PruneFinished(ctx, before, p.cfg.BatchSize, false)
		total += n
		if err != nil {
			return total, err
		}
		if n < p.cfg.BatchSize {
			return total, nil
		}
		select {
		case <-ctx.Done():
			return total, nil
		case <-time.After(p.cfg.Pause):
		}
	}
}

// Run prunes every Interval while this replica leads, until ctx ends; it returns nil.
// Errors are logged and the next run tries again.
func (p *Pruner) Run(ctx context.Context) error {
	t := time.NewTicker(p.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if p.cfg.Leader != nil && !p.cfg.Leader.IsLeader() {
			continue
		}
		n, err := p.PruneOnce(ctx, false)
		switch {
		case err != nil && ctx.Err() == nil:
			p.cfg.Logger.Warn("outbox: prune failed", "pruned", n, "err", err)
		case n > 0:
			p.cfg.Logger.Info("outbox: pruned finished rows", "rows", n, "retain", p.cfg.Retain)
		}
	}
}
