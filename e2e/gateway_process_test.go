package e2e

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caddyaccounts/gateway/internal/testnet"
)

// The gateway process: starting it with the project's Caddyfile and an
// environment of its own (startGateway, launchGateway), waiting for it to
// be healthy, stopping it, its logs; and the command line (runCLI).

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
		if opts.Port, err = testnet.FreePort(); err != nil {
			return nil, err
		}
	}
	adminPort, err := testnet.FreePort()
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

// Kill ends the process with SIGKILL, as a crash or an OOM kill would:
// no graceful stop, nothing finished. A later Stop does nothing and
// returns nil.
func (g *Gateway) Kill() {
	g.stopOnce.Do(func() {
		_ = g.cmd.Process.Kill()
		<-g.exited
	})
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
