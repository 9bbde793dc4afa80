package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"connectrpc.com/connect"

	"github.com/hodei-jobs/hodei/auth"
	"github.com/hodei-jobs/hodei/domain"
	hodeiv1 "github.com/hodei-jobs/hodei/gen/hodei/v1"
	"github.com/hodei-jobs/hodei/gen/hodei/v1/hodeiv1connect"
	"github.com/hodei-jobs/hodei/internal/protoconv"
	"github.com/hodei-jobs/hodei/saga"
	"github.com/hodei-jobs/hodei/store"
)

// Limits of JobService requests (besides the byte limit on every message, see
// HandlerOptions).
const (
	MaxListPageSize = 1000 // ListJobsRequest.page_size
	MaxReasonLen    = 1024 // CancelJobRequest.reason
	maxPageToken    = 1024 // ListJobsRequest.page_token
)

// JobOptions tunes a JobService. Zero fields get defaults.
type JobOptions struct {
	// Notifier wakes watch and log streams early (default: a private one that only sees
	// this service's own writes).
	Notifier *Notifier
	// PollInterval is how often an open WatchJob or StreamLogs(follow) stream re-reads
	// the store when no notification arrived (default 200ms).
	PollInterval time.Duration
	// LogPageSize is the most lines read from the store (and sent in one response) at a
	// time (default 500).
	LogPageSize int
	// Errors maps extra errors to codes (checked before the built-in mapping).
	Errors []ErrorCode
	// Sagas, if set, fills GetJobResponse.sagas (admin.go's AdminLogic has it).
	Sagas interface {
		JobSagas(ctx context.Context, jobID string) ([]*saga.Info, error)
	}
	// WorkerProvider, if set, names the provider of a job's worker in GetJob's
	// Job.provider.
	WorkerProvider func(ctx context.Context, workerID string) (string, error)
	// Secrets, if set, checks at submit that the secrets a job names exist in its
	// namespace; without it a job naming secrets is refused (FailedPrecondition).
	Secrets SecretChecker
	Logger  *slog.Logger
	// Explain, if set, answers ExplainJob (else Unimplemented): the job's state, one
	// line saying why it is there, and further facts (jobs.Service.Explain).
	Explain func(ctx context.Context, j *domain.Job) (state, summary string, details []string, err error)
}

// ExplainJob says in words why a job is where it is; a job the caller cannot see is
// NotFound, as for GetJob.
func (s *JobService) ExplainJob(ctx context.Context, req *connect.Request[hodeiv1.ExplainJobRequest]) (*connect.Response[hodeiv1.ExplainJobResponse], error) {
	if s.opts.Explain == nil {
		return nil, connect.NewError(connect.CodeUnimplemented, errors.New("this server does not explain jobs"))
	}
	if err := validID("id", req.Msg.GetId()); err != nil {
		return nil, err
	}
	j, err := s.visibleJob(ctx, req.Msg.GetId())
	if err != nil {
		return nil, err
	}
	state, summary, details, err := s.opts.Explain(ctx, j)
	if err != nil {
		return nil, s.err(err)
	}
	return connect.NewResponse(&hodeiv1.ExplainJobResponse{State: state, Summary: summary, Details: details}), nil
}

