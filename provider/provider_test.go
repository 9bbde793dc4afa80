package provider_test

import (
	"context"
	"errors"
	"testing"

	"github.com/hodei-jobs/hodei/provider"
)

type fakeProvider struct{ name string }

func (f fakeProvider) Name() string                                    { return f.name }
func (fakeProvider) Capabilities() provider.Capabilities               { return provider.Capabilities{MaxWorkers: 1} }
func (fakeProvider) Create(context.Context, provider.WorkerSpec) error { return nil }
func (fakeProvider) Destroy(context.Context, string) error             { return nil }
func (fakeProvider) Status(context.Context, string) (provider.Status, error) {
	return provider.StatusUnknown, nil
}

func TestRegistry(t *testing.T) {
	r := provider.NewRegistry()
	if r.Default() != nil {
		t.Fatal("empty registry has a default")
	}
	if err := r.Register("local", fakeProvider{"local"}); err != nil {
		t.Fatal(err)
	}
	if err := r.Register("docker", fakeProvider{"docker"}); err != nil {
		t.Fatal(err)
	}
	if err := r.Register("local", fakeProvider{"local"}); err == nil {
		t.Fatal("duplicate Register succeeded")
	}
	if err := r.Register("", fakeProvider{}); err == nil {
		t.Fatal("empty name accepted")
	}
	if err := r.Register("nil", nil); err == nil {
		t.Fatal("nil provider accepted")
	}
	if got := r.Default().Name(); got != "local" {
		t.Fatalf("Default = %q, want local (first registered)", got)
	}
	p, err := r.Get("docker")
	if err != nil || p.Name() != "docker" {
		t.Fatalf("Get(docker) = %v, %v", p, err)
	}
	if _, err := r.Get("k8s"); !errors.Is(err, provider.ErrNotRegistered) {
		t.Fatalf("Get(k8s) err = %v, want ErrNotRegistered", err)
	}
	if got := r.Names(); len(got) != 2 || got[0] != "docker" || got[1] != "local" {
		t.Fatalf("Names = %v", got)
	}
}

func TestWorkerSpecValidate(t *testing.T) {
	ok := provider.WorkerSpec{WorkerID: "w", OneTimePassword: "otp", ServerURL: "http://x"}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	bad := ok
	bad.OneTimePassword = ""
	if err := bad.Validate(); err == nil {
		t.Fatal("missing OTP accepted")
	}
	bad = ok
	bad.Resources.MemoryBytes = -1
	if err := bad.Validate(); err == nil {
		t.Fatal("negative memory accepted")
	}
}
