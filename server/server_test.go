package server_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	hodeiv1 "github.com/hodei-jobs/hodei/gen/hodei/v1"
	"github.com/hodei-jobs/hodei/gen/hodei/v1/hodeiv1connect"
	"github.com/hodei-jobs/hodei/internal/pgtest"
	"github.com/hodei-jobs/hodei/server"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRunServesAndShutsDown starts a whole replica (migrations, embedded NATS, engine,
// relay, scheduler, HTTP) on a random port, checks /readyz and a job round trip through
// the API, holds a WatchJob stream open, then cancels: Run must return nil promptly
// even though the stream was open.
func TestRunServesAndShutsDown(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	logs := &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	readyURL := make(chan string, 1)
	runErr := make(chan error, 1)
	go func() {
		runErr <- server.Run(ctx, server.Config{
			Listen:      "127.0.0.1:0",
			DatabaseURL: dbURL,
			DataDir:     t.TempDir(),
			MaxWorkers:  1,
			OnReady:     func(u string) { readyURL <- u },
		}, logger)
	}()
	var base string
	select {
	case base = <-readyURL:
	case err := <-runErr:
		t.Fatalf("Run returned before ready: %v\nlogs:\n%s", err, logs)
	case <-time.After(60 * time.Second):
		t.Fatalf("not ready after 60s\nlogs:\n%s", logs)
	}

	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	p.SetHTTP1(true)
	client := &http.Client{Transport: &http.Transport{Protocols: &p}, Timeout: 30 * time.Second}
	readyBody := regexp.MustCompile(`^ok\nreplica: (hodei-[0-9a-f-]+)\nleader: (hodei-[0-9a-f-]+)\n$`)
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := client.Get(base + "/readyz")
		if err == nil {
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			// "ok", then this replica's id and the leader's: the only replica leads.
			if m := readyBody.FindStringSubmatch(string(body)); res.StatusCode == 200 && m != nil && m[1] == m[2] {
				break
			}
			err = fmt.Errorf("%s: %q", res.Status, body)
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz never 200 (last err %v)\nlogs:\n%s", err, logs)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// A job goes in and can be read back; an invalid one is refused.
	streamClient := &http.Client{Transport: &http.Transport{Protocols: &p}}
	jobs := hodeiv1connect.NewJobServiceClient(streamClient, base)
	sub, err := jobs.SubmitJob(ctx, connect.NewRequest(&hodeiv1.SubmitJobRequest{
		Spec: &hodeiv1.JobSpec{Command: []string{"true"}}}))
	if err != nil {
		t.Fatalf("SubmitJob: %v", err)
	}
	_, err = jobs.SubmitJob(ctx, connect.NewRequest(&hodeiv1.SubmitJobRequest{Spec: &hodeiv1.JobSpec{}}))
	if connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("invalid spec: %v", err)
	}
	got, err := jobs.GetJob(ctx, connect.NewRequest(&hodeiv1.GetJobRequest{Id: sub.Msg.GetJob().GetId()}))
	if err != nil || got.Msg.GetJob().GetId() != sub.Msg.GetJob().GetId() {
		t.Fatalf("GetJob: %v %v", got, err)
	}

	// An open stream on a job that will not end (no worker binary here) must not hold
	// up the shutdown.
	wctx, wcancel := context.WithCancel(context.Background())
	defer wcancel()
	watch, err := jobs.WatchJob(wctx, connect.NewRequest(&hodeiv1.WatchJobRequest{Id: sub.Msg.GetJob().GetId()}))
	if err != nil {
		t.Fatal(err)
	}
	if !watch.Receive() {
		t.Fatalf("watch: %v", watch.Err())
	}

	start := time.Now()
	cancel()
	select {
	case err := <-runErr:
		if err != nil {
			t.Fatalf("Run returned %v\nlogs:\n%s", err, logs)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("Run did not return 15s after cancel\nlogs:\n%s", logs)
	}
	took := time.Since(start)
	t.Logf("shutdown took %s", took)
	if took > 5*time.Second {
		t.Errorf("shutdown took %s, want under 5s", took)
	}
	for watch.Receive() {
	}
}

func TestConfigValidate(t *testing.T) {
	err := server.Run(context.Background(), server.Config{}, nil)
	if err == nil || !strings.Contains(err.Error(), "DatabaseURL") {
		t.Fatalf("Run without a database URL: %v", err)
	}
	err = server.Run(context.Background(), server.Config{DatabaseURL: "postgres://x", Listen: "nope"}, nil)
	if err == nil || !strings.Contains(err.Error(), "Listen") {
		t.Fatalf("Run with a bad listen address: %v", err)
	}
	err = server.Run(context.Background(), server.Config{DatabaseURL: "postgres://x", LeaderTTL: 10 * time.Millisecond}, nil)
	if err == nil || !strings.Contains(err.Error(), "Config.LeaderTTL") {
		t.Fatalf("Run with a 10ms leader TTL: %v", err)
	}
}

// The NATS cluster and retention fields are checked before anything starts, each error
// naming its flag.
func TestConfigValidateNATSAndRetention(t *testing.T) {
	for _, tc := range []struct {
		cfg  server.Config
		want string
	}{
		{server.Config{NATSURL: "nats://a:4222", NATSClusterListen: "127.0.0.1:6222"}, "cannot be used with Config.NATSURL (--nats-url)"},
		{server.Config{NATSRoutes: []string{"127.0.0.1:6222"}}, "needs Config.NATSClusterListen (--nats-cluster-listen)"},
		{server.Config{NATSClusterListen: "127.0.0.1:0"}, "--nats-cluster-listen) \"127.0.0.1:0\" is not host:port with a fixed port"},
		{server.Config{NATSClusterListen: "127.0.0.1:6222", NATSRoutes: []string{"nohost"}}, "--nats-routes) \"nohost\" is not host:port"},
		{server.Config{NATSReplicas: 7}, "--nats-replicas) 7 out of range [0, 5]"},
		{server.Config{RetainOutbox: time.Second}, "--retain-outbox 1s: 0 (keep forever) or at least 1m0s"},
		{server.Config{RetainJobs: 30 * time.Second}, "--retain-jobs 30s: 0 (keep forever) or at least 1m0s"},
		{server.Config{RetainIdempotency: -time.Hour}, "--retain-idempotency -1h0m0s: 0 (keep forever) or at least 1m0s"},
		{server.Config{WorkerServers: []string{"http://a:7070", "b:7070"}}, `(--worker-servers): "b:7070" is not an http:// or https:// URL with a host`},
		{server.Config{WorkerServers: []string{"https://a:7070"}}, `(--worker-servers): "https://a:7070" must be http:// (the API serves http)`},
	} {
		tc.cfg.DatabaseURL = "postgres://x"
		err := server.Run(context.Background(), tc.cfg, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Run(%+v) = %v, want an error with %q", tc.cfg, err, tc.want)
		}
	}
}
