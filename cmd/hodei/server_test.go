package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/internal/pgtest"
)

func TestServerHelpNamesFlagsAndEnv(t *testing.T) {
	out, err := runHodei(t, "server", "--help")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"--listen", "--database-url", "--nats-url", "--data-dir", "--max-workers", "--leader-ttl",
		"HODEI_LEADER_TTL", "HODEI_LISTEN", "HODEI_DATABASE_URL", "HODEI_NATS_URL", "HODEI_DATA_DIR", "HODEI_MAX_WORKERS", "127.0.0.1:7070"} {
		if !strings.Contains(out, s) {
			t.Errorf("server --help does not mention %s:\n%s", s, out)
		}
	}
}

func TestServerRequiresDatabaseURL(t *testing.T) {
	t.Setenv("HODEI_DATABASE_URL", "")
	_, err := runHodei(t, "server")
	if err == nil || !strings.Contains(err.Error(), "--database-url") || !strings.Contains(err.Error(), "HODEI_DATABASE_URL") {
		t.Fatalf("server without a database: %v", err)
	}
	_, err = runHodei(t, "server", "--database-url", "postgres://x", "--max-workers", "-1")
	if err == nil || !strings.Contains(err.Error(), "--max-workers") {
		t.Fatalf("negative --max-workers: %v", err)
	}
	_, err = runHodei(t, "server", "--database-url", "postgres://x", "--leader-ttl", "500ms")
	if err == nil || !strings.Contains(err.Error(), "--leader-ttl") {
		t.Fatalf("--leader-ttl 500ms: %v", err)
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestServerFromEnv configures `hodei server` through the environment only, waits for
// its "listening" line and /readyz, then stops it as SIGTERM would (context cancel).
func TestServerFromEnv(t *testing.T) {
	t.Setenv("HODEI_DATABASE_URL", pgtest.NewDatabase(t))
	t.Setenv("HODEI_LISTEN", "127.0.0.1:0")
	t.Setenv("HODEI_DATA_DIR", t.TempDir())
	t.Setenv("HODEI_MAX_WORKERS", "2")
	t.Setenv("HODEI_NATS_URL", "")

	root := newRootCmd()
	out, logs := &lockedBuffer{}, &lockedBuffer{}
	root.SetOut(out)
	root.SetErr(logs)
	root.SetArgs([]string{"server"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()

	line := regexp.MustCompile(`^hodei server listening on (http://127\.0\.0\.1:\d+)\n$`)
	var url string
	deadline := time.Now().Add(60 * time.Second)
	for url == "" {
		if m := line.FindStringSubmatch(out.String()); m != nil {
			url = m[1]
			break
		}
		select {
		case err := <-done:
			t.Fatalf("server exited: %v\n%s", err, logs)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no listening line; stdout %q\n%s", out, logs)
		}
	}
	res, err := http.Get(url + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("/readyz %d %s", res.StatusCode, body)
	}
	if !strings.Contains(logs.String(), "max_workers=2") {
		t.Errorf("HODEI_MAX_WORKERS not applied:\n%s", logs)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("server returned %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("server did not stop")
	}
}
