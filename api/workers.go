package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/hodei-jobs/hodei/domain"
	hodeiv1 "github.com/hodei-jobs/hodei/gen/hodei/v1"
	"github.com/hodei-jobs/hodei/gen/hodei/v1/hodeiv1connect"
	"github.com/hodei-jobs/hodei/internal/protoconv"
)

// Limits of worker messages (besides the byte limit on every message).
const (
	MaxLogLinesPerBatch = domain.MaxLogLinesPerBatch
	MaxOTPLen           = domain.MaxSecretBytes
	MaxTokenLen         = domain.MaxSecretBytes
	maxMessageIDLen     = domain.MaxMessageIDBytes
	maxErrorLen         = domain.MaxResultErrorBytes
)

// WorkerOptions tunes a WorkerAgentService. Zero fields get defaults.
type WorkerOptions struct {
	// HeartbeatInterval is told to workers in RegisterResponse (default 5s).
	HeartbeatInterval time.Duration
	// Notifier is told about logs, starts and results arriving here, so that this
	// replica's log and watch streams wake at once (default: none).
	Notifier *Notifier
	// InboxBuffer is the number of server messages buffered per connected worker before
	// NATS drops them (default 256).
	InboxBuffer int
	// Errors maps extra errors (jobs' credential errors) to codes.
	Errors []ErrorCode
	Logger *slog.Logger
	// Now is the clock stamped on heartbeats and starts (default time.Now). The
	// server's clock is used, not the worker's, so that clock skew between hosts
	// does not distort latencies and liveness checks.
	Now func() time.Time
	// Drop is a fault hook for tests: a server message for which it returns true is
	// dropped instead of being sent on the worker's stream (as a lost message would be).
	Drop func(workerID string, msg *hodeiv1.ServerMessage) bool
	// Secrets decrypts the secrets a RunJob's spec names into RunJob.secret_env just
	// before it goes on the worker's stream: the only place a value leaves the server
	// (package secrets). Nil: a RunJob naming secrets is not sent (the delivery is
	// retried and the job eventually fails).
	Secrets SecretResolver
}

