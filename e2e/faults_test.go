package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/caddyaccounts/gateway/internal/apitest"
	"github.com/caddyaccounts/gateway/internal/pgtest"
)

// Faults while the gateway is under load: the database going away and
// coming back, config reloads, and a document service that is slow or
// does not answer. Each scenario runs its own gateway; the database
// outage also runs its own PostgreSQL cluster, since it stops it.
//
// Decision for the auth cache during a database outage: the gateway
// fails closed. User state is cached only while the gateway listens to
// the database's change notifications (accounts/notify.go); the
// outage ends that listening, so every request that needs to know the
// user — /api/documents included, whose token may be in the token
// cache — answers 503 until the database is back. A deactivated or
// demoted user is never let through on a stale cache.

// The bodies of the gateway's 503s: a request whose database work failed,
// and the health route.
const (
	detailUnavailable   = "Service temporarily unavailable"
	detailDBUnavailable = "Database unavailable"
)

// ---------------------------------------------------------------------
// Load

// faultClient is an HTTP client for load goroutines: unlike Client it
// reports errors instead of failing the test, so it may be used off the
// test's goroutine. It connects from a loopback address of its own.
//
// GETs reuse kept-alive connections; POSTs always go on a new one. A
// server that shuts down (the old config's, at a reload) closes its idle
// connections, and a request written onto one at that very moment gets
// no answer: Go's client resends a GET then, as HTTP allows, but not a
// POST (browsers do, when the connection was reused). A POST on a fresh
// connection makes any failure the gateway's, not that race's.
type faultClient struct {
	base    string
	keepTr  *http.Transport
	freshTr *http.Transport
	keep    *http.Client
	fresh   *http.Client
}

func newFaultClient(base string) *faultClient {
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	if ip := nextSourceIP(); ip != nil {
		dialer.LocalAddr = &net.TCPAddr{IP: ip}
	}
	fc := &faultClient{
		base:    base,
		keepTr:  &http.Transport{Proxy: nil, DialContext: dialer.DialContext, MaxIdleConnsPerHost: 4, IdleConnTimeout: 30 * time.Second},
		freshTr: &http.Transport{Proxy: nil, DialContext: dialer.DialContext, DisableKeepAlives: true},
	}
	noRedirect := func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	fc.keep = &http.Client{Transport: fc.keepTr, Timeout: 30 * time.Second, CheckRedirect: noRedirect}
	fc.fresh = &http.Client{Transport: fc.freshTr, Timeout: 30 * time.Second, CheckRedirect: noRedirect}
	return fc
}

// do sends one request and reads the whole answer.
func (fc *faultClient) do(method, path, token, contentType, body string) (*Response, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, fc.base+path, rd)
	if err != nil {
		return nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	setToken(req, token)
	hc := fc.keep
	if method != http.MethodGet {
		hc = fc.fresh
	}
	return apitest.Client(hc)(req)
}

func (fc *faultClient) login(email, pw string) (*Response, error) {
	return fc.do(http.MethodPost, "/api/auth/login", "", "application/x-www-form-urlencoded",
		url.Values{"username": {email}, "password": {pw}}.Encode())
}

func (fc *faultClient) register(email, pw string) (*Response, error) {
	b, _ := json.Marshal(map[string]string{"email": email, "password": pw})
	return fc.do(http.MethodPost, "/api/auth/register", "", "application/json", string(b))
}

func (fc *faultClient) close() { fc.keepTr.CloseIdleConnections() }

// faultResult is one answer of a load run.
type faultResult struct {
	Op string
	// Sent and Answered are the load's phase when the request was sent
	// and when its answer (or error) came.
	Sent, Answered int32
	Resp           *Response
	Err            error
	Email          string // register: the email sent
}

// okStatus is the status of a successful answer to each load operation.
var okStatus = map[string]int{"me": 200, "documents": 200, "login": 200, "register": 201, "health": 200}

// faultLoad runs request loops in goroutines and keeps score. judge
// returns "" for an acceptable answer and a description otherwise.
type faultLoad struct {
	base  string
	phase atomic.Int32
	judge func(r *faultResult) string

	stop    atomic.Bool
	wg      sync.WaitGroup
	mu      sync.Mutex
	counts  map[string]int           // "op status" or "op error"
	success map[string]map[int32]int // op -> phase answered -> successes sent and answered in it
	seen    map[string]map[int32]int // op -> phase answered -> answers sent and answered in it
	bad     []string                 // unacceptable answers (first 20)
	nBad    int                      // all of them
	acked   []string                 // emails whose register got 201
	refused []string                 // emails whose register got 503
}

func newFaultLoad(base string, judge func(*faultResult) string) *faultLoad {
	return &faultLoad{base: base, judge: judge, counts: map[string]int{},
		success: map[string]map[int32]int{}, seen: map[string]map[int32]int{}}
}

// loadPause is the pause of a load goroutine between two requests.
const loadPause = 10 * time.Millisecond

// authRequestsPerClient bounds the /api/auth/* requests of one client
// address, under the gateway's default limit of 60 a minute.
const authRequestsPerClient = 40

