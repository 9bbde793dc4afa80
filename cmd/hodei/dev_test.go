package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hodei-jobs/hodei/server"
)

// The process-level tests of `hodei dev` (a job end to end, restart, crash, second
// instance, SIGTERM) are in devtest/.

func TestDefaultDevDataDir(t *testing.T) {
	t.Setenv("HOME", "/home/ana")
	t.Setenv("XDG_DATA_HOME", "/xdg")
	if d, err := defaultDevDataDir(); err != nil || d != "/xdg/hodei/dev" {
		t.Errorf("with XDG_DATA_HOME: %q %v", d, err)
	}
	t.Setenv("XDG_DATA_HOME", "relative/ignored")
	if d, err := defaultDevDataDir(); err != nil || d != "/home/ana/.local/share/hodei/dev" {
		t.Errorf("with a relative XDG_DATA_HOME: %q %v", d, err)
	}
	t.Setenv("XDG_DATA_HOME", "")
	if d, err := defaultDevDataDir(); err != nil || d != "/home/ana/.local/share/hodei/dev" {
		t.Errorf("without XDG_DATA_HOME: %q %v", d, err)
	}
}

func TestIsGoRunBinary(t *testing.T) {
	for exe, want := range map[string]bool{
		"/tmp/go-build3021/b001/exe/hodei":      true,
		"/var/tmp/go-build1/b123/exe/hodei":     true,
		"/usr/local/bin/hodei":                  false,
		"/work/main/bin/hodei":                  false,
		"/tmp/exe/hodei":                        false,
		"/home/u/go-builds/x/notexe/hodei":      false,
		filepath.Join("/tmp", "exe", "b", "hd"): false,
	} {
		if got := isGoRunBinary(exe); got != want {
			t.Errorf("isGoRunBinary(%q) = %v, want %v", exe, got, want)
		}
	}
}

func TestDevBanner(t *testing.T) {
	var b bytes.Buffer
	printDevBanner(&b, defaultServerURL, "/d", false)
	out := b.String()
	if !strings.Contains(out, "authentication off and no TLS: fine on loopback") {
		t.Errorf("banner does not say that loopback needs neither auth nor TLS: %q", out)
	}
	if !strings.HasPrefix(out, "hodei dev listening on "+defaultServerURL+"\n") {
		t.Errorf("first line: %q", out)
	}
	// On the default address the example needs no --server.
	if !strings.Contains(out, " job run -- echo hello\n") || strings.Contains(out, "--server") {
		t.Errorf("example on the default address: %q", out)
	}
	b.Reset()
	printDevBanner(&b, "http://127.0.0.1:9999", "/d", true)
	if !strings.Contains(b.String(), " job run --server http://127.0.0.1:9999 -- echo hello\n") {
		t.Errorf("example on another address: %q", b.String())
	}
}

func TestDevRefusesLockedDataDir(t *testing.T) {
	dir := t.TempDir()
	lock, err := server.LockDataDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Release()
	out, err := runHodei(t, "dev", "--data-dir", dir, "--listen", "127.0.0.1:0")
	if err == nil || !strings.Contains(err.Error(), "data dir "+dir+" is in use by another hodei dev or hodei server (pid ") {
		t.Fatalf("hodei dev on a locked data dir: %v\n%s", err, out)
	}
}

func TestDevFlagErrors(t *testing.T) {
	if _, err := runHodei(t, "dev", "--max-workers", "-1", "--data-dir", t.TempDir()); err == nil || !strings.Contains(err.Error(), "--max-workers") {
		t.Errorf("negative --max-workers: %v", err)
	}
	if _, err := runHodei(t, "dev", "--log-level", "loud", "--data-dir", t.TempDir()); err == nil || !strings.Contains(err.Error(), "--log-level") {
		t.Errorf("bad --log-level: %v", err)
	}
}
