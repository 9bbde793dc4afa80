package retention

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/hodei-jobs/hodei/jobs"
	"github.com/hodei-jobs/hodei/store"
)

// Default retentions (the hodei server flags' defaults).
const (
	DefaultOutbox      = 24 * time.Hour
	DefaultSagas       = 7 * 24 * time.Hour
	DefaultJobs        = 30 * 24 * time.Hour
	DefaultLogs        = 7 * 24 * time.Hour
	DefaultIdempotency = 7 * 24 * time.Hour
	// MinRetain is the shortest retention a Pruner accepts (soak benches use seconds).
	MinRetain = time.Second
	// MinFlagRetain is the shortest retention the flags of hodei server and hodei admin
	// prune accept.
	MinFlagRetain = time.Minute
)

// Kinds, in the order a pass prunes them.
const (
	KindOutbox      = "outbox"
	KindSagas       = "sagas"
	KindJobs        = "jobs"
	KindWorkers     = "workers"
	KindLogs        = "logs"
	KindIdempotency = "idempotency"
)

// Retentions says how long each kind is kept after it ended; 0 keeps it forever.
type Retentions struct {
	Outbox, Sagas, Jobs, Logs, Idempotency time.Duration
}

// Defaults returns the default retentions.
func Defaults() Retentions {
	return Retentions{Outbox: DefaultOutbox, Sagas: DefaultSagas, Jobs: DefaultJobs, Logs: DefaultLogs,
		Idempotency: DefaultIdempotency}
}

// Validate names the first retention that is negative or below min (other than 0),
// by its flag.
func (r Retentions) Validate(min time.Duration) error {
	for _, f := range []struct {
		flag string
		d    time.Duration
	}{{"--retain-outbox", r.Outbox}, {"--retain-sagas", r.Sagas}, {"--retain-jobs", r.Jobs},
		{"--retain-logs", r.Logs}, {"--retain-idempotency", r.Idempotency}} {
		if f.d < 0 || (f.d > 0 && f.d < min) {
			return fmt.Errorf("%s %s: 0 (keep forever) or at least %s", f.flag, f.d, min)
		}
	}
	return nil
}

// Any reports whether some kind is pruned at all.
func (r Retentions) Any() bool {
	return r.Outbox > 0 || r.Sagas > 0 || r.Jobs > 0 || r.Logs > 0 || r.Idempotency > 0
}

// Config tunes a Pruner. Zero fields other than the retentions get defaults.
type Config struct {
	Retain Retentions
	// Interval between passes (default 1m).
	Interval time.Duration
	// BatchSize is the most rows (jobs, sagas, lines, keys) one batch deletes (default
	// 1000).
	BatchSize int
	// Pause between batches (default 20ms), leaving room to other writers.
	Pause time.Duration
	// Leader, when set, restricts Run to the replica that leads (nil: always run).
	Leader interface{ IsLeader() bool }
	Logger *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
	// OnPass, if set, receives the report of every pass Run makes (benches).
	OnPass func(Report)
}

