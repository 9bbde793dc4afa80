package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"os"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	"github.com/hodei-jobs/hodei/domain"
	hodeiv1 "github.com/hodei-jobs/hodei/gen/hodei/v1"
	"github.com/hodei-jobs/hodei/gen/hodei/v1/hodeiv1connect"
	"github.com/hodei-jobs/hodei/jobs"
	"github.com/hodei-jobs/hodei/server"
)

// JobsConfig configures RunJobs: either ServerURL (a running server), or a server
// started in this process on a free port with its own data directory, on DatabaseURL
// (Driver postgres) or SQLitePath (Driver sqlite).
type JobsConfig struct {
	// ServerURL of a running `hodei server`.
	ServerURL string
	// DatabaseURL of the database of an in-process server (used when ServerURL is
	// empty). The server migrates it; jobs accumulate in it.
	DatabaseURL string
	// Driver of the in-process server: DriverPostgres (default) or DriverSQLite.
	Driver string
	// SQLitePath is the SQLite file of an in-process server with Driver sqlite (""
	// with Driver sqlite: hodei.db in its temporary data directory).
	SQLitePath string
	// MaxWorkers is the in-process server's capacity (0: the server's default).
	MaxWorkers int
	// Jobs submitted in all (default 500).
	Jobs int
	// Concurrency is the number of jobs in flight at once (default 16): each of that
	// many clients submits a job, watches it to its end, and submits the next.
	Concurrency int
	// CPUProfile, if set, receives a CPU profile of this process for the measured
	// phase (with an in-process server: the control plane's CPU; workers are separate
	// processes).
	CPUProfile string
	// Log receives progress lines and, in-process, the server's warnings (nil: none).
	Log io.Writer
	// Provider runs the jobs (JobSpec.provider; "" lets the server choose). With
	// "docker" and an in-process server, the server runs the docker provider (Docker).
	Provider string
	// Image the jobs run in (JobSpec.image, pull never); needed with Provider docker.
	Image string
	// Docker configures an in-process server's docker provider; with Provider docker
	// the bench also times bare container runs of Image on the same engine.
	Docker server.DockerConfig
	// WarmWorkers is the in-process server's warm pool for the jobs' provider and
	// Image (min_idle; max_idle twice that): 0, none. The bench gives the pool
	// WarmSettle to fill before it measures.
	WarmWorkers int
	// WarmMaxJobs is the pool's max_jobs_per_worker (0: 1).
	WarmMaxJobs int
	// WarmSettle: how long the bench waits for the pool to fill (default 3s; 10s with
	// Provider docker).
	WarmSettle time.Duration
	// WorkerBinary is the hodei executable an in-process server starts as workers
	// (default: the server's default; a test sets a built binary).
	WorkerBinary string
}

