package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	hodeiv1 "github.com/hodei-jobs/hodei/gen/hodei/v1"
	"github.com/hodei-jobs/hodei/gen/hodei/v1/hodeiv1connect"
	"github.com/hodei-jobs/hodei/retention"
	"github.com/hodei-jobs/hodei/store/postgres"
)

// SoakConfig configures RunSoak: a server in this process on DatabaseURL, jobs
// submitted at Rate for Duration while a retention pruner with short retentions runs.
type SoakConfig struct {
	// DatabaseURL of the PostgreSQL database of the in-process server (migrated).
	DatabaseURL string
	// Duration of the run (default 10m), rounded up to a whole number of samples.
	Duration time.Duration
	// Rate of submissions, jobs per second (default 10).
	Rate float64
	// MaxInFlight bounds the jobs submitted and not yet ended (default 200): a tick
	// that finds that many is counted as skipped instead of piling up.
	MaxInFlight int
	// Retain is the retention of every kind (default 30s).
	Retain time.Duration
	// PruneInterval is the pruner's interval (default 10s).
	PruneInterval time.Duration
	// Sample is the reporting period (default 1m).
	Sample time.Duration
	// MaxWorkers is the in-process server's capacity (0: its default).
	MaxWorkers int
	// WorkerBinary is the hodei executable the server starts as workers (default: the
	// server's default; a test sets a built binary).
	WorkerBinary string
	// Log receives progress lines (nil: none); ServerLog the in-process server's
	// warnings (nil: none).
	Log, ServerLog io.Writer
}

