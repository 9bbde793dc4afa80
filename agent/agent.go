package agent

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	hodeiv1 "github.com/hodei-jobs/hodei/gen/hodei/v1"
	"github.com/hodei-jobs/hodei/gen/hodei/v1/hodeiv1connect"
	"github.com/hodei-jobs/hodei/internal/backoff"
)

// Version is reported to the server at registration.
const Version = "0.1.0"

// Config configures the agent. ServerURL, WorkerID and OneTimePassword are required.
type Config struct {
	// ServerURL is the control plane's URL (HODEI_SERVER), or several replicas' URLs
	// separated by commas: the agent uses one at a time and moves to the next when it
	// cannot register or its stream breaks (any replica serves any worker's stream).
	// All of them must have the same scheme.
	ServerURL       string
	WorkerID        string // HODEI_WORKER_ID
	OneTimePassword string // HODEI_ONE_TIME_PASSWORD (secret)
	Hostname        string // default os.Hostname()

	// HeartbeatInterval overrides the server's interval (RegisterResponse); when both
	// are zero, 5s.
	HeartbeatInterval time.Duration
	// IdleTimeout: after the last job's result was acknowledged and nothing runs, the
	// agent exits (0) if the server has not destroyed it first. Default 30s.
	IdleTimeout time.Duration
	// FirstJobTimeout: exit (0) if no job arrives this long after start. Default 5m.
	FirstJobTimeout time.Duration
	// RegisterTimeout bounds the retries of Register on transient errors (server not up
	// yet, connection refused). Default 1m.
	RegisterTimeout time.Duration
	// ReconnectMin/Max bound the exponential backoff between stream attempts
	// (defaults 100ms, 5s; the maximum is also capped at the heartbeat interval, so that
	// a worker whose server restarts is back before it could count as lost); after
	// ReconnectTimeout (default 10m) without a stream the agent stops its job and exits
	// with an error.
	ReconnectMin, ReconnectMax, ReconnectTimeout time.Duration
	// ResultResend: an unacknowledged result is sent again this often on a live stream
	// (and at once on every new stream). Default 3s.
	ResultResend time.Duration
	// CancelGrace: SIGTERM→SIGKILL grace for CancelJob without its own. Default 10s.
	CancelGrace time.Duration
	// ShutdownGrace: grace for the job when the agent itself is terminated. Default 2s
	// (shorter than the local provider's 5s so the agent can still clean up).
	ShutdownGrace time.Duration
	// MemoryLimitBytes is the RLIMIT_AS for jobs whose spec sets none
	// (HODEI_WORKER_MEMORY_BYTES); 0: none.
	MemoryLimitBytes int64
	// CgroupMemory: the worker runs in a container whose cgroup enforces memory
	// (HODEI_WORKER_CGROUP_MEMORY=1, set by the docker provider). The agent then applies
	// no RLIMIT_AS, makes its job the OOM killer's first choice (oom_score_adj 1000), and
	// reports a job killed by the cgroup's OOM killer as "out of memory (limit 64Mi)".
	CgroupMemory bool
	// MaxPendingLogBytes bounds unacknowledged log batches kept for re-sending; the
	// oldest are dropped beyond it. Default 64 MiB.
	MaxPendingLogBytes int
	// MaxJobs is how many jobs this worker runs, one after another
	// (HODEI_WORKER_MAX_JOBS; 0 or 1: one, the ephemeral worker). Above 1 the worker
	// is reused: between two jobs the agent kills every process the last job left
	// (its group, and on Linux any process that left the group: the agent is their
	// child subreaper), the job's directory is removed and nothing of its environment
	// or secrets is kept; the job's TMPDIR is its own directory. While it has jobs
	// left, the agent waits FirstJobTimeout for the next one (instead of IdleTimeout).
	// A RunJob beyond MaxJobs is answered with a failed result.
	MaxJobs int

	// RootCAs verify an https:// server (HODEI_CA_CERT, HODEI_CA_CERT_PEM; nil: the
	// system's roots). Unused with HTTPClient.
	RootCAs *x509.CertPool
	// HTTPClient; default NewTLSHTTPClient(ServerURL, RootCAs).
	HTTPClient connect.HTTPClient
	// Logger; default slog.Default().
	Logger *slog.Logger
	// TraceParent is the W3C traceparent of the job the worker was created for
	// (TRACEPARENT, set by the provider): the registration span joins that trace.
	// Spans go to the global tracer provider (the worker command installs the OTLP
	// exporter of the OTEL_* environment; a no-op without it).
	TraceParent string

	exec execOptions // executor tuning (tests)
}

