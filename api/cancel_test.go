package api_test

import (
	"strings"
	"testing"

	"connectrpc.com/connect"

	"github.com/hodei-jobs/hodei/domain"
	hodeiv1 "github.com/hodei-jobs/hodei/gen/hodei/v1"
)

// TestCancelFinishedMessage: cancelling an ended job is FailedPrecondition with a
// message that says why.
func TestCancelFinishedMessage(t *testing.T) {
	e := newEnv(t, false)
	j := e.submit(t, echoSpec(nil))
	forceState(t, e.st, j.GetId(), domain.JobProvisioning, domain.JobAssigned, domain.JobRunning, domain.JobSucceeded)
	_, err := e.jobs.CancelJob(t.Context(), connect.NewRequest(&hodeiv1.CancelJobRequest{Id: j.GetId()}))
	if code := codeOf(t, err); code != connect.CodeFailedPrecondition {
		t.Fatalf("cancel SUCCEEDED job: %v, want FailedPrecondition", err)
	}
	if want := "job " + j.GetId() + " already SUCCEEDED; nothing to cancel"; !strings.Contains(err.Error(), want) {
		t.Fatalf("message %q lacks %q", err, want)
	}
}
