package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"connectrpc.com/connect"

	hodeiv1 "github.com/hodei-jobs/hodei/gen/hodei/v1"
	"github.com/hodei-jobs/hodei/gen/hodei/v1/hodeiv1connect"
	"github.com/hodei-jobs/hodei/jobs"
	"github.com/hodei-jobs/hodei/server"
)

// Modes of RunRecovery (RecoveryResult.Mode).
const (
	// RecoveryModeParent: the server that started the worker sees its exit
	// (local.Config.OnExit → Service.WorkerExited) and recovers at once.
	RecoveryModeParent = "parent"
	// RecoveryModeAfterRestart: the workers were started by an earlier server process;
	// the current one learns of the kill through the stream close and
	// CleanupConfig.DisconnectGrace.
	RecoveryModeAfterRestart = "after-restart"
)

// RecoveryConfig configures RunRecovery: a server started in this process on a free
// port with its own data directory, on DatabaseURL (Driver postgres) or SQLitePath
// (Driver sqlite). The bench must run the server itself: it reads the local provider's
// pid records to find the workers it kills.
type RecoveryConfig struct {
	// DatabaseURL of the in-process server's PostgreSQL database (Driver postgres). The
	// server migrates it; the bench's jobs stay in it (CANCELLED).
	DatabaseURL string
	// Driver is DriverPostgres (default) or DriverSQLite.
	Driver string
	// SQLitePath is the SQLite file with Driver sqlite ("": hodei.db in the temporary
	// data directory).
	SQLitePath string
	// Kills is the number of worker kills measured (default 5, at most 100).
	Kills int
	// AfterRestart: start all Kills jobs, wait until they run, restart the in-process
	// server (graceful stop, new server on the same data directory, database and
	// address), wait until every worker has reconnected, then kill them one by one.
	AfterRestart bool
	// Cleanup is passed to server.Config.Cleanup (zero fields: jobs.CleanupConfig
	// defaults, which are what is measured unless changed).
	Cleanup jobs.CleanupConfig
	// WorkerBinary is the hodei executable the server starts as workers (default: the
	// server's default, os.Executable(); a test sets a built binary).
	WorkerBinary string
	// WaitTimeout bounds each wait: job RUNNING, recovery, cancellation, reconnection
	// (default 2m).
	WaitTimeout time.Duration
	// Log receives progress lines and the server's warnings (nil: none).
	Log io.Writer
}

