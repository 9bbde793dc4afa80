package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/hodei-jobs/hodei/domain"
	hodeiv1 "github.com/hodei-jobs/hodei/gen/hodei/v1"
	"github.com/hodei-jobs/hodei/gen/hodei/v1/hodeiv1connect"
	"github.com/hodei-jobs/hodei/internal/protoconv"
	"github.com/hodei-jobs/hodei/saga"
	"github.com/hodei-jobs/hodei/store"
)

// Limits of the admin API.
const (
	MaxAdminBodyBytes     = 64 << 10 // bytes of one REST request body
	DefaultDeadLetterList = 100      // ListDeadLetters limit when zero
	MaxDeadLetterList     = 1000     // ListDeadLetters limit
)

// AdminLogic is what AdminService needs from the job logic (jobs.Service).
type AdminLogic interface {
	// ResumeJob applies an operator's resolution to a job in
	// MANUAL_INTERVENTION_REQUIRED (a *domain.ValidationError for a bad resolution,
	// domain.ErrIllegalTransition for another state).
	ResumeJob(ctx context.Context, jobID, resolution, notes string) (*domain.Job, error)
	// JobSagas lists the sagas of a job, oldest first.
	JobSagas(ctx context.Context, jobID string) ([]*saga.Info, error)
}

// DeadLetterStore reads and requeues outbox dead letters; store.OutboxStore satisfies it.
type DeadLetterStore interface {
	ListByStatus(ctx context.Context, status store.OutboxStatus, limit int) ([]*store.OutboxMessage, error)
	Requeue(ctx context.Context, id int64) error
}

// AdminOptions tunes an AdminService.
type AdminOptions struct {
	// Token (`hodei server --admin-token`), when set, is a bootstrap admin token
	// (named "admin-token") of the API's authenticator when MuxConfig.Auth is nil.
	// Without any token, only clients connecting from a loopback address (127.0.0.0/8,
	// ::1) may use the admin API (others get PermissionDenied / HTTP 403).
	Token string
	// Tokens, if set, serves CreateToken, ListTokens and RevokeToken.
	Tokens TokenAdmin
	// Audit, if set, serves ListAudit.
	Audit AuditReader
	// Namespaces, if set, serves SetNamespace and ListNamespaces.
	Namespaces NamespaceAdmin
	// Errors maps extra errors to codes (checked before the built-in mapping).
	Errors []ErrorCode
	// Replica, if set, answers GET /api/v1/admin/status (this replica and the leader).
	Replica func() ReplicaStatus
	Logger  *slog.Logger
	// ListSagas, if set, answers ListSagas (saga.Engine.List); else Unimplemented.
	ListSagas func(ctx context.Context, f store.SagaFilter) ([]*saga.Info, error)
}

// AdminService implements hodeiv1connect.AdminServiceHandler and the admin REST routes
// (Routes).
type AdminService struct {
	logic AdminLogic
	dead  DeadLetterStore
	sagas SagaReader
	opts  AdminOptions
	log   *slog.Logger
}

var _ hodeiv1connect.AdminServiceHandler = (*AdminService)(nil)

