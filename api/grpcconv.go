package api

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"

	"github.com/hodei-jobs/hodei/auth"
	"github.com/hodei-jobs/hodei/gen/hodei/v1/hodeiv1connect"
)

// The conventions gRPC tools expect, beside /healthz and /readyz:
//
//   - grpc.health.v1.Health (public, like /readyz): the whole server ("") and each of
//     our services are SERVING when every readiness probe passes, else NOT_SERVING;
//     Kubernetes gRPC probes use it.
//   - gRPC server reflection, v1 and v1alpha (grpcurl, Postman, Evans): the services
//     listed are those the caller may call at least one procedure of (policy.go), by
//     the token it sends; a caller without a valid token sees the health service
//     only. The worker stream's service is listed to admins only (workers do not use
//     reflection).

// healthChecker answers grpc.health.v1 from the readiness probes.
type healthChecker struct {
	checks   []Check
	timeout  time.Duration
	services []string
}

func (h *healthChecker) Check(ctx context.Context, req *grpchealth.CheckRequest) (*grpchealth.CheckResponse, error) {
	if req.Service != "" && !slices.Contains(h.services, req.Service) {
		return nil, connect.NewError(connect.CodeNotFound, nil)
	}
	ctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	for _, c := range h.checks {
		if err := c.Check(ctx); err != nil {
			return &grpchealth.CheckResponse{Status: grpchealth.StatusNotServing}, nil
		}
	}
	return &grpchealth.CheckResponse{Status: grpchealth.StatusServing}, nil
}

// serviceOf is the service of a procedure "/pkg.Service/Method".
func serviceOf(procedure string) string {
	s, _, _ := strings.Cut(strings.TrimPrefix(procedure, "/"), "/")
	return s
}

// servicesFor returns the services role may call a procedure of, health included.
func servicesFor(role auth.Role, served []string) []string {
	out := []string{grpchealth.HealthV1ServiceName}
	for proc, pol := range procedurePolicies() {
		s := serviceOf(proc)
		if !pol.Public && (pol.Role == auth.RoleNone || role < pol.Role) {
			continue
		}
		if slices.Contains(served, s) && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	if role == auth.RoleAdmin {
		out = append(out, hodeiv1connect.WorkerAgentServiceName)
	}
	slices.Sort(out)
	return out
}

// mountGRPCConventions mounts health and reflection on mux for the services served.
func mountGRPCConventions(mux *http.ServeMux, authn *auth.Authenticator, served []string, checks []Check, timeout time.Duration, opts []connect.HandlerOption) {
	mux.Handle(grpchealth.NewHandler(&healthChecker{checks: checks, timeout: timeout,
		services: append(slices.Clone(served), hodeiv1connect.WorkerAgentServiceName)}, opts...))
	// One reflector per role; the caller's token picks one.
	type pair struct{ v1, v1alpha http.Handler }
	byRole := map[auth.Role]pair{}
	var v1Path, v1alphaPath string
	for _, role := range []auth.Role{auth.RoleNone, auth.RoleViewer, auth.RoleSubmitter, auth.RoleAdmin} {
		names := servicesFor(role, served)
		if role == auth.RoleNone {
			names = []string{grpchealth.HealthV1ServiceName}
		}
		r := grpcreflect.NewStaticReflector(names...)
		p1, h1 := grpcreflect.NewHandlerV1(r, opts...)
		pa, ha := grpcreflect.NewHandlerV1Alpha(r, opts...)
		v1Path, v1alphaPath = p1, pa
		byRole[role] = pair{h1, ha}
	}
	pick := func(alpha bool) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			role := auth.RoleNone
			if p, err := authn.Authenticate(r.Context(), r.Header, r.RemoteAddr); err == nil {
				role = p.Role
			}
			h := byRole[role].v1
			if alpha {
				h = byRole[role].v1alpha
			}
			h.ServeHTTP(w, r)
		})
	}
	mux.Handle(v1Path, pick(false))
	mux.Handle(v1alphaPath, pick(true))
}
