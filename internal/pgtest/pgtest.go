// Package pgtest starts throwaway PostgreSQL servers for tests: real
// servers from the machine's initdb and pg_ctl, never a mock. Each test
// gets its own database, cloned from a migrated template so it is fast.
package pgtest

import (
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
)

// Cluster is a PostgreSQL server used by tests.
type Cluster struct {
	base    *url.URL // superuser URL of the "postgres" database
	dir     string   // temp dir of an own cluster; "" for an external one
	bin     string
	port    int
	cred    *syscall.Credential
	tplMu   sync.Mutex
	tpls    map[string]*template
	closeMu sync.Mutex
	closed  bool
}

type template struct {
	once sync.Once
	name string
	err  error
}

// StartCluster makes a fresh cluster in a new temp dir and starts it on a
// free loopback port, tuned for tests (no fsync). As root it runs the
// server as the "postgres" OS user, since initdb refuses root.
func StartCluster() (*Cluster, error) {
	bin, err := findBinaries()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{dir: dir, bin: bin, tpls: map[string]*template{}}
	if os.Geteuid() == 0 {
		if c.cred, err = serverCredential(); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		if err := os.Chown(dir, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	if out, err := c.run("initdb", "-D", c.dataDir(), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("initdb: %w\n%s", err, out)
	}
	if c.port, err = freePort(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	c.base = &url.URL{Scheme: "postgres", User: url.User("postgres"), Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(c.port)), Path: "/postgres", RawQuery: "sslmode=disable"}
	if err := c.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return c, nil
}

func (c *Cluster) dataDir() string { return filepath.Join(c.dir, "data") }

// run runs one of the server's programs, as the server's OS user.
func (c *Cluster) run(prog string, args ...string) ([]byte, error) {
	cmd := exec.Command(filepath.Join(c.bin, prog), args...)
	cmd.Dir = c.dir
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	}
	return cmd.CombinedOutput()
}

// Start starts the server (again), on the same port as before.
func (c *Cluster) Start() error {
	if c.dir == "" {
		return errors.New("pgtest: an external server cannot be started")
	}
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300", c.port, c.dir)
	logFile := filepath.Join(c.dir, "server.log")
	if out, err := c.run("pg_ctl", "-D", c.dataDir(), "-l", logFile, "-o", opts, "-w", "-t", "30", "start"); err != nil {
		tail, _ := os.ReadFile(logFile)
		if len(tail) > 2000 {
			tail = tail[len(tail)-2000:]
		}
		return fmt.Errorf("pg_ctl start: %w\n%s\n%s", err, out, tail)
	}
	return nil
}

// Stop stops the server, keeping its data, so that Start can bring it
// back: for tests of a database outage.
func (c *Cluster) Stop() error {
	if c.dir == "" {
		return errors.New("pgtest: an external server cannot be stopped")
	}
	if out, err := c.run("pg_ctl", "-D", c.dataDir(), "-m", "fast", "-w", "stop"); err != nil {
		return fmt.Errorf("pg_ctl stop: %w\n%s", err, out)
	}
	return nil
}

// Close stops an own server and removes its files. Safe to call twice.
func (c *Cluster) Close() error {
	c.closeMu.Lock()
	defer c.closeMu.Unlock()
	if c.closed || c.dir == "" {
		return nil
	}
	c.closed = true
	_, _ = c.run("pg_ctl", "-D", c.dataDir(), "-m", "immediate", "-w", "stop")
	return os.RemoveAll(c.dir)
}

// URL returns the superuser URL of database db.
func (c *Cluster) URL(db string) string {
	u := *c.base
	u.Path = "/" + db
	return u.String()
}

// NewDB creates a database that is dropped when the test ends, and
// returns its URL. With prepare, the database is a copy of a template
// made once per templateName by prepare (migrations, say).
func (c *Cluster) NewDB(tb testing.TB, templateName string, prepare func(ctx context.Context, url string) error) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	from := ""
	if prepare != nil {
		name, err := c.template(ctx, templateName, prepare)
		if err != nil {
			tb.Fatalf("pgtest: template %s: %v", templateName, err)
		}
		from = " TEMPLATE " + pgx.Identifier{name}.Sanitize()
	}
	name := "t_" + randomHex()
	if err := c.admin(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()+from); err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = c.admin(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	})
	return c.URL(name)
}

func (c *Cluster) template(ctx context.Context, key string, prepare func(context.Context, string) error) (string, error) {
	c.tplMu.Lock()
	tpl, ok := c.tpls[key]
	if !ok {
		tpl = &template{name: "tpl_" + randomHex()}
		c.tpls[key] = tpl
	}
	c.tplMu.Unlock()
	tpl.once.Do(func() {
		if tpl.err = c.admin(ctx, "CREATE DATABASE "+pgx.Identifier{tpl.name}.Sanitize()); tpl.err != nil {
			return
		}
		tpl.err = prepare(ctx, c.URL(tpl.name))
	})
	return tpl.name, tpl.err
}

// admin runs one statement on the postgres database.
func (c *Cluster) admin(ctx context.Context, sql string) error {
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

var (
	sharedMu  sync.Mutex
	shared    *Cluster
	sharedErr error
)

// Shared returns the test binary's cluster: the server of
// TEST_DATABASE_URL (a superuser URL) when set, else one started on first
// use and closed by Main.
func Shared(tb testing.TB) *Cluster {
	tb.Helper()
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if shared == nil && sharedErr == nil {
		if raw := os.Getenv("TEST_DATABASE_URL"); raw != "" {
			u, err := url.Parse(raw)
			if err != nil {
				sharedErr = errors.New("TEST_DATABASE_URL is not a URL")
			} else {
				shared = &Cluster{base: u, tpls: map[string]*template{}}
			}
		} else {
			shared, sharedErr = StartCluster()
		}
	}
	if sharedErr != nil {
		tb.Fatalf("pgtest: %v", sharedErr)
	}
	return shared
}

// Main runs the tests of m and then closes the shared cluster, if one was
// started: os.Exit(pgtest.Main(m)) in TestMain.
func Main(m *testing.M) int {
	code := m.Run()
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if shared != nil {
		_ = shared.Close()
	}
	return code
}

// findBinaries finds the directory of initdb and pg_ctl: on PATH, or in
// Debian's /usr/lib/postgresql/<version>/bin, newest first.
func findBinaries() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		if _, err := exec.LookPath("pg_ctl"); err == nil {
			return filepath.Dir(p), nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", errors.New("PostgreSQL server binaries (initdb, pg_ctl) not found: install PostgreSQL (Debian: apt-get install postgresql) or set TEST_DATABASE_URL")
}

func versionOf(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

// serverCredential returns the OS user to run the server as when the
// tests run as root: "postgres", created if missing.
func serverCredential() (*syscall.Credential, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		if out, err := exec.Command("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "postgres").CombinedOutput(); err != nil {
			return nil, fmt.Errorf("creating the postgres OS user: %w: %s", err, strings.TrimSpace(string(out)))
		}
		if u, err = user.Lookup("postgres"); err != nil {
			return nil, err
		}
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func randomHex() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
