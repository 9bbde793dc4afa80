package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/internal/pgtest"
	"github.com/hodei-jobs/hodei/messaging"
)

// leaderTTL is the lease TTL of TestLeaderKilledAnotherLeads: short, so that the
// test's wait for a new leader is short.
const leaderTTL = 3 * time.Second

// startReplica starts `hodei server` on an existing database (shared with other
// replicas) with its own data directory and the given flags.
func startReplica(t *testing.T, dbURL string, extra ...string) *server {
	t.Helper()
	s := &server{extraArgs: extra, t: t, backend: backendPostgres, dbURL: dbURL, dataDir: t.TempDir(),
		listen: "127.0.0.1:0", log: &lockedBuffer{}}
	t.Cleanup(s.cleanup)
	s.startProcess()
	return s
}

var readyLines = regexp.MustCompile(`(?m)^replica: (\S+)\nleader: (.+)$`)

// readiness reads /readyz: this replica's id and the leader it knows ("" for none).
func (s *server) readiness() (replica, leader string) {
	s.t.Helper()
	res, err := http.Get(s.url + "/readyz")
	if err != nil {
		s.t.Fatalf("GET /readyz: %v", err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	m := readyLines.FindStringSubmatch(string(body))
	if m == nil {
		s.t.Fatalf("/readyz body %q names no replica and leader", body)
	}
	if m[2] == "(none known)" {
		return m[1], ""
	}
	return m[1], m[2]
}

// waitLeader polls /readyz until the leader it names is want; it returns how long
// that took.
func (s *server) waitLeader(want string, timeout time.Duration) time.Duration {
	s.t.Helper()
	start := time.Now()
	for {
		_, leader := s.readiness()
		if leader == want {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			s.t.Fatalf("%s's /readyz names leader %q after %s, want %s", s.url, leader, timeout, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// adminStatus runs `hodei admin status -o json` against s.
func (s *server) adminStatus() (replica string, leading bool, leader string) {
	s.t.Helper()
	r := s.mustHodei("admin", "status", "-o", "json")
	var st struct {
		Replica string `json:"replica"`
		Leading bool   `json:"leading"`
		Leader  string `json:"leader"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		s.t.Fatalf("admin status -o json printed %q: %v", r.stdout, err)
	}
	return st.Replica, st.Leading, st.Leader
}

// TestLeaderKilledAnotherLeads: two `hodei server` replicas on one PostgreSQL and one
// NATS (run by the test, so that it outlives both). The first leads; a job submitted
// to the follower runs (the leader schedules it). The leader is SIGKILLed: the
// follower leads once the dead leader's lease expires, and a job submitted after the
// kill runs to SUCCEEDED.
func TestLeaderKilledAnotherLeads(t *testing.T) {
	ctx := context.Background()
	nats, err := messaging.StartEmbedded(ctx, messaging.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nats.Shutdown)
	dbURL := pgtest.NewDatabase(t)
	args := []string{"--nats-url", nats.ClientURL(), "--leader-ttl", leaderTTL.String()}

	a := startReplica(t, dbURL, args...)
	idA, _ := a.readiness()
	a.waitLeader(idA, 2*leaderTTL)
	b := startReplica(t, dbURL, args...)
	idB, _ := b.readiness()
	if idA == idB {
		t.Fatalf("both replicas are %s", idA)
	}
	b.waitLeader(idA, 2*leaderTTL)
	if replica, leading, leader := b.adminStatus(); replica != idB || leading || leader != idA {
		t.Fatalf("admin status of the follower: replica %s leading %v leader %s; want %s, false, %s",
			replica, leading, leader, idB, idA)
	}
	if replica, leading, leader := a.adminStatus(); replica != idA || !leading || leader != idA {
		t.Fatalf("admin status of the leader: replica %s leading %v leader %s", replica, leading, leader)
	}

	// A job submitted to the follower is scheduled by the leader.
	before := b.submit("--label", "phase=before", "--", "echo", "before")
	if jobs := b.waitJobs(map[string]string{"phase": "before"}, 1, 60*time.Second); jobs[0].GetState() != "SUCCEEDED" {
		t.Fatalf("job %s submitted to the follower: %s", before, jobs[0].GetState())
	}

	a.kill()
	took := b.waitLeader(idB, 4*leaderTTL)
	t.Logf("%s leads %s after %s was killed (lease TTL %s)", idB, took.Round(10*time.Millisecond), idA, leaderTTL)
	// The dead leader renewed at most a third of the TTL before the kill, so its lease
	// ended within the TTL; the poll and a loaded machine add a little.
	if took > leaderTTL+leaderTTL/2 {
		t.Errorf("the follower took %s to lead, more than the TTL %s (plus half of it)", took, leaderTTL)
	}
	if replica, leading, leader := b.adminStatus(); replica != idB || !leading || leader != idB {
		t.Fatalf("admin status after the kill: replica %s leading %v leader %s", replica, leading, leader)
	}

	// Scheduling goes on.
	after := b.submit("--label", "phase=after", "--", "echo", "after")
	if jobs := b.waitJobs(map[string]string{"phase": "after"}, 1, 60*time.Second); jobs[0].GetState() != "SUCCEEDED" {
		t.Fatalf("job %s submitted after the leader was killed: %s", after, jobs[0].GetState())
	}
	if r := b.mustHodei("job", "logs", after); r.stdout != "after\n" {
		t.Fatalf("job logs: %v", r)
	}
}