func (o *JobOptions) setDefaults() {
	if o.Notifier == nil {
		o.Notifier = NewNotifier()
	}
	if o.PollInterval == 0 {
		o.PollInterval = 200 * time.Millisecond
	}
	if o.LogPageSize == 0 {
		o.LogPageSize = 500
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Validate reports the first invalid field.
func (o *JobOptions) Validate() error {
	switch {
	case o.PollInterval < time.Millisecond:
		return fmt.Errorf("api: JobOptions.PollInterval %s below 1ms", o.PollInterval)
	case o.LogPageSize < 1 || o.LogPageSize > 10000:
		return fmt.Errorf("api: JobOptions.LogPageSize %d out of range [1, 10000]", o.LogPageSize)
	}
	return nil
}

// JobService implements hodeiv1connect.JobServiceHandler.
type JobService struct {
	jobs  JobReader
	logic JobLogic
	logs  LogReader
	opts  JobOptions
	log   *slog.Logger
}

var _ hodeiv1connect.JobServiceHandler = (*JobService)(nil)

// NewJobService returns the job API over jobs (reads), logic (writes) and logs.
func NewJobService(jobs JobReader, logic JobLogic, logs LogReader, opts JobOptions) (*JobService, error) {
	if jobs == nil || logic == nil || logs == nil {
		return nil, errors.New("api: NewJobService needs a JobReader, a JobLogic and a LogReader")
	}
	opts.setDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	return &JobService{jobs: jobs, logic: logic, logs: logs, opts: opts,
		log: opts.Logger.With("component", "api.jobs")}, nil
}

func (s *JobService) err(err error) error { return toConnect(err, s.opts.Errors) }

// SubmitJob validates the spec at the edge (InvalidArgument naming every bad field,
// nothing written) and submits it.
func (s *JobService) SubmitJob(ctx context.Context, req *connect.Request[hodeiv1.SubmitJobRequest]) (*connect.Response[hodeiv1.SubmitJobResponse], error) {
	if req.Msg.GetSpec() == nil {
		return nil, invalidArg("spec", "is required")
	}
	spec := protoconv.SpecFromProto(req.Msg.GetSpec())
	if spec.Namespace == "" {
		spec.Namespace = domain.DefaultNamespace
		if p, ok := auth.FromContext(ctx); ok {
			spec.Namespace = p.DefaultNamespace()
		}
	}
	if err := spec.Validate(); err != nil {
		return nil, s.err(err)
	}
	if p, ok := auth.FromContext(ctx); ok && !p.CanSee(spec.Namespace) {
		return nil, connect.NewError(connect.CodePermissionDenied,
			fmt.Errorf("namespace: token %q may not use namespace %q", p.Name, spec.Namespace))
	}
	if len(spec.Secrets) > 0 {
		if s.opts.Secrets == nil {
			return nil, connect.NewError(connect.CodeFailedPrecondition, errors.New("secrets: this server does not serve secrets"))
		}
		if err := s.opts.Secrets.Check(ctx, spec.Namespace, spec.Secrets); err != nil {
			return nil, s.err(err)
		}
	}
	j, err := s.logic.Submit(ctx, spec)
	if err != nil {
		return nil, s.err(err)
	}
	s.opts.Notifier.Notify(jobKey(j.ID))
	return connect.NewResponse(&hodeiv1.SubmitJobResponse{Job: protoconv.JobToProto(j)}), nil
}

// GetJob returns one job (NotFound if unknown).
func (s *JobService) GetJob(ctx context.Context, req *connect.Request[hodeiv1.GetJobRequest]) (*connect.Response[hodeiv1.GetJobResponse], error) {
	if err := validID("id", req.Msg.GetId()); err != nil {
		return nil, err
	}
	j, err := s.visibleJob(ctx, req.Msg.GetId())
	if err != nil {
		return nil, err
	}
	res := &hodeiv1.GetJobResponse{Job: protoconv.JobToProto(j)}
	if s.opts.WorkerProvider != nil && j.WorkerID != "" {
		if p, err := s.opts.WorkerProvider(ctx, j.WorkerID); err == nil {
			res.Job.Provider = p
		}
	}
	if s.opts.Sagas != nil {
		sagas, err := s.opts.Sagas.JobSagas(ctx, j.ID)
		if err != nil {
			return nil, s.err(err)
		}
		for _, in := range sagas {
			res.Sagas = append(res.Sagas, protoconv.SagaToProto(in))
		}
	}
	return connect.NewResponse(res), nil
}

// ListJobs lists jobs newest first, filtered by states (any) and labels (all).
func (s *JobService) ListJobs(ctx context.Context, req *connect.Request[hodeiv1.ListJobsRequest]) (*connect.Response[hodeiv1.ListJobsResponse], error) {
	m := req.Msg
	f := store.JobFilter{PageSize: int(m.GetPageSize()), PageToken: m.GetPageToken()}
	if f.PageSize < 0 || f.PageSize > MaxListPageSize {
		return nil, invalidArg("page_size", "must be between 0 (default) and %d, got %d", MaxListPageSize, f.PageSize)
	}
	if len(f.PageToken) > maxPageToken {
		return nil, invalidArg("page_token", "is %d bytes, the limit is %d", len(f.PageToken), maxPageToken)
	}
	if len(m.GetStates()) > len(domain.AllJobStates()) {
		return nil, invalidArg("states", "has %d entries, there are only %d states", len(m.GetStates()), len(domain.AllJobStates()))
	}
	for i, st := range m.GetStates() {
		js, err := domain.ParseJobState(st)
		if err != nil {
			return nil, invalidArg(fmt.Sprintf("states[%d]", i), "unknown state %q", st)
		}
		f.States = append(f.States, js)
	}
	if len(m.GetLabels()) > domain.MaxLabels {
		return nil, invalidArg("labels", "has %d entries, the limit is %d", len(m.GetLabels()), domain.MaxLabels)
	}
	for k, v := range m.GetLabels() {
		if len(k) > domain.MaxLabelKeyLen || len(v) > domain.MaxLabelValueLen {
			return nil, invalidArg("labels["+k+"]", "key or value too long (limits %d and %d bytes)",
				domain.MaxLabelKeyLen, domain.MaxLabelValueLen)
		}
	}
	f.Labels = protoconv.CloneMap(m.GetLabels())
	if p, ok := auth.FromContext(ctx); ok {
		if f.Namespaces = p.Visible(); f.Namespaces != nil && len(f.Namespaces) == 0 {
			return connect.NewResponse(&hodeiv1.ListJobsResponse{}), nil
		}
	}
	jobs, next, err := s.jobs.List(ctx, f)
	if err != nil {
		if errors.Is(err, store.ErrInvalidPageToken) {
			return nil, invalidArg("page_token", "is malformed (use next_page_token of a previous response)")
		}
		return nil, s.err(err)
	}
	out := &hodeiv1.ListJobsResponse{NextPageToken: next, Jobs: make([]*hodeiv1.Job, len(jobs))}
	for i, j := range jobs {
		out.Jobs[i] = protoconv.JobToProto(j)
	}
	return connect.NewResponse(out), nil
}

// CancelJob asks the logic to cancel the job.
func (s *JobService) CancelJob(ctx context.Context, req *connect.Request[hodeiv1.CancelJobRequest]) (*connect.Response[hodeiv1.CancelJobResponse], error) {
	if err := validID("id", req.Msg.GetId()); err != nil {
		return nil, err
	}
	if n := len(req.Msg.GetReason()); n > MaxReasonLen {
		return nil, invalidArg("reason", "is %d bytes, the limit is %d", n, MaxReasonLen)
	}
	if _, err := s.visibleJob(ctx, req.Msg.GetId()); err != nil {
		return nil, err
	}
	j, err := s.logic.Cancel(ctx, req.Msg.GetId(), req.Msg.GetReason())
	if err != nil {
		return nil, s.err(err)
	}
	s.opts.Notifier.Notify(jobKey(j.ID))
	return connect.NewResponse(&hodeiv1.CancelJobResponse{Job: protoconv.JobToProto(j)}), nil
}

// WatchJob sends the job, then the job again each time its state (or attempt) changed,
// and ends after a terminal state. Changes are found by re-reading the job on each
// notification and every PollInterval; states that come and go between two reads are
// not seen (the stream carries the latest state, not a history).
func (s *JobService) WatchJob(ctx context.Context, req *connect.Request[hodeiv1.WatchJobRequest], stream *connect.ServerStream[hodeiv1.WatchJobResponse]) error {
	id := req.Msg.GetId()
	if err := validID("id", id); err != nil {
		return err
	}
	wake, unsub := s.opts.Notifier.Subscribe(jobKey(id)) // before the first read: no change is missed
	defer unsub()
	tick := time.NewTicker(s.opts.PollInterval)
	defer tick.Stop()
	var last *domain.Job
	for {
		j, err := s.visibleJob(ctx, id)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if last == nil || j.State != last.State || j.Attempt != last.Attempt {
			if err := stream.Send(&hodeiv1.WatchJobResponse{Job: protoconv.JobToProto(j)}); err != nil {
				return err
			}
			last = j
		}
		if j.State.IsTerminal() {
			return nil
		}
		if !wait(ctx, wake, tick.C) {
			return nil
		}
	}
}

// StreamLogs sends the stored lines after after_seq, in pages; with follow it then
// keeps sending new lines until the job is terminal and every line stored before that
// was sent. Lines are read after the job's state: a worker sends its logs before its
// result on one ordered stream, so once a terminal state is seen, a final read gets
// every line.
func (s *JobService) StreamLogs(ctx context.Context, req *connect.Request[hodeiv1.StreamLogsRequest], stream *connect.ServerStream[hodeiv1.StreamLogsResponse]) error {
	id := req.Msg.GetId()
	if err := validID("id", id); err != nil {
		return err
	}
	after := req.Msg.GetAfterSeq()
	if after < 0 {
		return invalidArg("after_seq", "must not be negative, got %d", after)
	}
	wake, unsub := s.opts.Notifier.Subscribe(logsKey(id), jobKey(id))
	defer unsub()
	tick := time.NewTicker(s.opts.PollInterval)
	defer tick.Stop()
	for {
		j, err := s.visibleJob(ctx, id)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		for {
			lines, err := s.logs.ReadLogs(ctx, id, after, s.opts.LogPageSize)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return s.err(err)
			}
			if len(lines) == 0 {
				break
			}
			if err := stream.Send(&hodeiv1.StreamLogsResponse{Lines: protoconv.LogLinesToProto(lines)}); err != nil {
				return err
			}
			after = lines[len(lines)-1].Seq
			if len(lines) < s.opts.LogPageSize {
				break
			}
		}
		if !req.Msg.GetFollow() || j.State.IsTerminal() {
			return nil
		}
		if !wait(ctx, wake, tick.C) {
			return nil
		}
	}
}

// visibleJob reads job id for the caller in ctx: a job in a namespace the caller
// cannot see is NotFound with the same message as a job that does not exist, so its
// existence does not leak.
func (s *JobService) visibleJob(ctx context.Context, id string) (*domain.Job, error) {
	j, err := s.jobs.Get(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("id: no job %q", id))
	}
	if err == nil && !auth.CanSee(ctx, j.NamespaceOf()) {
		// The same answer; the audit trail records the refusal.
		return nil, connect.NewError(connect.CodeNotFound, auth.Hidden(fmt.Errorf("id: no job %q", id)))
	}
	if err != nil {
		return nil, s.err(err)
	}
	return j, nil
}

// wait blocks until a wake-up or a tick (true) or ctx's end (false).
func wait(ctx context.Context, wake <-chan struct{}, tick <-chan time.Time) bool {
	select {
	case <-ctx.Done():
		return false
	case <-wake:
	case <-tick:
	}
	return true
}
