package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hodei-jobs/hodei/internal/pgtest"
	"github.com/hodei-jobs/hodei/jobs"
	"github.com/hodei-jobs/hodei/messaging"
)

// markedProcs returns the pids of the live processes whose environment holds
// E2E_MARK=mark: a job's process (its env has the job's variables) and nothing else.
func markedProcs(mark string) []int {
	var pids []int
	forEachProc(func(pid int, dir string) {
		env, err := os.ReadFile(dir + "/environ")
		if err != nil {
			return
		}
		for _, kv := range strings.Split(string(env), "\x00") {
			if kv == "E2E_MARK="+mark && processAlive(pid) {
				pids = append(pids, pid)
				return
			}
		}
	})
	return pids
}

// aliveWatch samples /proc every 10 ms and keeps the last time a process carrying the
// mark was alive.
type aliveWatch struct {
	mu       sync.Mutex
	lastSeen time.Time
	stop     chan struct{}
	done     chan struct{}
}

func watchMarked(mark string) *aliveWatch {
	w := &aliveWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			if len(markedProcs(mark)) > 0 {
				w.mu.Lock()
				w.lastSeen = time.Now()
				w.mu.Unlock()
			}
			select {
			case <-w.stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	return w
}

func (w *aliveWatch) finish() time.Time {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lastSeen
}

func randomMark() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// waitState polls job id until it is in one of states.
func (s *server) waitState(id string, timeout time.Duration, states ...string) string {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st := s.getJob(id).GetState()
		for _, want := range states {
			if st == want {
				return st
			}
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("job %s is %s after %s, want one of %v\n%s", id, st, timeout, states, s.mustHodei("job", "get", id))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// claimedBy polls the saga row until it is claimed by runner (the replica id).
func (s *server) waitClaimedBy(sagaID, runner string, timeout time.Duration) {
	s.t.Helper()
	db, err := s.openDB()
	if err != nil {
		s.t.Fatal(err)
	}
	defer db.Close()
	deadline := time.Now().Add(timeout)
	for {
		var by string
		err := db.QueryRowContext(context.Background(), `SELECT claimed_by FROM sagas WHERE id = $1`, sagaID).Scan(&by)
		if err == nil && by == runner {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("saga %s claimed by %q (err %v) after %s, want %s", sagaID, by, err, timeout, runner)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestTimeoutOnAnotherReplica: two `hodei server` replicas on one PostgreSQL and one
// NATS. Replica A starts a job's worker (a local process: A owns it); the job's timeout
// saga runs on replica B. B cannot stop A's process itself: it asks A (routed over
// NATS), and the job ends TIMED_OUT only once that process is gone. When A is dead for
// good nobody can confirm it, and the job ends MANUAL_INTERVENTION_REQUIRED with the
// process still running.
func TestTimeoutOnAnotherReplica(t *testing.T) {
	ctx := context.Background()
	nats, err := messaging.StartEmbedded(ctx, messaging.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nats.Shutdown)
	dbURL := pgtest.NewDatabase(t)
	args := []string{"--nats-url", nats.ClientURL(), "--node-timeout", "1s"}
	const timeout = 10 * time.Second

	// runOnA submits a job that outlives its timeout while only A runs, so A creates
	// its worker, and returns once it runs, with the time it was seen RUNNING.
	runOnA := func(a *server, mark string) (string, time.Time) {
		id := a.submit("--timeout", timeout.String(), "--env", "E2E_MARK="+mark, "--", "sleep", "120")
		a.waitState(id, 60*time.Second, "RUNNING")
		if len(markedProcs(mark)) == 0 {
			t.Fatalf("job %s is RUNNING but no process carries its mark", id)
		}
		return id, time.Now()
	}

	t.Run("confirmed", func(t *testing.T) {
		a := startReplica(t, dbURL, args...)
		mark := randomMark()
		id, running := runOnA(a, mark)
		b := startReplica(t, dbURL, args...)
		idB, _ := b.readiness()
		watch := watchMarked(mark)
		// A freezes just before the timeout is due, so B alone fires it and runs the
		// timeout saga; A thaws once B holds that saga (its terminate then waits on A).
		time.Sleep(time.Until(running.Add(timeout - 2*time.Second)))
		if err := syscall.Kill(a.cmd.Process.Pid, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		b.waitClaimedBy(jobs.TimeoutSagaID(id), idB, 30*time.Second)
		if err := syscall.Kill(a.cmd.Process.Pid, syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		if st := b.waitState(id, 60*time.Second, "TIMED_OUT", "MANUAL_INTERVENTION_REQUIRED", "FAILED"); st != "TIMED_OUT" {
			t.Fatalf("job %s ended %s, want TIMED_OUT\n%s", id, st, b.mustHodei("saga", "show", "--job", id))
		}
		lastAlive := watch.finish()
		finished := b.getJob(id).GetFinishedAt().AsTime()
		if lastAlive.IsZero() || !lastAlive.Before(finished) {
			t.Fatalf("the job's process was last seen alive at %s, the job ended TIMED_OUT at %s", lastAlive, finished)
		}
		if pids := markedProcs(mark); len(pids) != 0 {
			t.Fatalf("the timed-out job's processes %v are still running", pids)
		}
	})

	t.Run("owner dead", func(t *testing.T) {
		a := startReplica(t, dbURL, args...)
		mark := randomMark()
		id, running := runOnA(a, mark)
		b := startReplica(t, dbURL, args...)
		time.Sleep(time.Until(running.Add(timeout - 2*time.Second)))
		a.kill() // its worker, a process of its own session, lives on
		if st := b.waitState(id, 60*time.Second, "TIMED_OUT", "MANUAL_INTERVENTION_REQUIRED", "FAILED"); st != "MANUAL_INTERVENTION_REQUIRED" {
			t.Fatalf("job %s ended %s, want MANUAL_INTERVENTION_REQUIRED", id, st)
		}
		j := b.getJob(id)
		if !strings.Contains(j.GetLastError(), "could not be confirmed terminated") {
			t.Fatalf("last error %q does not say why", j.GetLastError())
		}
		pids := markedProcs(mark)
		if len(pids) == 0 {
			t.Fatal("the job's process is gone: nothing was left unconfirmed, the test proves nothing")
		}
		for _, pid := range pids { // what the operator would do
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		for _, p := range workerProcs(a.url) {
			_ = syscall.Kill(-p.pid, syscall.SIGKILL)
		}
	})
}