// run starts n goroutines repeating op until stopAll. users provides the
// token and credentials: goroutine i uses users[i%len(users)].
func (l *faultLoad) run(op string, n int, users []faultUser, password string) {
	for i := range n {
		u := users[i%len(users)]
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			fc := newFaultClient(l.base)
			defer func() { fc.close() }()
			for seq := 0; !l.stop.Load(); seq++ {
				if (op == "login" || op == "register") && seq > 0 && seq%authRequestsPerClient == 0 {
					fc.close()
					fc = newFaultClient(l.base)
				}
				r := &faultResult{Op: op, Sent: l.phase.Load()}
				switch op {
				case "me":
					r.Resp, r.Err = fc.do(http.MethodGet, "/api/users/me", u.Token, "", "")
				case "documents":
					r.Resp, r.Err = fc.do(http.MethodGet, fmt.Sprintf("/api/documents/x?load=%d", seq), u.Token, "", "")
				case "login":
					r.Resp, r.Err = fc.login(u.Email, u.Password)
				case "register":
					r.Email = fmt.Sprintf("load%d.%d.%s@example.com", i, seq, randomHex(4))
					r.Resp, r.Err = fc.register(r.Email, password)
				case "health":
					r.Resp, r.Err = fc.do(http.MethodGet, "/api/health", "", "", "")
				default:
					panic("unknown load op " + op)
				}
				r.Answered = l.phase.Load()
				l.record(r)
				// A steady load, not a flood: the machine is shared with
				// the gateway and with the other tests.
				pause := loadPause
				if op == "login" || op == "register" {
					pause = 5 * loadPause // a password hash each
				}
				time.Sleep(pause)
			}
		}()
	}
}

func (l *faultLoad) record(r *faultResult) {
	problem := l.judge(r)
	l.mu.Lock()
	defer l.mu.Unlock()
	key := r.Op + " error"
	if resetByPeer(r.Err) {
		key = r.Op + " reset"
	}
	if r.Err == nil {
		key = r.Op + " " + strconv.Itoa(r.Resp.Status)
	}
	l.counts[key]++
	if r.Sent == r.Answered {
		if l.seen[r.Op] == nil {
			l.seen[r.Op], l.success[r.Op] = map[int32]int{}, map[int32]int{}
		}
		l.seen[r.Op][r.Answered]++
		if r.Err == nil && r.Resp.Status == okStatus[r.Op] {
			l.success[r.Op][r.Answered]++
		}
	}
	if r.Op == "register" && r.Err == nil {
		switch r.Resp.Status {
		case http.StatusCreated:
			l.acked = append(l.acked, r.Email)
		case http.StatusServiceUnavailable:
			l.refused = append(l.refused, r.Email)
		}
	}
	if problem != "" {
		l.nBad++
		if len(l.bad) < 20 {
			desc := fmt.Sprintf("%s (phase %d→%d): ", r.Op, r.Sent, r.Answered)
			if r.Err != nil {
				desc += "error " + r.Err.Error()
			} else {
				desc += fmt.Sprintf("%d %s", r.Resp.Status, truncate(r.Resp.Body, 300))
			}
			l.bad = append(l.bad, desc+": "+problem)
		}
	}
}

// waitFor waits until every op has at least n answers in phase (sent and
// answered in it) that count: successes, or, with anyAnswer, every answer.
// Logins and registers need at most 2.
func (l *faultLoad) waitFor(t *testing.T, timeout time.Duration, phase int32, n int, anyAnswer bool, ops ...string) {
	t.Helper()
	eventually(t, timeout, func() string {
		l.mu.Lock()
		defer l.mu.Unlock()
		for _, op := range ops {
			got, want := l.success[op][phase], n
			if anyAnswer {
				got = l.seen[op][phase]
			}
			if op == "login" || op == "register" {
				want = min(n, 2) // a password hash each
			}
			if got < want {
				return fmt.Sprintf("%s: %d answers in phase %d, want %d (counts so far %v)", op, got, phase, want, l.counts)
			}
		}
		return ""
	})
}

// stopAll ends the loops and waits for their last requests.
func (l *faultLoad) stopAll() {
	l.stop.Store(true)
	l.wg.Wait()
}

// report returns the counts, sorted, for the log.
func (l *faultLoad) report() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	keys := make([]string, 0, len(l.counts))
	total := 0
	for k, n := range l.counts {
		keys = append(keys, k)
		total += n
	}
	sort.Strings(keys)
	var b strings.Builder
	fmt.Fprintf(&b, "%d requests:", total)
	for _, k := range keys {
		fmt.Fprintf(&b, " [%s]×%d", k, l.counts[k])
	}
	return b.String()
}

// expectNoBadAnswers fails t with the unacceptable answers of the run.
func (l *faultLoad) expectNoBadAnswers(t *testing.T) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.nBad > 0 {
		t.Errorf("%d unacceptable answers under load, the first ones:\n  %s", l.nBad, strings.Join(l.bad, "\n  "))
	}
}

// faultUser is an account of a load run.
type faultUser struct {
	ID, Email, Password, Token string
}

func newFaultUsers(c *Client, n int) []faultUser {
	users := make([]faultUser, n)
	for i := range users {
		u, pw, token := c.NewUser()
		users[i] = faultUser{ID: u.ID, Email: u.Email, Password: pw, Token: token}
	}
	return users
}

