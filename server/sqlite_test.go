package server_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	hodeiv1 "github.com/hodei-jobs/hodei/gen/hodei/v1"
	"github.com/hodei-jobs/hodei/gen/hodei/v1/hodeiv1connect"
	"github.com/hodei-jobs/hodei/server"
)

// running is a server.Run in a goroutine.
type running struct {
	base   string
	cancel context.CancelFunc
	errc   chan error
	logs   *syncBuffer
}

// startRun runs server.Run with cfg until stop (or the test's end) and waits for
// /readyz.
func startRun(t *testing.T, cfg server.Config) *running {
	t.Helper()
	r := &running{errc: make(chan error, 1), logs: &syncBuffer{}}
	logger := slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	ready := make(chan string, 1)
	cfg.OnReady = func(u string) { ready <- u }
	go func() { r.errc <- server.Run(ctx, cfg, logger) }()
	t.Cleanup(func() { r.stop(t) })
	select {
	case r.base = <-ready:
	case err := <-r.errc:
		r.errc <- err
		t.Fatalf("Run returned before ready: %v\nlogs:\n%s", err, r.logs)
	case <-time.After(60 * time.Second):
		t.Fatalf("not ready after 60s\nlogs:\n%s", r.logs)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := http.Get(r.base + "/readyz")
		if err == nil {
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				break
			}
			err = errors.New(res.Status + ": " + string(body))
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz never 200 (last: %v)\nlogs:\n%s", err, r.logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return r
}

// stop cancels Run and requires it to return nil within 15s. Safe to call twice.
func (r *running) stop(t *testing.T) {
	t.Helper()
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.errc:
		if err != nil {
			t.Errorf("Run returned %v\nlogs:\n%s", err, r.logs)
		}
	case <-time.After(15 * time.Second):
		t.Errorf("Run did not return 15s after cancel\nlogs:\n%s", r.logs)
	}
}

// TestRunSQLiteKeepsJobsAcrossRestarts runs a replica on the SQLite driver: /readyz
// (which pings the store) is 200, a job goes in and is refused when invalid; after a
// restart on the same data dir the job is still there. The worker binary is /bin/true,
// which never registers, so the job stays before RUNNING; the job path itself is
// covered by the process-level tests in devtest/.
func TestRunSQLiteKeepsJobsAcrossRestarts(t *testing.T) {
	dataDir := t.TempDir()
	cfg := server.Config{
		Driver:       server.DriverSQLite,
		Listen:       "127.0.0.1:0",
		DataDir:      dataDir,
		MaxWorkers:   1,
		WorkerBinary: "/bin/true",
	}
	r := startRun(t, cfg)
	if _, err := os.Stat(filepath.Join(dataDir, server.SQLiteFile)); err != nil {
		t.Fatalf("no database file in the data dir: %v", err)
	}
	ctx := context.Background()
	jobs := hodeiv1connect.NewJobServiceClient(http.DefaultClient, r.base)
	sub, err := jobs.SubmitJob(ctx, connect.NewRequest(&hodeiv1.SubmitJobRequest{
		Spec: &hodeiv1.JobSpec{Command: []string{"echo", "kept"}, Name: "kept"}}))
	if err != nil {
		t.Fatalf("SubmitJob: %v\nlogs:\n%s", err, r.logs)
	}
	id := sub.Msg.GetJob().GetId()
	_, err = jobs.SubmitJob(ctx, connect.NewRequest(&hodeiv1.SubmitJobRequest{Spec: &hodeiv1.JobSpec{}}))
	if connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("invalid spec: got %v, want InvalidArgument", err)
	}
	start := time.Now()
	r.stop(t)
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("shutdown took %s, want under 5s", took)
	}

	r = startRun(t, cfg)
	jobs = hodeiv1connect.NewJobServiceClient(http.DefaultClient, r.base)
	got, err := jobs.GetJob(ctx, connect.NewRequest(&hodeiv1.GetJobRequest{Id: id}))
	if err != nil {
		t.Fatalf("GetJob after restart: %v\nlogs:\n%s", err, r.logs)
	}
	if got.Msg.GetJob().GetSpec().GetName() != "kept" {
		t.Fatalf("job after restart: %v", got.Msg.GetJob())
	}
	list, err := jobs.ListJobs(ctx, connect.NewRequest(&hodeiv1.ListJobsRequest{}))
	if err != nil {
		t.Fatalf("ListJobs after restart: %v", err)
	}
	if n := len(list.Msg.GetJobs()); n != 1 || list.Msg.GetJobs()[0].GetId() != id {
		t.Fatalf("ListJobs after restart: %d jobs %v, want just %s", n, list.Msg.GetJobs(), id)
	}
}

func TestConfigValidateDriver(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  server.Config
		want string
	}{
		{"unknown driver", server.Config{Driver: "mysql"}, `Config.Driver "mysql"`},
		{"sqlite with a database URL", server.Config{Driver: server.DriverSQLite, DatabaseURL: "postgres://x"}, "Config.DatabaseURL is only for"},
		{"postgres with an SQLite path", server.Config{DatabaseURL: "postgres://x", SQLitePath: "/tmp/x.db"}, "Config.SQLitePath is only for"},
		{"sqlite with a bad listen address", server.Config{Driver: server.DriverSQLite, Listen: "nope"}, "Config.Listen"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.DataDir = t.TempDir()
			err := server.Run(context.Background(), tc.cfg, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Run: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestLockDataDir: the second lock of a data dir fails with the holder's pid and
// leaves the directory as it was; after Release the dir can be locked again. (flock
// locks belong to open files, so two opens in one process conflict like two processes.)
func TestLockDataDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	l1, err := server.LockDataDir(dir)
	if err != nil {
		t.Fatalf("first lock: %v", err)
	}
	if l1.Dir() != dir {
		t.Fatalf("Dir() = %s, want %s", l1.Dir(), dir)
	}
	if err := os.WriteFile(filepath.Join(dir, "state"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, dir)

	_, err = server.LockDataDir(dir)
	var inUse *server.DataDirInUseError
	if !errors.As(err, &inUse) {
		t.Fatalf("second lock: %v, want a *DataDirInUseError", err)
	}
	want := "data dir " + dir + " is in use by another hodei dev or hodei server (pid " + strconv.Itoa(os.Getpid()) + ")"
	if err.Error() != want {
		t.Fatalf("second lock: %q, want %q", err, want)
	}
	if after := snapshot(t, dir); !slices.Equal(before, after) {
		t.Fatalf("the refused lock changed the data dir:\nbefore %v\nafter  %v", before, after)
	}

	if err := l1.Release(); err != nil {
		t.Fatal(err)
	}
	l2, err := server.LockDataDir(dir)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	defer l2.Release()
}

// snapshot lists every file of dir with its size, mode, modification time and content
// prefix.
func snapshot(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		line := p + " " + info.Mode().String() + " " + strconv.FormatInt(info.Size(), 10) + " " + info.ModTime().String()
		if !d.IsDir() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			line += " " + strconv.Quote(string(b[:min(len(b), 64)]))
		}
		out = append(out, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
