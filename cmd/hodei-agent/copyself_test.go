package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCopySelfIntoDirectoryAndFile(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, dest := range []string{dir, filepath.Join(dir, "agent-copy")} {
		got, err := copySelf(dest)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(got)
		if err != nil {
			t.Fatal(err)
		}
		st, _ := os.Stat(got)
		if !bytes.Equal(b, want) || st.Mode().Perm() != 0o755 {
			t.Fatalf("%s: %d bytes mode %v; want a copy of %s (%d bytes) mode 0755", got, len(b), st.Mode(), self, len(want))
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "hodei-agent")); err != nil {
		t.Fatalf("copy into a directory is named hodei-agent: %v", err)
	}
	_, err = copySelf(filepath.Join(dir, "missing", "x"))
	if err == nil || !strings.Contains(err.Error(), "DEST") {
		t.Fatalf("copy into a missing directory: %v, want an error naming DEST", err)
	}
}
