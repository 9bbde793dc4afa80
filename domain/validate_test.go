package domain_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/domain"
)

func validSpec() domain.JobSpec {
	return domain.JobSpec{
		Name:        "build",
		Command:     []string{"/usr/bin/make", "test"},
		Env:         map[string]string{"GOFLAGS": "-race", "_X1": ""},
		WorkingDir:  "/src",
		Resources:   domain.Resources{CPUMillis: 2000, MemoryBytes: 1 << 30},
		Labels:      map[string]string{"team": "core", "hodei.dev/tier": "gold"},
		Timeout:     time.Hour,
		MaxAttempts: 3,
		Priority:    10,
	}
}

func TestValidateAcceptsValidSpecs(t *testing.T) {
	atLimits := domain.JobSpec{
		Name:        strings.Repeat("n", domain.MaxNameLen),
		Command:     make([]string, domain.MaxArgs),
		Timeout:     domain.MaxTimeout,
		MaxAttempts: domain.MaxMaxAttempts,
		Priority:    domain.MinPriority,
		Resources:   domain.Resources{CPUMillis: domain.MaxCPUMillis, MemoryBytes: domain.MaxMemoryBytes},
		Env:         map[string]string{},
		Labels:      map[string]string{},
	}
	for i := range atLimits.Command {
		atLimits.Command[i] = strings.Repeat("a", domain.MaxArgBytes/domain.MaxArgs)
	}
	for i := range domain.MaxEnvVars {
		atLimits.Env[fmt.Sprintf("V%d", i)] = "v"
	}
	for i := range domain.MaxLabels {
		atLimits.Labels[fmt.Sprintf("k%d", i)] = strings.Repeat("v", domain.MaxLabelValueLen)
	}
	cases := map[string]domain.JobSpec{
		"full":                     validSpec(),
		"minimal":                  {Command: []string{"true"}},
		"script":                   {Script: &domain.Script{Content: "echo hi\n"}},
		"script+in":                {Script: &domain.Script{Content: "print(1)", Interpreter: "/usr/bin/python3"}},
		"at limits":                atLimits,
		"priority max":             {Command: []string{"x"}, Priority: domain.MaxPriority},
		"empty args after program": {Command: []string{"echo", ""}},
		"unicode name":             {Name: "nightly ✓ build", Command: []string{"x"}},
	}
	for name, spec := range cases {
		t.Run(name, func(t *testing.T) {
			if err := spec.Validate(); err != nil {
				t.Fatalf("Validate() = %v, want nil", err)
			}
		})
	}
}

