package api

import (
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/hodei-jobs/hodei/auth"
	hodeiv1 "github.com/hodei-jobs/hodei/gen/hodei/v1"
)

// TestPolicyTable builds the (procedure × role) table from the service descriptors of
// every service behind the policy interceptor: a procedure added to the proto without
// a policy fails here (and would be refused). It also pins who may call what.
func TestPolicyTable(t *testing.T) {
	policies := procedurePolicies()
	roles := []auth.Role{auth.RoleViewer, auth.RoleSubmitter, auth.RoleAdmin}
	// The expected table: the least role of each procedure.
	want := map[string]auth.Role{
		"JobService/SubmitJob": auth.RoleSubmitter, "JobService/CancelJob": auth.RoleSubmitter,
		"JobService/GetJob": auth.RoleViewer, "JobService/ListJobs": auth.RoleViewer,
		"JobService/WatchJob": auth.RoleViewer, "JobService/StreamLogs": auth.RoleViewer,
		"SecretService/SetSecret": auth.RoleAdmin, "SecretService/DeleteSecret": auth.RoleAdmin,
		"SecretService/RotateSecretsKey": auth.RoleAdmin, "SecretService/ListSecrets": auth.RoleSubmitter,
	}
	var table strings.Builder
	seen := 0
	for _, svc := range []string{"JobService", "AdminService", "SecretService"} {
		sd := hodeiv1.File_hodei_v1_hodei_proto.Services().ByName(protoreflect.Name(svc))
		if sd == nil {
			sd = hodeiv1.File_hodei_v1_secrets_proto.Services().ByName(protoreflect.Name(svc))
		}
		if sd == nil || sd.Methods().Len() < 4 {
			t.Fatalf("%s descriptor = %v", svc, sd)
		}
		for i := range sd.Methods().Len() {
			m := sd.Methods().Get(i)
			proc := "/hodei.v1." + svc + "/" + string(m.Name())
			pol, ok := policies[proc]
			if !ok || (pol.Role == auth.RoleNone && !pol.Public) {
				t.Errorf("%s has no policy in procedurePolicies", proc)
				continue
			}
			if pol.Public {
				t.Errorf("%s is public: only health probes may be", proc)
			}
			seen++
			least, pinned := want[svc+"/"+string(m.Name())]
			if !pinned && svc == "AdminService" {
				least, pinned = auth.RoleAdmin, true
			}
			fmt.Fprintf(&table, "%-45s", proc)
			for _, r := range roles {
				allowed := r >= pol.Role
				fmt.Fprintf(&table, " %s=%v", r, allowed)
				if pinned && allowed != (r >= least) {
					t.Errorf("%s for %s: allowed=%v, want %v", proc, r, allowed, r >= least)
				}
			}
			table.WriteString("\n")
			if (m.IsStreamingServer() || m.IsStreamingClient()) && pol.Action != "" {
				t.Errorf("%s streams but has audit action %q (only unary changes are audited)", proc, pol.Action)
			}
		}
	}
	if seen != len(policies) {
		t.Errorf("procedurePolicies has %d entries, the services have %d procedures: remove stale ones", len(policies), seen)
	}
	t.Logf("procedure × role:\n%s", table.String())
	for _, p := range []string{"SubmitJob", "CancelJob", "ResumeJob", "RequeueDeadLetter", "CreateToken", "RevokeToken",
		"SetSecret", "DeleteSecret", "RotateSecretsKey", "SetNamespace"} {
		found := false
		for proc, pol := range policies {
			if strings.HasSuffix(proc, "/"+p) && pol.Action != "" {
				found = true
			}
		}
		if !found {
			t.Errorf("%s is a change but has no audit action", p)
		}
	}
	// The worker stream is not behind the interceptor (its own session auth).
	for proc := range policies {
		if strings.Contains(proc, "WorkerAgentService") {
			t.Errorf("%s is in the user policy table", proc)
		}
	}
	for pattern, pol := range routePolicies() {
		if !pol.Public && pol.Role == auth.RoleNone {
			t.Errorf("route %s refuses everyone", pattern)
		}
		if pol.Public && pattern != routeHealthz && pattern != routeReadyz {
			t.Errorf("route %s is public", pattern)
		}
	}
}
