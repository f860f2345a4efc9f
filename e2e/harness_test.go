// Package e2e holds the end-to-end tests of the gateway: the real binary
// (built once from ./cmd/caddy by TestMain), run with the project's real
// Caddyfile against a throwaway PostgreSQL database (internal/pgtest) and
// a stub document service on loopback, spoken to over HTTP the way the
// frontend and the document service do.
//
// This file is the harness: building the binary, starting and stopping
// gateways (startGateway, sharedGateway), the stub services (DocStub), an
// HTTP client (Client) and the assertions on FastAPI-shaped answers. The
// scenarios live in the other *_test.go files.
//
// Most scenarios share one gateway (sharedGateway) and stay independent by
// using unique emails (uniqueEmail) and by looking only at the stub
// requests that carry their own user's id or a unique path. Each Client
// connects from its own loopback address (127.1.x.y), so that the
// per-address rate limit of /api/auth/* counts each test separately.
//
// Every response to a Client's request under /api/ is recorded, and after
// the run validated against the OpenAPI document the gateway serves
// (openapi_test.go): a response that breaks it fails the run.
package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/caddyaccounts/gateway/accounts"
	"github.com/caddyaccounts/gateway/internal/pgtest"
)

// Made once per test binary by TestMain.
var (
	// repoRoot is the module root (the parent of this folder).
	repoRoot string
	// caddyBin is the gateway binary built from ./cmd/caddy.
	caddyBin string
	// workDir is this test binary's temp dir, removed at the end.
	workDir string
	// testKey is the token key pair every gateway of the run signs with
	// (unless a test configures another one).
	testKey keyPair
)

// keyPair is an RSA key pair as the gateway is given it.
type keyPair struct {
	PrivatePEM string
	PublicPEM  string
	Private    *rsa.PrivateKey
	Public     *rsa.PublicKey
	// KID is accounts.KeyID of the public key: the "kid" of its tokens.
	KID string
	// File holds PrivatePEM (mode 0600), for JWT_PRIVATE_KEY_FILE.
	File string
}

const (
	// startTimeout bounds how long a gateway may take to answer
	// /api/health with 200.
	startTimeout = 30 * time.Second
	// stopTimeout bounds a graceful stop (SIGTERM) before SIGKILL.
	stopTimeout = 15 * time.Second
	// indexHTML and assetJS are the frontend files of every gateway.
	indexHTML = "<!doctype html><html><head><title>e2e frontend</title></head><body><div id=\"app\">index of the e2e frontend</div></body></html>\n"
	assetJS   = "console.log(\"e2e asset\");\n"
	assetPath = "/assets/app-e2e.js"
)

func TestMain(m *testing.M) { os.Exit(runTests(m)) }

// runTests builds the binary, runs the tests, validates every /api/*
// response the Clients recorded against the OpenAPI document
// (openapi_test.go), then stops what the tests shared: the shared gateway
// first, while its database still answers, and then the PostgreSQL
// cluster. (pgtest.Main would close the cluster before the shared gateway
// could be stopped; this does the same in that order.)
func runTests(m *testing.M) int {
	flag.Parse()
	raiseParallel()
	recorded.on.Store(*checkOpenAPI)
	start := time.Now()
	if err := setup(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: setup:", err)
		if workDir != "" {
			os.RemoveAll(workDir)
		}
		return 1
	}
	if testing.Verbose() {
		fmt.Fprintf(os.Stderr, "e2e: built the gateway in %v\n", time.Since(start).Round(time.Millisecond))
	}
	code := m.Run()
	// While the shared gateway still runs: it serves the document.
	if *checkOpenAPI && !checkRecordedResponses(os.Stderr) && code == 0 {
		code = 1
	}
	if err := teardown(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: teardown:", err)
		if code == 0 {
			code = 1
		}
	}
	os.RemoveAll(workDir)
	return code
}

// raiseParallel lets more parallel tests run at once than the default
// GOMAXPROCS, unless -parallel was given: the scenarios mostly wait on the
// gateway, whose own work is bounded by its hash concurrency.
func raiseParallel() {
	given := false
	flag.Visit(func(f *flag.Flag) { given = given || f.Name == "test.parallel" })
	if !given {
		_ = flag.Set("test.parallel", strconv.Itoa(max(8, 2*runtime.GOMAXPROCS(0))))
	}
}

// setup finds the module root, builds the binary and makes the key pair
// (both at once: each takes a while).
func setup() error {
	root, err := filepath.Abs("..")
	if err != nil {
		return err
	}
	if b, err := os.ReadFile(filepath.Join(root, "go.mod")); err != nil || !bytes.Contains(b, []byte("module github.com/caddyaccounts/gateway")) {
		return fmt.Errorf("%s is not the module root (go.mod: %v)", root, err)
	}
	repoRoot = root
	if workDir, err = os.MkdirTemp("", "gateway-e2e-"); err != nil {
		return err
	}
	caddyBin = filepath.Join(workDir, "caddy")

	buildErr := make(chan error, 1)
	go func() {
		goTool := "go"
		if p, err := exec.LookPath("go"); err == nil {
			goTool = p
		} else if gr := os.Getenv("GOROOT"); gr != "" {
			goTool = filepath.Join(gr, "bin", "go")
		}
		// No symbol table or DWARF: the link takes a third less time, and
		// panics still print their stacks.
		cmd := exec.Command(goTool, "build", "-ldflags=-s -w", "-o", caddyBin, "./cmd/caddy")
		cmd.Dir = repoRoot
		out, err := cmd.CombinedOutput()
		if err != nil {
			err = fmt.Errorf("go build ./cmd/caddy: %w\n%s", err, out)
		}
		buildErr <- err
	}()

	priv, pub, err := accounts.GenerateKeyPair(2048)
	if err != nil {
		<-buildErr
		return err
	}
	testKey, err = makeKeyPair(priv, pub, filepath.Join(workDir, "jwt-private.pem"))
	if err != nil {
		<-buildErr
		return err
	}
	return <-buildErr
}

