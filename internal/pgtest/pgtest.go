package pgtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/hodei-jobs/hodei/store/postgres"
)

// EnvDatabaseURL names the variable that points the tests at an existing server. The URL
// must let the user create and drop databases.
const EnvDatabaseURL = "HODEI_TEST_DATABASE_URL"

const installHint = `PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found on PATH or under
/usr/lib/postgresql/*/bin. Install them with
    apt-get install -y postgresql
or run "make test", which installs them; or set ` + EnvDatabaseURL + ` to the URL of a
server where the tests may create and drop databases.`

// env is the one server of this test binary. It is package state by necessity: TestMain
// starts it and every test reaches it through NewDatabase/NewStore.
type env struct {
	adminURL *url.URL      // URL of the maintenance database ("postgres")
	admin    *pgxpool.Pool // creates and drops databases
	cluster  *cluster      // nil with EnvDatabaseURL
	// strategy is " STRATEGY FILE_COPY" on PostgreSQL 15+: copying the files of a small
	// template is faster than WAL-logging every block (the default since 15).
	strategy string

	tmplOnce sync.Once
	tmplName string
	tmplErr  error
}

var (
	envMu  sync.Mutex
	active *env
)

// Main starts one throwaway PostgreSQL cluster for the test binary (or uses the server
// in HODEI_TEST_DATABASE_URL), runs the tests, stops the cluster and exits with the
// tests' code. Call it from TestMain. It exits 1, with instructions, if PostgreSQL is
// not installed: the tests are never skipped.
// m is usually the *testing.M of TestMain, or another helper's wrapper of it (e.g.
// dockertest.Wrap(m)).
func Main(m interface{ Run() int }) {
	// A fuzzing worker process (go test -fuzz) only runs the fuzz target, which needs
	// no database: it starts none.
	for _, arg := range os.Args[1:] {
		if strings.HasPrefix(arg, "-test.fuzzworker") {
			os.Exit(m.Run())
		}
	}
	os.Exit(run(m))
}

func run(m interface{ Run() int }) int {
	e, err := start()
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
		return 1
	}
	envMu.Lock()
	active = e
	envMu.Unlock()
	code := m.Run()
	envMu.Lock()
	active = nil
	envMu.Unlock()
	e.stop()
	return code
}

func start() (*env, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	e := &env{}
	if raw := os.Getenv(EnvDatabaseURL); raw != "" {
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
			return nil, fmt.Errorf("%s must be a postgres:// URL, got %q", EnvDatabaseURL, raw)
		}
		e.adminURL = u
	} else {
		c, err := startCluster(ctx, false)
		if err != nil {
			return nil, err
		}
		e.cluster = c
		e.adminURL = &url.URL{Scheme: "postgres", User: url.User("postgres"),
			Host: "127.0.0.1:" + strconv.Itoa(c.port), Path: "/postgres", RawQuery: "sslmode=disable"}
	}
	pcfg, err := pgxpool.ParseConfig(e.adminURL.String())
	if err == nil {
		pcfg.MaxConns = 4
		e.admin, err = pgxpool.NewWithConfig(ctx, pcfg)
	}
	if err == nil {
		err = e.admin.Ping(ctx)
	}
	if err != nil {
		if e.admin != nil {
			e.admin.Close()
		}
		if e.cluster != nil {
			e.cluster.stop()
		}
		return nil, fmt.Errorf("connect to %s: %w", redact(e.adminURL), err)
	}
	var version int
	if err := e.admin.QueryRow(ctx, `SELECT current_setting('server_version_num')::int`).Scan(&version); err == nil && version >= 150000 {
		e.strategy = " STRATEGY FILE_COPY"
	}
	return e, nil
}

func (e *env) stop() {
	if e.cluster == nil && e.tmplName != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, _ = e.admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{e.tmplName}.Sanitize()+" WITH (FORCE)")
		cancel()
	}
	e.admin.Close()
	if e.cluster != nil {
		e.cluster.stop()
	}
}

func current(t testing.TB) *env {
	t.Helper()
	envMu.Lock()
	defer envMu.Unlock()
	if active == nil {
		t.Fatal("pgtest: no server: call pgtest.Main(m) from TestMain")
	}
	return active
}

func redact(u *url.URL) string { return u.Redacted() }

func randomName(prefix string) string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

func (e *env) dbURL(name string) string {
	u := *e.adminURL
	u.Path = "/" + name
	return u.String()
}

