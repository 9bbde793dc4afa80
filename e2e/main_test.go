package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"database/sql"

	"connectrpc.com/connect"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
	_ "modernc.org/sqlite"             // database/sql driver "sqlite"

	hodeiv1 "github.com/hodei-jobs/hodei/gen/hodei/v1"
	"github.com/hodei-jobs/hodei/gen/hodei/v1/hodeiv1connect"
	"github.com/hodei-jobs/hodei/internal/dockertest"
	"github.com/hodei-jobs/hodei/internal/kubetest"
	"github.com/hodei-jobs/hodei/internal/pgtest"
)

// hodeiBin is the binary under test, built once by TestMain before any test runs and
// only read afterwards.
var hodeiBin string

func TestMain(m *testing.M) {
	bin, err := buildHodei()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	hodeiBin = bin
	pgtest.Main(dockertest.Wrap(kubetest.Wrap(m)))
}

// buildHodei builds ./cmd/hodei of this module. The binary goes to one directory per
// user and checkout under the system's temporary directory (pgtest.Main exits the
// process, so a per-run directory could not be removed); it is replaced atomically, so
// that processes of a concurrent run keep their binary.
func buildHodei() (string, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	out, err := exec.Command(goBin, "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	modDir := filepath.Dir(strings.TrimSpace(string(out)))
	sum := sha256.Sum256([]byte(modDir))
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("hodei-e2e-%d-%s", os.Getuid(), hex.EncodeToString(sum[:6])))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "hodei")
	tmp := fmt.Sprintf("%s.%d", bin, os.Getpid())
	build := exec.Command(goBin, "build", "-o", tmp, "./cmd/hodei")
	build.Dir = modDir
	// Static, as operators are told to build it: the docker provider mounts the running
	// binary into containers as their agent (e2e/docker_test.go).
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/hodei: %w\n%s", err, out)
	}
	if err := os.Rename(tmp, bin); err != nil {
		return "", err
	}
	// The slim agent next to it, as `make build` leaves bin/: the servers these tests
	// start run their local workers as hodei-agent (server.AgentCommand).
	agent := filepath.Join(dir, "hodei-agent")
	build = exec.Command(goBin, "build", "-o", agent+"."+strconv.Itoa(os.Getpid()), "./cmd/hodei-agent")
	build.Dir = modDir
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/hodei-agent: %w\n%s", err, out)
	}
	if err := os.Rename(agent+"."+strconv.Itoa(os.Getpid()), agent); err != nil {
		return "", err
	}
	return bin, nil
}

// lockedBuffer collects a process's output from several goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// backend is the platform a scenario runs on.
type backend string

const (
	// backendPostgres is `hodei server --database-url …` on a fresh PostgreSQL database.
	backendPostgres backend = "postgres"
	// backendDev is `hodei dev --data-dir …`: SQLite, embedded NATS, one process.
	backendDev backend = "dev"
)

// backends are the platforms every job-path scenario runs on, as subtests of that name.
var backends = []backend{backendPostgres, backendDev}

// forEachBackend runs fn as subtest TestX/postgres and TestX/dev. The subtests run one
// after the other (the machine may have two cores).
func forEachBackend(t *testing.T, fn func(t *testing.T, b backend)) {
	for _, b := range backends {
		t.Run(string(b), func(t *testing.T) { fn(t, b) })
	}
}

// server is one platform process, `hodei server` or `hodei dev` (restartable on the
// same address, database and data directory).
type server struct {
	t          testing.TB
	backend    backend
	dbURL      string // backendPostgres only
	dataDir    string
	maxWorkers int
	extraArgs  []string     // more flags for every start
	listen     string       // "127.0.0.1:0" until the first start picked a port
	url        string       // http://127.0.0.1:port once started (https:// with TLS)
	client     *http.Client // the test's own HTTP client (nil: http.DefaultClient)
	cliEnv     []string     // more environment for every CLI call (s.hodei)
	env        []string     // more environment for every start of the server

	log   *lockedBuffer // every start's output
	cmd   *exec.Cmd
	done  chan struct{} // closed when cmd exited
	api   hodeiv1connect.JobServiceClient
	start time.Time
}

// startServer starts the platform b on a fresh database (PostgreSQL) or data
// directory (dev) with the given capacity (0: the default). It is stopped with SIGTERM
// at the end of the test (which must make it exit), leftover workers are killed and
// reported, and its log is printed if the test failed.
func startServer(t testing.TB, b backend, maxWorkers int) *server {
	t.Helper()
	return startServerArgs(t, b, maxWorkers)
}