// makeKeyPair parses a PEM pair and writes the private key to file.
func makeKeyPair(privPEM, pubPEM, file string) (keyPair, error) {
	priv, err := accounts.ParsePrivateKey(privPEM)
	if err != nil {
		return keyPair{}, err
	}
	pub, err := accounts.ParsePublicKey(pubPEM)
	if err != nil {
		return keyPair{}, err
	}
	if err := os.WriteFile(file, []byte(privPEM), 0o600); err != nil {
		return keyPair{}, err
	}
	return keyPair{PrivatePEM: privPEM, PublicPEM: pubPEM, Private: priv, Public: pub, KID: accounts.KeyID(pub), File: file}, nil
}

// ---------------------------------------------------------------------
// PostgreSQL

var (
	clusterMu   sync.Mutex
	clusterUsed *pgtest.Cluster // closed by teardown
)

// dbCluster returns the test binary's PostgreSQL cluster (pgtest.Shared).
// Use it rather than pgtest.Shared, so that teardown closes the cluster.
func dbCluster(tb testing.TB) *pgtest.Cluster {
	tb.Helper()
	c := pgtest.Shared(tb)
	clusterMu.Lock()
	clusterUsed = c
	clusterMu.Unlock()
	return c
}

// newDatabase returns the URL of a fresh, empty database that is dropped
// when tb ends. The gateway migrates it itself.
func newDatabase(tb testing.TB) string {
	tb.Helper()
	return dbCluster(tb).NewDB(tb, "", nil)
}

// createDatabase makes an empty database that outlives any one test (for
// the shared gateway); drop removes it.
func createDatabase(c *pgtest.Cluster, prefix string) (dbURL string, drop func() error, err error) {
	name := prefix + "_" + randomHex(6)
	admin := func(sql string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, c.URL("postgres"))
		if err != nil {
			return err
		}
		defer conn.Close(context.Background())
		_, err = conn.Exec(ctx, sql)
		return err
	}
	ident := pgx.Identifier{name}.Sanitize()
	if err := admin("CREATE DATABASE " + ident); err != nil {
		return "", nil, fmt.Errorf("creating database %s: %w", name, err)
	}
	return c.URL(name), func() error { return admin("DROP DATABASE IF EXISTS " + ident + " WITH (FORCE)") }, nil
}

// execSQL runs one statement on the database at dbURL and returns the
// number of rows it affected.
func execSQL(tb testing.TB, dbURL, sql string, args ...any) int64 {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		tb.Fatalf("connecting to the test database: %v", err)
	}
	defer conn.Close(context.Background())
	tag, err := conn.Exec(ctx, sql, args...)
	if err != nil {
		tb.Fatalf("%s: %v", sql, err)
	}
	return tag.RowsAffected()
}

// querySQL runs a query that returns one row and scans it into dest.
func querySQL(tb testing.TB, dbURL, sql string, args []any, dest ...any) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		tb.Fatalf("connecting to the test database: %v", err)
	}
	defer conn.Close(context.Background())
	if err := conn.QueryRow(ctx, sql, args...).Scan(dest...); err != nil {
		tb.Fatalf("%s: %v", sql, err)
	}
}

// ---------------------------------------------------------------------
// Gateways

// GatewayOptions configure one gateway process.
type GatewayOptions struct {
	// DatabaseURL is DATABASE_URL. startGateway: default a fresh empty
	// database of the shared cluster.
	DatabaseURL string
	// DocService is DOC_SERVICE (host:port). startGateway: default a new
	// DocStub, in Gateway.Doc.
	DocService string
	// Port is the port of SITE_ADDRESS (http://127.0.0.1:Port); 0 picks
	// a free one. A restarted gateway can keep its port.
	Port int
	// HTTPS makes SITE_ADDRESS https://127.0.0.1:Port, served with a
	// certificate of Caddy's internal CA (the Caddyfile must not install
	// its root: httpsGlobal); Gateway.Roots then holds that root.
	HTTPS bool
	// KeyFile is JWT_PRIVATE_KEY_FILE; default testKey.File.
	KeyFile string
	// Caddyfile is the config; default the project's Caddyfile.
	Caddyfile string
	// Env adds or overrides environment variables of the process (such
	// as VITE_DEV_SERVER or DOC_SERVICE_TIMEOUT); an empty value removes
	// the variable.
	Env map[string]string
	// NoWait returns as soon as the process has started, without waiting
	// for /api/health (for tests of failing starts).
	NoWait bool
}

