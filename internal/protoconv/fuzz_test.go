package protoconv_test

import (
	"reflect"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	hodeiv1 "github.com/hodei-jobs/hodei/gen/hodei/v1"
	"github.com/hodei-jobs/hodei/internal/protoconv"
)

// checkSpec is what the API does with a SubmitJob request's spec: convert and validate.
// A spec that validates must survive the round trip to the wire and back unchanged.
func checkSpec(t *testing.T, req *hodeiv1.SubmitJobRequest) {
	spec := protoconv.SpecFromProto(req.GetSpec())
	if err := spec.Validate(); err != nil {
		if err.Error() == "" {
			t.Fatal("validation error without a message")
		}
		return
	}
	back := protoconv.SpecFromProto(protoconv.SpecToProto(spec))
	if !reflect.DeepEqual(spec, back) {
		t.Fatalf("round trip changed a valid spec:\n%#v\n%#v", spec, back)
	}
	if err := back.Validate(); err != nil {
		t.Fatalf("round trip of a valid spec is invalid: %v", err)
	}
}

// FuzzSubmitJobJSON feeds Connect JSON request bodies through decoding, conversion and
// validation.
func FuzzSubmitJobJSON(f *testing.F) {
	for _, s := range []string{
		`{"spec":{"command":["echo","hi"]}}`,
		`{"spec":{"name":"n","script":{"content":"echo hi","interpreter":"/bin/sh"},"env":{"A":"b"},"namespace":"team-a","priority":5}}`,
		`{"spec":{"command":["true"],"resources":{"memoryBytes":"1048576","cpuMillis":500},"labels":{"k":"v"},"timeout":"30s","maxAttempts":3,"workingDir":"/tmp"}}`,
		`{"spec":{"command":[""],"env":{"":"x","A=B":"c"}}}`,
		`{"spec":{"command":["x"],"timeout":"-1s","priority":-100000}}`,
		`{}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var req hodeiv1.SubmitJobRequest
		if err := protojson.Unmarshal(b, &req); err != nil {
			return
		}
		checkSpec(t, &req)
	})
}

// FuzzSubmitJobProto is FuzzSubmitJobJSON for the protobuf encoding (gRPC, Connect
// proto).
func FuzzSubmitJobProto(f *testing.F) {
	for _, s := range []string{
		`{"spec":{"command":["echo","hi"]}}`,
		`{"spec":{"script":{"content":"echo hi"},"env":{"A":"b"},"namespace":"default","labels":{"a":"b"}}}`,
		`{"spec":{"command":["true"],"resources":{"memoryBytes":"1048576"},"timeout":"3600s","maxAttempts":2}}`,
	} {
		var req hodeiv1.SubmitJobRequest
		if err := protojson.Unmarshal([]byte(s), &req); err != nil {
			f.Fatal(err)
		}
		b, err := proto.Marshal(&req)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var req hodeiv1.SubmitJobRequest
		if err := proto.Unmarshal(b, &req); err != nil {
			return
		}
		checkSpec(t, &req)
	})
}