// startServerArgs is startServer with more flags for `hodei server` / `hodei dev`.
func startServerArgs(t testing.TB, b backend, maxWorkers int, extra ...string) *server {
	t.Helper()
	s := newServer(t, b, maxWorkers, extra...)
	s.startProcess()
	return s
}

// newServer is startServerArgs without the start: the caller sets more fields (client,
// cliEnv) and calls startProcess.
func newServer(t testing.TB, b backend, maxWorkers int, extra ...string) *server {
	t.Helper()
	s := &server{
		extraArgs:  extra,
		t:          t,
		backend:    b,
		dataDir:    t.TempDir(),
		maxWorkers: maxWorkers,
		listen:     "127.0.0.1:0",
		log:        &lockedBuffer{},
	}
	switch b {
	case backendPostgres:
		s.dbURL = pgtest.NewDatabase(t)
	case backendDev:
	default:
		t.Fatalf("unknown backend %q", b)
	}
	t.Cleanup(s.cleanup)
	return s
}

func (s *server) httpClient() *http.Client {
	if s.client != nil {
		return s.client
	}
	return http.DefaultClient
}

func (s *server) startProcess() {
	t := s.t
	t.Helper()
	var args []string
	if s.backend == backendDev {
		args = []string{"dev", "--listen", s.listen, "--data-dir", s.dataDir}
	} else {
		args = []string{"server", "--listen", s.listen, "--database-url", s.dbURL, "--data-dir", s.dataDir}
	}
	if s.maxWorkers > 0 {
		args = append(args, "--max-workers", strconv.Itoa(s.maxWorkers))
	}
	args = append(args, s.extraArgs...)
	cmd := exec.Command(hodeiBin, args...)
	cmd.Env = append(cleanEnv(), s.env...)
	pr, pw := io.Pipe()
	cmd.Stdout = io.MultiWriter(s.log, pw)
	cmd.Stderr = s.log
	// Its own process group, so that cleanup can end it and anything it left behind in
	// that group; the parent-death signal ends it if this test binary dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	fmt.Fprintf(s.log, "=== e2e: starting hodei %s\n", strings.Join(args, " "))
	s.start = time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start hodei server: %v", err)
	}
	s.cmd = cmd
	done := make(chan struct{})
	s.done = done
	go func() {
		err := cmd.Wait()
		fmt.Fprintf(s.log, "=== e2e: hodei %s exited: %v\n", args[0], err)
		pw.Close()
		close(done)
	}()

	// The server prints "hodei server listening on URL" (dev: "hodei dev listening on
	// URL") once it serves.
	prefix := "hodei " + args[0] + " listening on "
	urlc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if u, ok := strings.CutPrefix(sc.Text(), prefix); ok {
				select {
				case urlc <- strings.TrimSpace(u):
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	select {
	case u := <-urlc:
		if s.url != "" && u != s.url {
			t.Fatalf("restarted server listens on %s, want %s", u, s.url)
		}
		s.url = strings.TrimSuffix(u, "/")
		s.listen = strings.TrimPrefix(strings.TrimPrefix(s.url, "http://"), "https://")
	case <-done:
		t.Fatalf("hodei server exited before listening")
	case <-time.After(60 * time.Second):
		t.Fatalf("hodei server did not print its address within 60s")
	}
	s.api = hodeiv1connect.NewJobServiceClient(s.httpClient(), s.url)
	s.waitReady()
}

func (s *server) waitReady() {
	t := s.t
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		res, err := s.httpClient().Get(s.url + "/readyz")
		if err == nil {
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				t.Logf("server %s ready in %s", s.url, time.Since(s.start).Round(time.Millisecond))
				return
			}
			err = fmt.Errorf("%s: %s", res.Status, strings.TrimSpace(string(body)))
		}
		select {
		case <-s.done:
			t.Fatalf("hodei server exited before it was ready")
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("hodei server not ready after 60s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kill SIGKILLs the server process alone (its workers live in their own sessions and
// keep running) and waits for it to be gone.
func (s *server) kill() {
	s.t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		s.t.Fatalf("kill server: %v", err)
	}
	<-s.done
}

// stop sends SIGTERM and waits up to 20s for a graceful exit; it reports whether the
// server exited by itself.
func (s *server) stop() bool {
	select {
	case <-s.done:
		return true
	default:
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-s.done:
		return true
	case <-time.After(20 * time.Second):
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
		return false
	}
}

func (s *server) cleanup() {
	t := s.t
	if s.cmd != nil && !s.stop() {
		t.Errorf("hodei server did not exit within 20s of SIGTERM (killed)")
	}
	// Workers are in sessions of their own: end any this server left behind.
	if s.url != "" {
		for _, pid := range workerPIDs(s.url) {
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if t.Failed() || os.Getenv("HODEI_E2E_VERBOSE") != "" {
		t.Logf("hodei server log:\n%s", tail(s.log.String(), 400))
	}
	// HODEI_E2E_LOG_DIR keeps every server's whole log (the test log shows its tail).
	if dir := os.Getenv("HODEI_E2E_LOG_DIR"); dir != "" {
		name := filepath.Join(dir, strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())+
			fmt.Sprintf("-%d.log", time.Now().UnixNano()))
		if err := os.WriteFile(name, []byte(s.log.String()), 0o644); err != nil {
			t.Errorf("keep the server log: %v", err)
		}
	}
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.SplitAfter(s, "\n")
	if len(lines) <= n {
		return s
	}
	return fmt.Sprintf("[… %d lines cut …]\n", len(lines)-n) + strings.Join(lines[len(lines)-n:], "")
}

// cleanEnv is the environment of the processes the tests start: this one's without
// HODEI_* variables (which would change flag defaults).
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "HODEI_") {
			env = append(env, kv)
		}
	}
	return env
}