// Gateway is a running gateway process.
type Gateway struct {
	// URL is the gateway's base URL, http://127.0.0.1:PORT (https://
	// with Opts.HTTPS).
	URL string
	// Port is its site's port.
	Port int
	// Roots holds the root certificate of the internal CA of an HTTPS
	// gateway, once it is healthy.
	Roots *x509.CertPool
	// AdminAddr is the Caddy admin endpoint (CADDY_ADMIN).
	AdminAddr string
	// DatabaseURL is its DATABASE_URL.
	DatabaseURL string
	// Doc is the stub document service startGateway made, if any.
	Doc *DocStub
	// Dir is the process's temp dir: home, config, data, settings and
	// the frontend (Dir/frontend).
	Dir string
	// Opts are the options it was started with (with defaults filled).
	Opts GatewayOptions

	env    []string
	cmd    *exec.Cmd
	out    *syncBuffer
	exited chan struct{}
	// waitErr is the process's exit status, once exited is closed.
	waitErr  error
	stopOnce sync.Once
	stopErr  error
}

// startGateway starts a gateway for t and stops it (SIGTERM) when t ends,
// failing t if it does not stop cleanly. Options left empty get a fresh
// database and a new stub document service.
func startGateway(t testing.TB, opts GatewayOptions) *Gateway {
	t.Helper()
	var doc *DocStub
	if opts.DatabaseURL == "" {
		opts.DatabaseURL = newDatabase(t)
	}
	if opts.DocService == "" {
		doc = NewDocStub()
		t.Cleanup(doc.Close)
		opts.DocService = doc.Addr()
	}
	g, err := launchGateway(opts)
	if err != nil {
		t.Fatal(err)
	}
	g.Doc = doc
	// Registered after the database's cleanup, so it runs before it.
	t.Cleanup(func() {
		if err := g.Stop(); err != nil {
			t.Errorf("stopping the gateway: %v\n--- gateway output (tail):\n%s", err, g.LogTail(4000))
		}
	})
	return g
}

// launchGateway starts a gateway process and, unless opts.NoWait, waits
// until /api/health answers 200. The caller must Stop it. DatabaseURL and
// DocService are required.
func launchGateway(opts GatewayOptions) (*Gateway, error) {
	// A port found free can be taken by any outgoing connection before
	// the gateway binds it (Caddy binds every interface); then start over
	// on other ports: the admin port is always picked anew, the site's
	// only when the caller did not choose it.
	for attempt := 1; ; attempt++ {
		g, err := launchGatewayOnce(opts)
		if err == nil {
			return g, nil
		}
		if attempt == 3 || g == nil {
			return nil, err
		}
		logs := g.Logs()
		adminTaken := strings.Contains(logs, g.AdminAddr+": bind: address already in use")
		if !adminTaken && (opts.Port != 0 || !strings.Contains(logs, "address already in use")) {
			return nil, err
		}
	}
}

// launchGatewayOnce is one attempt of launchGateway. On failure it may
// return the stopped gateway beside the error, for its logs.
func launchGatewayOnce(opts GatewayOptions) (*Gateway, error) {
	if opts.DatabaseURL == "" || opts.DocService == "" {
		return nil, errors.New("launchGateway: DatabaseURL and DocService are required")
	}
	if opts.KeyFile == "" {
		opts.KeyFile = testKey.File
	}
	if opts.Caddyfile == "" {
		opts.Caddyfile = filepath.Join(repoRoot, "Caddyfile")
	}
	var err error
	if opts.Port == 0 {
		if opts.Port, err = freePort(); err != nil {
			return nil, err
		}
	}
	adminPort, err := freePort()
	if err != nil {
		return nil, err
	}
	scheme := "http"
	if opts.HTTPS {
		scheme = "https"
	}
	dir, err := os.MkdirTemp(workDir, "gateway-")
	if err != nil {
		return nil, err
	}
	frontend := filepath.Join(dir, "frontend")
	if err := writeFrontend(frontend); err != nil {
		return nil, err
	}
	g := &Gateway{
		URL:         scheme + "://127.0.0.1:" + strconv.Itoa(opts.Port),
		Port:        opts.Port,
		AdminAddr:   "127.0.0.1:" + strconv.Itoa(adminPort),
		DatabaseURL: opts.DatabaseURL,
		Dir:         dir,
		Opts:        opts,
		out:         &syncBuffer{},
		exited:      make(chan struct{}),
	}
	env := map[string]string{
		"SITE_ADDRESS":         g.URL,
		"CADDY_ADMIN":          g.AdminAddr,
		"DATABASE_URL":         opts.DatabaseURL,
		"JWT_PRIVATE_KEY_FILE": opts.KeyFile,
		"DOC_SERVICE":          opts.DocService,
		"FRONTEND_DIR":         frontend,
		"SETTINGS_DIR":         filepath.Join(dir, "settings"),
	}
	for k, v := range opts.Env {
		env[k] = v
	}
	g.env = processEnv(dir, env)

	g.cmd = exec.Command(caddyBin, "run", "--config", opts.Caddyfile, "--adapter", "caddyfile")
	g.cmd.Dir = dir
	g.cmd.Env = g.env
	g.cmd.Stdout = g.out
	g.cmd.Stderr = g.out
	setProcAttr(g.cmd)
	if err := g.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the gateway: %w", err)
	}
	go func() {
		g.waitErr = g.cmd.Wait()
		close(g.exited)
	}()
	if opts.NoWait {
		return g, nil
	}
	if err := g.WaitHealthy(startTimeout); err != nil {
		_ = g.Stop()
		return g, err
	}
	return g, nil
}

