package pgtest

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) {
	if os.Getenv("PGTEST_ORPHAN_CHILD") == "1" {
		orphanChild()
		return
	}
	os.Exit(Main(m))
}

// seed prepares a template: a table t with one row.
func seed(calls *atomic.Int32) func(ctx context.Context, url string) error {
	return func(ctx context.Context, url string) error {
		calls.Add(1)
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		_, err = conn.Exec(ctx, "CREATE TABLE t (v text); INSERT INTO t VALUES ('seed')")
		return err
	}
}

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func rows(t *testing.T, url string) []string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	r, _ := conn.Query(ctx, "SELECT v FROM t ORDER BY v")
	vs, err := pgx.CollectRows(r, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return vs
}

func TestStartClusterTemplatesAndOutage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	start := time.Now()
	c, err := StartCluster()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("StartCluster took %v", time.Since(start))
	defer c.Close()

	u, err := url.Parse(c.URL("x"))
	if err != nil || u.Scheme != "postgres" || u.User.Username() != "postgres" || u.Hostname() != "127.0.0.1" ||
		u.Path != "/x" || u.Query().Get("sslmode") != "disable" {
		t.Fatalf("URL(x) = %s", c.URL("x"))
	}

	var calls atomic.Int32
	start = time.Now()
	a := c.NewDB(t, "seeded", seed(&calls))
	t.Logf("first NewDB (template built) took %v", time.Since(start))
	start = time.Now()
	b := c.NewDB(t, "seeded", seed(&calls))
	t.Logf("second NewDB (clone) took %v", time.Since(start))
	if a == b {
		t.Fatal("two databases share a URL")
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("prepare ran %d times, want 1", n)
	}
	if got := rows(t, a); fmt.Sprint(got) != "[seed]" {
		t.Fatalf("a has %v", got)
	}
	if got := rows(t, b); fmt.Sprint(got) != "[seed]" {
		t.Fatalf("b has %v", got)
	}
	if _, err := connect(t, a).Exec(ctx, "INSERT INTO t VALUES ('only in a')"); err != nil {
		t.Fatal(err)
	}
	if got := rows(t, b); fmt.Sprint(got) != "[seed]" {
		t.Fatalf("a write shows in b: %v", got)
	}

	// An empty database without a template.
	var n int
	if err := connect(t, c.NewDB(t, "", nil)).QueryRow(ctx, "SELECT count(*) FROM pg_tables WHERE tablename = 't'").Scan(&n); err != nil || n != 0 {
		t.Fatalf("empty database: %d tables named t, %v", n, err)
	}

	// Outage: a session open across Stop is cut, new ones are refused;
	// Start brings the same data back on the same port.
	held := connect(t, a)
	port := u.Port()
	pid := c.PID()
	if cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); pid <= 0 || err != nil || !strings.Contains(string(cmdline), "postgres") {
		t.Fatalf("PID %d is not the postmaster: %q, %v", pid, cmdline, err)
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if got := c.PID(); got != 0 {
		t.Fatalf("PID %d after Stop, want 0", got)
	}
	if err := c.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if _, err := held.Exec(ctx, "SELECT 1"); err == nil {
		t.Fatal("a session survived Stop")
	}
	if conn, err := pgx.Connect(ctx, a); err == nil {
		conn.Close(ctx)
		t.Fatal("connected to a stopped server")
	}
	start = time.Now()
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Logf("restart took %v", time.Since(start))
	if u2, _ := url.Parse(c.URL("x")); u2.Port() != port {
		t.Fatalf("port changed across restart: %s, then %s", port, u2.Port())
	}
	if got := rows(t, a); fmt.Sprint(got) != "[only in a seed]" {
		t.Fatalf("after restart a has %v", got)
	}
	// A template made before the restart still clones.
	if got := rows(t, c.NewDB(t, "seeded", seed(&calls))); fmt.Sprint(got) != "[seed]" || calls.Load() != 1 {
		t.Fatalf("clone after restart: %v, prepare ran %d times", got, calls.Load())
	}

	// Start failing (the port taken while stopped) reports the server log.
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:"+port)
	if err != nil {
		t.Fatal(err)
	}
	err = c.Start()
	l.Close()
	if err == nil || !strings.Contains(err.Error(), "could not") || !strings.Contains(err.Error(), "server.log") {
		t.Fatalf("Start on a taken port: %v", err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}

	// Crash: every process of the server is killed at once; a write
	// acknowledged just before survives crash recovery.
	held = connect(t, a)
	if _, err := held.Exec(ctx, "INSERT INTO t VALUES ('before the crash')"); err != nil {
		t.Fatal(err)
	}
	pgid := c.proc.pid
	if err := c.Crash(); err != nil {
		t.Fatal(err)
	}
	if groupAlive(pgid) {
		t.Fatalf("processes of group %d run after Crash", pgid)
	}
	if _, err := held.Exec(ctx, "SELECT 1"); err == nil {
		t.Fatal("a session survived Crash")
	}
	start = time.Now()
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Logf("start after a crash (recovery) took %v", time.Since(start))
	if got := rows(t, a); fmt.Sprint(got) != "[before the crash only in a seed]" {
		t.Fatalf("after the crash a has %v", got)
	}

	dir := c.dir
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("temp dir %s still there: %v", dir, err)
	}
	if conn, err := pgx.Connect(ctx, a); err == nil {
		conn.Close(ctx)
		t.Fatal("connected to a closed server")
	}
	if err := c.Start(); err == nil {
		t.Fatal("Start after Close succeeded")
	}
}

