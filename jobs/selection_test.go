package jobs

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/provider"
)

// capsProvider declares capabilities only; selection reads nothing else.
type capsProvider struct {
	name string
	caps provider.Capabilities
}

func (p capsProvider) Name() string                        { return p.name }
func (p capsProvider) Capabilities() provider.Capabilities { return p.caps }
func (p capsProvider) Create(context.Context, provider.WorkerSpec) error {
	return errors.New("not used")
}
func (p capsProvider) Destroy(context.Context, string) error { return nil }
func (p capsProvider) Status(context.Context, string) (provider.Status, error) {
	return provider.StatusUnknown, nil
}

func TestCandidates(t *testing.T) {
	reg := provider.NewRegistry()
	_ = reg.Register("local", capsProvider{"local", provider.Capabilities{MaxWorkers: 2}})
	_ = reg.Register("docker", capsProvider{"docker", provider.Capabilities{MaxWorkers: 2, Images: true, RequiresImage: true,
		Labels: map[string]string{"zone": "a"}}})
	s := &Service{providers: reg}
	ok := []struct {
		spec domain.JobSpec
		want string
	}{
		{domain.JobSpec{}, "local"},
		{domain.JobSpec{Image: "x"}, "docker"},
		{domain.JobSpec{Image: "x", Selector: map[string]string{"zone": "a"}}, "docker"},
		{domain.JobSpec{Provider: "docker", Image: "x"}, "docker"},
	}
	for _, c := range ok {
		got, err := s.candidates(c.spec)
		if err != nil || strings.Join(got, ",") != c.want {
			t.Errorf("candidates(%+v) = %v, %v; want %s", c.spec, got, err, c.want)
		}
	}
	bad := []struct {
		spec  domain.JobSpec
		field string
		msg   string
	}{
		{domain.JobSpec{Provider: "k8s"}, "provider", `"k8s" is not configured (configured: local, docker)`},
		{domain.JobSpec{Provider: "local", Image: "x"}, "provider", "local cannot run the job: it runs no images"},
		{domain.JobSpec{Provider: "docker"}, "provider", "docker cannot run the job: it needs an image"},
		{domain.JobSpec{Selector: map[string]string{"gpu": "true"}}, "selector", "no provider has label gpu=true"},
		{domain.JobSpec{Selector: map[string]string{"zone": "a"}}, "image", "no image given"},
	}
	for _, c := range bad {
		_, err := s.candidates(c.spec)
		var ve *domain.ValidationError
		if !errors.As(err, &ve) || ve.Field != c.field || !strings.Contains(ve.Msg, c.msg) {
			t.Errorf("candidates(%+v) = %v; want %s: …%s…", c.spec, err, c.field, c.msg)
		}
	}
	reg2 := provider.NewRegistry()
	_ = reg2.Register("local", capsProvider{"local", provider.Capabilities{}})
	if _, err := (&Service{providers: reg2}).candidates(domain.JobSpec{Image: "busybox"}); err == nil ||
		!strings.Contains(err.Error(), "image given but no configured provider runs images (configured: local)") {
		t.Errorf("image with local only: %v", err)
	}
}