// processEnv is the environment of a gateway or CLI process: nothing of
// this process's configuration leaks in (a developer's DATABASE_URL or
// JWT_* stays out); HOME and the XDG directories are under dir.
func processEnv(dir string, set map[string]string) []string {
	env := map[string]string{
		"HOME":            filepath.Join(dir, "home"),
		"XDG_DATA_HOME":   filepath.Join(dir, "data"),
		"XDG_CONFIG_HOME": filepath.Join(dir, "config"),
		"TMPDIR":          os.TempDir(),
	}
	for _, name := range []string{"PATH", "LANG", "TZ", "GOCOVERDIR"} {
		if v, ok := os.LookupEnv(name); ok {
			env[name] = v
		}
	}
	for k, v := range set {
		env[k] = v
	}
	var out []string
	for k, v := range env {
		if v != "" {
			out = append(out, k+"="+v)
		}
	}
	slices.Sort(out)
	return out
}

// writeFrontend writes the built frontend every gateway serves.
func writeFrontend(dir string) error {
	if err := os.MkdirAll(filepath.Join(dir, "assets"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "index.html"), []byte(indexHTML), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, filepath.FromSlash(assetPath)), []byte(assetJS), 0o644)
}

// WaitHealthy polls /api/health until it answers 200. It fails at once
// if the process exits, with the tail of its output. An HTTPS gateway is
// spoken to once its CA root is written, trusting only that root, which
// it keeps in Roots.
func (g *Gateway) WaitHealthy(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var hc *http.Client
	var last string
	for {
		select {
		case <-g.exited:
			return fmt.Errorf("the gateway exited before it was healthy (%v)\n--- gateway output (tail):\n%s", g.waitErr, g.LogTail(4000))
		default:
		}
		if hc == nil {
			hc, last = g.healthClient()
		}
		if hc != nil {
			if res, err := hc.Get(g.URL + "/api/health"); err != nil {
				last = err.Error()
			} else {
				body, _ := io.ReadAll(res.Body)
				res.Body.Close()
				if res.StatusCode == http.StatusOK {
					return nil
				}
				last = fmt.Sprintf("%d %s", res.StatusCode, body)
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the gateway was not healthy at %s after %v (last: %s)\n--- gateway output (tail):\n%s", g.URL, timeout, last, g.LogTail(4000))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// healthClient returns a client for WaitHealthy, or nil and why while an
// HTTPS gateway's CA root is not written yet (then it sets Roots).
func (g *Gateway) healthClient() (*http.Client, string) {
	tr := &http.Transport{Proxy: nil, DisableKeepAlives: true}
	if g.Opts.HTTPS {
		// XDG_DATA_HOME is Dir/data: Caddy keeps its storage in Dir/data/caddy.
		pemBytes, err := os.ReadFile(filepath.Join(g.Dir, "data", "caddy", "pki", "authorities", "local", "root.crt"))
		if err != nil {
			return nil, "no CA root yet"
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemBytes) {
			return nil, "the CA root is not PEM yet"
		}
		g.Roots = pool
		tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	}
	return &http.Client{Timeout: 2 * time.Second, Transport: tr}, ""
}

// Stop ends the process with SIGTERM (SIGKILL after stopTimeout) and
// returns an error unless it exited with status 0. It may be called more
// than once.
func (g *Gateway) Stop() error {
	g.stopOnce.Do(func() {
		select {
		case <-g.exited:
			g.stopErr = fmt.Errorf("the gateway had already exited: %v", g.waitErr)
			return
		default:
		}
		_ = g.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-g.exited:
			if g.waitErr != nil {
				g.stopErr = fmt.Errorf("the gateway exited with %v after SIGTERM", g.waitErr)
			}
		case <-time.After(stopTimeout):
			_ = g.cmd.Process.Kill()
			<-g.exited
			g.stopErr = fmt.Errorf("the gateway did not stop within %v of SIGTERM; killed", stopTimeout)
		}
	})
	return g.stopErr
}

// Exited is closed when the process has exited.
func (g *Gateway) Exited() <-chan struct{} { return g.exited }

// Logs returns everything the process wrote to stdout and stderr so far.
func (g *Gateway) Logs() string { return g.out.String() }

// LogTail returns the last n bytes of Logs.
func (g *Gateway) LogTail(n int) string {
	s := g.Logs()
	if len(s) > n {
		s = "..." + s[len(s)-n:]
	}
	return s
}

// Exec runs SQL on the gateway's database.
func (g *Gateway) Exec(tb testing.TB, sql string, args ...any) int64 {
	tb.Helper()
	return execSQL(tb, g.DatabaseURL, sql, args...)
}

// Client returns a client of the gateway with a loopback address of its
// own.
func (g *Gateway) Client(tb testing.TB) *Client { return newClient(tb, g.URL) }

// syncBuffer is a bytes.Buffer safe for concurrent writes and reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// portsHandedOut are the ports freePort has returned in this process.
var portsHandedOut sync.Map // int -> struct{}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago and
// that it has never returned before. Once closed, a port can come back
// from the kernel at once; and Caddy binds with SO_REUSEPORT, so two
// gateways given the same port would both start and share its
// connections. Hence each port is handed out once.
func freePort() (int, error) {
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if _, taken := portsHandedOut.LoadOrStore(port, struct{}{}); !taken {
			return port, nil
		}
	}
	return 0, errors.New("freePort: the kernel keeps giving ports already handed out")
}

// ---------------------------------------------------------------------
// The shared gateway

var shared struct {
	mu  sync.Mutex
	gw  *Gateway
	err error
	// stops run in reverse order at teardown.
	stops []func() error
}

// sharedGateway returns the gateway most scenarios share, started on
// first use with its own database and stub document service (gw.Doc).
// Tests using it must not change what others see: unique emails, and
// only their own users changed.
func sharedGateway(t testing.TB) *Gateway {
	t.Helper()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.gw == nil && shared.err == nil {
		shared.gw, shared.err = startShared(dbCluster(t))
	}
	if shared.err != nil {
		t.Fatalf("the shared gateway: %v", shared.err)
	}
	return shared.gw
}

func startShared(c *pgtest.Cluster) (*Gateway, error) {
	dbURL, drop, err := createDatabase(c, "e2e_shared")
	if err != nil {
		return nil, err
	}
	shared.stops = append(shared.stops, drop)
	doc := NewDocStub()
	shared.stops = append(shared.stops, func() error { doc.Close(); return nil })
	g, err := launchGateway(GatewayOptions{DatabaseURL: dbURL, DocService: doc.Addr()})
	if err != nil {
		return nil, err
	}
	g.Doc = doc
	shared.stops = append(shared.stops, func() error {
		if err := g.Stop(); err != nil {
			return fmt.Errorf("stopping the shared gateway: %w\n--- gateway output (tail):\n%s", err, g.LogTail(4000))
		}
		return nil
	})
	return g, nil
}

// teardown stops the shared gateway, its stub and database, then closes
// the PostgreSQL cluster.
func teardown() error {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	var errs []error
	for i := len(shared.stops) - 1; i >= 0; i-- {
		errs = append(errs, shared.stops[i]())
	}
	shared.stops = nil
	clusterMu.Lock()
	defer clusterMu.Unlock()
	if clusterUsed != nil {
		if err := clusterUsed.Close(); err != nil {
			errs = append(errs, fmt.Errorf("closing the PostgreSQL cluster: %w", err))
		}
	}
	return errors.Join(errs...)
}

// ---------------------------------------------------------------------
// The stub document service

// StubRequest is one request a DocStub received.
type StubRequest struct {
	Method string
	// Path is the decoded path; RequestURI is exactly what was sent.
	Path       string
	RawQuery   string
	RequestURI string
	// Header holds the headers as the stub's Go server read them: names
	// in canonical form where they are valid tokens (X_User_Id arrives
	// as "X_user_id").
	Header http.Header
	// Body holds the first maxStubBody bytes; BodyLen and BodySHA256
	// cover all of it.
	Body       []byte
	BodyLen    int64
	BodySHA256 string
	// Trailer holds the trailers that came after the body.
	Trailer http.Header
	// Done is when the stub finished reading the body.
	Done time.Time
}

// maxStubBody bounds the body bytes a DocStub keeps per request.
const maxStubBody = 1 << 20

// DocStub is a stand-in for the document service (or the Vite dev
// server) on loopback. It records every request and answers 200 JSON
// echoing it (method, path, query, request_uri, headers, body_len,
// body_sha256), except on these paths (under any prefix):
//
//	.../slow?ms=N      sleeps N ms (default 3000) before answering
//	.../stream?id=ID   writes "chunk 1\n", flushes, waits for Release(ID)
//	                   (at most 10 s), then writes "chunk 2\n"
//	.../status/NNN     answers status NNN with {"detail": "stub status NNN"}
type DocStub struct {
	srv     *httptest.Server
	mu      sync.Mutex
	reqs    []StubRequest
	gates   map[string]chan struct{}
	closing chan struct{}
	once    sync.Once
}

// NewDocStub starts a stub on 127.0.0.1.
func NewDocStub() *DocStub {
	s := &DocStub{gates: map[string]chan struct{}{}, closing: make(chan struct{})}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	return s
}

// Addr is the stub's host:port.
func (s *DocStub) Addr() string { return s.srv.Listener.Addr().String() }

// URL is the stub's base URL.
func (s *DocStub) URL() string { return s.srv.URL }

// Close stops the stub: its port is closed afterwards. Waiting handlers
// are released.
func (s *DocStub) Close() {
	s.once.Do(func() {
		close(s.closing)
		s.srv.CloseClientConnections()
		s.srv.Close()
	})
}

// Requests returns every request received so far.
func (s *DocStub) Requests() []StubRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.reqs)
}