func (e *env) create(t testing.TB, template string) string {
	t.Helper()
	name := randomName("hodei_t_")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := e.admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()+
		" TEMPLATE "+pgx.Identifier{template}.Sanitize()+e.strategy); err != nil {
		t.Fatalf("pgtest: create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if _, err := e.admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})
	return e.dbURL(name)
}

// template returns a database, migrated once per test binary, that NewStore copies.
func (e *env) template() (string, error) {
	e.tmplOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
		defer cancel()
		name := randomName("hodei_tmpl_")
		if _, err := e.admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()+" TEMPLATE template0"); err != nil {
			e.tmplErr = fmt.Errorf("create template database: %w", err)
			return
		}
		e.tmplName = name
		if _, err := postgres.Migrate(ctx, e.dbURL(name)); err != nil {
			e.tmplErr = fmt.Errorf("migrate template database: %w", err)
		}
	})
	return e.tmplName, e.tmplErr
}

// NewDatabase creates a fresh, empty database and returns its URL. It is dropped (WITH
// (FORCE), so open connections do not stop it) when the test ends.
func NewDatabase(t testing.TB) string {
	t.Helper()
	return current(t).create(t, "template0")
}

// NewStore returns a Store on a fresh database that has every migration applied (a copy
// of a template database migrated once per test binary). The store is closed and the
// database dropped when the test ends.
func NewStore(t testing.TB) *postgres.Store {
	t.Helper()
	e := current(t)
	tmpl, err := e.template()
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	u := e.create(t, tmpl)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := postgres.Open(ctx, u)
	if err != nil {
		t.Fatalf("pgtest: open store: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// cluster is a PostgreSQL server started by this process.
type cluster struct {
	dir  string
	port int
	cmd  *exec.Cmd
	done chan struct{} // closed when the postmaster exited
	log  string

	// What startPostmaster needs to start it again (Server.Restart).
	bin, data, sock string
	cred            *syscall.Credential
	// durable keeps PostgreSQL's default durability (fsync, full-page writes,
	// synchronous commit): a StartServer cluster is crashed on purpose (Restart -m
	// immediate), and without it a commit already acknowledged could be lost, which is
	// not what a real server does.
	durable bool
}

// findBinDir returns the directory holding initdb and postgres: initdb's on PATH (with
// symlinks resolved, so that postgres is found next to it), else the highest version
// under /usr/lib/postgresql.
func findBinDir() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			dir := filepath.Dir(r)
			if isExec(filepath.Join(dir, "postgres")) {
				return dir, nil
			}
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if isExec(filepath.Join(d, "initdb")) && isExec(filepath.Join(d, "postgres")) {
			return d, nil
		}
	}
	return "", errors.New(installHint)
}

func version(binDir string) float64 {
	v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(binDir)), 64)
	return v
}