// isDetailJSON reports whether r is exactly the JSON error {"detail": detail}
// with status.
func isDetailJSON(r *Response, status int, detail string) bool {
	if r.Status != status || r.ContentType() != "application/json" {
		return false
	}
	var body map[string]any
	return json.Unmarshal(r.Body, &body) == nil && len(body) == 1 && body["detail"] == detail
}

// expectNoPanic fails t if the gateway's output mentions a panic.
func expectNoPanic(t *testing.T, g *Gateway) {
	t.Helper()
	logs := g.Logs()
	if i := strings.Index(strings.ToLower(logs), "panic"); i >= 0 {
		t.Errorf("the gateway's output mentions a panic:\n%s", logs[max(0, i-2000):min(len(logs), i+2000)])
	}
}

// ---------------------------------------------------------------------
// (a) The database goes away under load and comes back

// Phases of the outage scenario.
const (
	phaseUp         int32 = iota // the database answers
	phaseStopping                // being stopped; not yet seen down
	phaseDown                    // seen down by the gateway
	phaseRestarting              // being started again
	phaseRecovered               // every route answered again
)

// minOutage is how long the database stays down at least. pgxpool pings
// a connection idle for more than a second before handing it out, so
// after an outage longer than that no connection of before the outage is
// used unchecked, and every request sent after the recovery must succeed.
const minOutage = 1500 * time.Millisecond

// TestFaultDatabaseOutage stops PostgreSQL under load (a fast shutdown:
// sessions are ended) and starts it again: meanwhile every
// database-backed route answers 503 with its JSON detail (documents too:
// the gateway fails closed), nothing panics, the gateway recovers by
// itself within seconds, and every register that got 201 is stored and
// can log in.
func TestFaultDatabaseOutage(t *testing.T) { testDatabaseOutage(t, (*pgtest.Cluster).Stop) }

// TestFaultDatabaseCrash is the same outage with PostgreSQL killed
// instead: every one of its processes at once, by SIGKILL, so that it
// restarts through crash recovery.
func TestFaultDatabaseCrash(t *testing.T) { testDatabaseOutage(t, (*pgtest.Cluster).Crash) }

