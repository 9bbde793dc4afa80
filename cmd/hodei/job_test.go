package main

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	hodeiv1 "github.com/hodei-jobs/hodei/gen/hodei/v1"
)

// closedServerURL returns the URL of a local port nothing listens on.
func closedServerURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

// Bad flags are refused before any RPC: the server URL points at a closed port, so an
// error naming the flag (not "cannot reach") proves nothing was sent.
func TestJobFlagErrorsNameTheFlag(t *testing.T) {
	srv := closedServerURL(t)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"job", "submit", "--env", "FOO", "--", "true"}, `--env: want K=V, got "FOO"`},
		{[]string{"job", "run", "--label", "=x", "--", "true"}, `--label: want K=V, got "=x" (empty name)`},
		{[]string{"job", "submit", "--timeout", "-5s", "--", "true"}, "--timeout: must not be negative"},
		{[]string{"job", "submit", "--timeout", "soon", "--", "true"}, `invalid argument "soon" for "--timeout"`},
		{[]string{"job", "submit", "--max-attempts", "-1", "--", "true"}, "--max-attempts: must not be negative"},
		{[]string{"job", "submit", "--interpreter", "/bin/bash", "--", "true"}, "--interpreter: only meaningful with --script"},
		{[]string{"job", "submit", "--script", "/nonexistent/x.sh"}, "--script: open /nonexistent/x.sh"},
		{[]string{"job", "submit"}, "command: missing"},
		{[]string{"job", "list", "--state", "RUNNNING"}, `--state: unknown state "RUNNNING"`},
		{[]string{"job", "list", "--label", "team"}, `--label: want K=V, got "team"`},
		{[]string{"job", "get", "x", "-o", "yaml"}, `--output: unknown format "yaml"`},
		{[]string{"job", "get", "x", "--server", "127.0.0.1:7070"}, "--server: want an http:// or https:// URL"},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args[1:], " "), func(t *testing.T) {
			// --server right after the subcommand: before "--" and before any later
			// --server of the case (the last one given wins).
			args := append([]string{tc.args[0], tc.args[1], "--server=" + srv}, tc.args[2:]...)
			out, err := runHodei(t, args...)
			if err == nil {
				t.Fatalf("hodei %v succeeded, want error containing %q; output %q", args, tc.want, out)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("hodei %v: error %q, want it to contain %q", args, err, tc.want)
			}
		})
	}
}

func TestJobUnreachableServer(t *testing.T) {
	srv := closedServerURL(t)
	for _, args := range [][]string{
		{"job", "submit", "--server", srv, "--", "true"},
		{"job", "run", "--server", srv, "--", "true"},
		{"job", "get", "--server", srv, "some-id"},
		{"job", "list", "--server", srv},
		{"job", "logs", "--server", srv, "--follow", "some-id"},
		{"job", "cancel", "--server", srv, "some-id"},
	} {
		_, err := runHodei(t, args...)
		want := "cannot reach the Hodei server at " + srv + ": is `hodei server` running? (set --server or HODEI_SERVER)"
		if err == nil || err.Error() != want {
			t.Errorf("hodei %v: error %v, want %q", args, err, want)
		}
	}
	// HODEI_SERVER is the default of --server.
	t.Setenv(envServer, srv)
	if _, err := runHodei(t, "job", "list"); err == nil || !strings.Contains(err.Error(), srv) {
		t.Errorf("hodei job list with %s=%s: error %v, want it to name that URL", envServer, srv, err)
	}
}

func TestSpecFromFlags(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "s.sh")
	if err := os.WriteFile(script, []byte("echo hi\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f := specFlags{name: "n", timeout: 90e9, env: []string{"A=1", "B=x=y", "A=2"}, labels: []string{"team=core"},
		maxAttempts: 3, priority: -7}
	got, err := f.spec([]string{"sh", "-c", "exit 3"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := &hodeiv1.JobSpec{Name: "n", Command: []string{"sh", "-c", "exit 3"},
		Env: map[string]string{"A": "2", "B": "x=y"}, Labels: map[string]string{"team": "core"},
		Timeout: durationpb.New(90e9), MaxAttempts: 3, Priority: -7}
	if !proto.Equal(got, want) {
		t.Fatalf("spec = %v, want %v", got, want)
	}

	f = specFlags{script: script, interpreter: "/bin/bash"}
	got, err = f.spec(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.GetScript().GetContent() != "echo hi\n" || got.GetScript().GetInterpreter() != "/bin/bash" || got.Command != nil {
		t.Fatalf("script spec = %v", got)
	}
	f = specFlags{script: "-"}
	got, err = f.spec(nil, strings.NewReader("exit 0"))
	if err != nil || got.GetScript().GetContent() != "exit 0" {
		t.Fatalf("script from stdin: %v, %v", got, err)
	}
	f = specFlags{script: script}
	if _, err := f.spec([]string{"true"}, nil); err == nil || !strings.Contains(err.Error(), "--script") {
		t.Fatalf("script and command: error %v, want one naming --script", err)
	}
}

func TestJobOutcome(t *testing.T) {
	code := func(c int32) *int32 { return &c }
	cases := []struct {
		job      *hodeiv1.Job
		wantCode int // 0: nil error
		wantMsg  string
	}{
		{&hodeiv1.Job{Id: "j", State: "SUCCEEDED", ExitCode: code(0)}, 0, ""},
		{&hodeiv1.Job{Id: "j", State: "FAILED", ExitCode: code(3)}, 3, ""},
		{&hodeiv1.Job{Id: "j", State: "FAILED", ExitCode: code(3), LastError: "exit code 3"}, 3, ""},
		{&hodeiv1.Job{Id: "j", State: "FAILED", ExitCode: code(127), LastError: "start x: no such file"}, 127,
			"job j FAILED with exit code 127: start x: no such file"},
		{&hodeiv1.Job{Id: "j", State: "FAILED", LastError: "exec: \"nope\": not found\n"}, exitJobFailed,
			`job j FAILED: exec: "nope": not found`},
		{&hodeiv1.Job{Id: "j", State: "FAILED"}, exitJobFailed, "job j FAILED: no exit code"},
		{&hodeiv1.Job{Id: "j", State: "TIMED_OUT", Spec: &hodeiv1.JobSpec{Timeout: durationpb.New(2e9)}},
			exitJobTimedOut, "job j TIMED_OUT after 2s"},
		{&hodeiv1.Job{Id: "j", State: "TIMED_OUT", LastError: "timed out after 2s", Spec: &hodeiv1.JobSpec{Timeout: durationpb.New(2e9)}},
			exitJobTimedOut, "job j TIMED_OUT: timed out after 2s"},
		{&hodeiv1.Job{Id: "j", State: "CANCELLED", LastError: "by alice"}, exitJobCancelled, "job j CANCELLED: by alice"},
		{&hodeiv1.Job{Id: "j", State: "MANUAL_INTERVENTION_REQUIRED"}, exitJobReview,
			"job j needs an operator (MANUAL_INTERVENTION_REQUIRED)"},
	}
	for _, tc := range cases {
		err := jobOutcome(tc.job)
		if tc.wantCode == 0 {
			if err != nil {
				t.Errorf("%v: %v, want nil", tc.job, err)
			}
			continue
		}
		var ee *exitError
		if !errors.As(err, &ee) || ee.Code != tc.wantCode || ee.Msg != tc.wantMsg {
			t.Errorf("%v: %#v, want code %d msg %q", tc.job, err, tc.wantCode, tc.wantMsg)
		}
	}
}