// Where returns the requests for which keep is true.
func (s *DocStub) Where(keep func(StubRequest) bool) []StubRequest {
	var out []StubRequest
	for _, r := range s.Requests() {
		if keep(r) {
			out = append(out, r)
		}
	}
	return out
}

// ForUser returns the requests whose X-User-Id names user id.
func (s *DocStub) ForUser(id string) []StubRequest {
	return s.Where(func(r StubRequest) bool { return slices.Contains(r.Header.Values("X-User-Id"), id) })
}

// WithPathPrefix returns the requests whose path starts with prefix.
func (s *DocStub) WithPathPrefix(prefix string) []StubRequest {
	return s.Where(func(r StubRequest) bool { return strings.HasPrefix(r.Path, prefix) })
}

// Release lets the .../stream?id=ID request go on to its second chunk.
func (s *DocStub) Release(id string) { close(s.gate(id)) }

func (s *DocStub) gate(id string) chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch, ok := s.gates[id]
	if !ok {
		ch = make(chan struct{})
		s.gates[id] = ch
	}
	return ch
}

func (s *DocStub) serve(w http.ResponseWriter, r *http.Request) {
	h := sha256.New()
	var kept bytes.Buffer
	n, _ := io.Copy(io.MultiWriter(h, &limitedWriter{w: &kept, n: maxStubBody}), r.Body)
	rec := StubRequest{
		Method:     r.Method,
		Path:       r.URL.Path,
		RawQuery:   r.URL.RawQuery,
		RequestURI: r.RequestURI,
		Header:     r.Header.Clone(),
		Body:       kept.Bytes(),
		BodyLen:    n,
		BodySHA256: hex.EncodeToString(h.Sum(nil)),
		Trailer:    r.Trailer.Clone(),
		Done:       time.Now(),
	}
	s.mu.Lock()
	s.reqs = append(s.reqs, rec)
	s.mu.Unlock()

	last := r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]
	switch {
	case last == "slow":
		ms, err := strconv.Atoi(r.URL.Query().Get("ms"))
		if err != nil {
			ms = 3000
		}
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
		case <-r.Context().Done():
			return
		case <-s.closing:
			return
		}
	case last == "stream":
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, "chunk 1\n")
		http.NewResponseController(w).Flush()
		select {
		case <-s.gate(r.URL.Query().Get("id")):
		case <-time.After(10 * time.Second):
		case <-r.Context().Done():
			return
		case <-s.closing:
			return
		}
		_, _ = io.WriteString(w, "chunk 2\n")
		return
	case strings.Contains(r.URL.Path, "/status/"):
		code, err := strconv.Atoi(last)
		if err == nil && code >= 200 && code <= 599 {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("X-Stub", "yes")
			w.WriteHeader(code)
			_ = json.NewEncoder(w).Encode(map[string]string{"detail": "stub status " + last})
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"method":      rec.Method,
		"path":        rec.Path,
		"query":       rec.RawQuery,
		"request_uri": rec.RequestURI,
		"headers":     rec.Header,
		"body_len":    rec.BodyLen,
		"body_sha256": rec.BodySHA256,
	})
}

