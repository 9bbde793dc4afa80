package agent

import (
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	hodeiv1 "github.com/hodei-jobs/hodei/gen/hodei/v1"
)

// FuzzServerMessage fuzzes what the agent does with a server message before any
// process runs: decoding it, choosing what to do, and building the job's environment.
// The environment is sorted, one KEY=VALUE per distinct key (base, HODEI_JOB_ID and the
// job's own), and a job's value wins over the base's.
func FuzzServerMessage(f *testing.F) {
	for _, m := range []*hodeiv1.ServerMessage{
		{MessageId: "m1", Payload: &hodeiv1.ServerMessage_RunJob{RunJob: &hodeiv1.RunJob{JobId: "j1", Attempt: 1,
			Spec: &hodeiv1.JobSpec{Command: []string{"echo", "hi"}, Env: map[string]string{"A": "b", "PATH": "/x"}}}}},
		{MessageId: "m2", Payload: &hodeiv1.ServerMessage_Cancel{Cancel: &hodeiv1.CancelJob{JobId: "j1"}}},
		{MessageId: "m3", Payload: &hodeiv1.ServerMessage_Ack{Ack: &hodeiv1.Ack{MessageId: "w1"}}},
		{Payload: &hodeiv1.ServerMessage_RunJob{RunJob: &hodeiv1.RunJob{JobId: "j2",
			Spec: &hodeiv1.JobSpec{Env: map[string]string{"HODEI_JOB_ID": "other", "": "x", "K=V": "w"}}}}},
	} {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	base := map[string]string{"PATH": defaultPath, "HOME": "/"}
	f.Fuzz(func(t *testing.T, b []byte) {
		var m hodeiv1.ServerMessage
		if err := proto.Unmarshal(b, &m); err != nil {
			return
		}
		rj := m.GetRunJob()
		if rj == nil {
			return
		}
		jobEnv := rj.GetSpec().GetEnv()
		env := mergeEnv(base, jobEnv, rj.GetJobId())
		if !slices.IsSorted(env) {
			t.Fatalf("environment not sorted: %q", env)
		}
		keys := map[string]bool{"HODEI_JOB_ID": true}
		for k := range base {
			keys[k] = true
		}
		for k := range jobEnv {
			keys[k] = true
		}
		if len(env) != len(keys) {
			t.Fatalf("%d entries for %d keys: %q", len(env), len(keys), env)
		}
		for k, v := range jobEnv {
			if !slices.Contains(env, k+"="+v) {
				t.Fatalf("job variable %q=%q missing from %q", k, v, env)
			}
		}
		for k, v := range base {
			if _, set := jobEnv[k]; !set && !slices.Contains(env, k+"="+v) {
				t.Fatalf("base variable %s missing from %q", k, env)
			}
		}
		if _, set := jobEnv["HODEI_JOB_ID"]; !set && !slices.Contains(env, "HODEI_JOB_ID="+rj.GetJobId()) {
			t.Fatalf("HODEI_JOB_ID missing from %q", env)
		}
	})
}
