// Package pgtest runs throwaway PostgreSQL servers for tests: real servers
// from the machine's initdb and postgres, never a mock. Each test gets a
// database of its own, cloned from a template prepared once (migrated, say),
// so that a fresh database costs milliseconds.
//
// A test binary normally uses one cluster, Shared, and closes it in
// TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
//
//	func TestX(t *testing.T) {
//		url := pgtest.Shared(t).NewDB(t, "migrated", migrate)
//		...
//	}
//
// The server binaries are found on PATH, else in Debian's
// /usr/lib/postgresql/<version>/bin (newest first). Since initdb and
// postgres refuse to run as root, a root test binary runs them as the
// "postgres" OS user (or "pgtest", created if neither exists). Setting
// TEST_DATABASE_URL to a superuser URL makes Shared use that server instead.
package pgtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/caddyaccounts/gateway/internal/testnet"
)

const (
	// startTimeout bounds how long a server may take to accept connections.
	startTimeout = 60 * time.Second
	// stopTimeout bounds how long a shutdown may take before escalating.
	stopTimeout = 30 * time.Second
	// ownerFile, in a cluster's temp dir, holds the PID of the process
	// that made it, so that leftovers of a killed test binary can be
	// recognized and removed.
	ownerFile = "pgtest.owner"
	// logFile, in a cluster's temp dir, receives the server's log.
	logFile = "server.log"
)

// Cluster is a PostgreSQL server used by tests: either one of its own,
// started by StartCluster in a temp dir, or an external server named by
// TEST_DATABASE_URL (see Shared).
type Cluster struct {
	base     *url.URL // superuser URL of the administrative database
	external bool     // an external server: never started or stopped

	// For a cluster of its own.
	dir         string              // temp dir: data/, the socket, the log
	initdbBin   string              // path of initdb
	postgresBin string              // path of postgres
	cred        *syscall.Credential // OS user of the server; nil: this process's
	port        int

	mu     sync.Mutex // guards proc and closed
	proc   *server    // the running (or last) postmaster; nil before the first start
	closed bool

	tplMu sync.Mutex
	tpls  map[string]*template // by template name
}

// server is one run of the postmaster.
type server struct {
	pid  int
	done chan struct{} // closed when the process has exited
	err  error         // its exit status, once done is closed
}

// template is a database prepared once and cloned by NewDB.
type template struct {
	once sync.Once
	name string // database name
	err  error
}

// StartCluster initdb's a fresh cluster in a new temp dir and starts it,
// listening on 127.0.0.1 on a free TCP port and on a unix socket in the
// temp dir, with trust authentication, fsync and full_page_writes off and
// max_connections=300. synchronous_commit stays on: a commit is written
// to the OS before it is acknowledged, so a crash of the server (Crash),
// as opposed to one of the machine, loses no acknowledged write. It returns once the server
// accepts connections (at most 30s). The server's log is the file
// server.log of the temp dir; a failed start includes its tail.
//
// Run as root, the server runs as the "postgres" OS user (or "pgtest",
// created if neither exists). The postmaster is started so that it shuts
// down if the test binary dies without calling Close.
func StartCluster() (*Cluster, error) {
	initdb, postgres, err := findBinaries()
	if err != nil {
		return nil, err
	}
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		if cred, err = serverCredential(); err != nil {
			return nil, err
		}
	}
	parent, err := tempParent(cred)
	if err != nil {
		return nil, err
	}
	sweepOnce.Do(func() { sweepStale(parent) })
	dir, err := os.MkdirTemp(parent, "pgtest-")
	if err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	c := &Cluster{dir: dir, initdbBin: initdb, postgresBin: postgres, cred: cred, tpls: map[string]*template{}}
	if err := c.init(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	// Another process may take the free port between FreePort and the
	// server's bind: try a few ports.
	for attempt := 1; ; attempt++ {
		if c.port, err = testnet.FreePort(); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("pgtest: no free port: %w", err)
		}
		c.base = &url.URL{
			Scheme:   "postgres",
			User:     url.User("postgres"),
			Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(c.port)),
			Path:     "/postgres",
			RawQuery: "sslmode=disable",
		}
		err = c.Start()
		if err == nil {
			return c, nil
		}
		if !errors.Is(err, errPortInUse) || attempt == 5 {
			_ = c.Close()
			return nil, err
		}
	}
}