// testDatabaseOutage is the outage scenario; down takes the database
// away.
func testDatabaseOutage(t *testing.T, down func(*pgtest.Cluster) error) {
	t.Parallel()
	cluster, err := pgtest.StartCluster()
	if err != nil {
		if os.Getenv("TEST_DATABASE_URL") != "" {
			t.Skipf("needs a PostgreSQL cluster of its own to stop: %v", err)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cluster.Close(); err != nil {
			t.Errorf("closing the outage cluster: %v", err)
		}
	})
	g := startGateway(t, GatewayOptions{DatabaseURL: cluster.NewDB(t, "", nil)})
	c := g.Client(t)
	probe := newFaultUsers(c, 1)[0]
	users := newFaultUsers(c, 2)
	loadPassword := randomPassword()
	expectStatus(t, c.Get("/api/documents/probe", probe.Token), http.StatusOK)

	load := newFaultLoad(g.URL, func(r *faultResult) string {
		if r.Err != nil {
			return "transport error"
		}
		ok := okStatus[r.Op]
		switch {
		case r.Resp.Status == ok:
			if r.Sent == phaseDown && r.Answered == phaseDown {
				return "succeeded while the database was down"
			}
			return ""
		case r.Resp.Status == http.StatusServiceUnavailable:
			want := detailUnavailable
			if r.Op == "health" {
				want = detailDBUnavailable
			}
			if !isDetailJSON(r.Resp, http.StatusServiceUnavailable, want) {
				return fmt.Sprintf("want 503 {\"detail\": %q} as JSON", want)
			}
			if r.Sent == r.Answered && (r.Sent == phaseUp || r.Sent == phaseRecovered) {
				return "503 while the database was up"
			}
			return ""
		}
		return fmt.Sprintf("want %d or 503", ok)
	})
	load.run("me", 2, users, "")
	load.run("documents", 2, users, "")
	load.run("login", 1, users, "")
	load.run("register", 1, users, loadPassword)
	load.run("health", 1, users, "")
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			load.stopAll()
		}
	})
	ops := []string{"me", "documents", "login", "register", "health"}
	load.waitFor(t, 20*time.Second, phaseUp, 3, false, ops...)

	// Stop the database.
	load.phase.Store(phaseStopping)
	if err := down(cluster); err != nil {
		t.Fatal(err)
	}
	downAt := time.Now()
	// The gateway notices at once (the listener's connection ends with
	// the server); the probe's cached user state is dropped with it.
	eventually(t, 2*time.Second, func() string {
		if r := c.Get("/api/documents/probe-down", probe.Token); !isDetailJSON(r, http.StatusServiceUnavailable, detailUnavailable) {
			return fmt.Sprintf("documents with a cached token: %d %s, want 503 %q", r.Status, r.Body, detailUnavailable)
		}
		return ""
	})
	noticed := time.Since(downAt)
	load.phase.Store(phaseDown)
	expectDetail(t, c.Get("/api/health", ""), http.StatusServiceUnavailable, detailDBUnavailable)
	expectDetail(t, c.Get("/api/users/me", probe.Token), http.StatusServiceUnavailable, detailUnavailable)
	expectDetail(t, c.Get("/api/documents", probe.Token), http.StatusServiceUnavailable, detailUnavailable)
	expectDetail(t, c.PostForm("/api/auth/login", url.Values{"username": {probe.Email}, "password": {probe.Password}}), http.StatusServiceUnavailable, detailUnavailable)
	refusedEmail := uniqueEmail(t)
	expectDetail(t, c.PostJSON("/api/auth/register", "", map[string]string{"email": refusedEmail, "password": loadPassword}), http.StatusServiceUnavailable, detailUnavailable)
	// Authentication still comes first; a bad token is still a 401.
	expectBearerError(t, c.Get("/api/documents", ""), "Not authenticated")
	expectBearerError(t, c.Get("/api/documents", "garbage"), "Could not validate credentials")
	load.waitFor(t, 10*time.Second, phaseDown, 3, true, ops...)
	// The outage's length is part of the scenario (see minOutage), not
	// a wait for something to happen.
	time.Sleep(minOutage - time.Since(downAt))
	if got := g.Doc.ForUser(probe.ID); len(got) != 1 {
		t.Errorf("the document service got %d requests of the probe user, want 1 (from before the outage)", len(got))
	}

	// Start it again: the gateway recovers by itself.
	load.phase.Store(phaseRestarting)
	if err := cluster.Start(); err != nil {
		t.Fatal(err)
	}
	outage := time.Since(downAt)
	upAt := time.Now()
	var healthyAfter time.Duration
	eventually(t, 5*time.Second, func() string {
		if r := c.Get("/api/health", ""); r.Status != http.StatusOK {
			return fmt.Sprintf("health %d %s", r.Status, r.Body)
		}
		if healthyAfter == 0 {
			healthyAfter = time.Since(upAt)
		}
		if r := c.Get("/api/users/me", probe.Token); r.Status != http.StatusOK {
			return fmt.Sprintf("me %d %s", r.Status, r.Body)
		}
		if r := c.Get("/api/documents/probe-up", probe.Token); r.Status != http.StatusOK {
			return fmt.Sprintf("documents %d %s", r.Status, r.Body)
		}
		if r := c.PostForm("/api/auth/login", url.Values{"username": {probe.Email}, "password": {probe.Password}}); r.Status != http.StatusOK {
			return fmt.Sprintf("login %d %s", r.Status, r.Body)
		}
		return ""
	})
	recoveredAfter := time.Since(upAt)
	load.phase.Store(phaseRecovered)
	load.waitFor(t, 20*time.Second, phaseRecovered, 3, false, ops...)
	load.stopAll()
	stopped = true
	t.Logf("database down for %v, noticed after %v; healthy %v and every route %v after it accepted connections again; load: %s",
		outage.Round(time.Millisecond), noticed.Round(time.Millisecond), healthyAfter.Round(time.Millisecond), recoveredAfter.Round(time.Millisecond), load.report())
	load.expectNoBadAnswers(t)

	// No acknowledged write is lost.
	acked, refused := slices.Clone(load.acked), append(slices.Clone(load.refused), refusedEmail)
	var stored int
	querySQL(t, g.DatabaseURL, "SELECT count(*) FROM users WHERE email = ANY($1)", []any{acked}, &stored)
	if stored != len(acked) {
		t.Errorf("%d of the %d registers answered 201 are stored", stored, len(acked))
	}
	var storedRefused int
	querySQL(t, g.DatabaseURL, "SELECT count(*) FROM users WHERE email = ANY($1)", []any{refused}, &storedRefused)
	// Every account answered 201 can log in (and one refused with 503
	// can be registered now).
	var wg sync.WaitGroup
	var mu sync.Mutex
	var loginFailures []string
	for i, email := range acked {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fc := newFaultClient(g.URL)
			defer fc.close()
			r, err := fc.login(email, loadPassword)
			if err != nil || r.Status != http.StatusOK {
				mu.Lock()
				loginFailures = append(loginFailures, fmt.Sprintf("#%d %s: %v %v", i, email, err, r))
				mu.Unlock()
			}
		}()
		if i%4 == 3 {
			wg.Wait()
		}
	}
	wg.Wait()
	if len(loginFailures) > 0 {
		t.Errorf("accounts answered 201 cannot log in: %v", loginFailures)
	}
	c.Register(refusedEmail, loadPassword)
	t.Logf("registers: %d answered 201 (all stored: %v), %d answered 503 (of which %d stored anyway)", len(acked), stored == len(acked), len(refused), storedRefused)
	if len(acked) == 0 {
		t.Error("no register succeeded under load")
	}
	expectNoPanic(t, g)
}

// ---------------------------------------------------------------------
// (b) Reloads under load