func (c *JobsConfig) setDefaults() {
	if c.Driver == "" && c.ServerURL == "" {
		c.Driver = DriverPostgres
	}
	if c.Jobs == 0 {
		c.Jobs = 500
	}
	if c.Concurrency == 0 {
		c.Concurrency = 16
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
	if c.WarmSettle == 0 {
		c.WarmSettle = 3 * time.Second
		if c.Provider == "docker" {
			c.WarmSettle = 10 * time.Second
		}
	}
}

// Validate reports the first invalid field.
func (c *JobsConfig) Validate() error {
	inProcess := c.DatabaseURL != "" || c.Driver == DriverSQLite
	switch {
	case c.Driver != "" && c.Driver != DriverPostgres && c.Driver != DriverSQLite:
		return fmt.Errorf("bench jobs: Driver %q is not %q or %q", c.Driver, DriverPostgres, DriverSQLite)
	case c.ServerURL == "" && !inProcess:
		return errors.New("bench jobs: set ServerURL (a running server), DatabaseURL or Driver sqlite (an in-process server)")
	case c.ServerURL != "" && (inProcess || c.SQLitePath != ""):
		return errors.New("bench jobs: set only one of ServerURL and an in-process server (DatabaseURL, Driver sqlite)")
	case c.Driver == DriverSQLite && c.DatabaseURL != "":
		return errors.New("bench jobs: DatabaseURL is for Driver postgres, not sqlite")
	case c.Driver != DriverSQLite && c.SQLitePath != "":
		return errors.New("bench jobs: SQLitePath is for Driver sqlite")
	case c.Jobs < 1 || c.Jobs > 1_000_000:
		return fmt.Errorf("bench jobs: Jobs %d out of range [1, 1000000]", c.Jobs)
	case c.Concurrency < 1 || c.Concurrency > 10_000:
		return fmt.Errorf("bench jobs: Concurrency %d out of range [1, 10000]", c.Concurrency)
	case c.WarmWorkers < 0 || c.WarmMaxJobs < 0:
		return fmt.Errorf("bench jobs: WarmWorkers (%d) and WarmMaxJobs (%d) must not be negative", c.WarmWorkers, c.WarmMaxJobs)
	case c.WarmWorkers > 0 && c.ServerURL != "":
		return errors.New("bench jobs: WarmWorkers is for an in-process server (start a running one with --warm-workers)")
	case c.MaxWorkers < 0:
		return fmt.Errorf("bench jobs: MaxWorkers must not be negative, got %d", c.MaxWorkers)
	case c.Provider == "docker" && c.Image == "":
		return errors.New("bench jobs: Provider docker needs an Image")
	}
	if c.ServerURL != "" {
		u, err := url.Parse(c.ServerURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("bench jobs: ServerURL %q is not an http:// or https:// URL", c.ServerURL)
		}
	}
	return nil
}

// JobsResult is what `hodei bench jobs` reports.
type JobsResult struct {
	Server    string `json:"server"`
	InProcess bool   `json:"in_process"`
	// Driver is the in-process server's store driver ("" against a running server).
	Driver      string `json:"driver,omitempty"`
	Jobs        int    `json:"jobs"`
	Concurrency int    `json:"concurrency"`
	Succeeded   int    `json:"succeeded"`
	// NotSucceeded counts jobs that ended in another state (or could not be watched).
	NotSucceeded    int     `json:"not_succeeded"`
	DurationSeconds float64 `json:"duration_s"`
	// ThroughputPerS is jobs ended per second, from the first submission to the last
	// job's end.
	ThroughputPerS float64 `json:"throughput_per_s"`
	// Submit→RUNNING latency: from just before SubmitJob is sent to the job's
	// started_at (set by the worker when the process started; same machine clock when
	// the server is local).
	StartLatencyP50Ms float64 `json:"start_latency_p50_ms"`
	StartLatencyP95Ms float64 `json:"start_latency_p95_ms"`
	StartLatencyP99Ms float64 `json:"start_latency_p99_ms"`
	StartLatencyMaxMs float64 `json:"start_latency_max_ms"`
	// Submit→end latency (the job's finished_at), p50 and p95.
	EndLatencyP50Ms float64 `json:"end_latency_p50_ms"`
	EndLatencyP95Ms float64 `json:"end_latency_p95_ms"`
	// SubmitP50Ms is the SubmitJob round trip, p50.
	SubmitP50Ms float64 `json:"submit_p50_ms"`
	// Provider and Image the jobs ran with ("" : the server's choice, none).
	Provider string `json:"provider,omitempty"`
	Image    string `json:"image,omitempty"`
	// WarmWorkers and WarmMaxJobs of the in-process server's pool (0: none).
	WarmWorkers int `json:"warm_workers,omitempty"`
	WarmMaxJobs int `json:"warm_max_jobs,omitempty"`
	// With Provider docker: a bare `docker run --rm IMAGE true` through the engine's
	// API (create, start, wait for the exit, remove), p50 and p95 over BareRuns runs on
	// the same engine, and the start-up overhead of a job beyond it (start latency
	// p50 − bare run p50) and the ratio of the two p50s.
	BareRuns               int     `json:"bare_runs,omitempty"`
	BareRunP50Ms           float64 `json:"bare_run_p50_ms,omitempty"`
	BareRunP95Ms           float64 `json:"bare_run_p95_ms,omitempty"`
	StartOverheadP50Ms     float64 `json:"start_overhead_p50_ms,omitempty"`
	StartToBareRunP50Ratio float64 `json:"start_to_bare_run_p50_ratio,omitempty"`
}

// RunJobs submits cfg.Jobs jobs running `true`, cfg.Concurrency at a time, watches each
// to its end and measures throughput and start latency.
func RunJobs(ctx context.Context, cfg JobsConfig) (*JobsResult, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	res := &JobsResult{Jobs: cfg.Jobs, Concurrency: cfg.Concurrency, Server: cfg.ServerURL, Provider: cfg.Provider, Image: cfg.Image,
		WarmWorkers: cfg.WarmWorkers}
	if cfg.WarmWorkers > 0 {
		res.WarmMaxJobs = max(cfg.WarmMaxJobs, 1)
	}
	spec := func() *hodeiv1.JobSpec {
		s := &hodeiv1.JobSpec{Command: []string{"true"}, Labels: map[string]string{"hodei.bench": "jobs"},
			Provider: cfg.Provider, Image: cfg.Image}
		if cfg.Image != "" {
			s.Pull = "never"
		}
		return s
	}
	base := cfg.ServerURL
	if base == "" {
		res.InProcess = true
		res.Driver = cfg.Driver
		srvURL, stop, err := jobsStartServer(ctx, cfg)
		if err != nil {
			return nil, err
		}
		defer stop()
		base = srvURL
		res.Server = srvURL
	}
	client := hodeiv1connect.NewJobServiceClient(jobsHTTPClient(strings.HasPrefix(base, "http://")), strings.TrimSuffix(base, "/"))

	// One warm-up job checks the path end to end (and warms caches and connections).
	fmt.Fprintf(cfg.Log, "bench jobs: server %s, warm-up job\n", base)
	if m, err := jobsRunOne(ctx, client, spec()); err != nil {
		return nil, fmt.Errorf("bench jobs: warm-up job: %w", err)
	} else if m.state != "SUCCEEDED" {
		return nil, fmt.Errorf("bench jobs: warm-up job ended %s: %s", m.state, m.lastErr)
	}

	if cfg.WarmWorkers > 0 {
		fmt.Fprintf(cfg.Log, "bench jobs: %s for the warm pool of %d workers to fill\n", cfg.WarmSettle, cfg.WarmWorkers)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(cfg.WarmSettle):
		}
	}
	if cfg.CPUProfile != "" {
		f, err := os.Create(cfg.CPUProfile)
		if err != nil {
			return nil, fmt.Errorf("bench jobs: cpu profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return nil, fmt.Errorf("bench jobs: cpu profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}

	fmt.Fprintf(cfg.Log, "bench jobs: %d jobs running `true`, %d in flight\n", cfg.Jobs, cfg.Concurrency)
	var (
		next    atomic.Int64
		done    atomic.Int64
		mu      sync.Mutex
		results []jobsMeasure
		errs    []error
	)
	start := time.Now()
	progressCtx, stopProgress := context.WithCancel(ctx)
	go jobsProgress(progressCtx, cfg.Log, &done, cfg.Jobs, start)
	var wg sync.WaitGroup
	for range cfg.Concurrency {
		wg.Go(func() {
			for next.Add(1) <= int64(cfg.Jobs) {
				m, err := jobsRunOne(ctx, client, spec())
				done.Add(1)
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else {
					results = append(results, m)
				}
				mu.Unlock()
				if ctx.Err() != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	stopProgress()
	elapsed := time.Since(start)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(errs) > 0 {
		fmt.Fprintf(cfg.Log, "bench jobs: %d jobs could not be followed; first error: %v\n", len(errs), errs[0])
	}

	var starts, ends, submits []float64
	for _, m := range results {
		if m.state == "SUCCEEDED" {
			res.Succeeded++
		}
		submits = append(submits, jobsMs(m.submitRTT))
		if !m.started.IsZero() {
			starts = append(starts, jobsMs(m.started.Sub(m.submitAt)))
		}
		if !m.finished.IsZero() {
			ends = append(ends, jobsMs(m.finished.Sub(m.submitAt)))
		}
	}
	res.NotSucceeded = cfg.Jobs - res.Succeeded
	res.DurationSeconds = jobsRound(elapsed.Seconds(), 3)
	res.ThroughputPerS = jobsRound(float64(len(results))/elapsed.Seconds(), 2)
	slices.Sort(starts)
	slices.Sort(ends)
	slices.Sort(submits)
	res.StartLatencyP50Ms = jobsPercentile(starts, 50)
	res.StartLatencyP95Ms = jobsPercentile(starts, 95)
	res.StartLatencyP99Ms = jobsPercentile(starts, 99)
	res.StartLatencyMaxMs = jobsPercentile(starts, 100)
	res.EndLatencyP50Ms = jobsPercentile(ends, 50)
	res.EndLatencyP95Ms = jobsPercentile(ends, 95)
	res.SubmitP50Ms = jobsPercentile(submits, 50)
	if cfg.Provider == "docker" {
		runs := min(max(cfg.Jobs, 10), 50)
		fmt.Fprintf(cfg.Log, "bench jobs: %d bare container runs of %s for comparison\n", runs, cfg.Image)
		bare, err := bareRuns(ctx, cfg.Docker.Host, cfg.Image, runs)
		if err != nil {
			return nil, fmt.Errorf("bench jobs: bare container runs: %w", err)
		}
		slices.Sort(bare)
		res.BareRuns = len(bare)
		res.BareRunP50Ms = jobsPercentile(bare, 50)
		res.BareRunP95Ms = jobsPercentile(bare, 95)
		res.StartOverheadP50Ms = jobsRound(res.StartLatencyP50Ms-res.BareRunP50Ms, 1)
		if res.BareRunP50Ms > 0 {
			res.StartToBareRunP50Ratio = jobsRound(res.StartLatencyP50Ms/res.BareRunP50Ms, 2)
		}
	}
	return res, nil
}

// jobsMeasure is what one job's submission and watch observed.
type jobsMeasure struct {
	submitAt          time.Time
	submitRTT         time.Duration
	started, finished time.Time
	state, lastErr    string
}

// jobsRunOne submits one `true` job and watches it to its end.
func jobsRunOne(ctx context.Context, c hodeiv1connect.JobServiceClient, spec *hodeiv1.JobSpec) (jobsMeasure, error) {
	var m jobsMeasure
	m.submitAt = time.Now()
	res, err := c.SubmitJob(ctx, connect.NewRequest(&hodeiv1.SubmitJobRequest{Spec: spec}))
	if err != nil {
		return m, fmt.Errorf("submit: %w", err)
	}
	m.submitRTT = time.Since(m.submitAt)
	id := res.Msg.GetJob().GetId()
	// A watch can break (server busy, restart): reopen it a few times.
	var last *hodeiv1.Job
	for attempt := 0; attempt < 5; attempt++ {
		last, err = jobsWatch(ctx, c, id)
		if last != nil && jobsTerminal(last.GetState()) {
			break
		}
		if ctx.Err() != nil {
			return m, ctx.Err()
		}
		time.Sleep(time.Duration(attempt+1) * 100 * time.Millisecond)
	}
	if last == nil || !jobsTerminal(last.GetState()) {
		return m, fmt.Errorf("watch job %s: did not see its end: %v", id, err)
	}
	m.state, m.lastErr = last.GetState(), last.GetLastError()
	if t := last.GetStartedAt(); t != nil {
		m.started = t.AsTime()
	}
	if t := last.GetFinishedAt(); t != nil {
		m.finished = t.AsTime()
	}
	return m, nil
}

func jobsWatch(ctx context.Context, c hodeiv1connect.JobServiceClient, id string) (*hodeiv1.Job, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.WatchJob(ctx, connect.NewRequest(&hodeiv1.WatchJobRequest{Id: id}))
	if err != nil {
		return nil, err
	}
	defer stream.Close()
	var last *hodeiv1.Job
	for stream.Receive() {
		last = stream.Msg().GetJob()
		if jobsTerminal(last.GetState()) {
			return last, nil
		}
	}
	return last, stream.Err()
}

func jobsTerminal(state string) bool {
	switch state {
	case "SUCCEEDED", "FAILED", "TIMED_OUT", "CANCELLED", "MANUAL_INTERVENTION_REQUIRED":
		return true
	}
	return false
}

func jobsProgress(ctx context.Context, w io.Writer, done *atomic.Int64, total int, start time.Time) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n := done.Load()
			fmt.Fprintf(w, "bench jobs: %d/%d ended, %.1f jobs/s\n", n, total, float64(n)/time.Since(start).Seconds())
		}
	}
}

// jobsStartServer runs a server in this process on a free port with a temporary data
// directory and returns its URL and a function that stops it.
func jobsStartServer(ctx context.Context, cfg JobsConfig) (string, func(), error) {
	dataDir, err := os.MkdirTemp("", "hodei-bench-jobs-")
	if err != nil {
		return "", nil, fmt.Errorf("bench jobs: %w", err)
	}
	srvCtx, cancel := context.WithCancel(ctx)
	ready := make(chan string, 1)
	exited := make(chan error, 1)
	logger := slog.New(slog.NewTextHandler(cfg.Log, &slog.HandlerOptions{Level: slog.LevelWarn}))
	go func() {
		exited <- server.Run(srvCtx, server.Config{
			Listen:       "127.0.0.1:0",
			Driver:       cfg.Driver,
			DatabaseURL:  cfg.DatabaseURL,
			SQLitePath:   cfg.SQLitePath,
			DataDir:      dataDir,
			MaxWorkers:   cfg.MaxWorkers,
			Providers:    jobsProviders(cfg.Provider),
			Docker:       cfg.Docker,
			Pools:        jobsPools(cfg),
			WorkerBinary: cfg.WorkerBinary,
			OnReady:      func(u string) { ready <- u },
		}, logger)
	}()
	stop := func() {
		cancel()
		if err := <-exited; err != nil && !errors.Is(err, context.Canceled) {
			fmt.Fprintf(cfg.Log, "bench jobs: in-process server: %v\n", err)
		}
		os.RemoveAll(dataDir)
	}
	select {
	case u := <-ready:
		return u, stop, nil
	case err := <-exited:
		cancel()
		os.RemoveAll(dataDir)
		return "", nil, fmt.Errorf("bench jobs: in-process server: %w", err)
	case <-time.After(2 * time.Minute):
		stop()
		return "", nil, errors.New("bench jobs: in-process server not ready after 2 minutes")
	}
}

// jobsHTTPClient speaks h2c to plain http:// servers (one connection carries every
// watch stream) and negotiates HTTP/2 over TLS otherwise.
func jobsHTTPClient(cleartext bool) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if cleartext {
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		tr.Protocols = &p
	}
	return &http.Client{Transport: tr}
}

func jobsMs(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// jobsPercentile returns the p-th percentile (nearest rank) of sorted, rounded to 0.01.
func jobsPercentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	i = min(max(i, 0), len(sorted)-1)
	return jobsRound(sorted[i], 2)
}

func jobsRound(v float64, digits int) float64 {
	f := math.Pow(10, float64(digits))
	return math.Round(v*f) / f
}

// jobsProviders is the in-process server's provider list for provider.
func jobsProviders(provider string) []string {
	if provider == "" || provider == "local" {
		return nil // the server's default: local
	}
	return []string{provider}
}

// jobsPools is the in-process server's warm pool for the bench's jobs (none without
// WarmWorkers): the jobs' provider (default local) and image.
func jobsPools(cfg JobsConfig) []jobs.PoolConfig {
	if cfg.WarmWorkers == 0 {
		return nil
	}
	p := jobs.PoolConfig{Name: "bench", Provider: cfg.Provider, Image: cfg.Image, MinIdle: cfg.WarmWorkers,
		MaxIdle: 2 * cfg.WarmWorkers, MaxJobsPerWorker: cfg.WarmMaxJobs}
	if p.Provider == "" {
		p.Provider = "local"
	}
	if p.Image != "" {
		p.Pull = domain.PullNever
	}
	return []jobs.PoolConfig{p}
}
