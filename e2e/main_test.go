// Package e2e holds the end-to-end tests of the gateway: the real binary
// (built once from ./cmd/caddy by TestMain), run with the project's real
// Caddyfile against a throwaway PostgreSQL database (internal/pgtest) and
// a stub document service on loopback, spoken to over HTTP the way the
// frontend and the document service do.
//
// The harness is split by concern: main_test.go builds the binary, runs
// the tests and holds what they share (the PostgreSQL cluster, the shared
// gateway); gateway_process_test.go starts and stops gateway processes
// (startGateway) and runs the command line; docstub_test.go is the stub
// document service (DocStub); client_test.go the HTTP client (Client) and
// its recording of exchanges; expect_test.go the assertions on
// FastAPI-shaped answers. The scenarios live in the other *_test.go files.
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
	"crypto/rsa"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
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

// execSQL runs one statement on the database at dbURL and returns the
// number of rows it affected.
func execSQL(tb testing.TB, dbURL, sql string, args ...any) int64 {
	tb.Helper()
	var n int64
	withConn(tb, dbURL, sql, func(ctx context.Context, conn *pgx.Conn) error {
		tag, err := conn.Exec(ctx, sql, args...)
		n = tag.RowsAffected()
		return err
	})
	return n
}

// querySQL runs a query that returns one row and scans it into dest.
func querySQL(tb testing.TB, dbURL, sql string, args []any, dest ...any) {
	tb.Helper()
	withConn(tb, dbURL, sql, func(ctx context.Context, conn *pgx.Conn) error {
		return conn.QueryRow(ctx, sql, args...).Scan(dest...)
	})
}

// withConn runs f on a connection of its own to the database at dbURL,
// within 15 seconds, and fails tb if that goes wrong; sql names f's
// statement in the failure.
func withConn(tb testing.TB, dbURL, sql string, f func(context.Context, *pgx.Conn) error) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		tb.Fatalf("connecting to the test database: %v", err)
	}
	defer conn.Close(context.Background())
	if err := f(ctx, conn); err != nil {
		tb.Fatalf("%s: %v", sql, err)
	}
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
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dbURL, drop, err := c.CreateDB(ctx, "e2e shared")
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