// TestFaultReloadUnderLoad reloads the config five times while clients
// keep using the gateway: no request the gateway received fails (see
// kernelMigratesConnections for those it never saw), every reload really swaps
// the accounts app (a new token lifetime shows in the next login), and
// afterwards the gateway holds no more database connections and
// goroutines than before. Reloads alternate between `caddy reload` with
// another TOKEN_LIFETIME (the pool is kept) and POST /load of a config
// whose database URL differs by application_name (the pool is replaced,
// and the old one must be closed).
func TestFaultReloadUnderLoad(t *testing.T) {
	t.Parallel()
	g := startGateway(t, GatewayOptions{})
	c := g.Client(t)
	users := newFaultUsers(c, 2)
	loginUser := users[0]
	dbName := faultDBName(t, g.DatabaseURL)
	maxConns := max(4, runtime.NumCPU()) // pgxpool's default pool size

	// Caddy opens a reloaded config's listener beside the old one
	// (SO_REUSEPORT) and then closes the old one. Unless the kernel hands
	// the old listener's queued connections to the new one
	// (net.ipv4.tcp_migrate_req=1), it resets them: a connection being
	// opened at that instant fails with ECONNRESET before the gateway has
	// seen it (or with EOF: when the request's write consumes the reset,
	// Go's client reports the read that follows). That is excused here,
	// counted, and bounded: each reload can catch at most one connection
	// per load goroutine.
	const reloads, loadGoroutines = 1 + 5, 2 + 2 + 1
	excuseResets := !kernelMigratesConnections()
	var resets atomic.Int32
	load := newFaultLoad(g.URL, func(r *faultResult) string {
		if r.Err != nil {
			if excuseResets && resetByPeer(r.Err) {
				resets.Add(1)
				return ""
			}
			return "transport error"
		}
		if r.Resp.Status != okStatus[r.Op] {
			return fmt.Sprintf("want %d", okStatus[r.Op])
		}
		return ""
	})
	ops := []string{"me", "documents", "login"}
	t.Cleanup(faultAdminHTTP.Transport.(*http.Transport).CloseIdleConnections)
	var loads []*faultLoad
	stopLoads := func() {
		for _, l := range loads {
			l.stopAll()
		}
		loads = nil
		c.HTTP.Transport.(*http.Transport).CloseIdleConnections()
	}
	t.Cleanup(stopLoads)

	// Warm up, with one reload, so that whatever is made once is made.
	warm := newFaultLoad(g.URL, load.judge)
	loads = append(loads, warm)
	warm.run("me", 2, users, "")
	warm.run("documents", 2, users, "")
	warm.run("login", 1, []faultUser{loginUser}, "")
	warm.waitFor(t, 20*time.Second, 0, 3, false, ops...)
	reloadCLI(t, g, 8*time.Hour+time.Second)
	warm.waitFor(t, 20*time.Second, 0, 6, false, ops...)
	stopLoads()
	warm.expectNoBadAnswers(t)
	goroutinesBefore := settledGoroutineTally(t, g)
	if goroutinesBefore.Listeners != 1 || goroutinesBefore.Pools != 1 {
		t.Fatalf("goroutines before the reloads %v, want 1 listener and 1 pool", goroutinesBefore)
	}
	pgConn, err := pgx.Connect(context.Background(), g.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pgConn.Close(context.Background())
	connsBefore := gatewayConns(t, pgConn, dbName)

	// Reload under load.
	loads = append(loads, load)
	load.run("me", 2, users, "")
	load.run("documents", 2, users, "")
	load.run("login", 1, []faultUser{loginUser}, "")
	check := newFaultClient(g.URL)
	defer check.close()
	for i := int32(1); i <= 5; i++ {
		load.waitFor(t, 20*time.Second, i-1, 3, false, ops...)
		lifetime := 8*time.Hour + time.Duration(i)*time.Minute
		if i%2 == 1 {
			reloadCLI(t, g, lifetime)
		} else {
			reloadJSON(t, g, lifetime, g.DatabaseURL+"&application_name="+fmt.Sprintf("fault-reload-%d", i))
		}
		load.phase.Store(i)
		// The next login is the new config's.
		r, err := check.login(loginUser.Email, loginUser.Password)
		if err != nil {
			t.Fatal(err)
		}
		expectStatus(t, r, http.StatusOK)
		var tok tokenBody
		r.Decode(t, &tok)
		if tok.ExpiresIn != int64(lifetime/time.Second) {
			t.Fatalf("reload %d: expires_in %d, want %d: the accounts app was not swapped", i, tok.ExpiresIn, int64(lifetime/time.Second))
		}
	}
	load.waitFor(t, 20*time.Second, 5, 3, false, ops...)
	stopLoads()
	check.close()
	t.Logf("load during 5 reloads: %s", load.report())
	load.expectNoBadAnswers(t)
	if n := resets.Load(); n > 0 {
		t.Logf("%d connections reset by the kernel as a listener closed (net.ipv4.tcp_migrate_req is not 1)", n)
		if n > reloads*loadGoroutines {
			t.Errorf("%d connections reset during %d reloads of %d load goroutines: more than one per goroutine and reload", n, reloads, loadGoroutines)
		}
	}
	if t.Failed() { // the gateway's account of the failures
		for _, line := range strings.Split(g.Logs(), "\n") {
			if strings.Contains(line, "request failed") || strings.Contains(line, "\"error\"") {
				t.Log(line)
			}
		}
	}

	// Settled: the old apps' pools, listeners and goroutines are gone.
	// Goroutines on connections come and go with the clients and the
	// proxy's idle connections; the others must be as many as before
	// (a little slack for timers that come and go).
	const goroutineSlack = 2
	var goroutinesAfter goroutineTally
	var connsAfter map[string]int
	eventually(t, 10*time.Second, func() string {
		goroutinesAfter = countGoroutines(t, g)
		connsAfter = gatewayConns(t, pgConn, dbName)
		switch {
		case goroutinesAfter.Listeners != 1 || goroutinesAfter.Pools != 1:
			return fmt.Sprintf("goroutines %v, want 1 listener and 1 pool", goroutinesAfter)
		case goroutinesAfter.Others() > goroutinesBefore.Others()+goroutineSlack:
			return fmt.Sprintf("goroutines %v, before the reloads %v", goroutinesAfter, goroutinesBefore)
		case connsAfter["listen"] != 1:
			return fmt.Sprintf("%d connections listen for user changes, want 1: %v", connsAfter["listen"], connsAfter)
		case connsAfter["total"] > 1+maxConns:
			return fmt.Sprintf("%d connections, want at most the pool's %d and the listener: %v", connsAfter["total"], maxConns, connsAfter)
		case connsAfter["stale"] != 0:
			return fmt.Sprintf("%d connections of replaced pools (application_name fault-reload-*) remain: %v", connsAfter["stale"], connsAfter)
		}
		return ""
	})
	t.Logf("goroutines before %v, after %v; database connections before %v, after %v",
		goroutinesBefore, goroutinesAfter, connsBefore, connsAfter)
	expectNoPanic(t, g)
}

// resetByPeer reports whether a request failed because the connection
// was reset before any answer: ECONNRESET, or EOF when writing the
// request consumed the reset and the read that followed found the
// connection closed. Requests that may meet a closing keep-alive
// connection (GETs) are resent by Go's client, and POSTs go out on
// fresh connections (faultClient), so neither shows up here.
func resetByPeer(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF)
}