// limitedWriter keeps the first n bytes and drops the rest.
type limitedWriter struct {
	w io.Writer
	n int64
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if l.n > 0 {
		k := min(int64(len(p)), l.n)
		_, _ = l.w.Write(p[:k])
		l.n -= k
	}
	return len(p), nil
}

// ---------------------------------------------------------------------
// The client

// Client speaks HTTP to a gateway from a loopback address of its own
// (127.1.x.y, where the system allows it), following no redirects.
type Client struct {
	t    testing.TB
	Base string
	// SourceIP is the client's address, "" for the system's choice.
	SourceIP string
	HTTP     *http.Client
}

var (
	sourceOnce sync.Once
	sourceOK   bool
	sourceNext atomic.Uint32
)

// nextSourceIP returns a loopback address no other client of this run
// uses, or nil where only 127.0.0.1 can be bound.
func nextSourceIP() net.IP {
	sourceOnce.Do(func() {
		l, err := net.Listen("tcp", "127.1.0.1:0")
		if err == nil {
			l.Close()
			sourceOK = true
		}
	})
	if !sourceOK {
		return nil
	}
	n := sourceNext.Add(1) - 1
	return net.IPv4(127, 1+byte(n/(250*250)), byte(n/250%250), byte(n%250)+1).To4()
}

func newClient(tb testing.TB, base string) *Client {
	ip := nextSourceIP()
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	c := &Client{t: tb, Base: base}
	if ip != nil {
		dialer.LocalAddr = &net.TCPAddr{IP: ip}
		c.SourceIP = ip.String()
	}
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         dialer.DialContext,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     30 * time.Second,
	}
	c.HTTP = &http.Client{
		Transport:     tr,
		Timeout:       60 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	tb.Cleanup(tr.CloseIdleConnections)
	return c
}

// Response is what a request got back, body read whole.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// NewRequest makes a request for path (relative to the gateway).
func (c *Client) NewRequest(method, path string, body io.Reader) *http.Request {
	c.t.Helper()
	req, err := http.NewRequest(method, c.Base+path, body)
	if err != nil {
		c.t.Fatal(err)
	}
	return req
}

// Do sends req and reads the whole response.
func (c *Client) Do(req *http.Request) *Response {
	c.t.Helper()
	res, err := c.HTTP.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		c.t.Fatalf("%s %s: reading the body: %v", req.Method, req.URL.Path, err)
	}
	record(c.t, req, res, b)
	return &Response{Status: res.StatusCode, Header: res.Header, Body: b}
}

// Exchange is one response to a request of a Client, recorded for the
// OpenAPI check of the run (openapi_test.go).
type Exchange struct {
	// Test is the name of the test whose Client sent the request.
	Test string
	// Method and URI (path and query, as sent) of the request.
	Method, URI string
	// Status, Header and Body of the response.
	Status int
	Header http.Header
	Body   []byte
}

