package server

import (
	"slices"
	"testing"
)

func TestAgentCommand(t *testing.T) {
	for _, c := range []struct {
		given, bin string
		args       []string
	}{
		{"/opt/hodei/bin/hodei", "/opt/hodei/bin/hodei", []string{"worker"}},
		{"/opt/hodei/bin/hodei-agent", "/opt/hodei/bin/hodei-agent", []string{}},
	} {
		bin, args := AgentCommand(c.given)
		if bin != c.bin || !slices.Equal(args, c.args) || args == nil {
			t.Errorf("AgentCommand(%q) = %q %q, want %q %q", c.given, bin, args, c.bin, c.args)
		}
	}
	// Without one given: this test binary, as `<binary> worker` (no hodei-agent beside it).
	if bin, args := AgentCommand(""); bin == "" || !slices.Equal(args, []string{"worker"}) {
		t.Errorf("AgentCommand(\"\") = %q %q, want this executable and [worker]", bin, args)
	}
}
