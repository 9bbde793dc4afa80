package e2e

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/internal/natstest"
	"github.com/hodei-jobs/hodei/internal/pgtest"
)

// TestNATS29: `hodei server` on Debian's nats-server 2.9 (what apt-get gives), two
// replicas on one PostgreSQL: they start (the orchestrator's consumer takes one
// wildcard filter there), and jobs submitted to either run to their ends.
func TestNATS29(t *testing.T) {
	bin, err := natstest.DebianServer()
	if err != nil {
		t.Fatal(err)
	}
	nats := natstest.Start(t, bin, 1)
	dbURL := pgtest.NewDatabase(t)
	a := startReplica(t, dbURL, "--nats-url", nats.URLs())
	b := startReplica(t, dbURL, "--nats-url", nats.URLs())
	a.submit("--label", "nats29=yes", "--", "echo", "from a")
	b.submit("--label", "nats29=yes", "--", "sh", "-c", "exit 3")
	jobs := a.waitJobs(map[string]string{"nats29": "yes"}, 2, 60*time.Second)
	if got := countStates(jobs); got["SUCCEEDED"] != 1 || got["FAILED"] != 1 {
		t.Fatalf("end states on nats-server 2.9: %v, want one SUCCEEDED and one FAILED", got)
	}
}

// TestEmbeddedNATSCluster: three replicas whose embedded NATS servers form a cluster
// (--nats-cluster-listen, --nats-routes): their streams get 3 replicas, jobs run; one
// replica is SIGKILLed (its NATS node dies with it), jobs submitted to the other two
// still run, and the killed one starts again into the cluster.
func TestEmbeddedNATSCluster(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	ports := make([]string, 3)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ports[i] = l.Addr().String()
		_ = l.Close()
	}
	replicas := make([]*server, 3)
	started := make(chan int, 3)
	// The first replica waits for JetStream until a second node is up: start them
	// together, as an operator's orchestration does.
	for i := range replicas {
		var routes []string
		for j, p := range ports {
			if j != i {
				routes = append(routes, p)
			}
		}
		s := &server{extraArgs: []string{"--nats-cluster-listen", ports[i], "--nats-routes", strings.Join(routes, ","),
			"--leader-ttl", "3s"}, t: t, backend: backendPostgres, dbURL: dbURL, dataDir: t.TempDir(),
			listen: "127.0.0.1:0", log: &lockedBuffer{}}
		t.Cleanup(s.cleanup)
		replicas[i] = s
	}
	for i, s := range replicas {
		go func() {
			defer func() { started <- i }()
			s.startProcess()
		}()
	}
	for range replicas {
		<-started
	}
	if t.Failed() {
		t.FailNow()
	}
	for i, s := range replicas {
		s.submit("--label", "phase=before", "--", "echo", fmt.Sprint(i))
	}
	if got := countStates(replicas[0].waitJobs(map[string]string{"phase": "before"}, 3, 90*time.Second)); got["SUCCEEDED"] != 3 {
		t.Fatalf("before the kill: %v, want 3 SUCCEEDED", got)
	}
	replicas[2].kill()
	for _, s := range replicas[:2] {
		s.submit("--label", "phase=after", "--", "echo", "after")
	}
	if got := countStates(replicas[0].waitJobs(map[string]string{"phase": "after"}, 2, 90*time.Second)); got["SUCCEEDED"] != 2 {
		t.Fatalf("with one replica (and its NATS node) dead: %v, want 2 SUCCEEDED", got)
	}
	replicas[2].startProcess()
	replicas[2].submit("--label", "phase=back", "--", "echo", "back")
	if got := countStates(replicas[2].waitJobs(map[string]string{"phase": "back"}, 1, 90*time.Second)); got["SUCCEEDED"] != 1 {
		t.Fatalf("after the restart: %v, want 1 SUCCEEDED", got)
	}
}