func (c *RecoveryConfig) setDefaults() {
	if c.Driver == "" {
		c.Driver = DriverPostgres
	}
	if c.Kills == 0 {
		c.Kills = 5
	}
	if c.WaitTimeout == 0 {
		c.WaitTimeout = 2 * time.Minute
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
}

// Validate reports the first invalid field.
func (c *RecoveryConfig) Validate() error {
	switch {
	case c.Driver != DriverPostgres && c.Driver != DriverSQLite:
		return fmt.Errorf("bench recovery: Driver %q is not %q or %q", c.Driver, DriverPostgres, DriverSQLite)
	case c.Driver == DriverPostgres && c.DatabaseURL == "":
		return errors.New("bench recovery: DatabaseURL is required with Driver postgres")
	case c.Driver == DriverSQLite && c.DatabaseURL != "":
		return errors.New("bench recovery: DatabaseURL is for Driver postgres, not sqlite")
	case c.Driver != DriverSQLite && c.SQLitePath != "":
		return errors.New("bench recovery: SQLitePath is for Driver sqlite")
	case c.Kills < 1 || c.Kills > 100:
		return fmt.Errorf("bench recovery: Kills %d out of range [1, 100]", c.Kills)
	case c.WaitTimeout < time.Second || c.WaitTimeout > time.Hour:
		return fmt.Errorf("bench recovery: WaitTimeout %s out of range [1s, 1h]", c.WaitTimeout)
	case c.WorkerBinary != "" && !filepath.IsAbs(c.WorkerBinary):
		return fmt.Errorf("bench recovery: WorkerBinary %q is not an absolute path", c.WorkerBinary)
	}
	cl := c.Cleanup
	cl.SetDefaults()
	if err := cl.Validate(); err != nil {
		return fmt.Errorf("bench recovery: Cleanup: %w", err)
	}
	return nil
}

// RecoverySettings are the liveness settings in effect (defaults filled in).
type RecoverySettings struct {
	HeartbeatIntervalMs int64 `json:"heartbeat_interval_ms"`
	DisconnectGraceMs   int64 `json:"disconnect_grace_ms"`
	WorkerLostAfterMs   int64 `json:"worker_lost_after_ms"`
	CleanupIntervalMs   int64 `json:"cleanup_interval_ms"`
}

// RecoveryKill is one measured kill.
type RecoveryKill struct {
	JobID    string `json:"job_id"`
	WorkerID string `json:"worker_id"`
	PID      int    `json:"pid"`
	// Attempt before the kill and of the job RUNNING again.
	AttemptBefore int32 `json:"attempt_before"`
	AttemptAfter  int32 `json:"attempt_after"`
	// ReplacementID is the worker the job runs on after the recovery.
	ReplacementID string `json:"replacement_id"`
	// RecoveryMs: SIGKILL sent → GetJob first shows the job RUNNING with a higher
	// attempt (polled every 20 ms).
	RecoveryMs float64 `json:"recovery_ms"`
	// FinalState of the job after the bench cancelled it (CANCELLED expected).
	FinalState string `json:"final_state"`
}

// RecoveryResult is what `hodei bench recovery` reports.
type RecoveryResult struct {
	Mode     string           `json:"mode"`
	Driver   string           `json:"driver"`
	Server   string           `json:"server"`
	Settings RecoverySettings `json:"settings"`
	// RecoveryMs lists each kill's recovery time in order.
	RecoveryMs []float64      `json:"recovery_ms"`
	MinMs      float64        `json:"min_ms"`
	MedianMs   float64        `json:"median_ms"`
	MaxMs      float64        `json:"max_ms"`
	Kills      []RecoveryKill `json:"kills"`
	// ReconnectMs (after-restart only): server restarted (new server ready) → every
	// worker's stream open again.
	ReconnectMs float64 `json:"reconnect_ms,omitempty"`
}

// recoveryPoll is the GetJob polling period.
const recoveryPoll = 20 * time.Millisecond

// RunRecovery measures how long the platform takes to run a job again after its
// worker process is SIGKILLed: the time from the kill to the job RUNNING on a
// replacement worker with a higher attempt. See RecoveryConfig.AfterRestart for the
// second mode. Every job is cancelled afterwards; a kill that does not recover within
// WaitTimeout is an error.
func RunRecovery(ctx context.Context, cfg RecoveryConfig) (*RecoveryResult, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	eff := cfg.Cleanup
	eff.SetDefaults()
	res := &RecoveryResult{
		Mode:   RecoveryModeParent,
		Driver: cfg.Driver,
		Settings: RecoverySettings{
			HeartbeatIntervalMs: eff.HeartbeatInterval.Milliseconds(),
			DisconnectGraceMs:   eff.DisconnectGrace.Milliseconds(),
			WorkerLostAfterMs:   eff.LostAfter.Milliseconds(),
			CleanupIntervalMs:   eff.Interval.Milliseconds(),
		},
	}
	if cfg.AfterRestart {
		res.Mode = RecoveryModeAfterRestart
	}

	dataDir, err := os.MkdirTemp("", "hodei-bench-recovery-")
	if err != nil {
		return nil, fmt.Errorf("bench recovery: %w", err)
	}
	defer os.RemoveAll(dataDir)
	// Leftover workers (a failed run) are ended before their data directory goes.
	defer recoveryKillLeftovers(dataDir, cfg.Log)

	srv, err := recoveryStartServer(ctx, cfg, dataDir, "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	defer func() {
		if srv != nil {
			srv.stop()
		}
	}()
	res.Server = srv.url
	b := &recoveryBench{cfg: cfg, dataDir: dataDir, client: recoveryClient(srv.url)}

	if !cfg.AfterRestart {
		for i := range cfg.Kills {
			id, err := b.submit(ctx)
			if err != nil {
				return nil, err
			}
			if _, err := b.waitRunning(ctx, id, 0); err != nil {
				return nil, err
			}
			k, err := b.killMeasureCancel(ctx, id, i)
			if err != nil {
				return nil, err
			}
			res.Kills = append(res.Kills, k)
		}
	} else {
		ids := make([]string, 0, cfg.Kills)
		for range cfg.Kills {
			id, err := b.submit(ctx)
			if err != nil {
				return nil, err
			}
			ids = append(ids, id)
		}
		opened := map[string]int{} // worker id → "stream open" lines before the restart
		for _, id := range ids {
			j, err := b.waitRunning(ctx, id, 0)
			if err != nil {
				return nil, err
			}
			opened[j.GetWorkerId()] = b.streamOpens(j.GetWorkerId())
		}
		fmt.Fprintf(cfg.Log, "bench recovery: %d jobs RUNNING; restarting the server\n", len(ids))
		addr := strings.TrimPrefix(srv.url, "http://")
		srv.stop()
		srv, err = recoveryStartServer(ctx, cfg, dataDir, addr)
		if err != nil {
			srv = nil
			return nil, fmt.Errorf("bench recovery: restart: %w", err)
		}
		restarted := time.Now()
		if err := b.waitReconnected(ctx, opened); err != nil {
			return nil, err
		}
		res.ReconnectMs = jobsRound(jobsMs(time.Since(restarted)), 1)
		fmt.Fprintf(cfg.Log, "bench recovery: all %d workers reconnected %.0f ms after the restart\n", len(opened), res.ReconnectMs)
		// The server counts the stream opening as a heartbeat; give the handler a moment
		// to have it, so that the kill is seen as a stream close.
		if err := recoverySleep(ctx, 500*time.Millisecond); err != nil {
			return nil, err
		}
		for i, id := range ids {
			k, err := b.killMeasureCancel(ctx, id, i)
			if err != nil {
				return nil, err
			}
			res.Kills = append(res.Kills, k)
		}
	}

	for _, k := range res.Kills {
		res.RecoveryMs = append(res.RecoveryMs, k.RecoveryMs)
	}
	sorted := slices.Sorted(slices.Values(res.RecoveryMs))
	res.MinMs = sorted[0]
	res.MaxMs = sorted[len(sorted)-1]
	res.MedianMs = recoveryMedian(sorted)
	return res, nil
}

// recoveryBench is one run's shared state.
type recoveryBench struct {
	cfg     RecoveryConfig
	dataDir string
	client  hodeiv1connect.JobServiceClient
}

func (b *recoveryBench) submit(ctx context.Context) (string, error) {
	res, err := b.client.SubmitJob(ctx, connect.NewRequest(&hodeiv1.SubmitJobRequest{Spec: &hodeiv1.JobSpec{
		Name:        "bench-recovery",
		Command:     []string{"sleep", "600"},
		Labels:      map[string]string{"hodei.bench": "recovery"},
		MaxAttempts: 3,
	}}))
	if err != nil {
		return "", fmt.Errorf("bench recovery: submit: %w", err)
	}
	return res.Msg.GetJob().GetId(), nil
}

func (b *recoveryBench) get(ctx context.Context, id string) (*hodeiv1.Job, error) {
	res, err := b.client.GetJob(ctx, connect.NewRequest(&hodeiv1.GetJobRequest{Id: id}))
	if err != nil {
		return nil, err
	}
	return res.Msg.GetJob(), nil
}

// waitRunning polls the job until it is RUNNING with an attempt above minAttempt. A
// terminal state or WaitTimeout is an error; GetJob errors are retried until then (a
// server may be busy).
func (b *recoveryBench) waitRunning(ctx context.Context, id string, minAttempt int32) (*hodeiv1.Job, error) {
	deadline := time.Now().Add(b.cfg.WaitTimeout)
	var lastErr error
	var last *hodeiv1.Job
	for {
		j, err := b.get(ctx, id)
		if err != nil {
			lastErr = err
		} else {
			last = j
			if j.GetState() == "RUNNING" && j.GetAttempt() > minAttempt {
				return j, nil
			}
			if jobsTerminal(j.GetState()) {
				return nil, fmt.Errorf("bench recovery: job %s ended %s (attempt %d) instead of running: %s",
					id, j.GetState(), j.GetAttempt(), j.GetLastError())
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("bench recovery: job %s not RUNNING with attempt > %d within %s (last state %s, attempt %d; last error %v)",
				id, minAttempt, b.cfg.WaitTimeout, last.GetState(), last.GetAttempt(), lastErr)
		}
		if err := recoverySleep(ctx, recoveryPoll); err != nil {
			return nil, err
		}
	}
}

// killAndMeasure SIGKILLs the RUNNING job's worker process (the agent alone, not its
// group) and waits for the job to be RUNNING again with a higher attempt.
func (b *recoveryBench) killAndMeasure(ctx context.Context, id string) (RecoveryKill, error) {
	k := RecoveryKill{JobID: id}
	j, err := b.get(ctx, id)
	if err != nil {
		return k, fmt.Errorf("get job %s: %w", id, err)
	}
	if j.GetState() != "RUNNING" {
		return k, fmt.Errorf("job %s is %s, not RUNNING, before the kill", id, j.GetState())
	}
	k.WorkerID, k.AttemptBefore = j.GetWorkerId(), j.GetAttempt()
	rec, err := readWorkerPID(b.dataDir, k.WorkerID)
	if err != nil {
		return k, err
	}
	k.PID = rec.PID
	if err := killPID(rec.PID, syscall.SIGKILL); err != nil {
		return k, fmt.Errorf("SIGKILL worker %s (pid %d): %w", k.WorkerID, rec.PID, err)
	}
	t0 := time.Now()
	again, err := b.waitRunning(ctx, id, k.AttemptBefore)
	if err != nil {
		return k, fmt.Errorf("no recovery after killing worker %s (pid %d): %w", k.WorkerID, rec.PID, err)
	}
	k.RecoveryMs = jobsRound(jobsMs(time.Since(t0)), 1)
	k.AttemptAfter, k.ReplacementID = again.GetAttempt(), again.GetWorkerId()
	return k, nil
}

// cancel cancels the job and waits for its end; anything but CANCELLED is an error.
// killMeasureCancel is kill number i (from 0): the worker of job id SIGKILLed, the
// time until the job runs again measured and reported, then the job cancelled.
func (b *recoveryBench) killMeasureCancel(ctx context.Context, id string, i int) (RecoveryKill, error) {
	k, err := b.killAndMeasure(ctx, id)
	if err != nil {
		return k, fmt.Errorf("bench recovery: kill %d of %d: %w", i+1, b.cfg.Kills, err)
	}
	fmt.Fprintf(b.cfg.Log, "bench recovery: kill %d/%d: job %s RUNNING again after %.0f ms (attempt %d, worker %s)\n",
		i+1, b.cfg.Kills, id, k.RecoveryMs, k.AttemptAfter, k.ReplacementID)
	k.FinalState, err = b.cancel(ctx, id)
	return k, err
}

func (b *recoveryBench) cancel(ctx context.Context, id string) (string, error) {
	if _, err := b.client.CancelJob(ctx, connect.NewRequest(&hodeiv1.CancelJobRequest{Id: id, Reason: "bench recovery: measured"})); err != nil {
		return "", fmt.Errorf("bench recovery: cancel job %s: %w", id, err)
	}
	deadline := time.Now().Add(b.cfg.WaitTimeout)
	for {
		j, err := b.get(ctx, id)
		if err == nil && jobsTerminal(j.GetState()) {
			if j.GetState() != "CANCELLED" {
				return j.GetState(), fmt.Errorf("bench recovery: job %s ended %s after its cancellation: %s", id, j.GetState(), j.GetLastError())
			}
			return j.GetState(), nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("bench recovery: job %s not CANCELLED within %s (last state %s; error %v)", id, b.cfg.WaitTimeout, j.GetState(), err)
		}
		if err := recoverySleep(ctx, recoveryPoll); err != nil {
			return "", err
		}
	}
}

// streamOpens counts the "stream open" lines in the worker's log (the agent writes
// one each time its stream to the server opens).
func (b *recoveryBench) streamOpens(workerID string) int {
	data, err := os.ReadFile(filepath.Join(b.dataDir, "workers", workerID+".log"))
	if err != nil {
		return 0
	}
	return bytes.Count(data, []byte("stream open"))
}

// waitReconnected waits until every worker of opened logged a new "stream open".
func (b *recoveryBench) waitReconnected(ctx context.Context, opened map[string]int) error {
	deadline := time.Now().Add(b.cfg.WaitTimeout)
	for {
		var missing []string
		for w, n := range opened {
			if b.streamOpens(w) <= n {
				missing = append(missing, w)
			}
		}
		if len(missing) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bench recovery: workers %v did not reconnect within %s of the restart", missing, b.cfg.WaitTimeout)
		}
		if err := recoverySleep(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
}

// workerPID is the part of the local provider's pid record
// (<data dir>/workers/<worker id>.pid, provider/local) the bench uses.
type workerPID struct {
	WorkerID  string `json:"worker_id"`
	PID       int    `json:"pid"`
	StartTime uint64 `json:"start_time"` // /proc/<pid>/stat field 22
}

// readWorkerPID reads the worker's pid record and checks that the pid still belongs
// to it (same start time), so that a recycled pid is never killed.
func readWorkerPID(dataDir, workerID string) (workerPID, error) {
	path := filepath.Join(dataDir, "workers", workerID+".pid")
	data, err := os.ReadFile(path)
	if err != nil {
		return workerPID{}, fmt.Errorf("pid record of worker %s: %w", workerID, err)
	}
	var rec workerPID
	if err := json.Unmarshal(data, &rec); err != nil {
		return workerPID{}, fmt.Errorf("pid record %s: %w", path, err)
	}
	if rec.PID <= 1 {
		return workerPID{}, fmt.Errorf("pid record %s: invalid pid %d", path, rec.PID)
	}
	start, err := procStartTime(rec.PID)
	if err != nil {
		return workerPID{}, fmt.Errorf("worker %s (pid %d) is not running: %w", workerID, rec.PID, err)
	}
	if start != rec.StartTime {
		return workerPID{}, fmt.Errorf("worker %s: pid %d now belongs to another process (start time %d, recorded %d)",
			workerID, rec.PID, start, rec.StartTime)
	}
	return rec, nil
}

// procStartTime returns field 22 (start time) of /proc/<pid>/stat; a zombie counts as
// gone.
func procStartTime(pid int) (uint64, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("/proc stat: no ')'")
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3 (state); field n is f[n-3]
	if len(f) < 20 {
		return 0, fmt.Errorf("/proc stat: %d fields after the command name, want >= 20", len(f))
	}
	if f[0] == "Z" || f[0] == "X" {
		return 0, errors.New("process exited (zombie)")
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// recoveryKillLeftovers SIGKILLs the process group of every worker of dataDir still
// alive (a run that failed midway leaves `sleep 600` jobs otherwise). Workers run in
// their own session (the local provider uses setsid), so the group is the worker's pid.
func recoveryKillLeftovers(dataDir string, log io.Writer) {
	entries, err := os.ReadDir(filepath.Join(dataDir, "workers"))
	if err != nil {
		return
	}
	for _, e := range entries {
		id, ok := strings.CutSuffix(e.Name(), ".pid")
		if !ok {
			continue
		}
		if rec, err := readWorkerPID(dataDir, id); err == nil {
			fmt.Fprintf(log, "bench recovery: worker %s (pid %d) still running at the end; killing its process group\n", id, rec.PID)
			_ = killPID(-rec.PID, syscall.SIGKILL)
		}
	}
}

// recoveryServer is a running in-process server.
type recoveryServer struct {
	url  string
	stop func()
}

// recoveryStartServer runs a server in this process on listen with dataDir. stop
// cancels its context (a graceful stop: the workers keep running) and waits for it.
func recoveryStartServer(ctx context.Context, cfg RecoveryConfig, dataDir, listen string) (*recoveryServer, error) {
	srvCtx, cancel := context.WithCancel(ctx)
	ready := make(chan string, 1)
	exited := make(chan error, 1)
	logger := slog.New(slog.NewTextHandler(cfg.Log, &slog.HandlerOptions{Level: slog.LevelWarn}))
	go func() {
		exited <- server.Run(srvCtx, server.Config{
			Listen:       listen,
			Driver:       cfg.Driver,
			DatabaseURL:  cfg.DatabaseURL,
			SQLitePath:   cfg.SQLitePath,
			DataDir:      dataDir,
			WorkerBinary: cfg.WorkerBinary,
			Cleanup:      cfg.Cleanup,
			OnReady:      func(u string) { ready <- u },
		}, logger)
	}()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-exited; err != nil && !errors.Is(err, context.Canceled) {
			fmt.Fprintf(cfg.Log, "bench recovery: in-process server: %v\n", err)
		}
	}
	select {
	case u := <-ready:
		return &recoveryServer{url: u, stop: stop}, nil
	case err := <-exited:
		cancel()
		return nil, fmt.Errorf("bench recovery: in-process server: %w", err)
	case <-time.After(cfg.WaitTimeout):
		stop()
		return nil, fmt.Errorf("bench recovery: in-process server not ready after %s", cfg.WaitTimeout)
	}
}

func recoveryClient(base string) hodeiv1connect.JobServiceClient {
	u, err := url.Parse(base)
	cleartext := err == nil && u.Scheme == "http"
	return hodeiv1connect.NewJobServiceClient(jobsHTTPClient(cleartext), strings.TrimSuffix(base, "/"))
}

func recoverySleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// recoveryMedian is the median of sorted (the mean of the middle two for an even
// count), rounded to 0.1.
func recoveryMedian(sorted []float64) float64 {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	if n%2 == 1 {
		return sorted[n/2]
	}
	return jobsRound((sorted[n/2-1]+sorted[n/2])/2, 1)
}