// kernelMigratesConnections reports whether Linux hands a closing
// SO_REUSEPORT listener's queued connections to another listener of the
// port instead of resetting them (net.ipv4.tcp_migrate_req, Linux 5.14).
func kernelMigratesConnections() bool {
	b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_migrate_req")
	return err == nil && strings.TrimSpace(string(b)) == "1"
}

// faultDBName returns the database name of a PostgreSQL URL.
func faultDBName(t *testing.T, dbURL string) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimPrefix(u.Path, "/")
}

// reloadEnv is the gateway's environment with TOKEN_LIFETIME set: what
// `caddy adapt` and `caddy reload` need to read the Caddyfile as the
// gateway did.
func reloadEnv(g *Gateway, lifetime time.Duration) []string {
	env := slices.DeleteFunc(slices.Clone(g.env), func(kv string) bool { return strings.HasPrefix(kv, "TOKEN_LIFETIME=") })
	return append(env, "TOKEN_LIFETIME="+lifetime.String())
}

// runCaddyCommand runs the binary with env and returns its standard output.
func runCaddyCommand(t *testing.T, env []string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, caddyBin, args...)
	cmd.Dir = workDir
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("caddy %s: %v\n%s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return stdout.Bytes()
}

// reloadCLI reloads g with `caddy reload` and another token lifetime.
func reloadCLI(t *testing.T, g *Gateway, lifetime time.Duration) {
	t.Helper()
	runCaddyCommand(t, reloadEnv(g, lifetime), "reload", "--config", g.Opts.Caddyfile, "--adapter", "caddyfile", "--address", g.AdminAddr)
}

// reloadJSON reloads g through POST /load with the Caddyfile adapted and
// the accounts app's token lifetime and database URL replaced.
func reloadJSON(t *testing.T, g *Gateway, lifetime time.Duration, dbURL string) {
	t.Helper()
	raw := runCaddyCommand(t, reloadEnv(g, lifetime), "adapt", "--config", g.Opts.Caddyfile, "--adapter", "caddyfile")
	var cfg map[string]any
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatalf("caddy adapt: %v\n%s", err, raw)
	}
	apps, _ := cfg["apps"].(map[string]any)
	acc, _ := apps["accounts"].(map[string]any)
	if acc == nil {
		t.Fatalf("no accounts app in the adapted config: %s", raw)
	}
	acc["database_url"] = dbURL
	acc["token_lifetime"] = lifetime.String()
	body, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, "http://"+g.AdminAddr+"/load", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := faultAdminHTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if b, _ := io.ReadAll(res.Body); res.StatusCode != http.StatusOK {
		t.Fatalf("POST /load: %d %s", res.StatusCode, b)
	}
}

// faultAdminHTTP speaks to the gateways' admin endpoints. It keeps its
// connections: the goroutine counts poll often, and a new connection
// each time would leave hundreds of ports in TIME_WAIT, which other
// gateways of the run may then fail to listen on.
var faultAdminHTTP = &http.Client{Timeout: time.Minute, Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 2}}

// goroutineTally is a count of the gateway's goroutines.
type goroutineTally struct {
	// Total counts them all; Conns those serving a client's connection
	// or holding the proxy's connection to the document service, whose
	// number follows the clients and the proxy's idle pool.
	Total, Conns int
	// Listeners run accounts.(*Service).Run: one per live accounts app.
	// Pools run a pgx pool's health check: one per open pool.
	Listeners, Pools int
}