func (c *Config) setDefaults() {
	if c.Hostname == "" {
		c.Hostname, _ = os.Hostname()
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.IdleTimeout, 30*time.Second)
	def(&c.FirstJobTimeout, 5*time.Minute)
	def(&c.RegisterTimeout, time.Minute)
	def(&c.ReconnectMin, 100*time.Millisecond)
	def(&c.ReconnectMax, 5*time.Second)
	def(&c.ReconnectTimeout, 10*time.Minute)
	def(&c.ResultResend, 3*time.Second)
	def(&c.CancelGrace, 10*time.Second)
	def(&c.ShutdownGrace, 2*time.Second)
	if c.MaxPendingLogBytes == 0 {
		c.MaxPendingLogBytes = 64 << 20
	}
	if c.HTTPClient == nil {
		c.HTTPClient = NewTLSHTTPClient(strings.TrimSpace(c.ServerURL), c.RootCAs)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	c.exec.MemoryLimitBytes = c.MemoryLimitBytes
	c.exec.CgroupMemory = c.CgroupMemory
}

// Validate names the first missing or invalid field.
func (c *Config) Validate() error {
	servers := c.servers()
	switch {
	case len(servers) == 0:
		return errors.New("agent: Config.ServerURL is empty (HODEI_SERVER)")
	case c.WorkerID == "":
		return errors.New("agent: Config.WorkerID is empty (HODEI_WORKER_ID)")
	case c.OneTimePassword == "":
		return errors.New("agent: Config.OneTimePassword is empty (HODEI_ONE_TIME_PASSWORD)")
	case c.HeartbeatInterval < 0:
		return fmt.Errorf("agent: Config.HeartbeatInterval is negative (%s)", c.HeartbeatInterval)
	case c.MaxJobs < 0 || c.MaxJobs > MaxJobsLimit:
		return fmt.Errorf("agent: Config.MaxJobs %d out of range [0, %d] (HODEI_WORKER_MAX_JOBS)", c.MaxJobs, MaxJobsLimit)
	case c.MemoryLimitBytes < 0:
		return fmt.Errorf("agent: Config.MemoryLimitBytes is negative (%d)", c.MemoryLimitBytes)
	case c.ReconnectMin <= 0 || c.ReconnectMax < c.ReconnectMin:
		return fmt.Errorf("agent: Config.ReconnectMin (%s) must be > 0 and <= ReconnectMax (%s)", c.ReconnectMin, c.ReconnectMax)
	}
	scheme := func(u string) string { return strings.ToLower(u[:max(strings.Index(u, "://"), 0)]) }
	for _, u := range servers {
		if sc := scheme(u); sc != "http" && sc != "https" {
			return fmt.Errorf("agent: Config.ServerURL (HODEI_SERVER): %q is not an http:// or https:// URL", u)
		}
		if scheme(u) != scheme(servers[0]) {
			return fmt.Errorf("agent: Config.ServerURL (HODEI_SERVER): %q and %q mix http and https", servers[0], u)
		}
	}
	return nil
}

// servers are the URLs of ServerURL (comma-separated), without blanks.
func (c *Config) servers() []string {
	var out []string
	for u := range strings.SplitSeq(c.ServerURL, ",") {
		if u = strings.TrimSpace(u); u != "" {
			out = append(out, u)
		}
	}
	return out
}

// MaxJobsLimit bounds Config.MaxJobs.
const MaxJobsLimit = 1_000_000

// reused reports whether the worker runs more than one job (Config.MaxJobs).
func (c *Config) reused() bool { return c.MaxJobs > 1 }

// errStopped: ctx ended while registering.
var errStopped = errors.New("agent: stopped")

// RegistrationError is returned by Run when the server refuses the worker's one-time
// password (Unauthenticated: unknown or expired; PermissionDenied: already used) or its
// session. It is not retried: a new worker needs a new password.
type RegistrationError struct {
	Code connect.Code
	Err  error
}

func (e *RegistrationError) Error() string {
	return fmt.Sprintf("agent: server refused the worker (%s): %v", e.Code, e.Err)
}
func (e *RegistrationError) Unwrap() error { return e.Err }

// Run registers the worker, keeps its stream to the server and runs the jobs it gets
// until the server destroys it, it has been idle (Config.IdleTimeout), or ctx ends
// (then the running job is stopped: SIGTERM to its group, SIGKILL after
// Config.ShutdownGrace). A clean end returns nil.
func Run(ctx context.Context, cfg Config) error {
	if err := canRunJobs(); err != nil {
		return err // before it takes a one-time password it could not use
	}
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	a := &agent{
		cfg:     cfg,
		log:     cfg.Logger.With("worker_id", cfg.WorkerID),
		servers: cfg.servers(),
		events:  make(chan event, 64),
		seen:    map[string]bool{},
		msgs:    map[string]bool{},
		running: map[string]*jobProcess{},
		spans:   map[string]trace.Span{},
	}
	for _, u := range a.servers {
		a.clients = append(a.clients, hodeiv1connect.NewWorkerAgentServiceClient(cfg.HTTPClient, u))
	}
	if cfg.reused() {
		a.cfg.exec.JobTmpDir = true
		if err := becomeSubreaper(); err != nil {
			a.log.Warn("cannot become the child subreaper; processes that leave a job's group may outlive it", "err", err)
		}
	}
	return a.run(ctx)
}

type agent struct {
	cfg     Config
	log     *slog.Logger
	servers []string                                  // Config.ServerURL's URLs
	clients []hodeiv1connect.WorkerAgentServiceClient // one per server
	cur     int                                       // the server in use
	token   string
	hbEvery time.Duration

	events chan event // from job goroutines to the loop
	seen   map[string]bool
	// msgs holds the ids of the server messages handled (oldest first in msgOrder, at
	// most maxSeenMessages): a re-sent copy of one is acknowledged and not acted on.
	msgs     map[string]bool
	msgOrder []string
	running  map[string]*jobProcess
	ranJob   bool
	jobsRun  int // RunJobs started (or refused at start)

	// pending holds reliable messages (started, logs, result) in send order until acked.
	pending        []*hodeiv1.WorkerMessage
	pendingLogSize int

	// Connection state (loop goroutine only).
	conn  *conn
	gen   int
	spans map[string]trace.Span // job id → the span of running it (telemetry.go)
}

// event is sent by job goroutines to the loop.
type event struct {
	logs     *hodeiv1.LogBatch
	finished *finishedJob
}

type finishedJob struct {
	jobID string
	res   execResult
}

// conn is one Connect stream.
type conn struct {
	gen    int
	stream *connect.BidiStreamForClient[hodeiv1.WorkerMessage, hodeiv1.ServerMessage]
	cancel context.CancelFunc
	opened time.Time
	gotMsg bool
}

// recvItem is what the reader goroutine of stream gen delivers.
type recvItem struct {
	gen int
	msg *hodeiv1.ServerMessage
	err error
}

func (a *agent) run(ctx context.Context) error {
	if err := a.register(ctx); errors.Is(err, errStopped) {
		a.log.Info("agent stopped before registering", "reason", context.Cause(ctx))
		return nil
	} else if err != nil {
		return err
	}
	recv := make(chan recvItem, 16)
	heartbeat := time.NewTicker(a.hbEvery)
	defer heartbeat.Stop()
	resend := time.NewTicker(a.cfg.ResultResend)
	defer resend.Stop()
	idle := time.NewTimer(a.cfg.FirstJobTimeout)
	defer idle.Stop()
	reconnect := time.NewTimer(0) // connect at once
	defer reconnect.Stop()
	pace := a.pacer()
	disconnectedSince := time.Now()
	wasBusy := false
	defer a.closeConn()

	for {
		select {
		case <-ctx.Done():
			a.log.Info("agent stopping", "reason", context.Cause(ctx))
			a.stopJobs()
			return nil

		case <-reconnect.C:
			if err := a.openConn(ctx, recv); err != nil {
				pace.Max = a.reconnectMax()
				d := pace.Next()
				a.log.Warn("connect stream failed", "err", err, "retry_in", d)
				if time.Since(disconnectedSince) > a.cfg.ReconnectTimeout {
					a.stopJobs()
					return fmt.Errorf("agent: no stream to %s for %s (ReconnectTimeout): %w", a.cfg.ServerURL, a.cfg.ReconnectTimeout, err)
				}
				a.nextServer()
				reconnect.Reset(d)
			}

		case it := <-recv:
			if a.conn == nil || it.gen != a.conn.gen {
				continue // from an old stream
			}
			if it.err != nil {
				var ce *connect.Error
				if errors.As(it.err, &ce) && (ce.Code() == connect.CodeUnauthenticated || ce.Code() == connect.CodePermissionDenied) {
					a.stopJobs()
					return &RegistrationError{Code: ce.Code(), Err: fmt.Errorf("connect stream: %w", it.err)}
				}
				if a.conn.gotMsg || time.Since(a.conn.opened) > a.cfg.ReconnectMax {
					pace.Reset() // the stream was healthy: start over
				}
				pace.Max = a.reconnectMax()
				d := pace.Next()
				a.log.Warn("stream broken; reconnecting", "server", a.servers[a.cur], "err", it.err, "retry_in", d)
				a.closeConn()
				a.nextServer()
				disconnectedSince = time.Now()
				reconnect.Reset(d)
				continue
			}
			a.conn.gotMsg = true
			a.handleServer(it.msg)

		case ev := <-a.events:
			switch {
			case ev.logs != nil:
				a.queue(&hodeiv1.WorkerMessage{MessageId: uuid.NewString(), Payload: &hodeiv1.WorkerMessage_Logs{Logs: ev.logs}})
			case ev.finished != nil:
				a.finish(ev.finished)
			}

		case <-heartbeat.C:
			a.send(a.heartbeat())

		case <-resend.C:
			for _, m := range a.pending {
				if m.GetResult() != nil {
					a.send(m)
				}
			}

		case <-idle.C:
			if len(a.running) == 0 && !a.hasPendingResult() {
				if a.ranJob {
					a.log.Info("idle after the job's result was acknowledged; exiting", "idle_timeout", a.cfg.IdleTimeout)
				} else {
					a.log.Warn("no job arrived; exiting", "first_job_timeout", a.cfg.FirstJobTimeout)
				}
				return nil
			}
		}
		if a.conn != nil {
			disconnectedSince = time.Now()
		}
		// The idle timer is stopped while work is in flight and armed with IdleTimeout
		// when the last result is acknowledged (FirstJobTimeout before any job).
		if busy := len(a.running) > 0 || a.hasPendingResult(); busy {
			if !wasBusy {
				idle.Stop()
			}
			wasBusy = true
		} else if wasBusy {
			wasBusy = false
			if a.cfg.reused() && a.jobsRun < a.cfg.MaxJobs {
				idle.Reset(a.cfg.FirstJobTimeout) // a reused worker waits for its next job
			} else {
				idle.Reset(a.cfg.IdleTimeout)
			}
		}
	}
}

// register exchanges the one-time password for a session token, retrying transient
// failures until RegisterTimeout.
func (a *agent) register(parent context.Context) (err error) {
	ctx, cancel := context.WithTimeout(parent, a.cfg.RegisterTimeout)
	defer cancel()
	ctx, span := a.startSpan(withTraceParent(ctx, a.cfg.TraceParent), "agent.register") // telemetry.go
	defer func() { endSpan(span, err) }()
	pace := a.pacer()
	for {
		req := connect.NewRequest(&hodeiv1.RegisterRequest{
			WorkerId:        a.cfg.WorkerID,
			OneTimePassword: a.cfg.OneTimePassword,
			Hostname:        a.cfg.Hostname,
			AgentVersion:    Version,
		})
		injectTrace(ctx, req.Header())
		resp, err := a.clients[a.cur].Register(ctx, req)
		if err == nil {
			a.token = resp.Msg.GetSessionToken()
			if id := resp.Msg.GetWorkerId(); id != "" && id != a.cfg.WorkerID {
				a.log.Warn("server assigned another worker id", "worker_id", id)
				a.cfg.WorkerID = id
			}
			a.hbEvery = a.cfg.HeartbeatInterval
			if a.hbEvery == 0 {
				a.hbEvery = resp.Msg.GetHeartbeatInterval().AsDuration()
			}
			if a.hbEvery <= 0 {
				a.hbEvery = 5 * time.Second
			}
			a.log.Info("registered", "server", a.servers[a.cur], "heartbeat_interval", a.hbEvery)
			return nil
		}
		switch connect.CodeOf(err) {
		case connect.CodeUnauthenticated, connect.CodePermissionDenied, connect.CodeInvalidArgument,
			connect.CodeNotFound, connect.CodeFailedPrecondition, connect.CodeUnimplemented:
			a.log.Error("registration refused", "code", connect.CodeOf(err).String(), "err", err)
			return &RegistrationError{Code: connect.CodeOf(err), Err: fmt.Errorf("register: %w", err)}
		}
		pace.Max = a.reconnectMax()
		d := pace.Next()
		a.log.Warn("register failed; retrying", "server", a.servers[a.cur], "err", err, "retry_in", d)
		a.nextServer()
		select {
		case <-ctx.Done():
			if parent.Err() != nil {
				return errStopped
			}
			return fmt.Errorf("agent: register with %s: gave up after %s: %w", a.cfg.ServerURL, a.cfg.RegisterTimeout, err)
		case <-time.After(d):
		}
	}
}

// openConn opens a stream, sends a heartbeat (which opens the request) and every
// pending message, and starts its reader.
func (a *agent) openConn(ctx context.Context, recv chan<- recvItem) error {
	a.closeConn()
	sctx, cancel := context.WithCancel(ctx)
	stream := a.clients[a.cur].Connect(sctx)
	stream.RequestHeader().Set("Authorization", "Bearer "+a.token)
	a.gen++
	c := &conn{gen: a.gen, stream: stream, cancel: cancel, opened: time.Now()}
	if err := stream.Send(a.heartbeat()); err != nil {
		// The real error, if any, comes with the response; read it.
		_, rerr := stream.Receive()
		cancel()
		_ = stream.CloseResponse()
		var ce *connect.Error
		if errors.As(rerr, &ce) {
			err = rerr
		}
		if code := connect.CodeOf(err); code == connect.CodeUnauthenticated || code == connect.CodePermissionDenied {
			// Deliver as a stream error so the loop treats it as fatal.
			a.conn = c
			go func() { recv <- recvItem{gen: c.gen, err: err} }()
			return nil
		}
		return fmt.Errorf("open stream: %w", err)
	}
	a.conn = c
	go func() {
		for {
			msg, err := stream.Receive()
			select {
			case recv <- recvItem{gen: c.gen, msg: msg, err: err}:
			case <-sctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	a.log.Info("stream open", "server", a.servers[a.cur], "pending", len(a.pending))
	for _, m := range a.pending {
		a.send(m)
	}
	return nil
}

// nextServer moves to the next of several servers (Config.ServerURL), after a failed
// registration or connection or a broken stream: the replica may be gone, another one
// serves the worker as well.
func (a *agent) nextServer() {
	a.cur = (a.cur + 1) % len(a.servers)
}

func (a *agent) closeConn() {
	if a.conn == nil {
		return
	}
	a.conn.cancel()
	_ = a.conn.stream.CloseRequest()
	_ = a.conn.stream.CloseResponse()
	a.conn = nil
}

// send writes m on the live stream, if any. A failed send ends the stream; the reader
// then reports why and the loop reconnects.
func (a *agent) send(m *hodeiv1.WorkerMessage) {
	if a.conn == nil {
		return
	}
	if err := a.conn.stream.Send(m); err != nil {
		a.log.Debug("send failed", "err", err)
		a.conn.cancel() // unblocks the reader, which reports the error
	}
}

// queue keeps a reliable message until acknowledged and sends it.
func (a *agent) queue(m *hodeiv1.WorkerMessage) {
	a.pending = append(a.pending, m)
	if l := m.GetLogs(); l != nil {
		a.pendingLogSize += proto.Size(m)
		for a.pendingLogSize > a.cfg.MaxPendingLogBytes {
			if !a.dropOldestLogs() {
				break
			}
		}
	}
	a.send(m)
}

func (a *agent) dropOldestLogs() bool {
	for i, m := range a.pending {
		if m.GetLogs() != nil {
			a.pendingLogSize -= proto.Size(m)
			a.log.Warn("dropping unacknowledged log batch (MaxPendingLogBytes)", "job_id", m.GetLogs().GetJobId(),
				"lines", len(m.GetLogs().GetLines()))
			a.pending = append(a.pending[:i], a.pending[i+1:]...)
			return true
		}
	}
	return false
}

// ack removes an acknowledged message. A result's ack also covers the job's earlier
// started/log messages (the server handles a stream's messages in order).
func (a *agent) ack(id string) {
	idx := -1
	for i, m := range a.pending {
		if m.GetMessageId() == id {
			idx = i
			break
		}
	}
	if idx < 0 {
		return
	}
	acked := a.pending[idx]
	jobID := acked.GetResult().GetJobId()
	kept := a.pending[:0]
	for i, m := range a.pending {
		drop := i == idx || (acked.GetResult() != nil && i < idx && jobOf(m) == jobID)
		if drop {
			if m.GetLogs() != nil {
				a.pendingLogSize -= proto.Size(m)
			}
			continue
		}
		kept = append(kept, m)
	}
	a.pending = kept
	if acked.GetResult() != nil {
		a.log.Info("result acknowledged", "job_id", jobID)
	}
}

func jobOf(m *hodeiv1.WorkerMessage) string {
	switch {
	case m.GetLogs() != nil:
		return m.GetLogs().GetJobId()
	case m.GetStarted() != nil:
		return m.GetStarted().GetJobId()
	case m.GetResult() != nil:
		return m.GetResult().GetJobId()
	}
	return ""
}

func (a *agent) hasPendingResult() bool {
	for _, m := range a.pending {
		if m.GetResult() != nil {
			return true
		}
	}
	return false
}

func (a *agent) heartbeat() *hodeiv1.WorkerMessage {
	hb := &hodeiv1.Heartbeat{Time: timestamppb.Now()}
	for id := range a.running {
		hb.JobId = id
	}
	return &hodeiv1.WorkerMessage{MessageId: uuid.NewString(), Payload: &hodeiv1.WorkerMessage_Heartbeat{Heartbeat: hb}}
}

func (a *agent) handleServer(m *hodeiv1.ServerMessage) {
	switch p := m.GetPayload().(type) {
	case *hodeiv1.ServerMessage_Ack:
		a.ack(p.Ack.GetMessageId())
		return
	case *hodeiv1.ServerMessage_RunJob:
		if a.firstTime(m.GetMessageId()) {
			a.runJob(p.RunJob)
		}
	case *hodeiv1.ServerMessage_Cancel:
		if a.firstTime(m.GetMessageId()) {
			a.cancelJob(p.Cancel)
		}
	default:
		a.log.Warn("unknown server message", "message_id", m.GetMessageId())
		return
	}
	if m.GetMessageId() != "" {
		a.send(&hodeiv1.WorkerMessage{MessageId: uuid.NewString(), Payload: &hodeiv1.WorkerMessage_Ack{Ack: &hodeiv1.Ack{MessageId: m.GetMessageId()}}})
	}
}

// maxSeenMessages bounds the server message ids an agent remembers.
const maxSeenMessages = 1024

// firstTime reports whether the server message id was not handled before, and
// remembers it. Messages without an id are always handled.
func (a *agent) firstTime(id string) bool {
	if id == "" {
		return true
	}
	if a.msgs[id] {
		a.log.Debug("duplicate server message dropped", "message_id", id)
		return false
	}
	a.msgs[id] = true
	a.msgOrder = append(a.msgOrder, id)
	if len(a.msgOrder) > maxSeenMessages {
		delete(a.msgs, a.msgOrder[0])
		a.msgOrder = a.msgOrder[1:]
	}
	return true
}

func (a *agent) runJob(r *hodeiv1.RunJob) {
	id := r.GetJobId()
	if id == "" {
		a.log.Warn("RunJob without job_id ignored")
		return
	}
	if a.seen[id] {
		a.log.Debug("RunJob for a job already run or running ignored", "job_id", id)
		return
	}
	a.seen[id] = true
	a.ranJob = true
	log := a.log.With("job_id", id, "attempt", r.GetAttempt())
	a.jobsRun++
	if a.cfg.reused() && a.jobsRun > a.cfg.MaxJobs {
		log.Warn("RunJob beyond this worker's MaxJobs refused", "max_jobs", a.cfg.MaxJobs)
		a.finish(&finishedJob{jobID: id, res: startFailure(fmt.Errorf("worker %s already ran its %d jobs (max_jobs_per_worker)", a.cfg.WorkerID, a.cfg.MaxJobs), time.Now())})
		return
	}
	if a.cfg.reused() && len(a.running) > 0 {
		// A reused worker runs one job at a time: the next one must not see the
		// running one's processes.
		log.Warn("RunJob while another job runs refused on a reused worker")
		a.finish(&finishedJob{jobID: id, res: startFailure(fmt.Errorf("worker %s is running another job", a.cfg.WorkerID), time.Now())})
		return
	}
	sink := func(lines []*hodeiv1.LogLine) {
		a.events <- event{logs: &hodeiv1.LogBatch{JobId: id, Lines: lines}}
	}
	opts := a.cfg.exec
	if se := r.GetSecretEnv(); len(se) > 0 {
		opts.Secrets = make(map[string]string, len(se))
		for _, e := range se {
			if !validEnvName(e.GetEnv()) {
				log.Warn("secret for an invalid variable name ignored", "env", truncate(e.GetEnv(), 64))
				continue
			}
			opts.Secrets[e.GetEnv()] = e.GetValue()
		}
	}
	a.startJobSpan(id, r) // telemetry.go
	p, err := startJob(id, r.GetSpec(), opts, sink)
	if err != nil {
		log.Warn("job failed to start", "err", err)
		a.finish(&finishedJob{jobID: id, res: startFailure(err, time.Now())})
		return
	}
	log.Info("job started", "pid", p.pid)
	a.running[id] = p
	a.queue(&hodeiv1.WorkerMessage{MessageId: uuid.NewString(), Payload: &hodeiv1.WorkerMessage_Started{
		Started: &hodeiv1.JobStarted{JobId: id, Time: timestamppb.New(p.startedAt)},
	}})
	go func() {
		<-p.Done()
		a.events <- event{finished: &finishedJob{jobID: id, res: p.Result()}}
	}()
}

func (a *agent) cancelJob(c *hodeiv1.CancelJob) {
	id := c.GetJobId()
	grace := a.cfg.CancelGrace
	if g := c.GetGracePeriod(); g != nil {
		grace = g.AsDuration()
	}
	if p, ok := a.running[id]; ok {
		a.log.Info("cancelling job", "job_id", id, "reason", c.GetReason(), "grace", grace)
		p.Cancel(grace)
		return
	}
	if !a.seen[id] && id != "" {
		// Cancelled before it arrived: never run it, and say so.
		a.seen[id] = true
		now := time.Now()
		a.finish(&finishedJob{jobID: id, res: execResult{Cancelled: true, Err: "cancelled before start: " + c.GetReason(), StartedAt: now, FinishedAt: now}})
	}
}

func (a *agent) finish(f *finishedJob) {
	delete(a.running, f.jobID)
	if a.cfg.reused() && len(a.running) == 0 {
		// Between two jobs: nothing the last one started may meet the next one. Its
		// group was killed when its main process ended, but what it left is re-parented
		// to the agent (its subreaper) and must be reaped, and what left the group must
		// be killed; both happen before the result is sent, so the next RunJob cannot
		// arrive earlier.
		if n := killStrays(time.Now().Add(2 * time.Second)); n > 0 {
			a.log.Info("killed processes left by the job", "job_id", f.jobID, "processes", n)
		}
	}
	r := f.res
	a.endJobSpan(f.jobID, r)
	a.log.Info("job finished", "job_id", f.jobID, "exit_code", r.ExitCode, "err", r.Err, "cancelled", r.Cancelled,
		"duration", r.FinishedAt.Sub(r.StartedAt))
	a.queue(&hodeiv1.WorkerMessage{MessageId: uuid.NewString(), Payload: &hodeiv1.WorkerMessage_Result{Result: &hodeiv1.JobResult{
		JobId:      f.jobID,
		ExitCode:   int32(r.ExitCode),
		Error:      truncate(r.Err, maxResultErrorBytes),
		Cancelled:  r.Cancelled,
		StartedAt:  timestamppb.New(r.StartedAt),
		FinishedAt: timestamppb.New(r.FinishedAt),
	}}})
}

// stopJobs terminates running jobs (agent shutdown) and waits for them, draining
// events so their goroutines never block.
func (a *agent) stopJobs() {
	if len(a.running) == 0 {
		return
	}
	for id, p := range a.running {
		a.log.Info("stopping job (agent shutdown)", "job_id", id, "grace", a.cfg.ShutdownGrace)
		p.Cancel(a.cfg.ShutdownGrace)
	}
	deadline := time.After(a.cfg.ShutdownGrace + 3*time.Second)
	for len(a.running) > 0 {
		select {
		case ev := <-a.events:
			if ev.finished != nil {
				delete(a.running, ev.finished.jobID)
			}
		case <-deadline:
			a.log.Error("jobs did not end after SIGKILL", "jobs", len(a.running))
			return
		}
	}
}

// maxResultErrorBytes keeps JobResult.error under the server's limit (4 KiB).
const maxResultErrorBytes = 4000

// truncate cuts s to at most n bytes at a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:cutPoint([]byte(s), n)], "") + "…"
}

// jitter spreads d by ±20%.
// pacer paces one reconnect or registration loop: from ReconnectMin, doubling up to
// reconnectMax (set before each Next), ±20 % so that the workers of a restarted
// server do not all come back at once.
func (a *agent) pacer() *backoff.Pacer {
	return &backoff.Pacer{Base: a.cfg.ReconnectMin, Max: a.reconnectMax(), Jitter: 0.2}
}

// reconnectMax is the largest pause between two stream attempts: Config.ReconnectMax,
// but no more than one heartbeat interval once the server told it (the server counts a
// worker as lost after a few silent intervals, and as disconnected after a grace of
// about two), and no less than Config.ReconnectMin.
func (a *agent) reconnectMax() time.Duration {
	m := a.cfg.ReconnectMax
	if a.hbEvery > 0 && a.hbEvery < m {
		m = a.hbEvery
	}
	return max(m, a.cfg.ReconnectMin)
}