// recorded holds the exchanges of every Client of the run whose path is
// under /api/ or is /.well-known/jwks.json, in the order they ended,
// while recording is on (TestMain: flag -e2e.openapi).
var recorded struct {
	on        atomic.Bool
	mu        sync.Mutex
	exchanges []Exchange
}

// record keeps the exchange of req, if recording is on and its path is
// one of the API's.
func record(tb testing.TB, req *http.Request, res *http.Response, body []byte) {
	if !recorded.on.Load() {
		return
	}
	if p := req.URL.Path; !strings.HasPrefix(p, "/api/") && p != "/api" && p != "/.well-known/jwks.json" {
		return
	}
	ex := Exchange{
		Test:   tb.Name(),
		Method: req.Method,
		URI:    req.URL.RequestURI(),
		Status: res.StatusCode,
		Header: res.Header.Clone(),
		Body:   bytes.Clone(body),
	}
	recorded.mu.Lock()
	recorded.exchanges = append(recorded.exchanges, ex)
	recorded.mu.Unlock()
}

// recordedExchanges returns the exchanges recorded so far.
func recordedExchanges() []Exchange {
	recorded.mu.Lock()
	defer recorded.mu.Unlock()
	return slices.Clone(recorded.exchanges)
}

// Get sends GET path, with the token if not "".
func (c *Client) Get(path, token string) *Response {
	c.t.Helper()
	req := c.NewRequest(http.MethodGet, path, nil)
	setToken(req, token)
	return c.Do(req)
}

// PostJSON sends body as JSON: a string or []byte as is, anything else
// marshalled.
func (c *Client) PostJSON(path, token string, body any) *Response {
	c.t.Helper()
	var raw []byte
	switch b := body.(type) {
	case string:
		raw = []byte(b)
	case []byte:
		raw = b
	default:
		var err error
		if raw, err = json.Marshal(b); err != nil {
			c.t.Fatal(err)
		}
	}
	req := c.NewRequest(http.MethodPost, path, bytes.NewReader(raw))
	req.Header.Set("Content-Type", "application/json")
	setToken(req, token)
	return c.Do(req)
}

// PostForm sends form as application/x-www-form-urlencoded.
func (c *Client) PostForm(path string, form url.Values) *Response {
	c.t.Helper()
	req := c.NewRequest(http.MethodPost, path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return c.Do(req)
}

func setToken(req *http.Request, token string) {
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
}

// apiUser is the user object of the API.
type apiUser struct {
	ID        string `json:"id"`
	Email     string `json:"email"`
	Role      string `json:"role"`
	IsActive  bool   `json:"is_active"`
	CreatedAt string `json:"created_at"`
	UpdatedAt string `json:"updated_at"`
}

// tokenBody is the body of a successful login.
type tokenBody struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
}

// Register creates an account through the API; it must succeed.
func (c *Client) Register(email, password string) apiUser {
	c.t.Helper()
	r := c.PostJSON("/api/auth/register", "", map[string]string{"email": email, "password": password})
	if r.Status != http.StatusCreated {
		c.t.Fatalf("register %s: %d %s", email, r.Status, r.Body)
	}
	var u apiUser
	r.Decode(c.t, &u)
	return u
}

// Login returns an access token for the account; it must succeed.
func (c *Client) Login(email, password string) string {
	c.t.Helper()
	r := c.PostForm("/api/auth/login", url.Values{"username": {email}, "password": {password}})
	if r.Status != http.StatusOK {
		c.t.Fatalf("login %s: %d %s", email, r.Status, r.Body)
	}
	var tb tokenBody
	r.Decode(c.t, &tb)
	if tb.AccessToken == "" {
		c.t.Fatalf("login %s: no access_token in %s", email, r.Body)
	}
	return tb.AccessToken
}

// NewUser registers a fresh account (unique email, random password) and
// logs it in.
func (c *Client) NewUser() (u apiUser, password, token string) {
	c.t.Helper()
	password = randomPassword()
	u = c.Register(uniqueEmail(c.t), password)
	return u, password, c.Login(u.Email, password)
}

// ---------------------------------------------------------------------
// The command line

// runCLI runs the gateway binary with args in a temp dir of its own (no
// ./Caddyfile there), with env added to a clean environment and stdin as
// standard input.
func runCLI(tb testing.TB, env map[string]string, stdin string, args ...string) (stdout, stderr string, err error) {
	tb.Helper()
	dir := tb.TempDir()
	cmd := exec.Command(caddyBin, args...)
	cmd.Dir = dir
	cmd.Env = processEnv(dir, env)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	setProcAttr(cmd)
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		tb.Fatalf("starting caddy %s: %v", strings.Join(args, " "), err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(2 * time.Minute):
		_ = cmd.Process.Kill()
		<-done
		tb.Fatalf("caddy %s did not end within 2 minutes", strings.Join(args, " "))
	}
	return out.String(), errb.String(), err
}

// createAdmin makes an active admin with `caddy accounts create-admin`
// on the database at dbURL and returns the command's output.
func createAdmin(tb testing.TB, dbURL, email, password string) string {
	tb.Helper()
	out, errOut, err := runCLI(tb, map[string]string{"DATABASE_URL": dbURL}, password+"\n",
		"accounts", "create-admin", "--email", email, "--password-stdin")
	if err != nil {
		tb.Fatalf("caddy accounts create-admin: %v\nstdout: %s\nstderr: %s", err, out, errOut)
	}
	return out
}