// init writes the owner file and runs initdb.
func (c *Cluster) init() error {
	if err := os.WriteFile(filepath.Join(c.dir, ownerFile), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	if c.cred != nil {
		if err := os.Chown(c.dir, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
			return fmt.Errorf("pgtest: %w", err)
		}
	}
	// C.UTF-8: byte-order collation (deterministic) with Unicode-aware
	// lower()/upper(); it is built into glibc.
	args := []string{"-D", c.dataDir(), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"}
	out, err := c.command(c.initdbBin, args...).CombinedOutput()
	if err != nil && bytes.Contains(out, []byte("C.UTF-8")) {
		// A libc without C.UTF-8: plain C.
		args[len(args)-2] = "--no-locale"
		os.RemoveAll(c.dataDir())
		out, err = c.command(c.initdbBin, args...).CombinedOutput()
	}
	if err != nil {
		return fmt.Errorf("pgtest: initdb: %w\n%s", err, out)
	}
	return nil
}

func (c *Cluster) dataDir() string { return filepath.Join(c.dir, "data") }
func (c *Cluster) logPath() string { return filepath.Join(c.dir, logFile) }

// command makes a command running a server program as the server's user.
func (c *Cluster) command(prog string, args ...string) *exec.Cmd {
	cmd := exec.Command(prog, args...)
	cmd.Dir = c.dir
	cmd.Env = serverEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	return cmd
}

// serverEnv is this process's environment without the libpq and server
// variables (PGDATA, PGPORT, PGHOST, ...), which would otherwise change
// the cluster.
func serverEnv() []string {
	return slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "PG") })
}

// errPortInUse marks a start that failed because the port was taken.
var errPortInUse = errors.New("port in use")

