package e2e

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectalphapb "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"
)

// A stock gRPC client (grpc-go, as grpcurl, Postman and Evans use) discovers the API by
// server reflection alone, v1 and v1alpha, finds SubmitJob's descriptor, and checks the
// standard grpc.health.v1 service.
func TestGRPCReflectionAndHealth(t *testing.T) {
	s := startServer(t, backendDev, 2)
	conn, err := grpc.NewClient(strings.TrimPrefix(s.url, "http://"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	stream, err := reflectpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatalf("reflection v1: %v", err)
	}
	ask := func(req *reflectpb.ServerReflectionRequest) *reflectpb.ServerReflectionResponse {
		t.Helper()
		if err := stream.Send(req); err != nil {
			t.Fatalf("reflection send: %v", err)
		}
		res, err := stream.Recv()
		if err != nil {
			t.Fatalf("reflection recv: %v", err)
		}
		if e := res.GetErrorResponse(); e != nil {
			t.Fatalf("reflection error: %v", e)
		}
		return res
	}
	res := ask(&reflectpb.ServerReflectionRequest{MessageRequest: &reflectpb.ServerReflectionRequest_ListServices{}})
	var services []string
	for _, sv := range res.GetListServicesResponse().GetService() {
		services = append(services, sv.GetName())
	}
	// hodei dev on loopback without tokens: the caller is an admin.
	for _, want := range []string{"hodei.v1.JobService", "hodei.v1.AdminService", "grpc.health.v1.Health"} {
		if !slices.Contains(services, want) {
			t.Errorf("reflection lists %v, missing %s", services, want)
		}
	}
	res = ask(&reflectpb.ServerReflectionRequest{MessageRequest: &reflectpb.ServerReflectionRequest_FileContainingSymbol{
		FileContainingSymbol: "hodei.v1.JobService"}})
	found := false
	for _, raw := range res.GetFileDescriptorResponse().GetFileDescriptorProto() {
		var fd descriptorpb.FileDescriptorProto
		if err := proto.Unmarshal(raw, &fd); err != nil {
			t.Fatalf("decode file descriptor: %v", err)
		}
		for _, svc := range fd.GetService() {
			if svc.GetName() != "JobService" {
				continue
			}
			for _, m := range svc.GetMethod() {
				if m.GetName() == "SubmitJob" && m.GetInputType() == ".hodei.v1.SubmitJobRequest" {
					found = true
				}
			}
		}
	}
	if !found {
		t.Error("reflection gave no descriptor of hodei.v1.JobService/SubmitJob")
	}
	_ = stream.CloseSend()

	// v1alpha, which older tools still use.
	alpha, err := reflectalphapb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatalf("reflection v1alpha: %v", err)
	}
	if err := alpha.Send(&reflectalphapb.ServerReflectionRequest{MessageRequest: &reflectalphapb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	ares, err := alpha.Recv()
	if err != nil || len(ares.GetListServicesResponse().GetService()) == 0 {
		t.Fatalf("reflection v1alpha list: %v %v", ares, err)
	}
	_ = alpha.CloseSend()

	health := healthpb.NewHealthClient(conn)
	for _, svc := range []string{"", "hodei.v1.JobService"} {
		hr, err := health.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health %q: %v %v, want SERVING", svc, hr, err)
		}
	}
	if _, err := health.Check(ctx, &healthpb.HealthCheckRequest{Service: "no.such.Service"}); err == nil || !strings.Contains(err.Error(), "NotFound") {
		t.Errorf("health of an unknown service: %v, want NotFound", err)
	}
}