// cliResult is what a CLI invocation printed and how it exited.
type cliResult struct {
	args           []string
	stdout, stderr string
	code           int
}

func (r cliResult) String() string {
	return fmt.Sprintf("hodei %s: exit %d\nstdout: %q\nstderr: %q", shellQuote(r.args), r.code, r.stdout, r.stderr)
}

func shellQuote(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if a != "" && !strings.ContainsAny(a, " '\"$;&|\\") {
			q[i] = a
		} else {
			q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		if len(q[i]) > 80 {
			q[i] = q[i][:77] + "..."
		}
	}
	return strings.Join(q, " ")
}

// hodei runs the CLI binary against this server (through HODEI_SERVER, as a user's
// shell would) and returns its output and exit code. It fails the test if the binary
// cannot run or takes longer than two minutes.
func (s *server) hodei(args ...string) cliResult {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, hodeiBin, args...)
	cmd.Env = append(append(cleanEnv(), "HODEI_SERVER="+s.url), s.cliEnv...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := cliResult{args: args, stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ee.Exited():
		r.code = ee.ExitCode()
	default:
		s.t.Fatalf("hodei %s: %v (stderr %q)", shellQuote(args), err, errb.String())
	}
	return r
}

// mustHodei runs the CLI and fails the test unless it exits 0.
func (s *server) mustHodei(args ...string) cliResult {
	s.t.Helper()
	r := s.hodei(args...)
	if r.code != 0 {
		s.t.Fatalf("%v", r)
	}
	return r
}

// submit submits a job with the CLI and returns its id.
func (s *server) submit(args ...string) string {
	s.t.Helper()
	r := s.mustHodei(append([]string{"job", "submit"}, args...)...)
	id := strings.TrimSpace(r.stdout)
	if id == "" || strings.ContainsAny(id, " \n") || r.stdout != id+"\n" {
		s.t.Fatalf("job submit printed %q, want the job id alone on its line", r.stdout)
	}
	return id
}

// getJob reads a job through the API.
func (s *server) getJob(id string) *hodeiv1.Job {
	s.t.Helper()
	res, err := s.api.GetJob(context.Background(), connect.NewRequest(&hodeiv1.GetJobRequest{Id: id}))
	if err != nil {
		s.t.Fatalf("GetJob %s: %v", id, err)
	}
	return res.Msg.GetJob()
}

// listJobs returns every job (all pages) with the given label (empty: all jobs).
func (s *server) listJobs(labels map[string]string) []*hodeiv1.Job {
	s.t.Helper()
	var (
		jobs  []*hodeiv1.Job
		token string
	)
	for {
		res, err := s.api.ListJobs(context.Background(), connect.NewRequest(&hodeiv1.ListJobsRequest{
			Labels: labels, PageSize: 500, PageToken: token}))
		if err != nil {
			s.t.Fatalf("ListJobs: %v", err)
		}
		jobs = append(jobs, res.Msg.GetJobs()...)
		if token = res.Msg.GetNextPageToken(); token == "" {
			return jobs
		}
	}
}