func (c *Config) setDefaults() {
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
func (c *Config) Validate() error {
	if err := c.Retain.Validate(MinRetain); err != nil {
		return fmt.Errorf("retention: %w", err)
	}
	switch {
	case c.Interval < 10*time.Millisecond:
		return fmt.Errorf("retention: Config.Interval %s below 10ms", c.Interval)
	case c.BatchSize < 1 || c.BatchSize > 10000:
		return fmt.Errorf("retention: Config.BatchSize %d out of range [1, 10000]", c.BatchSize)
	case c.Pause < 0:
		return fmt.Errorf("retention: Config.Pause %s must not be negative", c.Pause)
	}
	return nil
}

// KindReport is what one pass did to one kind.
type KindReport struct {
	Kind   string `json:"kind"`
	Retain string `json:"retain"` // "0s": kept forever, not pruned
	Rows   int    `json:"rows"`   // deleted (or, in a dry run, that would be)
	// Kept counts candidates old enough but kept because something not ended needs them
	// (jobs and workers only).
	Kept    int `json:"kept,omitempty"`
	Batches int `json:"batches"`
	// MaxBatchMs is the longest batch (one statement or transaction), in ms.
	MaxBatchMs float64 `json:"max_batch_ms"`
}

// Report is what one pass did.
type Report struct {
	DryRun bool         `json:"dry_run"`
	Kinds  []KindReport `json:"kinds"`
}

// Rows is the total of the kinds' rows.
func (r Report) Rows() int {
	n := 0
	for _, k := range r.Kinds {
		n += k.Rows
	}
	return n
}

// Pruner deletes what ended longer ago than its retention, kind by kind, in batches.
type Pruner struct {
	st  store.Store
	cfg Config
}

// NewPruner returns a Pruner of st.
func NewPruner(st store.Store, cfg Config) (*Pruner, error) {
	if st == nil {
		return nil, errors.New("retention: NewPruner: store is nil")
	}
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Pruner{st: st, cfg: cfg}, nil
}

// PruneOnce makes one pass over every kind with a retention; with dryRun it deletes
// nothing and counts what would go. It stops at the first error, returning the report
// so far.
func (p *Pruner) PruneOnce(ctx context.Context, dryRun bool) (Report, error) {
	rep := Report{DryRun: dryRun}
	now := p.cfg.Now()
	r := p.cfg.Retain
	rs := p.st.Retention()
	batch := func(fn func(ctx context.Context, before time.Time, limit int, dryRun bool) (int, error)) func(context.Context, time.Time, *KindReport) error {
		return func(ctx context.Context, before time.Time, kr *KindReport) error {
			return p.batches(ctx, kr, dryRun, func(ctx context.Context) (int, error) {
				return fn(ctx, before, p.cfg.BatchSize, dryRun)
			})
		}
	}
	kinds := []struct {
		kind   string
		retain time.Duration
		run    func(context.Context, time.Time, *KindReport) error
	}{
		{KindOutbox, r.Outbox, batch(p.st.Outbox().PruneFinished)},
		{KindSagas, r.Sagas, batch(func(ctx context.Context, before time.Time, limit int, dryRun bool) (int, error) {
			return rs.PruneSagas(ctx, before, jobs.JobSagaTypes(), limit, dryRun)
		})},
		{KindJobs, r.Jobs, func(ctx context.Context, before time.Time, kr *KindReport) error {
			return p.pruneJobs(ctx, before, dryRun, kr)
		}},
		{KindWorkers, r.Jobs, func(ctx context.Context, before time.Time, kr *KindReport) error {
			return p.pruneWorkers(ctx, before, dryRun, kr)
		}},
		{KindLogs, r.Logs, batch(rs.PruneLogs)},
		{KindIdempotency, r.Idempotency, batch(rs.PruneIdempotencyKeys)},
	}
	for _, k := range kinds {
		kr := KindReport{Kind: k.kind, Retain: k.retain.String()}
		var err error
		if k.retain > 0 {
			err = k.run(ctx, now.Add(-k.retain), &kr)
		}
		rep.Kinds = append(rep.Kinds, kr)
		if err != nil {
			return rep, fmt.Errorf("retention: %s: %w", k.kind, err)
		}
	}
	return rep, nil
}

// timed runs one batch and records its duration in kr.
func (kr *KindReport) timed(ctx context.Context, fn func(ctx context.Context) (int, error)) (int, error) {
	start := time.Now()
	n, err := fn(ctx)
	kr.Batches++
	kr.MaxBatchMs = max(kr.MaxBatchMs, float64(time.Since(start).Microseconds())/1000)
	return n, err
}

// batches repeats fn (one batch) until it deletes less than a batch; a dry run counts
// once.
func (p *Pruner) batches(ctx context.Context, kr *KindReport, dryRun bool, fn func(ctx context.Context) (int, error)) error {
	for {
		n, err := kr.timed(ctx, fn)
		kr.Rows += n
		if err != nil || dryRun || n < p.cfg.BatchSize {
			return err
		}
		if !p.pause(ctx) {
			return nil
		}
	}
}

func (p *Pruner) pause(ctx context.Context) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(p.cfg.Pause):
		return true
	}
}