func (o *WorkerOptions) setDefaults() {
	if o.HeartbeatInterval == 0 {
		o.HeartbeatInterval = 5 * time.Second
	}
	if o.Notifier == nil {
		o.Notifier = NewNotifier()
	}
	if o.InboxBuffer == 0 {
		o.InboxBuffer = 256
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Validate reports the first invalid field.
func (o *WorkerOptions) Validate() error {
	switch {
	case o.HeartbeatInterval < 10*time.Millisecond:
		return fmt.Errorf("api: WorkerOptions.HeartbeatInterval %s below 10ms", o.HeartbeatInterval)
	case o.InboxBuffer < 1:
		return fmt.Errorf("api: WorkerOptions.InboxBuffer %d below 1", o.InboxBuffer)
	}
	return nil
}

// WorkerService implements hodeiv1connect.WorkerAgentServiceHandler.
type WorkerService struct {
	logic WorkerLogic
	hub   *Hub
	opts  WorkerOptions
	log   *slog.Logger
}

var _ hodeiv1connect.WorkerAgentServiceHandler = (*WorkerService)(nil)

// NewWorkerAgentService returns the worker API over logic; hub carries server messages
// to the workers whose streams this replica holds.
func NewWorkerAgentService(logic WorkerLogic, hub *Hub, opts WorkerOptions) (*WorkerService, error) {
	if logic == nil || hub == nil {
		return nil, errors.New("api: NewWorkerAgentService needs a WorkerLogic and a Hub")
	}
	opts.setDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	return &WorkerService{logic: logic, hub: hub, opts: opts,
		log: opts.Logger.With("component", "api.workers")}, nil
}

func (w *WorkerService) err(err error) error { return toConnect(err, w.opts.Errors) }

// Register exchanges the worker's one-time password for a session token. A bad
// password is Unauthenticated (PermissionDenied for a reused one, when the server maps
// that error); the reason is in the message and in the server's log.
func (w *WorkerService) Register(ctx context.Context, req *connect.Request[hodeiv1.RegisterRequest]) (*connect.Response[hodeiv1.RegisterResponse], error) {
	m := req.Msg
	if err := validWorkerID(m.GetWorkerId()); err != nil {
		return nil, err
	}
	if m.GetOneTimePassword() == "" {
		return nil, connect.NewError(connect.CodeUnauthenticated, errors.New("one_time_password is required"))
	}
	if len(m.GetOneTimePassword()) > MaxOTPLen {
		return nil, invalidArg("one_time_password", "is %d bytes, the limit is %d", len(m.GetOneTimePassword()), MaxOTPLen)
	}
	token, err := w.logic.RegisterWorker(ctx, m.GetWorkerId(), m.GetOneTimePassword())
	if err != nil {
		ce := w.err(err)
		w.log.Warn("worker registration refused", "worker", m.GetWorkerId(),
			"hostname", m.GetHostname(), "code", connect.CodeOf(ce), "err", err)
		return nil, ce
	}
	w.log.Info("worker registered", "worker", m.GetWorkerId(), "hostname", m.GetHostname(),
		"agent_version", m.GetAgentVersion())
	return connect.NewResponse(&hodeiv1.RegisterResponse{
		WorkerId:          m.GetWorkerId(),
		SessionToken:      token,
		HeartbeatInterval: durationpb.New(w.opts.HeartbeatInterval),
	}), nil
}

// authenticate checks "Authorization: Bearer <token>".
func (w *WorkerService) authenticate(ctx context.Context, h interface{ Get(string) string }) (string, error) {
	auth := h.Get("Authorization")
	if auth == "" {
		return "", connect.NewError(connect.CodeUnauthenticated, errors.New("missing Authorization header (want \"Bearer <session token>\" from Register)"))
	}
	scheme, token, ok := strings.Cut(auth, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
		return "", connect.NewError(connect.CodeUnauthenticated, errors.New("malformed Authorization header (want \"Bearer <session token>\")"))
	}
	token = strings.TrimSpace(token)
	if len(token) > MaxTokenLen {
		return "", connect.NewError(connect.CodeUnauthenticated, fmt.Errorf("session token is %d bytes, the limit is %d", len(token), MaxTokenLen))
	}
	id, err := w.logic.AuthenticateSession(ctx, token)
	if err != nil {
		ce := w.err(err)
		if code := connect.CodeOf(ce); code != connect.CodePermissionDenied && code != connect.CodeUnavailable &&
			code != connect.CodeCanceled && code != connect.CodeDeadlineExceeded && code != connect.CodeInternal {
			ce = connect.NewError(connect.CodeUnauthenticated, err)
		}
		w.log.Warn("worker stream refused", "code", connect.CodeOf(ce), "err", err)
		return "", ce
	}
	return id, nil
}

// Connect is the worker's bidirectional stream (see doc.go for the protocol).
func (w *WorkerService) Connect(ctx context.Context, stream *connect.BidiStream[hodeiv1.WorkerMessage, hodeiv1.ServerMessage]) error {
	workerID, err := w.authenticate(ctx, stream.RequestHeader())
	if err != nil {
		return err
	}
	log := w.log.With("worker", workerID)
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Registered first, so it runs last, after the handler's own cancel: whether this
	// server is shutting down is read from the server's base context, not from ctx.
	defer w.streamClosed(parent, workerID, log)

	sub, inbox, err := w.hub.subscribe(ctx, workerID, w.opts.InboxBuffer)
	if err != nil {
		return connect.NewError(connect.CodeUnavailable, err)
	}
	defer func() { _ = sub.Unsubscribe() }()

	// Everything sent on the stream goes through this goroutine's loop below; the
	// receiver goroutine hands its acks over on replies, and the agent's acks of server
	// messages on acked.
	replies := make(chan *hodeiv1.ServerMessage, 16)
	acked := make(chan string, 16)
	recvDone := make(chan error, 1)
	go func() { recvDone <- w.receive(ctx, stream, workerID, replies, acked, log) }()

	// A stream that opens counts as a heartbeat, so that a worker that reconnects
	// within the disconnect grace is "back" (see doc.go).
	if err := w.logic.Heartbeat(ctx, workerID, w.opts.Now()); err != nil {
		log.Warn("heartbeat at stream open not recorded", "err", err)
	}
	if j, err := w.logic.PendingRun(ctx, workerID); err != nil {
		log.Warn("pending run lookup failed", "err", err)
	} else if j != nil {
		if err := w.send(ctx, stream, workerID, runJobMessage(ctx, j)); err != nil {
			return err
		}
		log.Debug("re-sent pending run", "job", j.ID)
	}
	if c, err := w.logic.PendingCancel(ctx, workerID); err != nil {
		log.Warn("pending cancel lookup failed", "err", err)
	} else if c != nil {
		if err := w.send(ctx, stream, workerID, cancelJobMessage(*c)); err != nil {
			return err
		}
		log.Debug("re-sent pending cancel", "job", c.JobID)
	}
	// Info: with several replicas it says which one serves the worker now (a worker
	// moves to another replica when its own is gone).
	log.Info("worker stream open")
	// waiting maps a message id to the reply subjects of the deliveries (Hub.deliver)
	// waiting for its ack: answered when the agent acks it. Entries of messages the
	// agent never acks are dropped once the map is full (their senders time out).
	waiting := map[string][]string{}
	for {
		select {
		case <-ctx.Done():
			return connect.NewError(connect.CodeUnavailable, errors.New("server shutting down; reconnect"))
		case err := <-recvDone:
			log.Debug("worker stream closed", "err", err)
			return err
		case m := <-inbox:
			msg := &hodeiv1.ServerMessage{}
			if err := proto.Unmarshal(m.Data, msg); err != nil {
				log.Error("undecodable message in worker inbox", "err", err)
				continue
			}
			if m.Reply != "" && msg.GetMessageId() != "" {
				if len(waiting) >= maxWaitingAcks {
					clear(waiting)
				}
				waiting[msg.GetMessageId()] = append(waiting[msg.GetMessageId()], m.Reply)
			}
			if err := w.send(ctx, stream, workerID, msg); err != nil {
				return err
			}
		case id := <-acked:
			for _, reply := range waiting[id] {
				if err := w.hub.nc.Publish(reply, nil); err != nil {
					log.Warn("forwarding an ack failed; the sender sends again", "message_id", id, "err", err)
				}
			}
			delete(waiting, id)
		case msg := <-replies:
			if err := stream.Send(msg); err != nil {
				return err
			}
		}
	}
}

// maxWaitingAcks bounds the deliveries one stream holds waiting for acks.
const maxWaitingAcks = 1024

// send puts a server message on the stream, unless the Drop fault hook takes it.
func (w *WorkerService) send(ctx context.Context, stream *connect.BidiStream[hodeiv1.WorkerMessage, hodeiv1.ServerMessage], workerID string, msg *hodeiv1.ServerMessage) error {
	if w.opts.Drop != nil && w.opts.Drop(workerID, msg) {
		w.log.Warn("server message dropped by a fault hook", "worker", workerID, "message_id", msg.GetMessageId())
		return nil
	}
	if run := msg.GetRunJob(); run != nil && len(run.GetSpec().GetSecrets()) > 0 {
		if err := w.withSecrets(ctx, run); err != nil {
			// Not sent: no ack, so the sender retries (a secret set meanwhile, or a
			// replica with the key, may deliver it). The error names secrets, never values.
			w.log.Warn("RunJob not sent: its secrets could not be resolved", "worker", workerID,
				"job", run.GetJobId(), "err", err)
			return nil
		}
		defer func() { run.SecretEnv = nil }()
	}
	return stream.Send(msg)
}

// withSecrets fills run.SecretEnv with the values of the secrets its spec names.
func (w *WorkerService) withSecrets(ctx context.Context, run *hodeiv1.RunJob) error {
	if w.opts.Secrets == nil {
		return errors.New("this server has no secrets (WorkerOptions.Secrets)")
	}
	spec := protoconv.SpecFromProto(run.GetSpec())
	ns := spec.Namespace
	if ns == "" {
		ns = domain.DefaultNamespace
	}
	env, err := w.opts.Secrets(ctx, ns, spec.Secrets)
	if err != nil {
		return err
	}
	run.SecretEnv = env
	return nil
}

// receive handles the worker's messages in order until the stream ends (nil on a clean
// close). Acks go to replies. A message that cannot be valid ends the stream with
// InvalidArgument; a failure to record one that may succeed later (database down)
// ends it with Unavailable, so the worker reconnects and re-sends what was not acked.
func (w *WorkerService) receive(ctx context.Context, stream *connect.BidiStream[hodeiv1.WorkerMessage, hodeiv1.ServerMessage], workerID string, replies chan<- *hodeiv1.ServerMessage, acked chan<- string, log *slog.Logger) error {
	for {
		m, err := stream.Receive()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if err := checkWorkerMessage(m); err != nil {
			log.Warn("invalid worker message", "err", err)
			return err
		}
		if a := m.GetAck(); a != nil {
			if a.GetMessageId() != "" {
				select {
				case acked <- a.GetMessageId():
				case <-ctx.Done():
					return nil
				}
			}
			continue
		}
		ack, err := w.handle(ctx, workerID, m)
		if err != nil {
			ce := w.err(err)
			if !permanent(connect.CodeOf(ce)) {
				log.Warn("worker message not recorded; closing the stream so that the worker re-sends",
					"message_id", m.GetMessageId(), "err", err)
				return connect.NewError(connect.CodeUnavailable, fmt.Errorf("message %s not recorded: %w", m.GetMessageId(), err))
			}
			// Re-sending cannot help (the job is not this worker's, it already ended, …):
			// acknowledge so that the worker stops re-sending, and log it.
			log.Warn("worker message refused", "message_id", m.GetMessageId(), "code", connect.CodeOf(ce), "err", err)
		}
		if !ack || m.GetMessageId() == "" {
			continue
		}
		select {
		case replies <- &hodeiv1.ServerMessage{MessageId: uuid.NewString(),
			Payload: &hodeiv1.ServerMessage_Ack{Ack: &hodeiv1.Ack{MessageId: m.GetMessageId()}}}:
		case <-ctx.Done():
			return nil
		}
	}
}

// handle records one worker message; ack tells whether to acknowledge it.
func (w *WorkerService) handle(ctx context.Context, workerID string, m *hodeiv1.WorkerMessage) (ack bool, err error) {
	switch p := m.GetPayload().(type) {
	case *hodeiv1.WorkerMessage_Heartbeat:
		if err := w.logic.Heartbeat(ctx, workerID, w.opts.Now()); err != nil {
			// A lost heartbeat is not worth a reconnect; the next one follows.
			w.log.Warn("heartbeat not recorded", "worker", workerID, "err", err)
		}
		return false, nil
	case *hodeiv1.WorkerMessage_Logs:
		if err := w.logic.AppendLogs(ctx, workerID, p.Logs.GetJobId(), protoconv.LogLinesFromProto(p.Logs.GetLines())); err != nil {
			return true, err
		}
		w.opts.Notifier.Notify(logsKey(p.Logs.GetJobId()))
		return true, nil
	case *hodeiv1.WorkerMessage_Started:
		if err := w.logic.JobStarted(ctx, workerID, p.Started.GetJobId(), w.opts.Now()); err != nil {
			return true, err
		}
		w.opts.Notifier.Notify(jobKey(p.Started.GetJobId()))
		return true, nil
	case *hodeiv1.WorkerMessage_Result:
		r := p.Result
		if err := w.logic.JobFinished(ctx, workerID, domain.JobResult{JobID: r.GetJobId(), ExitCode: int(r.GetExitCode()),
			Error: r.GetError(), Cancelled: r.GetCancelled()}); err != nil {
			return true, err
		}
		w.opts.Notifier.Notify(jobKey(p.Result.GetJobId()))
		w.opts.Notifier.Notify(logsKey(p.Result.GetJobId()))
		return true, nil
	}
	return false, nil
}

// checkWorkerMessage validates a message at the edge; the error names the field.
func checkWorkerMessage(m *hodeiv1.WorkerMessage) error {
	if len(m.GetMessageId()) > maxMessageIDLen {
		return invalidArg("message_id", "is %d bytes, the limit is %d", len(m.GetMessageId()), maxMessageIDLen)
	}
	switch p := m.GetPayload().(type) {
	case nil:
		return invalidArg("payload", "is required (heartbeat, logs, started, result or ack)")
	case *hodeiv1.WorkerMessage_Logs:
		if err := validID("logs.job_id", p.Logs.GetJobId()); err != nil {
			return err
		}
		if n := len(p.Logs.GetLines()); n > MaxLogLinesPerBatch {
			return invalidArg("logs.lines", "has %d lines, the limit is %d", n, MaxLogLinesPerBatch)
		}
		for i, l := range p.Logs.GetLines() {
			if l.GetSeq() < 1 {
				return invalidArg(fmt.Sprintf("logs.lines[%d].seq", i), "must be at least 1, got %d", l.GetSeq())
			}
		}
	case *hodeiv1.WorkerMessage_Started:
		return validID("started.job_id", p.Started.GetJobId())
	case *hodeiv1.WorkerMessage_Result:
		if err := validID("result.job_id", p.Result.GetJobId()); err != nil {
			return err
		}
		if m.GetMessageId() == "" {
			return invalidArg("message_id", "is required on a result (the server acknowledges it by this id)")
		}
		if n := len(p.Result.GetError()); n > maxErrorLen {
			return invalidArg("result.error", "is %d bytes, the limit is %d", n, maxErrorLen)
		}
	}
	return nil
}

// streamClosed tells the logic that workerID's stream ended,
// unless the server is shutting down (its base context, set by NewHTTPServer, ended):
// then the workers reconnect to another server and nothing is lost. A client that goes
// away also cancels the request context, so parent.Err() alone cannot tell the two
// apart; without a base context every end counts as a disconnect (harmless: a worker
// that reconnects within the grace is back).
func (w *WorkerService) streamClosed(parent context.Context, workerID string, log *slog.Logger) {
	if serverShuttingDown(parent) {
		log.Debug("worker stream ended by server shutdown")
		return
	}
	w.logic.WorkerDisconnected(workerID, w.opts.Now())
}