// NewAdminService returns the admin API over logic, the outbox's dead letters and the
// saga engine's histories.
func NewAdminService(logic AdminLogic, dead DeadLetterStore, sagas SagaReader, opts AdminOptions) (*AdminService, error) {
	if logic == nil || dead == nil || sagas == nil {
		return nil, errors.New("api: NewAdminService needs the admin logic, a dead letter store and a saga reader")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &AdminService{logic: logic, dead: dead, sagas: sagas, opts: opts, log: opts.Logger.With("component", "admin")}, nil
}

// mount adds the AdminService RPCs (with opts, which carry the policy interceptor) and
// the REST routes (through route, which wraps each with its policy) to mux.
func (s *AdminService) mount(mux *http.ServeMux, opts []connect.HandlerOption, route func(pattern string, h http.HandlerFunc) error) error {
	mux.Handle(hodeiv1connect.NewAdminServiceHandler(s, opts...))
	routes := []struct {
		pattern string
		h       http.HandlerFunc
	}{
		{routeAdminResume, s.rest(s.restResume)},
		{routeAdminJobSagas, s.rest(s.restSagas)},
		{routeAdminSaga, s.rest(s.restSagaHistory)},
		{routeAdminDeadList, s.rest(s.restListDead)},
		{routeAdminRequeue, s.rest(s.restRequeue)},
	}
	if s.opts.Replica != nil {
		routes = append(routes, struct {
			pattern string
			h       http.HandlerFunc
		}{routeAdminStatus, s.restStatus})
	}
	for _, r := range routes {
		if err := route(r.pattern, r.h); err != nil {
			return err
		}
	}
	return nil
}

func (s *AdminService) toConnect(err error) error { return toConnect(err, s.opts.Errors) }

// ResumeJob implements AdminService.ResumeJob.
func (s *AdminService) ResumeJob(ctx context.Context, req *connect.Request[hodeiv1.ResumeJobRequest]) (*connect.Response[hodeiv1.ResumeJobResponse], error) {
	m := req.Msg
	if err := validID("job_id", m.GetJobId()); err != nil {
		return nil, err
	}
	j, err := s.logic.ResumeJob(ctx, m.GetJobId(), m.GetResolution(), m.GetNotes())
	if err != nil {
		var ve *domain.ValidationError
		if errors.As(err, &ve) {
			return nil, invalidArg(ve.Field, "%s", ve.Msg)
		}
		return nil, s.toConnect(err)
	}
	s.log.Info("job resumed", "job", j.ID, "resolution", m.GetResolution(), "state", j.State)
	return connect.NewResponse(&hodeiv1.ResumeJobResponse{Job: protoconv.JobToProto(j)}), nil
}

// ListDeadLetters implements AdminService.ListDeadLetters.
func (s *AdminService) ListDeadLetters(ctx context.Context, req *connect.Request[hodeiv1.ListDeadLettersRequest]) (*connect.Response[hodeiv1.ListDeadLettersResponse], error) {
	limit := int(req.Msg.GetLimit())
	switch {
	case limit == 0:
		limit = DefaultDeadLetterList
	case limit < 0 || limit > MaxDeadLetterList:
		return nil, invalidArg("limit", "%d out of range [1, %d]", limit, MaxDeadLetterList)
	}
	msgs, err := s.dead.ListByStatus(ctx, store.OutboxDeadLetter, limit)
	if err != nil {
		return nil, s.toConnect(err)
	}
	out := &hodeiv1.ListDeadLettersResponse{Messages: make([]*hodeiv1.DeadLetter, 0, len(msgs))}
	for _, m := range msgs {
		out.Messages = append(out.Messages, &hodeiv1.DeadLetter{Id: m.ID, Kind: m.Kind, Type: m.Type,
			IdempotencyKey: m.IdempotencyKey, Attempts: int32(m.Attempts), MaxAttempts: int32(m.MaxAttempts),
			LastError: m.LastError, Payload: string(m.Payload),
			CreatedAt: protoconv.TimeToProto(m.CreatedAt), UpdatedAt: protoconv.TimeToProto(m.UpdatedAt)})
	}
	return connect.NewResponse(out), nil
}

// RequeueDeadLetter implements AdminService.RequeueDeadLetter.
func (s *AdminService) RequeueDeadLetter(ctx context.Context, req *connect.Request[hodeiv1.RequeueDeadLetterRequest]) (*connect.Response[hodeiv1.RequeueDeadLetterResponse], error) {
	id := req.Msg.GetId()
	if id <= 0 {
		return nil, invalidArg("id", "%d must be a positive outbox row id", id)
	}
	if err := s.dead.Requeue(ctx, id); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return nil, connect.NewError(connect.CodeFailedPrecondition,
				fmt.Errorf("outbox row %d is not a dead letter: %w", id, err))
		}
		return nil, s.toConnect(fmt.Errorf("outbox row %d: %w", id, err))
	}
	s.log.Info("dead letter requeued", "id", id)
	return connect.NewResponse(&hodeiv1.RequeueDeadLetterResponse{}), nil
}