// Others counts the goroutines that are not Conns.
func (n goroutineTally) Others() int { return n.Total - n.Conns }

func (n goroutineTally) String() string {
	return fmt.Sprintf("%d (%d on connections, %d others; %d listeners, %d pools)", n.Total, n.Conns, n.Others(), n.Listeners, n.Pools)
}

// countGoroutines counts the gateway's goroutines from the admin API's
// goroutine profile.
func countGoroutines(t *testing.T, g *Gateway) goroutineTally {
	t.Helper()
	res, err := faultAdminHTTP.Get("http://" + g.AdminAddr + "/debug/pprof/goroutine?debug=2")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("goroutine profile: %d %v", res.StatusCode, err)
	}
	var n goroutineTally
	for _, stack := range strings.Split(string(b), "\n\n") {
		if !strings.HasPrefix(strings.TrimSpace(stack), "goroutine ") {
			continue
		}
		n.Total++
		switch {
		case strings.Contains(stack, "net/http.(*persistConn)."), strings.Contains(stack, "net/http.(*conn).serve("):
			n.Conns++
		case strings.Contains(stack, "accounts.(*Service).Run("):
			n.Listeners++
		case strings.Contains(stack, "pgxpool.(*Pool).backgroundHealthCheck("):
			n.Pools++
		}
	}
	return n
}

// settledGoroutineTally returns countGoroutines once it has not changed for
// a quarter of a second.
func settledGoroutineTally(t *testing.T, g *Gateway) goroutineTally {
	t.Helper()
	var last goroutineTally
	same := 0
	eventually(t, 10*time.Second, func() string {
		n := countGoroutines(t, g)
		if n == last {
			same++
		} else {
			last, same = n, 0
		}
		if same < 10 {
			return fmt.Sprintf("the goroutine count still moves (%v)", n)
		}
		return ""
	})
	return last
}

