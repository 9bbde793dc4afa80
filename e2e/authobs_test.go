package e2e

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	reflectpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectalphapb "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
)

// Under --auth, GET /metrics needs a token of role viewer or more (Prometheus sends it
// as Authorization: Bearer), --metrics-listen serves the same registry without one (the
// documented choice for scrapers on a private address), and gRPC server reflection
// lists to each caller only the services it may call: health alone without a valid
// token, JobService (not AdminService nor SecretService) to a viewer, SecretService too
// to a submitter, everything to an admin.
func TestMetricsAndReflectionUnderAuth(t *testing.T) {
	bootFile := filepath.Join(t.TempDir(), "admin.token")
	metricsAddr := freePort(t)
	s := startServerArgs(t, backendDev, 2, "--auth", "--bootstrap-token-file", bootFile, "--metrics-listen", metricsAddr)
	b, err := os.ReadFile(bootFile)
	if err != nil {
		t.Fatal(err)
	}
	admin := strings.TrimSpace(string(b))
	create := func(name, role string) string {
		t.Helper()
		r := s.mustAs(admin, "token", "create", "--name", name, "--role", role, "--namespace", "team-a")
		return strings.TrimSpace(r.stdout)
	}
	viewer := create("prometheus", "viewer")
	submitter := create("ci", "submitter")
	// Some activity for the counters: one job submitted by the submitter.
	s.mustAs(submitter, "job", "run", "--", "true")

	get := func(url, token string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(body)
	}
	if code, body := get(s.url+"/metrics", ""); code != http.StatusUnauthorized || strings.Contains(body, "hodei_jobs_submitted_total") {
		t.Errorf("/metrics without a token: %d %q, want 401 and no metrics", code, tail(body, 200))
	}
	if code, body := get(s.url+"/metrics", "hodei_not-a-real-token-at-all"); code != http.StatusUnauthorized {
		t.Errorf("/metrics with an unknown token: %d %q, want 401", code, tail(body, 200))
	}
	for _, tok := range []string{viewer, admin} {
		code, body := get(s.url+"/metrics", tok)
		if code != http.StatusOK || !strings.Contains(body, "hodei_jobs_submitted_total 1\n") {
			t.Errorf("/metrics with a token: %d %q, want 200 and hodei_jobs_submitted_total 1", code, tail(body, 300))
		}
	}
	// What Prometheus parses, with the viewer token.
	fams := scrapeWith(t, s.url+"/metrics", viewer)
	if v, _ := metricValue(fams, "hodei_jobs_submitted_total", nil); v != 1 {
		t.Errorf("scrape with the viewer token: hodei_jobs_submitted_total %v, want 1", v)
	}
	// --metrics-listen: no token needed, by choice.
	if v, _ := metricValue(scrape(t, "http://"+metricsAddr+"/metrics"), "hodei_jobs_submitted_total", nil); v != 1 {
		t.Errorf("--metrics-listen: hodei_jobs_submitted_total %v, want 1", v)
	}

	conn, err := grpc.NewClient(strings.TrimPrefix(s.url, "http://"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	listV1 := func(token string) []string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if token != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
		}
		stream, err := reflectpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
		if err != nil {
			t.Fatalf("reflection v1: %v", err)
		}
		if err := stream.Send(&reflectpb.ServerReflectionRequest{MessageRequest: &reflectpb.ServerReflectionRequest_ListServices{}}); err != nil {
			t.Fatalf("reflection send: %v", err)
		}
		res, err := stream.Recv()
		if err != nil {
			t.Fatalf("reflection recv: %v", err)
		}
		_ = stream.CloseSend()
		var out []string
		for _, sv := range res.GetListServicesResponse().GetService() {
			out = append(out, sv.GetName())
		}
		slices.Sort(out)
		return out
	}
	listV1Alpha := func(token string) []string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if token != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
		}
		stream, err := reflectalphapb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
		if err != nil {
			t.Fatalf("reflection v1alpha: %v", err)
		}
		if err := stream.Send(&reflectalphapb.ServerReflectionRequest{MessageRequest: &reflectalphapb.ServerReflectionRequest_ListServices{}}); err != nil {
			t.Fatalf("reflection v1alpha send: %v", err)
		}
		res, err := stream.Recv()
		if err != nil {
			t.Fatalf("reflection v1alpha recv: %v", err)
		}
		_ = stream.CloseSend()
		var out []string
		for _, sv := range res.GetListServicesResponse().GetService() {
			out = append(out, sv.GetName())
		}
		slices.Sort(out)
		return out
	}
	for _, c := range []struct {
		who, token string
		want       []string
	}{
		{"no token", "", []string{"grpc.health.v1.Health"}},
		{"unknown token", "hodei_not-a-real-token-at-all", []string{"grpc.health.v1.Health"}},
		{"viewer", viewer, []string{"grpc.health.v1.Health", "hodei.v1.JobService"}},
		{"submitter", submitter, []string{"grpc.health.v1.Health", "hodei.v1.JobService", "hodei.v1.SecretService"}},
		{"admin", admin, []string{"grpc.health.v1.Health", "hodei.v1.AdminService", "hodei.v1.JobService", "hodei.v1.SecretService", "hodei.v1.WorkerAgentService"}},
	} {
		if got := listV1(c.token); !slices.Equal(got, c.want) {
			t.Errorf("reflection v1 lists to %s %v, want %v", c.who, got, c.want)
		}
		if got := listV1Alpha(c.token); !slices.Equal(got, c.want) {
			t.Errorf("reflection v1alpha lists to %s %v, want %v", c.who, got, c.want)
		}
	}
}

// scrapeWith is scrape with a bearer token, as Prometheus's
// authorization.credentials_file sends it.
func scrapeWith(t *testing.T, url, token string) map[string]*dto.MetricFamily {
	t.Helper()
	return scrapeRequest(t, url, func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+token) })
}
