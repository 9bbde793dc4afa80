package agent

import (
	"os"
	"path/filepath"
	"testing"
)

// The OOM counter and limit are read from cgroup v1 and v2 layouts.
func TestOOMKillsAndLimit(t *testing.T) {
	v1 := t.TempDir()
	os.MkdirAll(filepath.Join(v1, "memory"), 0o755)
	os.WriteFile(filepath.Join(v1, "memory", "memory.oom_control"), []byte("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n"), 0o644)
	os.WriteFile(filepath.Join(v1, "memory", "memory.limit_in_bytes"), []byte("67108864\n"), 0o644)
	if n := oomKills(v1); n != 3 {
		t.Errorf("v1 oomKills = %d; want 3", n)
	}
	if s := limitSuffix(v1); s != " (limit 64Mi)" {
		t.Errorf("v1 limitSuffix = %q", s)
	}
	v2 := t.TempDir()
	os.WriteFile(filepath.Join(v2, "memory.events"), []byte("low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\n"), 0o644)
	os.WriteFile(filepath.Join(v2, "memory.max"), []byte("max\n"), 0o644)
	if n := oomKills(v2); n != 1 {
		t.Errorf("v2 oomKills = %d; want 1", n)
	}
	if s := limitSuffix(v2); s != "" {
		t.Errorf("v2 unlimited limitSuffix = %q; want empty", s)
	}
	if n := oomKills(t.TempDir()); n != 0 {
		t.Errorf("no cgroup: oomKills = %d", n)
	}
}