// gatewayConns counts the server sessions on database db other than
// conn's: "total", "listen" (the change listener, whose last query is
// LISTEN), "stale" (application_name fault-reload-*: pools of replaced
// configs), and by application_name ("app:NAME").
func gatewayConns(t *testing.T, conn *pgx.Conn, db string) map[string]int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	rows, err := conn.Query(ctx, `SELECT application_name, query LIKE 'LISTEN %' FROM pg_stat_activity
		WHERE datname = $1 AND pid <> pg_backend_pid() AND backend_type = 'client backend'`, db)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{"total": 0, "listen": 0, "stale": 0}
	for rows.Next() {
		var app string
		var listen bool
		if err := rows.Scan(&app, &listen); err != nil {
			t.Fatal(err)
		}
		out["total"]++
		out["app:"+app]++
		if listen {
			out["listen"]++
		}
		if strings.HasPrefix(app, "fault-reload-") {
			out["stale"]++
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// ---------------------------------------------------------------------
// (c) A slow or unreachable document service

// slowRequests are requests sent at once (sendConcurrently): their
// answers, how long each took, and how many were answered so far.
type slowRequests struct {
	wg       sync.WaitGroup
	answered atomic.Int32
	resps    []*Response
	errs     []error
	took     []time.Duration
}

// sendConcurrently sends a request for each path at once, each from a
// client of its own: a POST with a body for paths containing "upload",
// else a GET.
func sendConcurrently(g *Gateway, token string, paths []string) *slowRequests {
	s := &slowRequests{resps: make([]*Response, len(paths)), errs: make([]error, len(paths)), took: make([]time.Duration, len(paths))}
	for i, path := range paths {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			fc := newFaultClient(g.URL)
			defer fc.close()
			method, contentType, body := http.MethodGet, "", ""
			if strings.Contains(path, "upload") {
				method, contentType, body = http.MethodPost, "application/pdf", strings.Repeat("%PDF-1.7 ", 10000)
			}
			start := time.Now()
			s.resps[i], s.errs[i] = fc.do(method, path, token, contentType, body)
			s.took[i] = time.Since(start)
			s.answered.Add(1)
		}()
	}
	return s
}

// expectGatewayServes checks, while requests to the document service
// hang, that the gateway's own routes answer: health, the current user
// and a login; and that they did so before any of the hanging requests
// was answered, so they were not held up behind them. It returns how
// long they took.
func expectGatewayServes(t *testing.T, c *Client, token string, pending *slowRequests) time.Duration {
	t.Helper()
	start := time.Now()
	r := c.Get("/api/health", "")
	expectStatus(t, r, http.StatusOK)
	if got := canonicalJSON(t, r.Body); got != `{"status":"ok"}` {
		t.Errorf("health body %s", r.Body)
	}
	expectStatus(t, c.Get("/api/users/me", token), http.StatusOK)
	expectStatus(t, c.PostForm("/api/auth/login", url.Values{"username": {"nobody." + uniqueEmail(t)}, "password": {"Wrong!pw1"}}), http.StatusUnauthorized)
	took := time.Since(start)
	if n := pending.answered.Load(); n != 0 {
		t.Errorf("%d of the hanging requests were answered before the gateway's own routes were: those were held up (or the machine is very slow)", n)
	}
	return took
}

// TestFaultDocumentServiceSlow: a document service that takes longer than
// DOC_SERVICE_TIMEOUT to send its response headers gets 504 in the API's
// JSON shape, after that timeout and not later, for GETs and streamed
// uploads alike; meanwhile the gateway's own routes answer at once.
// (TestDocumentsServiceDown covers a single slow request and a closed
// port.)
func TestFaultDocumentServiceSlow(t *testing.T) {
	t.Parallel()
	const timeout = 2 * time.Second
	g := startGateway(t, GatewayOptions{Env: map[string]string{"DOC_SERVICE_TIMEOUT": timeout.String()}})
	c := g.Client(t)
	u, _, token := c.NewUser()
	expectStatus(t, c.Get("/api/documents/fast", token), http.StatusOK)

	// The stub would answer after 20 s.
	var paths []string
	for i := range 6 {
		paths = append(paths, fmt.Sprintf("/api/documents/slow?ms=20000&n=%d", i))
	}
	paths = append(paths, "/api/documents/upload/slow?ms=20000", "/api/documents/categories/x/slow?ms=20000")
	pending := sendConcurrently(g, token, paths)
	eventually(t, 5*time.Second, func() string {
		if n := len(g.Doc.Where(func(r StubRequest) bool {
			return strings.HasSuffix(r.Path, "/slow") && slices.Contains(r.Header.Values("X-User-Id"), u.ID)
		})); n != len(paths) {
			return fmt.Sprintf("the service has %d of the %d slow requests", n, len(paths))
		}
		return ""
	})
	served := expectGatewayServes(t, c, token, pending)
	expectStatus(t, c.Get("/api/documents/fast-meanwhile", token), http.StatusOK)
	pending.wg.Wait()

	var slowest time.Duration
	for i, path := range paths {
		if pending.errs[i] != nil {
			t.Errorf("%s: %v", path, pending.errs[i])
			continue
		}
		expectDetail(t, pending.resps[i], http.StatusGatewayTimeout, "Gateway Timeout")
		if pending.resps[i].Header.Get("X-Stub") != "" {
			t.Errorf("%s: the 504 carries the service's headers", path)
		}
		// After the timeout, and long before the service would answer.
		if took := pending.took[i]; took < timeout || took > timeout+3*time.Second {
			t.Errorf("%s: 504 after %v, want just after %v", path, took, timeout)
		}
		slowest = max(slowest, pending.took[i])
	}
	t.Logf("%d slow requests: 504 after at most %v (timeout %v); health, me and login took %v meanwhile",
		len(paths), slowest.Round(time.Millisecond), timeout, served.Round(time.Millisecond))
	expectNoPanic(t, g)
}

// blackholeAddr returns the address of a TCP port on 127.0.0.1 that takes
// no connection: its accept queue is full and never drained, so the
// kernel drops further SYNs and a connect hangs until it times out, as
// with a host that is down.
func blackholeAddr(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
	// Fill the accept queue until a connect times out.
	for i := 0; ; i++ {
		conn, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				return addr
			}
			t.Fatalf("filling the accept queue of %s: %v", addr, err)
		}
		t.Cleanup(func() { conn.Close() })
		if i == 16 {
			t.Skipf("cannot make a port that drops connections here (%d connections accepted by the kernel)", i+1)
		}
	}
}

// TestFaultDocumentServiceUnreachable: a document service whose host
// does not answer (connects hang) gets 502 in the API's JSON shape after
// DOC_SERVICE_DIAL_TIMEOUT, not after the response timeout; meanwhile
// the gateway's own routes answer at once.
func TestFaultDocumentServiceUnreachable(t *testing.T) {
	t.Parallel()
	const dialTimeout = 2 * time.Second
	g := startGateway(t, GatewayOptions{DocService: blackholeAddr(t), Env: map[string]string{
		"DOC_SERVICE_DIAL_TIMEOUT": dialTimeout.String(),
		"DOC_SERVICE_TIMEOUT":      "60s",
	}})
	c := g.Client(t)
	_, _, token := c.NewUser()

	paths := []string{"/api/documents", "/api/documents/x?a=1", "/api/documents/categories/y", "/api/documents/upload"}
	pending := sendConcurrently(g, token, paths)
	served := expectGatewayServes(t, c, token, pending)
	pending.wg.Wait()
	var slowest time.Duration
	for i, path := range paths {
		if pending.errs[i] != nil {
			t.Errorf("%s: %v", path, pending.errs[i])
			continue
		}
		expectDetail(t, pending.resps[i], http.StatusBadGateway, "Bad Gateway")
		if took := pending.took[i]; took < dialTimeout || took > dialTimeout+3*time.Second {
			t.Errorf("%s: 502 after %v, want just after %v", path, took, dialTimeout)
		}
		slowest = max(slowest, pending.took[i])
	}
	t.Logf("%d requests to a host that does not answer: 502 after at most %v (dial timeout %v); health, me and login took %v meanwhile",
		len(paths), slowest.Round(time.Millisecond), dialTimeout, served.Round(time.Millisecond))
	expectNoPanic(t, g)
}