// Start starts the server again after Stop, on the same port, with the
// same data. It returns once the server accepts connections, and does
// nothing if the server is running. It fails for an external server.
func (c *Cluster) Start() error {
	if c.external {
		return errors.New("pgtest: an external server (TEST_DATABASE_URL) cannot be started")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errors.New("pgtest: the cluster is closed")
	}
	if c.proc != nil && !c.proc.exited() {
		return nil
	}
	logOffset := int64(0)
	if fi, err := os.Stat(c.logPath()); err == nil {
		logOffset = fi.Size()
	}
	log, err := os.OpenFile(c.logPath(), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	socketDir := c.dir
	if len(socketDir)+len("/.s.PGSQL.65535.lock") >= 108 { // sun_path
		socketDir = "" // TCP only
	}
	cmd := c.command(c.postgresBin, "-D", c.dataDir(),
		"-c", "port="+strconv.Itoa(c.port),
		"-c", "listen_addresses=127.0.0.1",
		"-c", "unix_socket_directories="+socketDir,
		"-c", "fsync=off",
		"-c", "full_page_writes=off",
		"-c", "max_connections=300",
		// Bounded WAL: the cluster may live in memory (/dev/shm).
		"-c", "max_wal_size=256MB",
		"-c", "min_wal_size=32MB",
		"-c", "logging_collector=off",
	)
	cmd.Stdout, cmd.Stderr = log, log
	// The postmaster gets SIGQUIT (immediate shutdown, which also ends
	// its backends) when the thread that started it exits, which is when
	// this process dies, even by SIGKILL: Go ends a thread only when a
	// goroutine locked to it returns, and nothing here locks one. (A
	// locked goroutine ending would take down every child any goroutine
	// had started from its thread: gateways of the e2e tests too.)
	cmd.SysProcAttr.Pdeathsig = syscall.SIGQUIT
	// A process group of its own, with its backends: Crash kills them all.
	cmd.SysProcAttr.Setpgid = true
	s := &server{done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		err := cmd.Start()
		log.Close()
		if err != nil {
			started <- err
			return
		}
		s.pid = cmd.Process.Pid
		started <- nil
		s.err = cmd.Wait()
		close(s.done)
	}()
	if err := <-started; err != nil {
		return fmt.Errorf("pgtest: starting %s: %w", c.postgresBin, err)
	}
	c.proc = s
	if err := c.waitReady(s); err != nil {
		tail := c.logTail(logOffset)
		if strings.Contains(tail, "could not bind") || strings.Contains(tail, "could not create any TCP/IP sockets") {
			err = fmt.Errorf("%w: %w", errPortInUse, err)
		}
		return fmt.Errorf("pgtest: postgres on port %d did not start: %w\n--- %s:\n%s", c.port, err, c.logPath(), tail)
	}
	return nil
}

// waitReady polls the server until it accepts connections. On failure the
// server is stopped.
func (c *Cluster) waitReady(s *server) error {
	cfg, err := pgx.ParseConfig(c.URL("postgres"))
	if err != nil {
		return err
	}
	cfg.ConnectTimeout = time.Second
	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-s.done:
			return fmt.Errorf("postgres exited: %v", s.err)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		conn, err := pgx.ConnectConfig(ctx, cfg)
		cancel()
		if err == nil {
			conn.Close(context.Background())
			return nil
		}
		if time.Now().After(deadline) {
			c.kill(s, syscall.SIGQUIT)
			return fmt.Errorf("not ready after %v: %w", startTimeout, err)
		}
		time.Sleep(15 * time.Millisecond)
	}
}

// logTail returns the end of the server log written after offset.
func (c *Cluster) logTail(offset int64) string {
	f, err := os.Open(c.logPath())
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	defer f.Close()
	const max = 4000
	if fi, err := f.Stat(); err == nil && fi.Size()-offset > max {
		offset = fi.Size() - max
	}
	b, _ := io.ReadAll(io.NewSectionReader(f, offset, max))
	return strings.TrimRight(string(b), "\n")
}

// exited reports whether the process has exited.
func (s *server) exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// kill sends sig to the postmaster and waits for it to exit, escalating to
// SIGQUIT (immediate shutdown) and then SIGKILL if it takes too long.
func (c *Cluster) kill(s *server, sig syscall.Signal) error {
	steps := []syscall.Signal{syscall.SIGQUIT, syscall.SIGKILL}
	if sig != syscall.SIGQUIT {
		steps = append([]syscall.Signal{sig}, steps...)
	}
	for _, step := range steps {
		_ = syscall.Kill(s.pid, step)
		wait := 10 * time.Second
		if step == syscall.SIGINT {
			wait = stopTimeout
		}
		select {
		case <-s.done:
			return nil
		case <-time.After(wait):
		}
	}
	return fmt.Errorf("pgtest: postgres (pid %d) did not exit", s.pid)
}