func isTerminal(state string) bool {
	switch state {
	case "SUCCEEDED", "FAILED", "TIMED_OUT", "CANCELLED", "MANUAL_INTERVENTION_REQUIRED":
		return true
	}
	return false
}

// waitJobs polls the jobs with the label until n of them exist and all have ended, or
// fails the test after timeout with a count of the states.
func (s *server) waitJobs(labels map[string]string, n int, timeout time.Duration) []*hodeiv1.Job {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		jobs := s.listJobs(labels)
		ended := 0
		for _, j := range jobs {
			if isTerminal(j.GetState()) {
				ended++
			}
		}
		if len(jobs) >= n && ended == len(jobs) {
			return jobs
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("after %s: %d jobs labelled %v, %d ended, want %d ended; states %v",
				timeout, len(jobs), labels, ended, n, countStates(jobs))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func countStates(jobs []*hodeiv1.Job) map[string]int {
	m := map[string]int{}
	for _, j := range jobs {
		m[j.GetState()]++
	}
	return m
}

// workerProc is one `hodei worker` process.
type workerProc struct {
	pid int
	id  string // HODEI_WORKER_ID
}

// workerPIDs returns the pids of the server's worker processes (see workerProcs).
func workerPIDs(url string) []int {
	var pids []int
	for _, p := range workerProcs(url) {
		pids = append(pids, p.pid)
	}
	return pids
}

// workerProcs returns the worker agent processes of the server at url that are alive
// at one instant, found by scanning /proc: the program is the slim hodei-agent built
// beside the binary under test (or that binary with first argument "worker"), and its
// environment holds HODEI_WORKER_ID and HODEI_SERVER=url. Job processes (children of
// workers) do not match.
//
// The scan is not atomic: a worker may exit and another start while it runs. So every
// process found is checked again afterwards: one that is still alive (not a zombie) at
// its check was alive when the first check began (it existed before the scan), so the
// result is a set of processes that lived at the same time.
func workerProcs(url string) []workerProc {
	var found []workerProc
	forEachProc(func(pid int, dir string) {
		cmdline, err := os.ReadFile(dir + "/cmdline")
		if err != nil {
			return
		}
		argv := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
		if !isAgentArgv(argv) {
			return
		}
		environ, err := os.ReadFile(dir + "/environ")
		if err != nil {
			return
		}
		var id string
		var ours bool
		for _, kv := range strings.Split(string(environ), "\x00") {
			if v, ok := strings.CutPrefix(kv, "HODEI_WORKER_ID="); ok {
				id = v
			} else if kv == "HODEI_SERVER="+url || kv == "HODEI_SERVER="+url+"/" {
				ours = true
			}
		}
		if id != "" && ours {
			found = append(found, workerProc{pid: pid, id: id})
		}
	})
	alive := found[:0]
	for _, p := range found {
		if st, sid, ok := procStat(p.pid); ok && st != 'Z' && st != 'X' && sid == p.pid {
			alive = append(alive, p)
		}
	}
	return alive
}

// isAgentArgv reports whether argv is a worker agent's: hodei-agent, or hodei worker.
func isAgentArgv(argv []string) bool {
	switch filepath.Base(argv[0]) {
	case "hodei-agent":
		return true
	case "hodei":
		return len(argv) >= 2 && argv[1] == "worker"
	}
	return false
}

// forEachProc calls fn with the pid and /proc directory of every process.
func forEachProc(fn func(pid int, dir string)) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			fn(pid, "/proc/"+e.Name())
		}
	}
}

// processAlive reports whether pid exists and is not a zombie.
func processAlive(pid int) bool {
	st, _, ok := procStat(pid)
	return ok && st != 'Z' && st != 'X'
}

// procStat returns the state and session id of pid from /proc/<pid>/stat. A worker is
// the leader of its own session (the local provider starts it with setsid); a job
// process the worker is forking still shows the worker's command line and environment
// until it execs, but its session is the worker's.
func procStat(pid int) (state byte, sid int, ok bool) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, false
	}
	// "pid (comm) state ppid pgrp session …": the fields follow the last ')'.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 4 || len(f[0]) != 1 {
		return 0, 0, false
	}
	sid, err = strconv.Atoi(f[3])
	if err != nil {
		return 0, 0, false
	}
	return f[0][0], sid, true
}