func (c *SoakConfig) setDefaults() {
	if c.Duration == 0 {
		c.Duration = 10 * time.Minute
	}
	if c.Rate == 0 {
		c.Rate = 10
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = 200
	}
	if c.Retain == 0 {
		c.Retain = 30 * time.Second
	}
	if c.PruneInterval == 0 {
		c.PruneInterval = 10 * time.Second
	}
	if c.Sample == 0 {
		c.Sample = time.Minute
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
}

// Validate reports the first invalid field.
func (c *SoakConfig) Validate() error {
	switch {
	case c.DatabaseURL == "":
		return errors.New("bench soak: DatabaseURL (--database-url) is required: the soak measures PostgreSQL's tables")
	case c.Duration < 10*time.Second || c.Duration > 7*24*time.Hour:
		return fmt.Errorf("bench soak: Duration (--duration) %s out of range [10s, 168h]", c.Duration)
	case c.Rate <= 0 || c.Rate > 10000:
		return fmt.Errorf("bench soak: Rate (--rate) %g out of range (0, 10000]", c.Rate)
	case c.MaxInFlight < 1 || c.MaxInFlight > 10000:
		return fmt.Errorf("bench soak: MaxInFlight (--max-in-flight) %d out of range [1, 10000]", c.MaxInFlight)
	case c.Retain < retention.MinRetain:
		return fmt.Errorf("bench soak: Retain (--retain) %s below %s", c.Retain, retention.MinRetain)
	case c.PruneInterval < 100*time.Millisecond:
		return fmt.Errorf("bench soak: PruneInterval (--prune-interval) %s below 100ms", c.PruneInterval)
	case c.Sample < time.Second || c.Sample > c.Duration:
		return fmt.Errorf("bench soak: Sample (--sample) %s out of range [1s, --duration]", c.Sample)
	case c.MaxWorkers < 0:
		return fmt.Errorf("bench soak: MaxWorkers (--max-workers) %d must not be negative", c.MaxWorkers)
	}
	return nil
}

// soakTables are the tables whose size the soak follows.
var soakTables = []string{"jobs", "job_logs", "sagas", "saga_events", "saga_snapshots", "saga_timers", "outbox",
	"idempotency_keys", "workers", "worker_credentials"}

// SoakTable is one table's size at a sample.
type SoakTable struct {
	Rows  int64 `json:"rows"`
	Bytes int64 `json:"bytes"` // pg_total_relation_size: heap, indexes, TOAST
}

// SoakSample is one period of the soak.
type SoakSample struct {
	// Minute is the sample's end, in periods since the start (1, 2, …).
	Minute    int     `json:"minute"`
	ElapsedS  float64 `json:"elapsed_s"`
	Submitted int     `json:"submitted"`
	Ended     int     `json:"ended"`
	Succeeded int     `json:"succeeded"`
	// Skipped ticks: MaxInFlight jobs were still running.
	Skipped int `json:"skipped"`
	// EndedPerS is the jobs ended per second in the period.
	EndedPerS float64 `json:"ended_per_s"`
	// Pruned rows per kind in the period, and the longest prune batch.
	Pruned     map[string]int `json:"pruned"`
	MaxBatchMs float64        `json:"max_batch_ms"`
	// Tables at the sample's end, and their total bytes.
	Tables     map[string]SoakTable `json:"tables"`
	TotalBytes int64                `json:"total_bytes"`
	// Load1 is the machine's 1-minute load average at the sample (Linux; 0 elsewhere).
	Load1 float64 `json:"load1"`
}

// SoakResult is what `hodei bench soak` reports.
type SoakResult struct {
	Server          string       `json:"server"`
	DurationS       float64      `json:"duration_s"`
	Rate            float64      `json:"rate_per_s"`
	Retain          string       `json:"retain"`
	PruneInterval   string       `json:"prune_interval"`
	Submitted       int          `json:"submitted"`
	Succeeded       int          `json:"succeeded"`
	NotSucceeded    int          `json:"not_succeeded"`
	Errors          int          `json:"errors"`
	PrunePasses     int          `json:"prune_passes"`
	PruneErrors     int          `json:"prune_errors"`
	MaxBatchMs      float64      `json:"max_batch_ms"`
	Samples         []SoakSample `json:"samples"`
	FirstError      string       `json:"first_error,omitempty"`
	FirstPruneError string       `json:"first_prune_error,omitempty"`
}

// soakWindow accumulates one period.
type soakWindow struct {
	submitted, ended, succeeded, skipped int
	pruned                               map[string]int
	maxBatchMs                           float64
}

// RunSoak runs the soak: steady submissions of jobs that print a line, a retention
// pruner with short retentions every PruneInterval, and a sample of throughput and
// table sizes every Sample. Both should stay flat.
func RunSoak(ctx context.Context, cfg SoakConfig) (*SoakResult, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	res := &SoakResult{Rate: cfg.Rate, Retain: cfg.Retain.String(), PruneInterval: cfg.PruneInterval.String()}
	// The server's warnings (a delivery retried, …) would drown the samples: with
	// ServerLog unset they go nowhere.
	srvLog := cfg.ServerLog
	if srvLog == nil {
		srvLog = io.Discard
	}
	srvURL, stopServer, err := jobsStartServer(ctx, JobsConfig{DatabaseURL: cfg.DatabaseURL, Driver: DriverPostgres,
		MaxWorkers: cfg.MaxWorkers, Log: srvLog, WorkerBinary: cfg.WorkerBinary})
	if err != nil {
		return nil, fmt.Errorf("bench soak: %w", err)
	}
	defer stopServer()
	res.Server = srvURL
	st, err := postgres.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("bench soak: %w", err)
	}
	defer st.Close()
	client := hodeiv1connect.NewJobServiceClient(jobsHTTPClient(true), srvURL)
	spec := func() *hodeiv1.JobSpec {
		return &hodeiv1.JobSpec{Command: []string{"echo", "soak"}, Labels: map[string]string{"hodei.bench": "soak"}}
	}
	if m, err := jobsRunOne(ctx, client, spec()); err != nil {
		return nil, fmt.Errorf("bench soak: warm-up job: %w", err)
	} else if m.state != "SUCCEEDED" {
		return nil, fmt.Errorf("bench soak: warm-up job ended %s: %s", m.state, m.lastErr)
	}

	var (
		mu  sync.Mutex
		win = soakWindow{pruned: map[string]int{}}
	)
	pruner, err := retention.NewPruner(st, retention.Config{
		Retain: retention.Retentions{Outbox: cfg.Retain, Sagas: cfg.Retain, Jobs: cfg.Retain, Logs: cfg.Retain,
			Idempotency: cfg.Retain},
		Interval: cfg.PruneInterval,
		Logger:   slog.New(slog.DiscardHandler),
		OnPass: func(rep retention.Report) {
			mu.Lock()
			defer mu.Unlock()
			res.PrunePasses++
			for _, k := range rep.Kinds {
				win.pruned[k.Kind] += k.Rows
				win.maxBatchMs = max(win.maxBatchMs, k.MaxBatchMs)
				res.MaxBatchMs = max(res.MaxBatchMs, k.MaxBatchMs)
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("bench soak: %w", err)
	}
	// The run ends with its last sample: Duration rounded up to whole samples.
	samples := int((cfg.Duration + cfg.Sample - 1) / cfg.Sample)
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	var wg sync.WaitGroup
	wg.Go(func() { _ = pruner.Run(runCtx) })

	fmt.Fprintf(cfg.Log, "bench soak: server %s, %g jobs/s for %s, every kind kept %s, pruned every %s\n",
		srvURL, cfg.Rate, cfg.Duration, cfg.Retain, cfg.PruneInterval)
	var inFlight atomic.Int64
	// Watches outlive runCtx by a grace period so jobs submitted near the end are seen
	// to their end.
	watchCtx, stopWatch := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWatch()
	var jobsWG sync.WaitGroup
	start := time.Now()
	tick := time.NewTicker(time.Duration(float64(time.Second) / cfg.Rate))
	defer tick.Stop()
	sample := time.NewTicker(cfg.Sample)
	defer sample.Stop()
	n := 0
loop:
	for {
		select {
		case <-runCtx.Done():
			break loop
		case <-sample.C:
			n++
			mu.Lock()
			w := win
			win = soakWindow{pruned: map[string]int{}}
			mu.Unlock()
			s, err := soakSample(ctx, st, n, time.Since(start), cfg.Sample, w)
			if err != nil {
				return nil, err
			}
			res.Samples = append(res.Samples, s)
			fmt.Fprintf(cfg.Log, "bench soak: minute %d: %d ended (%.1f/s), %d rows pruned, tables %.1f MB, load %.2f\n",
				n, s.Ended, s.EndedPerS, sumInts(s.Pruned), float64(s.TotalBytes)/(1<<20), s.Load1)
			if n == samples {
				stopRun()
				break loop
			}
		case <-tick.C:
			if inFlight.Load() >= int64(cfg.MaxInFlight) {
				mu.Lock()
				win.skipped++
				mu.Unlock()
				continue
			}
			inFlight.Add(1)
			mu.Lock()
			win.submitted++
			res.Submitted++
			mu.Unlock()
			jobsWG.Go(func() {
				defer inFlight.Add(-1)
				m, err := jobsRunOne(watchCtx, client, spec())
				mu.Lock()
				defer mu.Unlock()
				win.ended++
				switch {
				case err != nil:
					res.Errors++
					if res.FirstError == "" {
						res.FirstError = err.Error()
					}
				case m.state == "SUCCEEDED":
					win.succeeded++
					res.Succeeded++
				}
			})
		}
	}
	done := make(chan struct{})
	go func() { jobsWG.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		fmt.Fprintf(cfg.Log, "bench soak: %d jobs still not ended 2m after the end\n", inFlight.Load())
		stopWatch()
		<-done
	}
	wg.Wait()
	res.DurationS = jobsRound(time.Since(start).Seconds(), 1)
	mu.Lock()
	res.NotSucceeded = res.Submitted - res.Succeeded
	mu.Unlock()
	return res, nil
}

func sumInts(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// soakSample measures the tables and closes period n.
func soakSample(ctx context.Context, st *postgres.Store, n int, elapsed, period time.Duration, w soakWindow) (SoakSample, error) {
	s := SoakSample{Minute: n, ElapsedS: jobsRound(elapsed.Seconds(), 1), Submitted: w.submitted, Ended: w.ended,
		Succeeded: w.succeeded, Skipped: w.skipped, EndedPerS: jobsRound(float64(w.ended)/period.Seconds(), 2),
		Pruned: w.pruned, MaxBatchMs: w.maxBatchMs, Tables: map[string]SoakTable{}, Load1: load1()}
	for _, t := range soakTables {
		var ts SoakTable
		// The table names are the constants above.
		err := st.Pool().QueryRow(ctx, `SELECT (SELECT count(*) FROM `+t+`), pg_total_relation_size('`+t+`')`).
			Scan(&ts.Rows, &ts.Bytes)
		if err != nil {
			return s, fmt.Errorf("bench soak: size of %s: %w", t, err)
		}
		s.Tables[t] = ts
		s.TotalBytes += ts.Bytes
	}
	return s, nil
}

// load1 is the 1-minute load average (Linux), 0 when unknown.
func load1() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}