// ---------------------------------------------------------------------
// Assertions on responses

// fieldError is one entry of a 422 answer.
type fieldError struct {
	Type string `json:"type"`
	Loc  []any  `json:"loc"`
	Msg  string `json:"msg"`
}

// Decode unmarshals the JSON body into v.
func (r *Response) Decode(tb testing.TB, v any) {
	tb.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		tb.Fatalf("body %q is not the expected JSON: %v", r.Body, err)
	}
}

// JSON decodes the body as a JSON object.
func (r *Response) JSON(tb testing.TB) map[string]any {
	tb.Helper()
	var m map[string]any
	r.Decode(tb, &m)
	return m
}

// ContentType is the media type of the response, without parameters.
func (r *Response) ContentType() string {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return mt
}

// expectStatus fails tb unless r has status want.
func expectStatus(tb testing.TB, r *Response, want int) {
	tb.Helper()
	if r.Status != want {
		tb.Fatalf("status %d, want %d; body: %s", r.Status, want, truncate(r.Body, 2000))
	}
}

// expectDetail checks an error answer: status, application/json, and a
// body that is exactly {"detail": detail}.
func expectDetail(tb testing.TB, r *Response, status int, detail string) {
	tb.Helper()
	expectStatus(tb, r, status)
	if ct := r.ContentType(); ct != "application/json" {
		tb.Errorf("Content-Type %q, want application/json", r.Header.Get("Content-Type"))
	}
	var body map[string]any
	r.Decode(tb, &body)
	if len(body) != 1 || body["detail"] != detail {
		tb.Fatalf("body %s, want {\"detail\": %q}", r.Body, detail)
	}
}

// expectBearerError checks a 401 with the detail and exactly one
// "WWW-Authenticate: Bearer".
func expectBearerError(tb testing.TB, r *Response, detail string) {
	tb.Helper()
	expectDetail(tb, r, http.StatusUnauthorized, detail)
	if got := r.Header.Values("Www-Authenticate"); len(got) != 1 || got[0] != "Bearer" {
		tb.Errorf("WWW-Authenticate %q, want exactly [\"Bearer\"]", got)
	}
}

// expectValidation checks a 422 whose detail is exactly want (entries
// with no other members than type, loc and msg).
func expectValidation(tb testing.TB, r *Response, want ...fieldError) {
	tb.Helper()
	expectStatus(tb, r, http.StatusUnprocessableEntity)
	if ct := r.ContentType(); ct != "application/json" {
		tb.Errorf("Content-Type %q, want application/json", r.Header.Get("Content-Type"))
	}
	var body map[string]json.RawMessage
	r.Decode(tb, &body)
	if len(body) != 1 || body["detail"] == nil {
		tb.Fatalf("body %s: want exactly a detail member", r.Body)
	}
	if got, wantJSON := canonicalJSON(tb, body["detail"]), canonicalJSON(tb, want); got != wantJSON {
		tb.Fatalf("422 detail\n got %s\nwant %s", got, wantJSON)
	}
}

// expectNoEcho fails tb if the body contains secret.
func expectNoEcho(tb testing.TB, r *Response, secret string) {
	tb.Helper()
	if secret != "" && bytes.Contains(r.Body, []byte(secret)) {
		tb.Errorf("the response echoes a secret (%q): %s", secret, truncate(r.Body, 2000))
	}
}

// canonicalJSON re-encodes v (a value, or JSON text as json.RawMessage or
// []byte) with sorted object members.
func canonicalJSON(tb testing.TB, v any) string {
	tb.Helper()
	var raw []byte
	switch x := v.(type) {
	case json.RawMessage:
		raw = x
	case []byte:
		raw = x
	default:
		var err error
		if raw, err = json.Marshal(v); err != nil {
			tb.Fatal(err)
		}
	}
	var generic any
	if err := json.Unmarshal(raw, &generic); err != nil {
		tb.Fatalf("%s is not JSON: %v", raw, err)
	}
	out, err := json.Marshal(generic)
	if err != nil {
		tb.Fatal(err)
	}
	return string(out)
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + fmt.Sprintf("... (%d bytes)", len(b))
	}
	return string(b)
}

// eventually retries check until it returns "" or timeout passes, then
// fails tb with its last message. For effects that travel through the
// database's notifications, which are asynchronous.
func eventually(tb testing.TB, timeout time.Duration, check func() string) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		msg := check()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("after %v: %s", timeout, msg)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// ---------------------------------------------------------------------
// Test data

var emailSeq atomic.Uint64

var notEmailChars = regexp.MustCompile(`[^a-z0-9]+`)

// uniqueEmail returns an address no other test of this run uses, named
// after the test.
func uniqueEmail(tb testing.TB) string {
	name := strings.Trim(notEmailChars.ReplaceAllString(strings.ToLower(tb.Name()), "."), ".")
	if len(name) > 40 {
		name = name[len(name)-40:]
		name = strings.Trim(name, ".")
	}
	return fmt.Sprintf("%s.%d.%s@example.com", name, emailSeq.Add(1), randomHex(3))
}

// randomPassword returns a password that meets the policy and appears
// nowhere else (so a search for it in logs or bodies means a leak).
func randomPassword() string { return "Pw!" + randomHex(10) + "Z" }

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}
