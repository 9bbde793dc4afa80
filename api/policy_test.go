package api

import (
	"testing"

	hodeiv1 "github.com/hodei-jobs/hodei/gen/hodei/v1"
	"github.com/hodei-jobs/hodei/gen/hodei/v1/hodeiv1connect"
)

// TestAdminPolicyCoversEveryRPC: every AdminService method of the proto has an access
// policy, so an RPC added to the proto without one fails here (and would be refused).
func TestAdminPolicyCoversEveryRPC(t *testing.T) {
	sd := hodeiv1.File_hodei_v1_hodei_proto.Services().ByName("AdminService")
	if sd == nil || sd.Methods().Len() < 5 {
		t.Fatalf("AdminService descriptor = %v", sd)
	}
	for i := range sd.Methods().Len() {
		proc := "/" + hodeiv1connect.AdminServiceName + "/" + string(sd.Methods().Get(i).Name())
		if adminProcedureAccess(proc) == accessNone {
			t.Errorf("%s has no access policy in adminProcedureAccess", proc)
		}
	}
	if adminProcedureAccess("/"+hodeiv1connect.AdminServiceName+"/NoSuchRPC") != accessNone {
		t.Error("an unknown procedure has access")
	}
}
