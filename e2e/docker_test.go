package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/hodei-jobs/hodei/internal/dockertest"
)

// startDockerDev starts `hodei dev --provider local --provider docker` against this
// test binary's private Docker Engine; the (static) hodei binary under test is the
// agent mounted into the containers, as it is by default.
func startDockerDev(t *testing.T, e *dockertest.Engine, extra ...string) *server {
	t.Helper()
	args := append([]string{"--provider", "local", "--provider", "docker", "--docker-host", e.Host,
		"--docker-max-workers", "2",
		"--heartbeat-interval", "1s", "--cleanup-interval", "1s"}, extra...)
	s := startServerArgs(t, backendDev, 0, args...)
	t.Cleanup(func() { waitNoContainers(t, e, 30*time.Second) })
	return s
}

// containers returns the hodei worker containers on the engine (any state).
func containers(t *testing.T, e *dockertest.Engine, label string) []string {
	t.Helper()
	res, err := e.Client.ContainerList(context.Background(), client.ContainerListOptions{All: true,
		Filters: client.Filters{}.Add("label", label)})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, c := range res.Items {
		ids = append(ids, c.ID)
	}
	return ids
}

func waitNoContainers(t *testing.T, e *dockertest.Engine, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		left := containers(t, e, "hodei.worker")
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%d worker containers left on the engine after %s: %v", len(left), d, left)
			for _, id := range left {
				_, _ = e.Client.ContainerRemove(context.Background(), id, client.ContainerRemoveOptions{Force: true})
			}
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (s *server) waitJobState(id string, want string, d time.Duration) string {
	s.t.Helper()
	deadline := time.Now().Add(d)
	for {
		st := s.getJob(id).GetState()
		if st == want || (isTerminal(st) && want == "ended") {
			return st
		}
		if isTerminal(st) || time.Now().After(deadline) {
			s.t.Fatalf("job %s is %s; want %s within %s (error %q)", id, st, want, d, s.getJob(id).GetLastError())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Jobs run in containers through the real binary: output, exit codes, the provider
// shown by job get, OOM, a missing image, cancel, and nothing left behind.
func TestDockerJobs(t *testing.T) {
	e := dockertest.Get(t)
	s := startDockerDev(t, e)

	t.Run("RunPrintsAndRunsInContainer", func(t *testing.T) {
		r := s.mustHodei("job", "run", "--image", e.Image, "--pull", "never", "--", "sh", "-c", "echo hi; cat /proc/1/cgroup")
		if !strings.Contains(r.stdout, "hi\n") || !strings.Contains(r.stdout, "/docker/") {
			t.Fatalf("output %q: want hi and a docker cgroup", r.stdout)
		}
	})
	t.Run("ExitCodePassedThrough", func(t *testing.T) {
		r := s.hodei("job", "run", "--image", e.Image, "--pull", "never", "--", "sh", "-c", "exit 7")
		if r.code != 7 {
			t.Fatalf("%v; want exit 7", r)
		}
	})
	t.Run("ProviderShownByJobGet", func(t *testing.T) {
		id := s.submit("--image", e.Image, "--pull", "never", "--cpu", "0.5", "--memory", "128Mi", "--", "true")
		s.waitJobState(id, "SUCCEEDED", time.Minute)
		out := s.mustHodei("job", "get", id).stdout
		for _, want := range []string{"provider:", "docker", "memory:", "128Mi", "image:"} {
			if !strings.Contains(out, want) {
				t.Errorf("job get output lacks %q:\n%s", want, out)
			}
		}
		local := s.submit("--", "true")
		s.waitJobState(local, "SUCCEEDED", time.Minute)
		if p := s.getJob(local).GetProvider(); p != "local" {
			t.Errorf("a job without an image ran on %q; want local (first given)", p)
		}
	})
	t.Run("OutOfMemoryFails", func(t *testing.T) {
		id := s.submit("--image", e.Image, "--pull", "never", "--memory", "64Mi", "--",
			"sh", "-c", "x=$(head -c 300000000 /dev/zero | tr '\\0' a); echo survived")
		s.waitJobState(id, "FAILED", 2*time.Minute)
		j := s.getJob(id)
		if j.GetExitCode() != 137 || !strings.Contains(j.GetLastError(), "out of memory (limit 64Mi)") {
			t.Fatalf("exit %d, error %q; want 137 and out of memory (limit 64Mi)", j.GetExitCode(), j.GetLastError())
		}
	})
	t.Run("MissingImageFailsFast", func(t *testing.T) {
		start := time.Now()
		id := s.submit("--image", "hodei-test/nope:1", "--pull", "never", "--max-attempts", "3", "--", "true")
		s.waitJobState(id, "FAILED", 30*time.Second)
		if err := s.getJob(id).GetLastError(); !strings.Contains(err, "image hodei-test/nope:1 not found") {
			t.Fatalf("error %q; want the image named", err)
		}
		t.Logf("missing image failed the job in %s", time.Since(start).Round(time.Millisecond))
	})
	t.Run("CancelLeavesNoContainer", func(t *testing.T) {
		id := s.submit("--image", e.Image, "--pull", "never", "--", "sleep", "300")
		s.waitJobState(id, "RUNNING", time.Minute)
		s.mustHodei("job", "cancel", id)
		s.waitJobState(id, "CANCELLED", time.Minute)
		waitNoContainers(t, e, 30*time.Second)
	})
	t.Run("TimeoutLeavesNoContainer", func(t *testing.T) {
		id := s.submit("--image", e.Image, "--pull", "never", "--timeout", "2s", "--", "sleep", "300")
		s.waitJobState(id, "TIMED_OUT", time.Minute)
		waitNoContainers(t, e, 30*time.Second)
	})
	t.Run("KilledContainerIsRecovered", func(t *testing.T) {
		id := s.submit("--image", e.Image, "--pull", "never", "--max-attempts", "2", "--",
			"sh", "-c", "sleep 3; echo done")
		s.waitJobState(id, "RUNNING", time.Minute)
		if s.getJob(id).GetAttempt() != 1 {
			t.Fatal("the job is past its first attempt before the kill")
		}
		first := containers(t, e, "hodei.job="+id)
		if len(first) != 1 {
			t.Fatalf("containers of the job: %v; want 1", first)
		}
		if _, err := e.Client.ContainerKill(context.Background(), first[0], client.ContainerKillOptions{}); err != nil {
			t.Fatal(err)
		}
		s.waitJobState(id, "SUCCEEDED", 2*time.Minute)
		if a := s.getJob(id).GetAttempt(); a != 2 {
			t.Fatalf("attempt %d; want 2 (a new container)", a)
		}
	})
	waitNoContainers(t, e, 30*time.Second)
}

// A spec no configured provider can run is refused at submit, naming why.
func TestSubmitRefusedWithoutContainerProvider(t *testing.T) {
	s := startServerArgs(t, backendDev, 0)
	r := s.hodei("job", "submit", "--image", "busybox", "--", "true")
	if r.code == 0 || !strings.Contains(r.stderr, "image given but no configured provider runs images (configured: local)") {
		t.Fatalf("%v; want a refusal naming why", r)
	}
	r = s.hodei("job", "submit", "--selector", "gpu=true", "--", "true")
	if r.code == 0 || !strings.Contains(r.stderr, "no provider has label gpu=true") {
		t.Fatalf("%v; want a refusal naming the selector", r)
	}
	if n := len(s.listJobs(nil)); n != 0 {
		t.Fatalf("%d jobs exist after refused submits; want 0", n)
	}
}

// Capacity is per provider: with one docker slot, a second image job waits in PENDING
// while a local job starts and finishes; then it runs.
func TestDockerPerProviderCapacity(t *testing.T) {
	e := dockertest.Get(t)
	s := startDockerDev(t, e, "--docker-max-workers", "1")
	d1 := s.submit("--image", e.Image, "--pull", "never", "--", "sleep", "4")
	s.waitJobState(d1, "RUNNING", time.Minute)
	d2 := s.submit("--image", e.Image, "--pull", "never", "--", "true")
	l1 := s.submit("--", "true")
	s.waitJobState(l1, "SUCCEEDED", time.Minute)
	if st := s.getJob(d2).GetState(); st != "PENDING" {
		t.Fatalf("second docker job is %s while the only docker slot is taken; want PENDING", st)
	}
	if st := s.getJob(d1).GetState(); st != "RUNNING" {
		t.Fatalf("first docker job is %s; want RUNNING", st)
	}
	s.waitJobState(d1, "SUCCEEDED", time.Minute)
	s.waitJobState(d2, "SUCCEEDED", time.Minute)
}

// `hodei bench jobs --provider docker` runs its jobs in containers and times bare
// container runs on the same engine (figures are reported, not judged).
func TestBenchJobsDocker(t *testing.T) {
	e := dockertest.Get(t)
	s := startServerArgs(t, backendDev, 0) // only for its CLI helper; the bench runs its own server
	r := s.hodei("bench", "jobs", "--driver", "sqlite", "--provider", "docker", "--image", e.Image,
		"--docker-host", e.Host, "--jobs", "5", "--concurrency", "1", "-o", "json")
	if r.code != 0 {
		t.Fatalf("%v", r)
	}
	var res map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatalf("%v\n%v", r, err)
	}
	if res["succeeded"] != float64(5) || res["provider"] != "docker" {
		t.Fatalf("bench: %s; want 5 succeeded on docker", r.stdout)
	}
	for _, k := range []string{"bare_run_p50_ms", "start_to_bare_run_p50_ratio", "start_latency_p50_ms"} {
		if v, ok := res[k].(float64); !ok || v <= 0 {
			t.Errorf("%s = %v; want a positive number (%s)", k, res[k], r.stdout)
		}
	}
	t.Logf("%s", r.stdout)
	waitNoContainers(t, e, 30*time.Second)
}

// The server is SIGKILLed while a job runs in a container and started again: the
// container's agent reconnects, the job ends, and no container is left afterwards.
func TestDockerServerKilledMidJob(t *testing.T) {
	e := dockertest.Get(t)
	s := startDockerDev(t, e)
	id := s.submit("--image", e.Image, "--pull", "never", "--", "sh", "-c", "sleep 4; echo done")
	s.waitJobState(id, "RUNNING", time.Minute)
	s.kill()
	if n := len(containers(t, e, "hodei.job="+id)); n != 1 {
		t.Fatalf("%d containers of the job after the server died; want its one container still there", n)
	}
	s.startProcess()
	st := s.waitJobState(id, "ended", 2*time.Minute)
	if st != "SUCCEEDED" {
		t.Fatalf("job ended %s (%q); want SUCCEEDED", st, s.getJob(id).GetLastError())
	}
	waitNoContainers(t, e, 30*time.Second)
}

// --provider-strategy least-loaded, set in the --config file: jobs that both providers
// can run (docker has a default image) spread over them, and `hodei job get` shows
// where each ran.
func TestDockerLeastLoadedFromConfigFile(t *testing.T) {
	e := dockertest.Get(t)
	cfg := filepath.Join(t.TempDir(), "hodei.yaml")
	if err := os.WriteFile(cfg, []byte("provider_strategy: least-loaded\ndocker:\n  default_image: "+e.Image+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startDockerDev(t, e, "--config", cfg, "--local-max-workers", "2")
	a := s.submit("--", "sleep", "3")
	s.waitJobState(a, "RUNNING", time.Minute)
	b := s.submit("--", "sleep", "1")
	s.waitJobState(b, "SUCCEEDED", time.Minute)
	s.waitJobState(a, "SUCCEEDED", time.Minute)
	got := s.getJob(a).GetProvider() + "," + s.getJob(b).GetProvider()
	if got != "local,docker" {
		t.Fatalf("providers of the two jobs: %s; want local,docker (first-fit would put both on local)", got)
	}
	if out := s.mustHodei("job", "get", b).stdout; !regexp.MustCompile(`(?m)^provider:\s+docker$`).MatchString(out) {
		t.Errorf("job get does not show provider docker:\n%s", out)
	}
}