// sampler counts the server's worker processes every interval until stopped.
//
// A destroyed worker may still be exiting (alive, SIGTERMed) after the database marked
// it TERMINATED and capacity went to a new worker: such processes are counted apart.
// The first time more than limit workers that are not TERMINATED live at once, it
// records which they were and their states in the database.
type sampler struct {
	stop    chan struct{}
	done    chan struct{}
	max     int // most processes alive at once, exiting ones included
	maxLive int // most processes alive at once whose worker is not TERMINATED
	seen    map[int]bool
	over    string // description of the first sample above limit
}

func startSampler(s *server, limit int, interval time.Duration) *sampler {
	url := s.url
	sm := &sampler{stop: make(chan struct{}), done: make(chan struct{}), seen: map[int]bool{}}
	go func() {
		defer close(sm.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			procs := workerProcs(url)
			sm.max = max(sm.max, len(procs))
			live := len(procs)
			for _, p := range procs {
				sm.seen[p.pid] = true
			}
			if len(procs) > limit {
				desc, terminated := s.describeWorkers(procs)
				live -= terminated
				if live > limit && sm.over == "" {
					sm.over = desc
				}
			}
			sm.maxLive = max(sm.maxLive, live)
			select {
			case <-sm.stop:
				return
			case <-t.C:
			}
		}
	}()
	return sm
}

// describeWorkers lists the worker processes with the state of their workers (and of
// their jobs) in the database, and counts those the database has TERMINATED.
func (s *server) describeWorkers(procs []workerProc) (desc string, terminated int) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var b strings.Builder
	fmt.Fprintf(&b, "%d worker processes at %s:", len(procs), time.Now().Format("15:04:05.000"))
	db, err := s.openDB()
	if err != nil {
		return b.String() + " (database: " + err.Error() + ")", 0
	}
	defer db.Close()
	type row struct{ state, job, jstate string }
	rows, err := db.QueryContext(ctx, `SELECT w.id, w.state, coalesce(w.job_id, ''), coalesce(j.state, '')
		FROM workers w LEFT JOIN jobs j ON j.id = w.job_id`)
	if err != nil {
		return b.String() + " (database: " + err.Error() + ")", 0
	}
	byID := map[string]row{}
	active := 0
	for rows.Next() {
		var id string
		var r row
		if err := rows.Scan(&id, &r.state, &r.job, &r.jstate); err != nil {
			rows.Close()
			return b.String() + " (database: " + err.Error() + ")", 0
		}
		byID[id] = r
		if r.state != "TERMINATED" {
			active++
		}
	}
	rows.Close()
	for _, p := range procs {
		r, ok := byID[p.id]
		if !ok {
			r.state = "(no row)"
		}
		if r.state == "TERMINATED" {
			terminated++
		}
		fmt.Fprintf(&b, "\n  pid %d worker %s: %s (alive now: %v), job %s %s", p.pid, p.id, r.state, processAlive(p.pid), r.job, r.jstate)
	}
	fmt.Fprintf(&b, "\n  workers not TERMINATED in the database: %d", active)
	return b.String(), terminated
}

// samplerResult is what a sampler saw.
type samplerResult struct {
	maxLive  int    // most workers not TERMINATED alive at once
	max      int    // most worker processes alive at once, exiting ones included
	distinct int    // worker processes seen
	over     string // the first sample with more than limit live workers ("": none)
}

// finish stops the sampler and returns what it saw.
func (sm *sampler) finish() samplerResult {
	close(sm.stop)
	<-sm.done
	return samplerResult{maxLive: sm.maxLive, max: sm.max, distinct: len(sm.seen), over: sm.over}
}

// waitNoWorkers waits until the server has no worker process left.
func (s *server) waitNoWorkers(timeout time.Duration) {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		pids := workerPIDs(s.url)
		if len(pids) == 0 {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%d worker processes still alive %s after every job ended: pids %v", len(pids), timeout, pids)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// openDB opens the server's database with database/sql: the PostgreSQL database, or
// (dev) the SQLite file in its data directory, read-only (WAL mode lets another
// process read while `hodei dev` writes).
func (s *server) openDB() (*sql.DB, error) {
	if s.backend == backendDev {
		return sql.Open("sqlite", "file:"+filepath.Join(s.dataDir, "hodei.db")+"?mode=ro&_pragma=busy_timeout(5000)")
	}
	return sql.Open("pgx", s.dbURL)
}

// count runs a SELECT count(*) … query on the server's database.
func (s *server) count(query string) int {
	s.t.Helper()
	db, err := s.openDB()
	if err != nil {
		s.t.Fatalf("open the database: %v", err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRowContext(s.t.Context(), query).Scan(&n); err != nil {
		s.t.Fatalf("%s: %v", query, err)
	}
	return n
}