func isExec(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

// runAs returns the credential to run PostgreSQL with when we are root (it refuses to
// run as root): the postgres user if it exists, else nobody. nil when not root.
func runAs() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	var u *user.User
	var err error
	for _, name := range []string{"postgres", "nobody"} {
		if u, err = user.Lookup(name); err == nil {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("running as root and neither user postgres nor nobody exists: %w", err)
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func startCluster(ctx context.Context, durable bool) (*cluster, error) {
	bin, err := findBinDir()
	if err != nil {
		return nil, err
	}
	cred, err := runAs()
	if err != nil {
		return nil, err
	}
	removeStale()
	dir, err := os.MkdirTemp("", "hodei-pgtest-")
	if err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	c := &cluster{dir: dir, log: filepath.Join(dir, "postgres.log"), durable: durable}
	fail := func(err error) (*cluster, error) {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	data, sock := filepath.Join(dir, "data"), filepath.Join(dir, "sock")
	c.bin, c.data, c.sock, c.cred = bin, data, sock, cred
	if err := os.Mkdir(sock, 0o700); err != nil {
		return fail(err)
	}
	if cred != nil {
		for _, p := range []string{dir, sock} {
			if err := os.Chown(p, int(cred.Uid), int(cred.Gid)); err != nil {
				return fail(fmt.Errorf("chown %s: %w", p, err))
			}
		}
	}
	initdb := exec.CommandContext(ctx, filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres",
		"-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync")
	initdb.Dir = dir
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	var out bytes.Buffer
	initdb.Stdout, initdb.Stderr = &out, &out
	if err := initdb.Run(); err != nil {
		return fail(fmt.Errorf("initdb (%s): %w\n%s", bin, err, out.String()))
	}
	// A port picked free can be taken before postgres binds it: retry a few times.
	for try := 0; ; try++ {
		c.port, err = freePort()
		if err != nil {
			return fail(fmt.Errorf("free port: %w", err))
		}
		err = c.startPostmaster(ctx, bin, data, sock, cred)
		if err == nil {
			return c, nil
		}
		if try == 2 || ctx.Err() != nil {
			return fail(err)
		}
	}
}

func (c *cluster) startPostmaster(ctx context.Context, bin, data, sock string, cred *syscall.Credential) error {
	logf, err := os.OpenFile(c.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("postgres log: %w", err)
	}
	defer logf.Close() // the child holds its own descriptor
	// postgres runs in the foreground as our child, not daemonised by pg_ctl, so that
	// Pdeathsig kills it if this test binary crashes or is killed; its backends notice
	// the postmaster's death and exit on their own.
	args := []string{"-D", data,
		"-p", strconv.Itoa(c.port),
		"-k", sock,
		"-c", "listen_addresses=127.0.0.1",
		"-c", "max_connections=200",
		"-c", "shared_buffers=64MB",
		"-c", "log_min_messages=warning",
	}
	if !c.durable {
		args = append(args, "-c", "fsync=off", "-c", "full_page_writes=off", "-c", "synchronous_commit=off")
	}
	cmd := exec.Command(filepath.Join(bin, "postgres"), args...)
	cmd.Dir = c.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	c.cmd = cmd
	c.done = make(chan struct{})
	go func() { _ = cmd.Wait(); close(c.done) }()

	u := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable&connect_timeout=2", c.port)
	for {
		select {
		case <-c.done:
			b, _ := os.ReadFile(c.log)
			return fmt.Errorf("postgres exited during start-up:\n%s", b)
		case <-ctx.Done():
			c.kill()
			b, _ := os.ReadFile(c.log)
			return fmt.Errorf("postgres did not accept connections in time: %w\n%s", ctx.Err(), b)
		case <-time.After(50 * time.Millisecond):
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgx.Connect(cctx, u)
		cancel()
		if err == nil {
			_ = conn.Close(ctx)
			return nil
		}
	}
}

// removeStale deletes the directories of clusters whose test binary was killed before it
// could clean up: the postmaster recorded in postmaster.pid is gone, or there is no pid
// file and the directory is more than ten minutes old (not one being set up right now).
func removeStale() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "hodei-pgtest-*"))
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "data", "postmaster.pid"))
		if err != nil {
			if fi, serr := os.Stat(d); serr == nil && time.Since(fi.ModTime()) > 10*time.Minute {
				_ = os.RemoveAll(d)
			}
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
		if err == nil && pid > 0 && errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
			_ = os.RemoveAll(d)
		}
	}
}

// kill stops the postmaster immediately (SIGQUIT, as pg_ctl stop -m immediate does;
// SIGKILL to the process group if it has not gone after 10 s).
func (c *cluster) kill() {
	if c.cmd == nil || c.cmd.Process == nil {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
		<-c.done
	}
}

func (c *cluster) stop() {
	c.kill()
	if err := os.RemoveAll(c.dir); err != nil && !strings.Contains(err.Error(), "no such file") {
		fmt.Fprintf(os.Stderr, "pgtest: remove %s: %v\n", c.dir, err)
	}
}

// Server is a PostgreSQL cluster of one test's own (not the test binary's shared one),
// which the test may restart: for fault tests of the database itself.
type Server struct {
	t testing.TB
	c *cluster
}

// StartServer starts a throwaway cluster for t (as Main's, on its own port and
// directory, but with PostgreSQL's default durability, as it is crashed on purpose); it
// is stopped and removed when t ends. It does not use
// HODEI_TEST_DATABASE_URL: restarting a shared server is not a test's to do.
func StartServer(t testing.TB) *Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := startCluster(ctx, true)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(c.stop)
	return &Server{t: t, c: c}
}

// URL is the URL of the cluster's "postgres" database as the superuser.
func (s *Server) URL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", s.c.port)
}

// Restart stops the postmaster the way pg_ctl stop -m MODE does, by its signal (fast:
// SIGINT, roll back and disconnect every session, checkpoint; immediate: SIGQUIT, no
// checkpoint, crash recovery at the next start), waits until it has exited, starts it
// again on the same port and data directory and waits until it accepts connections.
// It returns how long the server was down (stop sent → accepting again).
func (s *Server) Restart(mode string) time.Duration {
	s.t.Helper()
	var sig syscall.Signal
	switch mode {
	case "fast":
		sig = syscall.SIGINT
	case "immediate":
		sig = syscall.SIGQUIT
	default:
		s.t.Fatalf("pgtest: Restart mode %q is not fast or immediate", mode)
	}
	began := time.Now()
	_ = s.c.cmd.Process.Signal(sig)
	select {
	case <-s.c.done:
	case <-time.After(60 * time.Second):
		s.t.Fatalf("pgtest: postgres did not stop within 60s of -m %s", mode)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := s.c.startPostmaster(ctx, s.c.bin, s.c.data, s.c.sock, s.c.cred); err != nil {
		s.t.Fatalf("pgtest: restart: %v", err)
	}
	return time.Since(began)
}
