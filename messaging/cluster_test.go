package messaging

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hodei-jobs/hodei/internal/natstest"
)

// A 3-node cluster of the nats-server version go.mod embeds: the connection sees a
// cluster (DefaultReplicas 3), HODEI_EVENTS is created with 3 replicas, and with any
// one node killed a client of the other two (a replica starting then) still ensures the
// stream and publishes and reads events.
func TestEventsStreamSurvivesNodeLoss(t *testing.T) {
	bin, err := natstest.ModuleServer()
	if err != nil {
		t.Fatal(err)
	}
	c := natstest.Start(t, bin, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	nc, js, err := Connect(ctx, c.URLs())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if err := CheckServer(nc); err != nil {
		t.Fatal(err)
	}
	if !ServerHasMultiFilter(nc) {
		t.Fatalf("nats-server %s: no multi-filter consumers", nc.ConnectedServerVersion())
	}
	if got := DefaultReplicas(nc); got != 3 {
		t.Fatalf("DefaultReplicas in a cluster = %d, want 3", got)
	}
	// An existing single-replica stream (what older Hodei created) is changed to 3.
	if err := EnsureStreams(ctx, js); err != nil {
		t.Fatal(err)
	}
	if err := EnsureEventsStream(ctx, js, 3); err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.CachedInfo().Config.Replicas; got != 3 {
		t.Fatalf("HODEI_EVENTS has %d replicas, want 3", got)
	}
	waitCurrent(ctx, t, js)

	published := 0
	for round, victim := range c.Nodes {
		victim.Kill()
		// A fresh client of the remaining nodes, as a replica (re)starting now.
		var urls []string
		for _, nd := range c.Nodes {
			if nd != victim {
				urls = append(urls, nd.ClientURL())
			}
		}
		nc2, js2, err := Connect(ctx, strings.Join(urls, ","))
		if err != nil {
			t.Fatalf("round %d (%s down): %v", round, victim.Name, err)
		}
		if err := retry(ctx, time.Minute, func(ctx context.Context) error { return EnsureEventsStream(ctx, js2, 3) }); err != nil {
			t.Fatalf("round %d (%s down): %v", round, victim.Name, err)
		}
		if err := retry(ctx, time.Minute, func(ctx context.Context) error {
			_, err := js2.Publish(ctx, EventSubject("job.succeeded"), []byte(fmt.Sprint(round)),
				jetstream.WithMsgID(fmt.Sprintf("round-%d", round)))
			return err
		}); err != nil {
			t.Fatalf("round %d (%s down): publish: %v", round, victim.Name, err)
		}
		published++
		st, err := js2.Stream(ctx, EventsStream)
		if err != nil {
			t.Fatal(err)
		}
		if n := st.CachedInfo().State.Msgs; n != uint64(published) {
			t.Fatalf("round %d (%s down): stream holds %d messages, want %d", round, victim.Name, n, published)
		}
		nc2.Close()
		if err := victim.Start(); err != nil {
			t.Fatal(err)
		}
		if err := c.WaitJetStream(ctx); err != nil {
			t.Fatal(err)
		}
		// The restarted node catches up before the next one dies (else two of three
		// would be behind and no leader could be elected: that is two failures).
		waitCurrent(ctx, t, js)
	}
}

// waitCurrent waits until HODEI_EVENTS has a leader and two current followers.
func waitCurrent(ctx context.Context, t *testing.T, js jetstream.JetStream) {
	t.Helper()
	var last string
	err := retry(ctx, time.Minute, func(ctx context.Context) error {
		s, err := js.Stream(ctx, EventsStream)
		if err != nil {
			return err
		}
		ci := s.CachedInfo().Cluster
		current := 0
		if ci != nil {
			for _, r := range ci.Replicas {
				if r.Current && !r.Offline {
					current++
				}
			}
		}
		if ci == nil || ci.Leader == "" || current != 2 {
			last = fmt.Sprintf("%+v", ci)
			return fmt.Errorf("not current: %s", last)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("HODEI_EVENTS replicas never all current: %v", err)
	}
}

// The embedded server forms a cluster with --nats-cluster-listen/--nats-routes'
// options: three in-process nodes elect a JetStream meta leader, a 3-replica stream is
// created, and it survives the shutdown of one node.
func TestEmbeddedCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	addrs := make([]string, 3)
	for i := range addrs {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addrs[i] = l.Addr().String()
		_ = l.Close()
	}
	nodes := make([]*Embedded, 3)
	for i := range nodes {
		var routes []string
		for j, a := range addrs {
			if j != i {
				routes = append(routes, a)
			}
		}
		e, err := StartEmbedded(ctx, Options{StoreDir: t.TempDir(), ServerName: fmt.Sprintf("node-%d", i),
			ClusterListen: addrs[i], Routes: routes})
		if err != nil {
			t.Fatal(err)
		}
		nodes[i] = e
		t.Cleanup(e.Shutdown)
	}
	nc, js, err := Connect(ctx, nodes[0].ClientURL()+","+nodes[1].ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if nc.ConnectedClusterName() != "hodei" || DefaultReplicas(nc) != 3 {
		t.Fatalf("cluster %q, default replicas %d; want hodei, 3", nc.ConnectedClusterName(), DefaultReplicas(nc))
	}
	if err := retry(ctx, time.Minute, func(ctx context.Context) error { return EnsureEventsStream(ctx, js, 3) }); err != nil {
		t.Fatal(err)
	}
	nodes[2].Shutdown()
	if err := retry(ctx, time.Minute, func(ctx context.Context) error {
		_, err := js.Publish(ctx, EventSubject("job.queued"), []byte("x"))
		return err
	}); err != nil {
		t.Fatalf("publish with one node of three down: %v", err)
	}
}

func TestOptionsClusterValidation(t *testing.T) {
	for _, tc := range []struct {
		opts Options
		want string
	}{
		{Options{Routes: []string{"127.0.0.1:6222"}}, "Options.Routes given without Options.ClusterListen"},
		{Options{ClusterListen: "nohost"}, "Options.ClusterListen \"nohost\""},
		{Options{ClusterListen: "127.0.0.1:0"}, "port must be 1..65535"},
		{Options{ClusterListen: "127.0.0.1:6222", Routes: []string{"nats-route://"}}, "Options.Routes: \"nats-route://\" is not host:port"},
	} {
		err := tc.opts.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%+v) = %v, want an error with %q", tc.opts, err, tc.want)
		}
	}
}

func TestVersionAtLeast(t *testing.T) {
	for _, tc := range []struct {
		have, want string
		ok         bool
	}{
		{"2.9.10", "2.9.0", true}, {"2.8.4", "2.9.0", false}, {"v2.15.2", "2.10.0", true},
		{"2.10.0-beta.1", "2.10.0", true}, {"2.9.25", "2.10.0", false}, {"3.0.0", "2.10.0", true},
	} {
		got, err := versionAtLeast(tc.have, tc.want)
		if err != nil || got != tc.ok {
			t.Errorf("versionAtLeast(%q, %q) = %v, %v; want %v", tc.have, tc.want, got, err, tc.ok)
		}
	}
	if _, err := versionAtLeast("2.9", "2.9.0"); err == nil {
		t.Error("versionAtLeast accepted \"2.9\"")
	}
}

// retry calls fn (each try bounded by 5s) until it succeeds or d passes.
func retry(ctx context.Context, d time.Duration, fn func(context.Context) error) error {
	deadline := time.Now().Add(d)
	for {
		tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := fn(tctx)
		cancel()
		if err != nil && testing.Verbose() {
			fmt.Println("retry:", time.Now().Format("15:04:05.000"), err)
		}
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
}