// datnames lists the databases whose names start with prefix.
func datnames(t *testing.T, c *Cluster, prefix string) []string {
	t.Helper()
	ctx := context.Background()
	conn := connect(t, c.URL("postgres"))
	r, _ := conn.Query(ctx, "SELECT datname FROM pg_database WHERE starts_with(datname, $1) ORDER BY 1", prefix)
	names, err := pgx.CollectRows(r, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// runs numbers the runs of tests that need a template name of their own.
var runs atomic.Int32

// runUnique returns name with a suffix unique to this call.
func runUnique(name string) string { return name + strconv.Itoa(int(runs.Add(1))) }

// TestCreateDB: a database of CreateDB outlives the test that made it,
// until its drop, which may be called twice.
func TestCreateDB(t *testing.T) {
	t.Parallel()
	c := Shared(t)
	hint := runUnique("Outlives tests ")
	var dbURL string
	var drop func() error
	t.Run("made", func(t *testing.T) {
		var err error
		if dbURL, drop, err = c.CreateDB(context.Background(), hint); err != nil {
			t.Fatal(err)
		}
	})
	prefix := "db_" + strings.ToLower(strings.ReplaceAll(hint, " ", "_")) + "_"
	if got := datnames(t, c, prefix); len(got) != 1 || c.URL(got[0]) != dbURL {
		t.Fatalf("databases %v after the test that made %s ended", got, dbURL)
	}
	var n int
	if err := connect(t, dbURL).QueryRow(context.Background(), "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d tables, %v; want an empty database", n, err)
	}
	if err := drop(); err != nil {
		t.Fatal(err)
	}
	if got := datnames(t, c, prefix); len(got) != 0 {
		t.Fatalf("databases %v after drop", got)
	}
	if err := drop(); err != nil {
		t.Fatalf("second drop: %v", err)
	}
}

func TestSharedParallelNewDB(t *testing.T) {
	t.Parallel()
	c := Shared(t)
	if Shared(t) != c {
		t.Fatal("Shared made a second cluster")
	}
	var calls atomic.Int32
	var mu sync.Mutex
	urls := map[string]bool{}
	tplName := runUnique("parallel") // templates live as long as the cluster: one per run (-count)
	t.Run("group", func(t *testing.T) {
		for i := range 12 {
			t.Run(strconv.Itoa(i), func(t *testing.T) {
				t.Parallel()
				url := c.NewDB(t, tplName, seed(&calls))
				if got := rows(t, url); fmt.Sprint(got) != "[seed]" {
					t.Errorf("%s has %v", url, got)
				}
				mu.Lock()
				urls[url] = true
				mu.Unlock()
			})
		}
	})
	if len(urls) != 12 {
		t.Fatalf("%d distinct databases, want 12", len(urls))
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("prepare ran %d times, want 1", n)
	}
	if left := datnames(t, c, "t_testsharedparallelnewdb"); len(left) != 0 {
		t.Fatalf("databases not dropped: %v", left)
	}
}

func TestTemplateError(t *testing.T) {
	t.Parallel()
	c := Shared(t)
	var calls atomic.Int32
	tplName := runUnique("broken") // templates live as long as the cluster: one per run (-count)
	fail := func(ctx context.Context, url string) error {
		calls.Add(1)
		return fmt.Errorf("migration failed")
	}
	for range 2 {
		ft := &fakeTB{TB: t}
		done := make(chan struct{})
		go func() { // Fatal calls runtime.Goexit
			defer close(done)
			c.NewDB(ft, tplName, fail)
		}()
		<-done
		if !strings.Contains(ft.fatal, "migration failed") {
			t.Fatalf("fatal message %q", ft.fatal)
		}
	}
	if calls.Load() != 1 {
		t.Fatalf("a failed prepare ran %d times, want 1", calls.Load())
	}
	if left := datnames(t, c, "tpl_broken"); len(left) != 0 {
		t.Fatalf("failed template left behind: %v", left)
	}
}

// fakeTB records Fatal instead of failing the test.
type fakeTB struct {
	testing.TB
	fatal string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestExternal(t *testing.T) {
	t.Parallel()
	if _, err := external("host=localhost dbname=x"); err == nil {
		t.Fatal("a keyword/value string accepted as URL")
	}
	// The shared cluster, reached as an external server.
	own := Shared(t)
	ext, err := external(strings.Replace(own.URL("postgres"), "sslmode=disable", "sslmode=disable&application_name=x", 1))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := ext.URL("other"), strings.Replace(own.URL("other"), "sslmode=disable", "sslmode=disable&application_name=x", 1); got != want {
		t.Fatalf("URL(other) = %s, want %s", got, want)
	}
	if ext.Stop() == nil || ext.Start() == nil {
		t.Fatal("an external server can be stopped or started")
	}
	var calls atomic.Int32
	got := rows(t, ext.NewDB(t, "ext", seed(&calls)))
	if fmt.Sprint(got) != "[seed]" {
		t.Fatalf("external clone has %v", got)
	}
	tpls := datnames(t, own, "tpl_ext_")
	if len(tpls) != 1 {
		t.Fatalf("templates: %v", tpls)
	}
	if err := ext.Close(); err != nil {
		t.Fatal(err)
	}
	if err := ext.Close(); err != nil {
		t.Fatal(err)
	}
	if left := datnames(t, own, "tpl_ext_"); len(left) != 0 {
		t.Fatalf("Close left templates: %v", left)
	}
	// The server keeps running.
	connect(t, own.URL("postgres"))
}

// orphanChild starts a cluster, reports its postmaster and dir, and waits
// to be killed.
func orphanChild() {
	c, err := StartCluster()
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Println(c.proc.pid, c.dir)
	select {}
}

// A test binary killed without Close takes its server down with it.
func TestServerDiesWithTestBinary(t *testing.T) {
	t.Parallel()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), "PGTEST_ORPHAN_CHILD=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		cmd.Process.Kill()
		t.Fatal(err)
	}
	var pid int
	var dir string
	if _, err := fmt.Sscan(line, &pid, &dir); err != nil {
		cmd.Process.Kill()
		t.Fatalf("child said %q", line)
	}
	defer os.RemoveAll(dir)
	if !alive(pid) {
		t.Fatal("postmaster not running")
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
	deadline := time.Now().Add(15 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("postmaster %d still running after its test binary was killed", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The next test binary's sweep removes the leftover dir.
	sweepStale(filepath.Dir(dir))
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("leftover %s not swept: %v", dir, err)
	}
}

func TestDBName(t *testing.T) {
	a, b := dbName("t", "TestX/sub case#1"), dbName("t", "TestX/sub case#1")
	if a == b || !strings.HasPrefix(a, "t_testx_sub_case_1_") {
		t.Fatalf("%s, %s", a, b)
	}
	if long := dbName("tpl", strings.Repeat("Ü", 100)); len(long) > 63 {
		t.Fatalf("%d bytes: %s", len(long), long)
	}
}
