package jobs

import (
	"maps"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/hodei-jobs/hodei/domain"
	hodeiv1 "github.com/hodei-jobs/hodei/gen/hodei/v1"
)

// specToProto converts a spec for RunJob (the api package has the full set of
// conversions; jobs does not import api).
func specToProto(s domain.JobSpec) *hodeiv1.JobSpec {
	p := &hodeiv1.JobSpec{
		Name:        s.Name,
		Command:     append([]string(nil), s.Command...),
		Env:         maps.Clone(s.Env),
		WorkingDir:  s.WorkingDir,
		Labels:      maps.Clone(s.Labels),
		MaxAttempts: int32(s.MaxAttempts),
		Priority:    int32(s.Priority),
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