// Stop stops the server with a fast shutdown (what pg_ctl stop -m fast
// does: sessions are ended, data is kept), so that Start can bring it back
// on the same port: for tests of a database outage. Stopping a stopped
// server does nothing. It fails for an external server.
func (c *Cluster) Stop() error {
	if c.external {
		return errors.New("pgtest: an external server (TEST_DATABASE_URL) cannot be stopped")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc == nil || c.proc.exited() {
		return nil
	}
	return c.kill(c.proc, syscall.SIGINT)
}

// Crash kills the server and every one of its processes at once with
// SIGKILL, as an out-of-memory killer or the end of a container would:
// no shutdown, sessions cut, and Start then runs crash recovery. It
// returns once none of them is left. It fails for an external server.
func (c *Cluster) Crash() error {
	if c.external {
		return errors.New("pgtest: an external server (TEST_DATABASE_URL) cannot be crashed")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc == nil || c.proc.exited() {
		return nil
	}
	pgid := c.proc.pid
	if err := syscall.Kill(-pgid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("pgtest: killing postgres's processes: %w", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-c.proc.done:
			if !groupAlive(pgid) {
				return nil
			}
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pgtest: postgres's processes (group %d) still run 10s after SIGKILL", pgid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// groupAlive reports whether a process of group pgid still runs (zombies,
// which hold nothing, do not count).
func groupAlive(pgid int) bool {
	dirs, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, f := range dirs {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...; comm may hold spaces.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		fields := strings.Fields(string(b[i+1:]))
		if len(fields) >= 3 && fields[0] != "Z" && fields[2] == strconv.Itoa(pgid) {
			return true
		}
	}
	return false
}

// Close stops the server and removes its temp dir. For an external server
// it only drops the template databases made by NewDB. Safe to call twice.
func (c *Cluster) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	proc := c.proc
	c.mu.Unlock()
	if c.external {
		return c.dropTemplates()
	}
	var errs []error
	if proc != nil && !proc.exited() {
		// Immediate shutdown: the data is thrown away anyway.
		errs = append(errs, c.kill(proc, syscall.SIGQUIT))
	}
	errs = append(errs, os.RemoveAll(c.dir))
	return errors.Join(errs...)
}

// dropTemplates drops the templates made on an external server.
func (c *Cluster) dropTemplates() error {
	c.tplMu.Lock()
	defer c.tplMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var errs []error
	for _, tpl := range c.tpls {
		tpl.once.Do(func() { tpl.err = errors.New("pgtest: cluster closed") }) // wait for a build in progress
		if tpl.err != nil {
			continue
		}
		id := pgx.Identifier{tpl.name}.Sanitize()
		if err := c.admin(ctx, "ALTER DATABASE "+id+" WITH IS_TEMPLATE false"); err != nil {
			errs = append(errs, err)
			continue
		}
		errs = append(errs, c.dropDB(ctx, tpl.name))
	}
	return errors.Join(errs...)
}

// PID returns the process id of the server's postmaster (the parent of
// its backends), or 0 for an external server or one not running.
func (c *Cluster) PID() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc == nil || c.proc.exited() {
		return 0
	}
	return c.proc.pid
}

// URL returns the superuser URL of database db, such as
// postgres://postgres@127.0.0.1:PORT/db?sslmode=disable. For an external
// server it is TEST_DATABASE_URL with its database name replaced.
func (c *Cluster) URL(db string) string {
	u := *c.base
	u.Path = "/" + db
	u.RawPath = ""
	return u.String()
}

// NewDB creates a database with a fresh unique name on c and returns its
// URL; the database is dropped (WITH (FORCE)) when the test ends.
//
// With prepare, the database is a copy (CREATE DATABASE ... TEMPLATE) of a
// template database made once per cluster and templateName by
// prepare(ctx, templateURL) — running migrations, say — so that each test's
// database is quick to make. Callers of one templateName must pass an
// equivalent prepare. Without prepare, the database is empty and
// templateName is unused.
//
// NewDB is safe for concurrent use (parallel tests). It fails the test on
// error.
func (c *Cluster) NewDB(tb testing.TB, templateName string, prepare func(ctx context.Context, url string) error) string {
	tb.Helper()
	tpl := ""
	if prepare != nil {
		var err error
		if tpl, err = c.template(templateName, prepare); err != nil {
			tb.Fatalf("pgtest: template %q: %v", templateName, err)
		}
	}
	name := dbName("t", tb.Name())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.createDB(ctx, name, tpl); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if !c.external && c.isClosed() {
			return // the server and its databases are gone
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := c.dropDB(ctx, name); err != nil {
			tb.Log(err)
		}
	})
	return c.URL(name)
}

// CreateDB creates an empty database with a fresh unique name (made from
// hint) on c and returns its URL and a function that drops it (WITH
// (FORCE)). Unlike NewDB's, the database outlives any one test: for what
// a whole test binary or a benchmark shares. The caller drops it.
func (c *Cluster) CreateDB(ctx context.Context, hint string) (dbURL string, drop func() error, err error) {
	name := dbName("db", hint)
	if err := c.createDB(ctx, name, ""); err != nil {
		return "", nil, err
	}
	drop = func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return c.dropDB(ctx, name)
	}
	return c.URL(name), drop, nil
}

// createDB creates database name, a copy of database template if that is
// not "".
func (c *Cluster) createDB(ctx context.Context, name, template string) error {
	sql := "CREATE DATABASE " + pgx.Identifier{name}.Sanitize()
	if template != "" {
		sql += " TEMPLATE " + pgx.Identifier{template}.Sanitize()
	}
	if err := c.admin(ctx, sql); err != nil {
		return fmt.Errorf("pgtest: creating database %s: %w", name, err)
	}
	return nil
}

// dropDB drops database name, if it exists, ending its sessions.
func (c *Cluster) dropDB(ctx context.Context, name string) error {
	if err := c.admin(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("pgtest: dropping database %s: %w", name, err)
	}
	return nil
}

func (c *Cluster) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// template returns the name of the template database for key, making it
// on first use. Concurrent callers wait for the first one.
func (c *Cluster) template(key string, prepare func(context.Context, string) error) (string, error) {
	if c.isClosed() {
		return "", errors.New("cluster closed")
	}
	c.tplMu.Lock()
	tpl, ok := c.tpls[key]
	if !ok {
		tpl = &template{name: dbName("tpl", key)}
		c.tpls[key] = tpl
	}
	c.tplMu.Unlock()
	tpl.once.Do(func() { tpl.err = c.buildTemplate(tpl.name, prepare) })
	return tpl.name, tpl.err
}

// buildTemplate creates database name, runs prepare on it and makes it a
// template nobody can connect to, so that cloning it never finds it busy.
func (c *Cluster) buildTemplate(name string, prepare func(context.Context, string) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	id := pgx.Identifier{name}.Sanitize()
	if err := c.createDB(ctx, name, ""); err != nil {
		return err
	}
	err := prepare(ctx, c.URL(name))
	if err == nil {
		err = c.admin(ctx, "ALTER DATABASE "+id+" WITH ALLOW_CONNECTIONS false IS_TEMPLATE true")
	}
	if err == nil {
		// Sessions prepare left behind (a pool closing asynchronously)
		// would make CREATE DATABASE ... TEMPLATE wait or fail.
		err = c.admin(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", name)
	}
	if err != nil {
		_ = c.dropDB(ctx, name)
		return err
	}
	return nil
}

// admin runs one statement on the administrative database as superuser.
func (c *Cluster) admin(ctx context.Context, sql string, args ...any) error {
	conn, err := pgx.Connect(ctx, c.base.String())
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql, args...)
	return err
}

// The process-wide cluster of Shared.
var (
	sharedMu     sync.Mutex
	sharedC      *Cluster
	sharedErr    error
	sharedClosed bool
)

// Shared returns the test binary's cluster, made on first use: the server
// of TEST_DATABASE_URL when that is set (a superuser URL, allowed to
// CREATE DATABASE; it is never stopped, and URL(db) swaps the database
// name in it), else a cluster of its own started with StartCluster and
// closed by Main. It fails the test if the cluster cannot be had.
func Shared(tb testing.TB) *Cluster {
	tb.Helper()
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if sharedClosed {
		tb.Fatal("pgtest: Shared called after Main closed the shared cluster")
	}
	if sharedC == nil && sharedErr == nil {
		if raw := os.Getenv("TEST_DATABASE_URL"); raw != "" {
			sharedC, sharedErr = external(raw)
			if sharedErr != nil {
				sharedErr = fmt.Errorf("TEST_DATABASE_URL: %w", sharedErr)
			}
		} else {
			sharedC, sharedErr = StartCluster()
		}
	}
	if sharedErr != nil {
		tb.Fatal(sharedErr)
	}
	return sharedC
}

// external returns a Cluster for an existing server, given a superuser URL
// (postgres://user:password@host:port/db?...) allowed to CREATE DATABASE.
// Its Start and Stop fail; Close drops the templates made by NewDB and
// leaves the server running.
func external(rawURL string) (*Cluster, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") || u.Host == "" {
		return nil, errors.New("pgtest: not a postgres:// URL")
	}
	if strings.Trim(u.Path, "/") == "" {
		u.Path = "/postgres"
	}
	c := &Cluster{base: u, external: true, tpls: map[string]*template{}}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := c.admin(ctx, "SELECT 1"); err != nil {
		return nil, fmt.Errorf("pgtest: connecting to %s: %w", u.Redacted(), err)
	}
	return c, nil
}