// pruneJobs walks the ended jobs finished before before, oldest first, and deletes
// those none of whose sagas is still going, with their sagas and log lines.
func (p *Pruner) pruneJobs(ctx context.Context, before time.Time, dryRun bool, kr *KindReport) error {
	rs := p.st.Retention()
	var afterAt time.Time
	afterID := ""
	for {
		cands, err := rs.EndedJobs(ctx, before, afterAt, afterID, p.cfg.BatchSize)
		if err != nil || len(cands) == 0 {
			return err
		}
		last := cands[len(cands)-1]
		afterAt, afterID = last.FinishedAt, last.ID
		sagasOf := make(map[string][]string, len(cands))
		var all []string
		for _, j := range cands {
			ids := jobs.JobSagaIDs(j.ID, j.Attempt)
			sagasOf[j.ID] = ids
			all = append(all, ids...)
		}
		unended, err := rs.UnendedSagas(ctx, all)
		if err != nil {
			return err
		}
		going := make(map[string]bool, len(unended))
		for _, id := range unended {
			going[id] = true
		}
		var del, delSagas []string
		for _, j := range cands {
			keep := false
			for _, id := range sagasOf[j.ID] {
				keep = keep || going[id]
			}
			if keep {
				kr.Kept++
				continue
			}
			del = append(del, j.ID)
			delSagas = append(delSagas, sagasOf[j.ID]...)
		}
		if dryRun {
			kr.Rows += len(del)
		} else if len(del) > 0 {
			n, err := kr.timed(ctx, func(ctx context.Context) (int, error) { return rs.DeleteJobs(ctx, del, delSagas) })
			kr.Rows += n
			if err != nil {
				return err
			}
		}
		if len(cands) < p.cfg.BatchSize || !p.pause(ctx) {
			return nil
		}
	}
}

// pruneWorkers walks the TERMINATED workers last changed before before and deletes
// those whose warm-pool saga (if any) has ended.
func (p *Pruner) pruneWorkers(ctx context.Context, before time.Time, dryRun bool, kr *KindReport) error {
	rs := p.st.Retention()
	var afterAt time.Time
	afterID := ""
	for {
		cands, err := rs.EndedWorkers(ctx, before, afterAt, afterID, p.cfg.BatchSize)
		if err != nil || len(cands) == 0 {
			return err
		}
		last := cands[len(cands)-1]
		afterAt, afterID = last.UpdatedAt, last.ID
		sagaOf := make(map[string]string, len(cands))
		all := make([]string, 0, len(cands))
		for _, w := range cands {
			sagaOf[w.ID] = jobs.WarmSagaID(w.ID)
			all = append(all, sagaOf[w.ID])
		}
		unended, err := rs.UnendedSagas(ctx, all)
		if err != nil {
			return err
		}
		going := make(map[string]bool, len(unended))
		for _, id := range unended {
			going[id] = true
		}
		var del []string
		for _, w := range cands {
			if going[sagaOf[w.ID]] {
				kr.Kept++
				continue
			}
			del = append(del, w.ID)
		}
		if dryRun {
			kr.Rows += len(del)
		} else if len(del) > 0 {
			n, err := kr.timed(ctx, func(ctx context.Context) (int, error) { return rs.DeleteWorkers(ctx, del) })
			kr.Rows += n
			if err != nil {
				return err
			}
		}
		if len(cands) < p.cfg.BatchSize || !p.pause(ctx) {
			return nil
		}
	}
}

// Run makes a pass every Interval while this replica leads, until ctx ends; it returns
// nil. Errors are logged and the next pass tries again.
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
		rep, err := p.PruneOnce(ctx, false)
		if p.cfg.OnPass != nil {
			p.cfg.OnPass(rep)
		}
		switch {
		case err != nil && ctx.Err() == nil:
			p.cfg.Logger.Warn("retention: prune failed", "pruned", rep.Rows(), "err", err)
		case rep.Rows() > 0:
			args := []any{}
			for _, k := range rep.Kinds {
				if k.Rows > 0 {
					args = append(args, k.Kind, k.Rows)
				}
			}
			p.cfg.Logger.Info("retention: pruned", args...)
		}
	}
}