// ListJobSagas implements AdminService.ListJobSagas.
func (s *AdminService) ListJobSagas(ctx context.Context, req *connect.Request[hodeiv1.ListJobSagasRequest]) (*connect.Response[hodeiv1.ListJobSagasResponse], error) {
	if err := validID("job_id", req.Msg.GetJobId()); err != nil {
		return nil, err
	}
	sagas, err := s.logic.JobSagas(ctx, req.Msg.GetJobId())
	if err != nil {
		return nil, s.toConnect(err)
	}
	out := make([]*hodeiv1.SagaSummary, len(sagas))
	for i, in := range sagas {
		out[i] = protoconv.SagaToProto(in)
	}
	return connect.NewResponse(&hodeiv1.ListJobSagasResponse{Sagas: out}), nil
}

// maxListSagas bounds ListSagasRequest.limit.
const maxListSagas = 1000

// sagaStates are the states ListSagasRequest.state may name.
func sagaStates() []saga.State {
	return []saga.State{saga.StateRunning, saga.StateWaiting, saga.StateCompensating, saga.StateCompleted,
		saga.StateFailed, saga.StateCompensated, saga.StateCompensationFailed, saga.StateCancelled}
}

// ListSagas implements AdminService.ListSagas.
func (s *AdminService) ListSagas(ctx context.Context, req *connect.Request[hodeiv1.ListSagasRequest]) (*connect.Response[hodeiv1.ListSagasResponse], error) {
	if s.opts.ListSagas == nil {
		return nil, connect.NewError(connect.CodeUnimplemented, errors.New("this server does not list sagas"))
	}
	m := req.Msg
	f := store.SagaFilter{Type: m.GetType(), State: m.GetState(), Limit: int(m.GetLimit())}
	switch {
	case f.Limit < 0 || f.Limit > maxListSagas:
		return nil, invalidArg("limit", "%d out of range [0, %d]", f.Limit, maxListSagas)
	case len(f.Type) > 128:
		return nil, invalidArg("type", "longer than 128 bytes")
	case f.State != "" && !slices.Contains(sagaStates(), saga.State(f.State)):
		return nil, invalidArg("state", "%q is not a saga state (%v)", f.State, sagaStates())
	}
	if d := m.GetUnchangedFor(); d != nil {
		if err := d.CheckValid(); err != nil || d.AsDuration() < 0 {
			return nil, invalidArg("unchanged_for", "must be a non-negative duration")
		}
		f.UpdatedBefore = time.Now().Add(-d.AsDuration())
	}
	sagas, err := s.opts.ListSagas(ctx, f)
	if err != nil {
		return nil, s.toConnect(err)
	}
	out := make([]*hodeiv1.SagaSummary, len(sagas))
	for i, in := range sagas {
		out[i] = protoconv.SagaToProto(in)
	}
	return connect.NewResponse(&hodeiv1.ListSagasResponse{Sagas: out}), nil
}

// --- REST -------------------------------------------------------------------------

// rest wraps a REST handler: authorization, then h; an error becomes a JSON body
// {"error": "..."} with the HTTP status of its connect code.
func (s *AdminService) rest(h func(r *http.Request) (proto.Message, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var (
			msg proto.Message
			err error
		)
		msg, err = h(r)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		if err != nil {
			writeRESTError(w, err)
			return
		}
		b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(msg)
		if err != nil {
			w.WriteHeader(http.StatusInternalServerError)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": "encode response: " + err.Error()})
			return
		}
		_, _ = w.Write(append(b, '\n'))
	}
}