// Main runs the tests of m, then closes the shared cluster if one was
// made, and returns the exit code: in TestMain,
//
//	os.Exit(pgtest.Main(m))
func Main(m *testing.M) int {
	code := m.Run()
	sharedMu.Lock()
	defer sharedMu.Unlock()
	sharedClosed = true
	if sharedC != nil {
		if err := sharedC.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "pgtest: closing the shared cluster:", err)
		}
	}
	return code
}

// findBinaries finds initdb and postgres: on PATH, else in Debian's
// /usr/lib/postgresql/<version>/bin, newest version first.
func findBinaries() (initdb, postgres string, err error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real
		}
		if pg := filepath.Join(filepath.Dir(p), "postgres"); isExecutable(pg) {
			return p, pg, nil
		}
		if pg, err := exec.LookPath("postgres"); err == nil {
			return p, pg, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int { return slices.Compare(versionOf(b), versionOf(a)) })
	for _, d := range dirs {
		initdb, postgres := filepath.Join(d, "initdb"), filepath.Join(d, "postgres")
		if isExecutable(initdb) && isExecutable(postgres) {
			return initdb, postgres, nil
		}
	}
	return "", "", errors.New("pgtest: PostgreSQL server binaries (initdb, postgres) not found on PATH or in /usr/lib/postgresql/*/bin: install PostgreSQL (Debian: apt-get install postgresql) or set TEST_DATABASE_URL")
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

