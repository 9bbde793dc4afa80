package api

import (
	"slices"
	"testing"

	"github.com/hodei-jobs/hodei/auth"
	"github.com/hodei-jobs/hodei/gen/hodei/v1/hodeiv1connect"
)

// Reflection lists only the services a caller may call something of.
func TestReflectionListsWhatTheRoleMayCall(t *testing.T) {
	served := []string{hodeiv1connect.JobServiceName, hodeiv1connect.AdminServiceName}
	viewer := servicesFor(auth.RoleViewer, served)
	if !slices.Contains(viewer, hodeiv1connect.JobServiceName) || slices.Contains(viewer, hodeiv1connect.AdminServiceName) ||
		slices.Contains(viewer, hodeiv1connect.WorkerAgentServiceName) {
		t.Errorf("viewer sees %v, want JobService without AdminService and the worker service", viewer)
	}
	admin := servicesFor(auth.RoleAdmin, served)
	for _, want := range []string{hodeiv1connect.JobServiceName, hodeiv1connect.AdminServiceName, hodeiv1connect.WorkerAgentServiceName, "grpc.health.v1.Health"} {
		if !slices.Contains(admin, want) {
			t.Errorf("admin sees %v, missing %s", admin, want)
		}
	}
	if got := servicesFor(auth.RoleAdmin, []string{hodeiv1connect.JobServiceName}); slices.Contains(got, hodeiv1connect.AdminServiceName) {
		t.Errorf("a service not served is listed: %v", got)
	}
}
