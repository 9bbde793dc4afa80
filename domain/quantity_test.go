package domain

import "testing"

func TestParseMemory(t *testing.T) {
	good := map[string]int64{
		"1": 1, "1048576": 1 << 20, "256Mi": 256 << 20, "64Mi": 64 << 20, "1Gi": 1 << 30,
		"512Ki": 512 << 10, "1.5Gi": 3 << 29, "64M": 64e6, "1k": 1000, "1Ti": 1 << 40, "0.5Ki": 512,
	}
	for in, want := range good {
		got, err := ParseMemory(in)
		if err != nil || got != want {
			t.Errorf("ParseMemory(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "Mi", "-1Mi", "0", "0Mi", "1.5", "1.1Ki", "abc", "1 Mi", "1mi", "1MB", "2Ti", "+1", "1e3Mi", ".", "1Zi", "1/2Ki", "1e3"} {
		if got, err := ParseMemory(in); err == nil {
			t.Errorf("ParseMemory(%q) = %d, nil; want an error", in, got)
		}
	}
}

func TestFormatMemory(t *testing.T) {
	for in, want := range map[int64]string{64 << 20: "64Mi", 1 << 30: "1Gi", 1536 << 20: "1536Mi", 1500: "1500", 1024: "1Ki", 0: "0"} {
		if got := FormatMemory(in); got != want {
			t.Errorf("FormatMemory(%d) = %q; want %q", in, got, want)
		}
	}
}

func TestParseCPU(t *testing.T) {
	good := map[string]int64{"0.5": 500, "2": 2000, "500m": 500, "0.001": 1, "1.25": 1250, "256": 256000}
	for in, want := range good {
		got, err := ParseCPU(in)
		if err != nil || got != want {
			t.Errorf("ParseCPU(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "-1", "0.0001", "abc", "1e3", "257", "NaN", "Inf", "0x10", "1.5mm"} {
		if got, err := ParseCPU(in); err == nil {
			t.Errorf("ParseCPU(%q) = %d, nil; want an error", in, got)
		}
	}
}

func FuzzParseMemory(f *testing.F) {
	for _, s := range []string{"256Mi", "1.5Gi", "1", "0.5Ki", "9999999999Ei"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b, err := ParseMemory(s)
		if err == nil && (b <= 0 || b > MaxMemoryBytes) {
			t.Fatalf("ParseMemory(%q) = %d out of range", s, b)
		}
	})
}

func TestValidatePlacement(t *testing.T) {
	base := JobSpec{Command: []string{"true"}}
	cases := []struct {
		mod   func(*JobSpec)
		field string
	}{
		{func(s *JobSpec) { s.Pull = "sometimes"; s.Image = "x" }, "pull"},
		{func(s *JobSpec) { s.Pull = PullNever }, "pull"},
		{func(s *JobSpec) { s.Image = "bad image" }, "image"},
		{func(s *JobSpec) { s.Provider = "no.dots" }, "provider"},
		{func(s *JobSpec) { s.Selector = map[string]string{"": "x"} }, "selector[]"},
	}
	for _, c := range cases {
		s := base
		c.mod(&s)
		err := s.Validate()
		es, ok := err.(ValidationErrors)
		if !ok || len(es) != 1 || es[0].Field != c.field {
			t.Errorf("Validate(%+v) = %v; want one error on %s", s, err, c.field)
		}
	}
	ok := base
	ok.Image, ok.Pull, ok.Provider, ok.Selector = "busybox:1", PullNever, "docker", map[string]string{"gpu": "true"}
	if err := ok.Validate(); err != nil {
		t.Errorf("Validate(valid placement) = %v", err)
	}
}