func TestValidateRules(t *testing.T) {
	bigEnv := func(n int, val string) map[string]string {
		m := make(map[string]string, n)
		for i := range n {
			m[fmt.Sprintf("K%d", i)] = val
		}
		return m
	}
	cases := []struct {
		name   string
		mutate func(*domain.JobSpec)
		field  string // the field that must be reported
		inMsg  string // a fragment of that error's message (names the limit)
	}{
		{"neither command nor script", func(s *domain.JobSpec) { s.Command = nil }, "command", "neither"},
		{"both command and script", func(s *domain.JobSpec) { s.Script = &domain.Script{Content: "x"} }, "command", "both"},
		{"empty program", func(s *domain.JobSpec) { s.Command = []string{"", "x"} }, "command[0]", "empty"},
		{"too many args", func(s *domain.JobSpec) { s.Command = make([]string, domain.MaxArgs+1); s.Command[0] = "x" }, "command", "MaxArgs"},
		{"argv too big", func(s *domain.JobSpec) {
			s.Command = []string{"x", strings.Repeat("a", domain.MaxArgBytes)}
		}, "command", "MaxArgBytes"},
		{"NUL in arg", func(s *domain.JobSpec) { s.Command = []string{"echo", "a\x00b"} }, "command[1]", "NUL"},
		{"empty script", func(s *domain.JobSpec) { s.Command = nil; s.Script = &domain.Script{} }, "script.content", "empty"},
		{"script too big", func(s *domain.JobSpec) {
			s.Command = nil
			s.Script = &domain.Script{Content: strings.Repeat("#", domain.MaxScriptBytes+1)}
		}, "script.content", "MaxScriptBytes"},
		{"NUL in script", func(s *domain.JobSpec) { s.Command = nil; s.Script = &domain.Script{Content: "a\x00"} }, "script.content", "NUL"},
		{"relative interpreter", func(s *domain.JobSpec) {
			s.Command = nil
			s.Script = &domain.Script{Content: "x", Interpreter: "python3"}
		}, "script.interpreter", "absolute"},
		{"interpreter too long", func(s *domain.JobSpec) {
			s.Command = nil
			s.Script = &domain.Script{Content: "x", Interpreter: "/" + strings.Repeat("a", domain.MaxPathLen)}
		}, "script.interpreter", "MaxPathLen"},
		{"too many env vars", func(s *domain.JobSpec) { s.Env = bigEnv(domain.MaxEnvVars+1, "") }, "env", "MaxEnvVars"},
		{"env too big", func(s *domain.JobSpec) {
			s.Env = bigEnv(4, strings.Repeat("v", domain.MaxEnvBytes/4))
		}, "env", "MaxEnvBytes"},
		{"env key starts with digit", func(s *domain.JobSpec) { s.Env = map[string]string{"1FOO": "x"} }, "env[1FOO]", "[A-Za-z_]"},
		{"env key with dash", func(s *domain.JobSpec) { s.Env = map[string]string{"FOO-BAR": "x"} }, "env[FOO-BAR]", "[A-Za-z_]"},
		{"env key with =", func(s *domain.JobSpec) { s.Env = map[string]string{"A=B": "x"} }, "env[A=B]", "[A-Za-z_]"},
		{"empty env key", func(s *domain.JobSpec) { s.Env = map[string]string{"": "x"} }, "env[]", "[A-Za-z_]"},
		{"NUL in env value", func(s *domain.JobSpec) { s.Env = map[string]string{"FOO": "a\x00"} }, "env[FOO]", "NUL"},
		{"relative working dir", func(s *domain.JobSpec) { s.WorkingDir = "src" }, "working_dir", "absolute"},
		{"NUL in working dir", func(s *domain.JobSpec) { s.WorkingDir = "/a\x00" }, "working_dir", "NUL"},
		{"negative cpu", func(s *domain.JobSpec) { s.Resources.CPUMillis = -1 }, "resources.cpu_millis", "MaxCPUMillis"},
		{"too much cpu", func(s *domain.JobSpec) { s.Resources.CPUMillis = domain.MaxCPUMillis + 1 }, "resources.cpu_millis", "MaxCPUMillis"},
		{"negative memory", func(s *domain.JobSpec) { s.Resources.MemoryBytes = -1 }, "resources.memory_bytes", "MaxMemoryBytes"},
		{"too much memory", func(s *domain.JobSpec) { s.Resources.MemoryBytes = domain.MaxMemoryBytes + 1 }, "resources.memory_bytes", "MaxMemoryBytes"},
		{"too many labels", func(s *domain.JobSpec) { s.Labels = bigEnv(domain.MaxLabels+1, "v") }, "labels", "MaxLabels"},
		{"label key too long", func(s *domain.JobSpec) {
			s.Labels = map[string]string{strings.Repeat("k", domain.MaxLabelKeyLen+1): "v"}
		}, "labels[", "MaxLabelKeyLen"},
		{"label key bad char", func(s *domain.JobSpec) { s.Labels = map[string]string{"a b": "v"} }, "labels[a b]", "key must be"},
		{"label key ends with dot", func(s *domain.JobSpec) { s.Labels = map[string]string{"team.": "v"} }, "labels[team.]", "key must be"},
		{"empty label key", func(s *domain.JobSpec) { s.Labels = map[string]string{"": "v"} }, "labels[]", "key must be"},
		{"label value too long", func(s *domain.JobSpec) {
			s.Labels = map[string]string{"team": strings.Repeat("v", domain.MaxLabelValueLen+1)}
		}, "labels[team]", "MaxLabelValueLen"},
		{"label value control char", func(s *domain.JobSpec) { s.Labels = map[string]string{"team": "a\nb"} }, "labels[team]", "control"},
		{"label value bad utf8", func(s *domain.JobSpec) { s.Labels = map[string]string{"team": "\xff"} }, "labels[team]", "UTF-8"},
		{"name too long", func(s *domain.JobSpec) { s.Name = strings.Repeat("n", domain.MaxNameLen+1) }, "name", "MaxNameLen"},
		{"name control char", func(s *domain.JobSpec) { s.Name = "a\tb" }, "name", "control"},
		{"negative timeout", func(s *domain.JobSpec) { s.Timeout = -time.Second }, "timeout", "negative"},
		{"timeout too long", func(s *domain.JobSpec) { s.Timeout = domain.MaxTimeout + time.Nanosecond }, "timeout", "MaxTimeout"},
		{"negative max attempts", func(s *domain.JobSpec) { s.MaxAttempts = -1 }, "max_attempts", "MaxMaxAttempts"},
		{"too many attempts", func(s *domain.JobSpec) { s.MaxAttempts = domain.MaxMaxAttempts + 1 }, "max_attempts", "MaxMaxAttempts"},
		{"priority too low", func(s *domain.JobSpec) { s.Priority = domain.MinPriority - 1 }, "priority", "MinPriority"},
		{"priority too high", func(s *domain.JobSpec) { s.Priority = domain.MaxPriority + 1 }, "priority", "MaxPriority"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			spec := validSpec()
			tc.mutate(&spec)
			err := spec.Validate()
			if err == nil {
				t.Fatal("Validate() = nil, want an error")
			}
			if !errors.Is(err, domain.ErrInvalidSpec) {
				t.Errorf("errors.Is(err, ErrInvalidSpec) = false for %v", err)
			}
			var list domain.ValidationErrors
			if !errors.As(err, &list) {
				t.Fatalf("error %T is not ValidationErrors", err)
			}
			var first *domain.ValidationError
			if !errors.As(err, &first) {
				t.Fatalf("errors.As(*ValidationError) failed for %v", err)
			}
			found := false
			for _, e := range list {
				if strings.HasPrefix(e.Field, tc.field) && (e.Field == tc.field || strings.HasSuffix(tc.field, "[")) &&
					strings.Contains(e.Msg, tc.inMsg) {
					found = true
				}
			}
			if !found {
				t.Errorf("no error for field %q mentioning %q; got %v", tc.field, tc.inMsg, err)
			}
			if !strings.Contains(err.Error(), tc.field) {
				t.Errorf("message %q does not name the field %q", err, tc.field)
			}
		})
	}
}