// writeRESTError writes err as a JSON body {"error": "..."} with the HTTP status of its
// connect code.
func writeRESTError(w http.ResponseWriter, err error) {
	status, text := http.StatusInternalServerError, err.Error()
	var ce *connect.Error
	if errors.As(err, &ce) {
		status, text = httpStatus(ce.Code()), ce.Message()
	}
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="hodei-admin"`)
	}
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": text})
}

// restStatus answers GET /api/v1/admin/status with this replica's ReplicaStatus as
// JSON (the admin policy applies: it names the replicas of the platform).
func (s *AdminService) restStatus(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(s.opts.Replica())
}

// httpStatus is the HTTP status of a connect code in the admin REST routes.
func httpStatus(c connect.Code) int {
	switch c {
	case connect.CodeInvalidArgument:
		return http.StatusBadRequest
	case connect.CodeUnauthenticated:
		return http.StatusUnauthorized
	case connect.CodePermissionDenied:
		return http.StatusForbidden
	case connect.CodeNotFound:
		return http.StatusNotFound
	case connect.CodeFailedPrecondition, connect.CodeAborted, connect.CodeAlreadyExists:
		return http.StatusConflict
	case connect.CodeResourceExhausted:
		return http.StatusRequestEntityTooLarge
	case connect.CodeCanceled:
		return 499
	case connect.CodeDeadlineExceeded:
		return http.StatusGatewayTimeout
	case connect.CodeUnavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// resumeBody is the JSON body of POST /api/v1/admin/jobs/{job_id}/resume.
type resumeBody struct {
	Resolution string `json:"resolution"`
	Notes      string `json:"notes"`
}

func (s *AdminService) restResume(r *http.Request) (proto.Message, error) {
	var body resumeBody
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, MaxAdminBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, connect.NewError(connect.CodeResourceExhausted,
				fmt.Errorf("request body exceeds the limit of %d bytes", MaxAdminBodyBytes))
		}
		if errors.Is(err, io.EOF) {
			return nil, invalidArg("body", "empty; want {\"resolution\": ..., \"notes\": ...}")
		}
		// encoding/json names an unknown field: `json: unknown field "x"`.
		return nil, invalidArg("body", "%s", strings.TrimPrefix(err.Error(), "json: "))
	}
	if dec.More() {
		return nil, invalidArg("body", "trailing data after the JSON object")
	}
	res, err := s.ResumeJob(r.Context(), connect.NewRequest(&hodeiv1.ResumeJobRequest{
		JobId: r.PathValue("job_id"), Resolution: body.Resolution, Notes: body.Notes}))
	if err != nil {
		return nil, err
	}
	return res.Msg.GetJob(), nil
}

func (s *AdminService) restSagas(r *http.Request) (proto.Message, error) {
	res, err := s.ListJobSagas(r.Context(), connect.NewRequest(&hodeiv1.ListJobSagasRequest{JobId: r.PathValue("job_id")}))
	if err != nil {
		return nil, err
	}
	return res.Msg, nil
}

func (s *AdminService) restListDead(r *http.Request) (proto.Message, error) {
	var limit int64
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.ParseInt(v, 10, 32)
		if err != nil {
			return nil, invalidArg("limit", "%q is not an integer", v)
		}
		limit = n
	}
	res, err := s.ListDeadLetters(r.Context(), connect.NewRequest(&hodeiv1.ListDeadLettersRequest{Limit: int32(limit)}))
	if err != nil {
		return nil, err
	}
	return res.Msg, nil
}

func (s *AdminService) restRequeue(r *http.Request) (proto.Message, error) {
	v := r.PathValue("id")
	id, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return nil, invalidArg("id", "%q is not an outbox row id", v)
	}
	res, err := s.RequeueDeadLetter(r.Context(), connect.NewRequest(&hodeiv1.RequeueDeadLetterRequest{Id: id}))
	if err != nil {
		return nil, err
	}
	return res.Msg, nil
}
