// Package protoconv converts between the domain types and the API's protobuf messages;
// the api package (requests, responses) and the jobs package (RunJob) share it.
package protoconv

import (
	"maps"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hodei-jobs/hodei/domain"
	hodeiv1 "github.com/hodei-jobs/hodei/gen/hodei/v1"
	"github.com/hodei-jobs/hodei/saga"
	"github.com/hodei-jobs/hodei/store"
)

// Conversions between the domain types and their protobuf messages. The job state
// travels as the domain's state name ("RUNNING"); durations as google.protobuf.Duration
// (a zero or unset one is "no timeout"); times as google.protobuf.Timestamp, unset when
// the domain time is zero.

// SpecFromProto converts a submitted spec. It does not validate: that is
// domain.JobSpec.Validate's job, so that errors name the domain's field names. A nil
// spec gives the zero spec (which fails validation on "command").
func SpecFromProto(p *hodeiv1.JobSpec) domain.JobSpec {
	if p == nil {
		return domain.JobSpec{}
	}
	s := domain.JobSpec{
		Name:        p.GetName(),
		Command:     append([]string(nil), p.GetCommand()...),
		Env:         CloneMap(p.GetEnv()),
		WorkingDir:  p.GetWorkingDir(),
		Labels:      CloneMap(p.GetLabels()),
		MaxAttempts: int(p.GetMaxAttempts()),
		Priority:    int(p.GetPriority()),
		Namespace:   p.GetNamespace(),
		Image:       p.GetImage(),
		Pull:        domain.PullPolicy(p.GetPull()),
		Provider:    p.GetProvider(),
		Selector:    CloneMap(p.GetSelector()),
		Secrets:     secretRefsFromProto(p.GetSecrets()),
	}
	if sc := p.GetScript(); sc != nil {
		s.Script = &domain.Script{Content: sc.GetContent(), Interpreter: sc.GetInterpreter()}
	}
	if r := p.GetResources(); r != nil {
		s.Resources = domain.Resources{CPUMillis: r.GetCpuMillis(), MemoryBytes: r.GetMemoryBytes()}
	}
	if d := p.GetTimeout(); d != nil {
		// AsDuration keeps the sign (a negative timeout is then refused by Validate,
		// naming "timeout") and saturates values beyond time.Duration's range, which
		// Validate refuses as over MaxTimeout.
		s.Timeout = d.AsDuration()
	}
	return s
}

// SpecToProto converts a domain spec.
func SpecToProto(s domain.JobSpec) *hodeiv1.JobSpec {
	p := &hodeiv1.JobSpec{
		Name:        s.Name,
		Command:     append([]string(nil), s.Command...),
		Env:         CloneMap(s.Env),
		WorkingDir:  s.WorkingDir,
		Labels:      CloneMap(s.Labels),
		MaxAttempts: int32(s.MaxAttempts),
		Priority:    int32(s.Priority),
		Namespace:   s.Namespace,
		Image:       s.Image,
		Pull:        string(s.Pull),
		Provider:    s.Provider,
		Selector:    CloneMap(s.Selector),
		Secrets:     secretRefsToProto(s.Secrets),
	}
	if s.Script != nil {
		p.Script = &hodeiv1.Script{Content: s.Script.Content, Interpreter: s.Script.Interpreter}
	}
	if s.Resources != (domain.Resources{}) {
		p.Resources = &hodeiv1.Resources{CpuMillis: s.Resources.CPUMillis, MemoryBytes: s.Resources.MemoryBytes}
	}
	if s.Timeout != 0 {
		p.Timeout = durationpb.New(s.Timeout)
	}
	return p
}

// JobToProto converts a job; nil gives nil.
func JobToProto(j *domain.Job) *hodeiv1.Job {
	if j == nil {
		return nil
	}
	p := &hodeiv1.Job{
		Id:         j.ID,
		Spec:       SpecToProto(j.Spec),
		State:      string(j.State),
		Attempt:    int32(j.Attempt),
		WorkerId:   j.WorkerID,
		LastError:  j.LastError,
		Resolution: j.Resolution,
		Notes:      j.Notes,
		CreatedAt:  TimeToProto(j.CreatedAt),
		UpdatedAt:  TimeToProto(j.UpdatedAt),
		StartedAt:  TimeToProto(j.StartedAt),
		FinishedAt: TimeToProto(j.FinishedAt),
	}
	if j.ExitCode != nil {
		c := int32(*j.ExitCode)
		p.ExitCode = &c
	}
	return p
}

// TimeToProto converts a time; the zero time gives nil.
func TimeToProto(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// CloneMap copies m; an empty map gives nil.
func CloneMap(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	return maps.Clone(m)
}

// LogLinesFromProto converts a worker's log lines (their job id is the batch's, set by
// the job logic).
func LogLinesFromProto(lines []*hodeiv1.LogLine) []*store.LogLine {
	out := make([]*store.LogLine, len(lines))
	for i, l := range lines {
		ll := &store.LogLine{Seq: l.GetSeq(), Line: l.GetLine()}
		switch l.GetStream() {
		case hodeiv1.LogStream_LOG_STREAM_STDOUT:
			ll.Stream = store.StreamStdout
		case hodeiv1.LogStream_LOG_STREAM_STDERR:
			ll.Stream = store.StreamStderr
		}
		if l.GetTime() != nil {
			ll.Time = l.GetTime().AsTime()
		}
		out[i] = ll
	}
	return out
}

// LogLinesToProto converts stored log lines for a client.
func LogLinesToProto(lines []*store.LogLine) []*hodeiv1.LogLine {
	out := make([]*hodeiv1.LogLine, len(lines))
	for i, l := range lines {
		p := &hodeiv1.LogLine{Seq: l.Seq, Line: l.Line, Time: timestamppb.New(l.Time)}
		switch l.Stream {
		case store.StreamStdout:
			p.Stream = hodeiv1.LogStream_LOG_STREAM_STDOUT
		case store.StreamStderr:
			p.Stream = hodeiv1.LogStream_LOG_STREAM_STDERR
		}
		out[i] = p
	}
	return out
}

// SagaToProto converts a saga's summary.
func SagaToProto(in *saga.Info) *hodeiv1.SagaSummary {
	return &hodeiv1.SagaSummary{Id: in.ID, Type: in.Type, State: string(in.State), CurrentStep: int32(in.CurrentStep),
		CurrentStepName: in.CurrentStepName, Error: in.Error,
		CreatedAt: TimeToProto(in.CreatedAt), UpdatedAt: TimeToProto(in.UpdatedAt)}
}

func secretRefsFromProto(p []*hodeiv1.SecretRef) []domain.SecretRef {
	if len(p) == 0 {
		return nil
	}
	out := make([]domain.SecretRef, len(p))
	for i, r := range p {
		out[i] = domain.SecretRef{Name: r.GetName(), Env: r.GetEnv()}
	}
	return out
}

func secretRefsToProto(s []domain.SecretRef) []*hodeiv1.SecretRef {
	if len(s) == 0 {
		return nil
	}
	out := make([]*hodeiv1.SecretRef, len(s))
	for i, r := range s {
		out[i] = &hodeiv1.SecretRef{Name: r.Name, Env: r.Env}
	}
	return out
}