func TestValidateReportsAllProblemsAtOnce(t *testing.T) {
	spec := domain.JobSpec{
		Command:     []string{"x"},
		Env:         map[string]string{"B-1": "", "A-1": ""},
		WorkingDir:  "rel",
		Timeout:     -1,
		MaxAttempts: 11,
		Priority:    5000,
	}
	err := spec.Validate()
	var list domain.ValidationErrors
	if !errors.As(err, &list) {
		t.Fatalf("Validate() = %v, want ValidationErrors", err)
	}
	var fields []string
	for _, e := range list {
		fields = append(fields, e.Field)
	}
	want := []string{"env[A-1]", "env[B-1]", "working_dir", "timeout", "max_attempts", "priority"}
	if strings.Join(fields, ",") != strings.Join(want, ",") {
		t.Errorf("fields = %v, want %v (stable order)", fields, want)
	}
}

func TestValidateLongKeyIsShortenedInField(t *testing.T) {
	spec := domain.JobSpec{Command: []string{"x"}, Env: map[string]string{strings.Repeat("-", 5000) + "\n": ""}}
	var ve *domain.ValidationError
	if err := spec.Validate(); !errors.As(err, &ve) {
		t.Fatalf("Validate() = %v, want a *ValidationError", err)
	}
	if len(ve.Field) > 100 || !strings.HasPrefix(ve.Field, `env["`) {
		t.Errorf("field %q is not a short quoted form of the key", ve.Field)
	}
}

func TestWithDefaults(t *testing.T) {
	s := domain.JobSpec{Script: &domain.Script{Content: "x"}}
	d := s.WithDefaults()
	if d.MaxAttempts != domain.DefaultMaxAttempts {
		t.Errorf("MaxAttempts = %d, want %d", d.MaxAttempts, domain.DefaultMaxAttempts)
	}
	if d.Script.Interpreter != domain.DefaultInterpreter {
		t.Errorf("Interpreter = %q, want %q", d.Script.Interpreter, domain.DefaultInterpreter)
	}
	if s.Script.Interpreter != "" || s.MaxAttempts != 0 {
		t.Error("WithDefaults changed its receiver's script")
	}
	if err := d.Validate(); err != nil {
		t.Errorf("defaults do not validate: %v", err)
	}
	kept := domain.JobSpec{Command: []string{"x"}, MaxAttempts: 4}.WithDefaults()
	if kept.MaxAttempts != 4 || kept.Script != nil {
		t.Errorf("WithDefaults changed set fields: %+v", kept)
	}
}

func FuzzJobSpecValidate(f *testing.F) {
	seeds := []string{
		`{}`,
		`{"command":["/bin/true"]}`,
		`{"script":{"content":"echo hi"},"env":{"A":"b"},"labels":{"x":"y"},"timeout":1000000000}`,
		`{"command":[""],"env":{"1":"\u0000"},"working_dir":"rel","max_attempts":-3,"priority":99999}`,
		`{"labels":{"a\u0000":"\u00ff"},"resources":{"cpu_millis":-1,"memory_bytes":9223372036854775807}}`,
	}
	b, _ := json.Marshal(validSpec())
	seeds = append(seeds, string(b))
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var spec domain.JobSpec
		if err := json.Unmarshal(data, &spec); err != nil {
			return
		}
		err := spec.Validate()
		if err != nil {
			var list domain.ValidationErrors
			if !errors.As(err, &list) || len(list) == 0 || !errors.Is(err, domain.ErrInvalidSpec) {
				t.Fatalf("Validate returned %T %v, want non-empty ValidationErrors", err, err)
			}
			_ = err.Error()
			return
		}
		// A valid spec stays valid once defaults are filled in.
		if err := spec.WithDefaults().Validate(); err != nil {
			t.Fatalf("valid spec invalid after WithDefaults: %v", err)
		}
	})
}