// versionOf returns the version numbers of /usr/lib/postgresql/<v>/bin.
func versionOf(binDir string) []int {
	var v []int
	for _, part := range strings.Split(filepath.Base(filepath.Dir(binDir)), ".") {
		n, _ := strconv.Atoi(part)
		v = append(v, n)
	}
	return v
}

// serverCredential returns the OS user to run the server as when this
// process is root: "postgres", else "pgtest", which is created if missing.
func serverCredential() (*syscall.Credential, error) {
	var u *user.User
	var err error
	for attempt := 0; attempt < 20; attempt++ {
		if u, err = user.Lookup("postgres"); err == nil {
			break
		}
		if u, err = user.Lookup("pgtest"); err == nil {
			break
		}
		// Test binaries run in parallel: one of them creates the user,
		// the others may find /etc/passwd locked and retry.
		useradd := "/usr/sbin/useradd"
		if p, err := exec.LookPath("useradd"); err == nil {
			useradd = p
		}
		out, aerr := exec.Command(useradd, "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", "pgtest").CombinedOutput()
		if aerr == nil {
			continue
		}
		err = fmt.Errorf("creating the pgtest OS user to run PostgreSQL as (initdb refuses root): %w: %s", aerr, strings.TrimSpace(string(out)))
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("pgtest: user %s: bad uid/gid %s/%s", u.Username, u.Uid, u.Gid)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// tempParent returns the directory to make cluster dirs in:
// $PGTEST_TMPDIR if set; else /dev/shm when it is a roomy tmpfs, since a
// cluster in memory starts and clones databases several times faster; else
// the system's temp dir, or /tmp if the server's OS user could not reach
// that (a TMPDIR under /root, say).
func tempParent(cred *syscall.Credential) (string, error) {
	if dir := os.Getenv("PGTEST_TMPDIR"); dir != "" {
		if cred != nil && !reachable(dir, cred) {
			return "", fmt.Errorf("pgtest: PGTEST_TMPDIR %s is not reachable by uid %d, which runs the server", dir, cred.Uid)
		}
		return dir, nil
	}
	candidates := []string{os.TempDir(), "/tmp"}
	var st syscall.Statfs_t
	const tmpfsMagic = 0x01021994
	if syscall.Statfs("/dev/shm", &st) == nil && st.Type == tmpfsMagic && uint64(st.Bavail)*uint64(st.Bsize) >= minShmFree &&
		syscall.Access("/dev/shm", 0o7) == nil { // W_OK|X_OK|R_OK
		candidates = append([]string{"/dev/shm"}, candidates...)
	}
	for _, dir := range candidates {
		if cred == nil || reachable(dir, cred) {
			return dir, nil
		}
	}
	return "", fmt.Errorf("pgtest: neither %s nor /tmp is reachable by uid %d, which runs the server", os.TempDir(), cred.Uid)
}

// minShmFree is the free space /dev/shm needs to hold clusters (a
// container's default 64 MiB is too small).
const minShmFree = 2 << 30

// reachable reports whether the user of cred may traverse every directory
// from / to dir.
func reachable(dir string, cred *syscall.Credential) bool {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return false
	}
	for {
		var st syscall.Stat_t
		if err := syscall.Stat(dir, &st); err != nil {
			return false
		}
		var bit uint32 = 0o001
		switch {
		case st.Uid == cred.Uid:
			bit = 0o100
		case st.Gid == cred.Gid:
			bit = 0o010
		}
		if st.Mode&bit == 0 {
			return false
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return true
		}
		dir = parent
	}
}

var sweepOnce sync.Once

// sweepStale removes the cluster dirs in parent left by test binaries that
// died without Close (killed, say), shutting down their server if it still
// runs. Best effort.
func sweepStale(parent string) {
	dirs, _ := filepath.Glob(filepath.Join(parent, "pgtest-*"))
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, ownerFile))
		if err != nil {
			continue // not ours, or being made
		}
		owner, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || owner <= 0 || alive(owner) {
			continue
		}
		data := filepath.Join(dir, "data")
		if b, err := os.ReadFile(filepath.Join(data, "postmaster.pid")); err == nil {
			pid, _ := strconv.Atoi(strings.SplitN(string(b), "\n", 2)[0])
			// Only a postmaster of that very data dir (PIDs are reused).
			if cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); pid > 0 && err == nil &&
				bytes.Contains(cmdline, []byte(data+"\x00")) {
				_ = syscall.Kill(pid, syscall.SIGQUIT)
				for i := 0; i < 100 && alive(pid); i++ {
					time.Sleep(50 * time.Millisecond)
				}
			}
		}
		_ = os.RemoveAll(dir)
	}
}

// alive reports whether process pid exists (and is not a zombie).
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); err == syscall.ESRCH {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return !os.IsNotExist(err)
	}
	// pid (comm) S ...: the state follows the last ')'.
	if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) {
		return stat[i+2] != 'Z'
	}
	return true
}

// dbName makes a unique database name from a prefix and a readable hint
// (a test's name), within PostgreSQL's 63 bytes.
func dbName(prefix, hint string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(hint) {
		if b.Len() >= 30 {
			break
		}
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	random := make([]byte, 6)
	_, _ = rand.Read(random)
	return prefix + "_" + b.String() + "_" + hex.EncodeToString(random)
}
