package api

import (
	"net/http"
	"strconv"

	"github.com/hodei-jobs/hodei/auth"
	hodeiv1 "github.com/hodei-jobs/hodei/gen/hodei/v1"
	"github.com/hodei-jobs/hodei/gen/hodei/v1/hodeiv1connect"
)

// The API's one policy table: every Connect procedure of JobService and AdminService,
// and every REST route, with the least role it needs and the audit action of a
// successful call (package auth checks them in one interceptor and one middleware).
// Namespace scope is checked by the JobService handlers (auth.CanSee): a job the
// caller may not see is NotFound. WorkerAgentService is not here: workers
// authenticate with their one-time password and session tokens (workers.go).
//
// A procedure missing here is refused whatever the token, and NewMux refuses to mount
// a REST route without a policy; TestPolicyTable builds the procedure × role table
// from the service descriptors.

// procedurePolicies is the policy of every Connect procedure.
func procedurePolicies() map[string]auth.Policy {
	viewer := auth.Policy{Role: auth.RoleViewer}
	admin := auth.Policy{Role: auth.RoleAdmin}
	return map[string]auth.Policy{
		hodeiv1connect.JobServiceSubmitJobProcedure:  {Role: auth.RoleSubmitter, Action: "job.submit"},
		hodeiv1connect.JobServiceGetJobProcedure:     viewer,
		hodeiv1connect.JobServiceExplainJobProcedure: viewer,
		hodeiv1connect.JobServiceListJobsProcedure:   viewer,
		hodeiv1connect.JobServiceCancelJobProcedure:  {Role: auth.RoleSubmitter, Action: "job.cancel"},
		hodeiv1connect.JobServiceWatchJobProcedure:   viewer,
		hodeiv1connect.JobServiceStreamLogsProcedure: viewer,

		// Reading procedures of the admin API need admin too: dead letters carry
		// command payloads and saga histories step outputs, which are operator data.
		hodeiv1connect.AdminServiceResumeJobProcedure:         {Role: auth.RoleAdmin, Action: "job.resume"},
		hodeiv1connect.AdminServiceListDeadLettersProcedure:   admin,
		hodeiv1connect.AdminServiceRequeueDeadLetterProcedure: {Role: auth.RoleAdmin, Action: "dead_letter.requeue"},
		hodeiv1connect.AdminServiceListJobSagasProcedure:      admin,
		hodeiv1connect.AdminServiceListSagasProcedure:         admin,
		hodeiv1connect.AdminServiceGetSagaHistoryProcedure:    admin,
		hodeiv1connect.AdminServiceCreateTokenProcedure:       {Role: auth.RoleAdmin, Action: "token.create"},
		hodeiv1connect.AdminServiceListTokensProcedure:        admin,
		hodeiv1connect.AdminServiceRevokeTokenProcedure:       {Role: auth.RoleAdmin, Action: "token.revoke"},
		hodeiv1connect.AdminServiceListAuditProcedure:         admin,

		// Secrets (secrets.go): only admins change them; a submitter may list the names
		// of its namespaces (to name them in jobs). Values never come out of the API.
		hodeiv1connect.SecretServiceSetSecretProcedure:        {Role: auth.RoleAdmin, Action: "secret.set"},
		hodeiv1connect.SecretServiceListSecretsProcedure:      {Role: auth.RoleSubmitter},
		hodeiv1connect.SecretServiceDeleteSecretProcedure:     {Role: auth.RoleAdmin, Action: "secret.delete"},
		hodeiv1connect.SecretServiceRotateSecretsKeyProcedure: {Role: auth.RoleAdmin, Action: "secret.rotate_key"},

		hodeiv1connect.AdminServiceSetNamespaceProcedure:   {Role: auth.RoleAdmin, Action: "namespace.set"},
		hodeiv1connect.AdminServiceListNamespacesProcedure: admin,
	}
}

// REST routes (http.ServeMux patterns) and their policies.
const (
	routeHealthz       = "GET /healthz"
	routeReadyz        = "GET /readyz"
	routeMetrics       = "GET /metrics"
	routeAdminResume   = "POST /api/v1/admin/jobs/{job_id}/resume"
	routeAdminJobSagas = "GET /api/v1/admin/jobs/{job_id}/sagas"
	routeAdminSaga     = "GET /api/v1/admin/sagas/{saga_id}"
	routeAdminDeadList = "GET /api/v1/admin/outbox/dead-letters"
	routeAdminRequeue  = "POST /api/v1/admin/outbox/{id}/requeue"
	routeAdminStatus   = "GET /api/v1/admin/status"
)

// routePolicies is the policy of every REST route.
func routePolicies() map[string]auth.Policy {
	admin := auth.Policy{Role: auth.RoleAdmin}
	return map[string]auth.Policy{
		routeHealthz: {Public: true},
		routeReadyz:  {Public: true},
		// Metrics are platform-wide aggregates (no job ids, names or namespaces in
		// them), so any token that may read jobs may scrape them: Prometheus sends
		// a viewer token (authorization.credentials_file). Without --auth the
		// anonymous caller qualifies, as for job list. --metrics-listen serves the
		// same registry without authentication, for scrapers on a private address.
		routeMetrics:       {Role: auth.RoleViewer},
		routeAdminResume:   {Role: auth.RoleAdmin, Action: "job.resume"},
		routeAdminJobSagas: admin,
		routeAdminSaga:     admin,
		routeAdminDeadList: admin,
		routeAdminRequeue:  {Role: auth.RoleAdmin, Action: "dead_letter.requeue"},
		routeAdminStatus:   admin,
	}
}

// describeCall tells the audit trail what a successful change acted on.
func describeCall(req, res any) (target, namespace string) {
	switch m := res.(type) {
	case *hodeiv1.SubmitJobResponse:
		return m.GetJob().GetId(), m.GetJob().GetSpec().GetNamespace()
	case *hodeiv1.CancelJobResponse:
		return m.GetJob().GetId(), m.GetJob().GetSpec().GetNamespace()
	case *hodeiv1.ResumeJobResponse:
		return m.GetJob().GetId(), m.GetJob().GetSpec().GetNamespace()
	case *hodeiv1.CreateTokenResponse:
		return m.GetToken().GetName(), ""
	case *hodeiv1.RevokeTokenResponse:
		return m.GetToken().GetName(), ""
	case *hodeiv1.SetSecretResponse:
		return m.GetSecret().GetName(), m.GetSecret().GetNamespace()
	case *hodeiv1.DeleteSecretResponse:
		return m.GetSecret().GetName(), m.GetSecret().GetNamespace()
	case *hodeiv1.SetNamespaceResponse:
		return m.GetNamespace().GetName(), m.GetNamespace().GetName()
	}
	if m, ok := req.(*hodeiv1.RequeueDeadLetterRequest); ok {
		return strconv.FormatInt(m.GetId(), 10), ""
	}
	return "", ""
}

// describeRoute tells the audit trail what a successful REST change acted on.
func describeRoute(r *http.Request) (target, namespace string) {
	if id := r.PathValue("job_id"); id != "" {
		return id, ""
	}
	return r.PathValue("id"), ""
}
