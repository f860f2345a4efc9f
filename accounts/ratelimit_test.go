package accounts

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// testClientIPHeader is a test-only header: withTestClientIP makes its
// value the request's client IP, as Caddy's trusted_proxies handling
// would. The API itself never reads such a header.
const testClientIPHeader = "X-Test-Client-Ip"

// withTestClientIP serves h with the client IP taken from the test header.
func withTestClientIP(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ip := r.Header.Get(testClientIPHeader); ip != "" {
			r = r.WithContext(WithClientIP(r.Context(), ip))
		}
		h.ServeHTTP(w, r)
	})
}

// serveWithTestIP serves svc's API on loopback, client IPs from the test
// header.
func serveWithTestIP(t testing.TB, svc *Service) *httptest.Server {
	srv := httptest.NewServer(withTestClientIP(svc.Handler()))
	t.Cleanup(srv.Close)
	return srv
}

// newLimitEnv is a testEnv with the given limits whose requests may
// claim a client IP (doFrom).
func newLimitEnv(t testing.TB, rl RateLimitConfig) *testEnv {
	e := newTestEnv(t, func(c *Config) { c.RateLimit = rl })
	e.srv = serveWithTestIP(t, e.svc)
	return e
}

// doFrom sends a request to e's server as client ip. body is nil,
// url.Values (a form) or a value sent as JSON.
func (e *testEnv) doFrom(ip, method, path string, body any) *response {
	e.t.Helper()
	return doVia(e.t, e.srv, ip, method, path, body)
}

func doVia(t testing.TB, srv *httptest.Server, ip, method, path string, body any) *response {
	t.Helper()
	// A request that waits for a password hash it should never have
	// needed fails the test instead of hanging it.
	client := *srv.Client()
	client.Timeout = 10 * time.Second
	return send(t, &client, srv.URL, method, path, body, testClientIPHeader, ip)
}

// loginFrom tries a login as client ip.
func (e *testEnv) loginFrom(ip, email, password string) *response {
	e.t.Helper()
	return e.doFrom(ip, "POST", "/api/auth/login", formOf("username", email, "password", password))
}

const (
	failOpenMsg = "rate limit check failed; letting the request through"
	ipDetail    = `"Too many requests"`
	lockDetail  = `"Too many failed login attempts, try again later"`
)

// noFailOpen fails the test if a limiter query failed: the limiter
// would then have let everything through, silently.
func noFailOpen(t testing.TB, logs *observer.ObservedLogs) {
	t.Helper()
	for _, l := range logs.FilterMessage(failOpenMsg).All() {
		t.Errorf("limiter failed open: %v", l.ContextMap())
	}
}

// want429 checks a 429 with the given detail and Retry-After.
func want429(t testing.TB, what string, r *response, detail string, retryAfter int) {
	t.Helper()
	if r.Status != http.StatusTooManyRequests || r.Detail(t) != detail {
		t.Fatalf("%s: %d %s, want 429 %s", what, r.Status, r.Body, detail)
	}
	if got := r.Header.Get("Retry-After"); got != strconv.Itoa(retryAfter) {
		t.Fatalf("%s: Retry-After %q, want %d", what, got, retryAfter)
	}
	if r.Header.Get("Content-Type") != "application/json" || r.Header.Get("WWW-Authenticate") != "" {
		t.Fatalf("%s: headers %v", what, r.Header)
	}
}

// TestRateLimitPerClientIP: N requests per window to /api/auth/* per
// client address, register and login together; then 429 with
// Retry-After, other addresses unaffected, and the window resets.
func TestRateLimitPerClientIP(t *testing.T) {
	t.Parallel()
	e := newLimitEnv(t, RateLimitConfig{IPRequests: 5, IPWindow: time.Second, LoginFailures: -1})
	const a, b = "203.0.113.7", "198.51.100.20"
	missing := formOf("username", "x@example.com") // 422 at once: no hashing
	statuses := []int{
		e.doFrom(a, "POST", "/api/auth/register", map[string]any{"email": "ip@example.com", "password": "Secret!pw1"}).Status,
		e.loginFrom(a, "ip@example.com", "Secret!pw1").Status,
		e.doFrom(a, "POST", "/api/auth/login", missing).Status,
		e.doFrom(a, "POST", "/api/auth/login", missing).Status,
		e.doFrom(a, "POST", "/api/auth/register", map[string]any{}).Status,
	}
	if want := []int{201, 200, 422, 422, 422}; !equalInts(statuses, want) {
		t.Fatalf("first five requests: %v, want %v", statuses, want)
	}
	want429(t, "sixth request (login)", e.loginFrom(a, "ip@example.com", "Secret!pw1"), ipDetail, 1)
	want429(t, "seventh request (register)", e.doFrom(a, "POST", "/api/auth/register", map[string]any{"email": "ip2@example.com", "password": "Secret!pw1"}), ipDetail, 1)

	if r := e.loginFrom(b, "ip@example.com", "Secret!pw1"); r.Status != 200 {
		t.Fatalf("another address: %d %s", r.Status, r.Body)
	}
	// Not limited: the JWKS and everything outside /api/auth/.
	if r := e.doFrom(a, "GET", "/api/auth/jwks.json", nil); r.Status != 200 {
		t.Fatalf("JWKS from a limited address: %d %s", r.Status, r.Body)
	}
	if r := e.doFrom(a, "GET", "/api/health", nil); r.Status != 200 {
		t.Fatalf("health from a limited address: %d %s", r.Status, r.Body)
	}

	time.Sleep(time.Second) // Retry-After
	if r := e.loginFrom(a, "ip@example.com", "Secret!pw1"); r.Status != 200 {
		t.Fatalf("after the window: %d %s", r.Status, r.Body)
	}
	noFailOpen(t, e.logs)
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestRateLimitRetryAfterCountsDown: Retry-After is what is left of the
// window, in whole seconds rounded up.
func TestRateLimitRetryAfterCountsDown(t *testing.T) {
	e := newLimitEnv(t, RateLimitConfig{IPRequests: 1, IPWindow: time.Minute, LoginFailures: -1})
	missing := formOf("username", "x@example.com")
	if r := e.doFrom("192.0.2.1", "POST", "/api/auth/login", missing); r.Status != 422 {
		t.Fatalf("first: %d", r.Status)
	}
	want429(t, "second", e.doFrom("192.0.2.1", "POST", "/api/auth/login", missing), ipDetail, 60)
	e.exec("UPDATE rate_limits SET window_start = window_start - interval '45.5 seconds'")
	want429(t, "later", e.doFrom("192.0.2.1", "POST", "/api/auth/login", missing), ipDetail, 15)
	e.exec("UPDATE rate_limits SET window_start = window_start - interval '15 seconds'")
	if r := e.doFrom("192.0.2.1", "POST", "/api/auth/login", missing); r.Status != 422 {
		t.Fatalf("after the window: %d %s", r.Status, r.Body)
	}
	noFailOpen(t, e.logs)
}

func TestIPKey(t *testing.T) {
	for _, c := range []struct{ a, b string }{
		{"2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:9"}, // one /64
		{"::ffff:10.1.2.3", "10.1.2.3"},
		{"fe80::1%eth0", "fe80::2"},
	} {
		if ipKey(c.a) != ipKey(c.b) {
			t.Errorf("ipKey(%s) = %s, ipKey(%s) = %s, want the same", c.a, ipKey(c.a), c.b, ipKey(c.b))
		}
	}
	for _, c := range []struct{ a, b string }{
		{"2001:db8:1:2::1", "2001:db8:1:3::1"},
		{"10.1.2.3", "10.1.2.4"},
	} {
		if ipKey(c.a) == ipKey(c.b) {
			t.Errorf("ipKey(%s) = ipKey(%s) = %s, want different", c.a, c.b, ipKey(c.a))
		}
	}
	if got := ipKey("10.1.2.3"); got != "ip:10.1.2.3" {
		t.Errorf("ipKey(10.1.2.3) = %s", got)
	}
	if got := ipKey("2001:db8:1:2::1"); got != "ip:2001:db8:1:2::/64" {
		t.Errorf("ipKey(2001:db8:1:2::1) = %s", got)
	}
	if got := ipKey(strings.Repeat("x", 1000)); len(got) > 70 {
		t.Errorf("ipKey of a long non-address is %d bytes", len(got))
	}
	if loginKey(" Ada@Example.COM ") != loginKey("ada@example.com") || loginKey("ada@example.com") == loginKey("bob@example.com") {
		t.Error("loginKey does not normalise emails")
	}
	if k := loginKey(strings.Repeat("a", 1<<20)); len(k) != len("login:")+64 {
		t.Errorf("loginKey of a long name is %d bytes", len(k))
	}
}

// lockConfig: 3 failures per minute, locks of 10s doubling up to 40s, no
// per-address limit.
var lockConfig = RateLimitConfig{IPRequests: -1, LoginFailures: 3, LoginWindow: time.Minute, Lockout: 10 * time.Second, LockoutMax: 40 * time.Second}

// TestLoginLock: after N failures an account name is locked, right
// password or not, and the answer for an unknown email is the same;
// while locked no password is hashed.
func TestLoginLock(t *testing.T) {
	e := newLimitEnv(t, lockConfig)
	e.register("lock@example.com", "Secret!pw1")

	// Failures count per name however it is written.
	for i, name := range []string{"lock@example.com", " LOCK@example.com", "Lock@Example.com "} {
		if r := e.loginFrom("10.0.0."+strconv.Itoa(i), name, "Wrong!pw1"); r.Status != 401 {
			t.Fatalf("failure %d: %d %s", i+1, r.Status, r.Body)
		}
	}
	known := e.loginFrom("10.0.1.1", "lock@example.com", "Secret!pw1")
	want429(t, "right password while locked", known, lockDetail, 10)

	for i := 0; i < 3; i++ {
		if r := e.loginFrom("10.0.2.1", "ghost@example.com", "Wrong!pw1"); r.Status != 401 {
			t.Fatalf("unknown email, failure %d: %d %s", i+1, r.Status, r.Body)
		}
	}
	unknown := e.loginFrom("10.0.2.1", "ghost@example.com", "Wrong!pw1")
	want429(t, "unknown email while locked", unknown, lockDetail, 10)
	if !bytes.Equal(known.Body, unknown.Body) {
		t.Fatalf("bodies differ: %s / %s", known.Body, unknown.Body)
	}
	known.Header.Del("Date")
	unknown.Header.Del("Date")
	if kh, uh := headerText(known.Header), headerText(unknown.Header); kh != uh {
		t.Fatalf("headers differ:\n%s\n%s", kh, uh)
	}

	// While locked, nothing is hashed: with every hashing slot taken, the
	// refusal still comes at once.
	for i := 0; i < cap(e.svc.hasher.slots); i++ {
		e.svc.hasher.slots <- struct{}{}
	}
	want429(t, "locked, hasher busy", e.loginFrom("10.0.1.2", "lock@example.com", "Secret!pw1"), lockDetail, 10)
	want429(t, "unknown, hasher busy", e.loginFrom("10.0.1.2", "ghost@example.com", "Secret!pw1"), lockDetail, 10)
	for i := 0; i < cap(e.svc.hasher.slots); i++ {
		<-e.svc.hasher.slots
	}

	// One login.locked audit event per lock, never a password.
	var locked []auditRow
	for _, a := range e.auditRows() {
		if a.event == EventLoginLocked {
			locked = append(locked, a)
		}
	}
	if len(locked) != 2 || !strings.Contains(locked[0].details, `"email": "lock@example.com"`) ||
		!strings.Contains(locked[1].details, `"email": "ghost@example.com"`) || locked[0].ip != "10.0.1.1" {
		t.Fatalf("login.locked events: %+v", locked)
	}
	for _, a := range locked {
		if strings.Contains(a.details, "pw1") {
			t.Fatalf("a password in the audit log: %s", a.details)
		}
	}
	noFailOpen(t, e.logs)
}

func headerText(h http.Header) string {
	var b strings.Builder
	_ = h.Write(&b)
	return b.String()
}

// expireLocks ends every running lock now, as if its time had passed.
func (e *testEnv) expireLocks() {
	e.t.Helper()
	e.exec("UPDATE rate_limits SET locked_until = now() - interval '1 millisecond' WHERE locked_until > now()")
}

// lockOut fails logins on email until it is locked, and returns the
// Retry-After of the first refusal.
func (e *testEnv) lockOut(email string) string {
	e.t.Helper()
	for i := 0; i < lockConfig.LoginFailures; i++ {
		if r := e.loginFrom("10.1.0.1", email, "Wrong!pw1"); r.Status != 401 {
			e.t.Fatalf("failure %d: %d %s", i+1, r.Status, r.Body)
		}
	}
	r := e.loginFrom("10.1.0.1", email, "Wrong!pw1")
	if r.Status != 429 {
		e.t.Fatalf("after %d failures: %d %s", lockConfig.LoginFailures, r.Status, r.Body)
	}
	return r.Header.Get("Retry-After")
}

// TestLoginLockGrows: each lock within a day lasts twice the one before,
// up to the cap; locks end by themselves; a day without locks, or a
// successful login, starts over from the first duration.
func TestLoginLockGrows(t *testing.T) {
	e := newLimitEnv(t, lockConfig)
	e.register("grow@example.com", "Secret!pw1")
	var got []string
	for i := 0; i < 5; i++ {
		got = append(got, e.lockOut("grow@example.com"))
		e.expireLocks()
	}
	if want := "10 20 40 40 40"; strings.Join(got, " ") != want {
		t.Fatalf("lock durations %v, want %s", got, want)
	}

	// A day after the last lock, locks are short again.
	e.exec("UPDATE rate_limits SET locked_until = locked_until - interval '1 day', window_start = window_start - interval '1 day'")
	if got := e.lockOut("grow@example.com"); got != "10" {
		t.Fatalf("lock a day later: %s s, want 10", got)
	}
	e.expireLocks()
	if got := e.lockOut("grow@example.com"); got != "20" {
		t.Fatalf("second lock of the day: %s s, want 20", got)
	}
	e.expireLocks()

	// A successful login forgets the locks too.
	if r := e.loginFrom("10.1.0.1", "grow@example.com", "Secret!pw1"); r.Status != 200 {
		t.Fatalf("login after the lock: %d %s", r.Status, r.Body)
	}
	if got := e.lockOut("grow@example.com"); got != "10" {
		t.Fatalf("lock after a successful login: %s s, want 10", got)
	}
	noFailOpen(t, e.logs)
}

// TestLoginLockExpires waits a real lock out.
func TestLoginLockExpires(t *testing.T) {
	t.Parallel()
	e := newLimitEnv(t, RateLimitConfig{IPRequests: -1, LoginFailures: 2, LoginWindow: time.Minute, Lockout: time.Second})
	e.register("wait@example.com", "Secret!pw1")
	for i := 0; i < 2; i++ {
		e.loginFrom("10.2.0.1", "wait@example.com", "Wrong!pw1")
	}
	r := e.loginFrom("10.2.0.1", "wait@example.com", "Secret!pw1")
	want429(t, "locked", r, lockDetail, 1)
	time.Sleep(time.Second)
	if r := e.loginFrom("10.2.0.1", "wait@example.com", "Secret!pw1"); r.Status != 200 {
		t.Fatalf("after the lock: %d %s", r.Status, r.Body)
	}
	noFailOpen(t, e.logs)
}

// TestLoginSuccessResetsFailures: failures before a successful login do
// not count towards a lock.
func TestLoginSuccessResetsFailures(t *testing.T) {
	e := newLimitEnv(t, lockConfig)
	e.register("reset@example.com", "Secret!pw1")
	seq := []struct {
		password string
		status   int
	}{
		{"Wrong!pw1", 401}, {"Wrong!pw1", 401}, {"Secret!pw1", 200},
		{"Wrong!pw1", 401}, {"Wrong!pw1", 401}, {"Wrong!pw1", 401},
		{"Secret!pw1", 429},
	}
	for i, s := range seq {
		if r := e.loginFrom("10.3.0.1", "reset@example.com", s.password); r.Status != s.status {
			t.Fatalf("attempt %d: %d %s, want %d", i+1, r.Status, r.Body, s.status)
		}
	}
	// An inactive account's right password also resets (it is no guess),
	// but still gets 403.
	e.expireLocks()
	e.exec("UPDATE users SET is_active = false WHERE lower(email) = 'reset@example.com'")
	for i, want := range []int{401, 401, 403, 401, 401, 401, 429} {
		pw := "Wrong!pw1"
		if want == 403 {
			pw = "Secret!pw1"
		}
		if r := e.loginFrom("10.3.0.1", "reset@example.com", pw); r.Status != want {
			t.Fatalf("inactive, attempt %d: %d %s, want %d", i+1, r.Status, r.Body, want)
		}
	}
	noFailOpen(t, e.logs)
}

// TestLoginLockConcurrentAttempts: attempts racing on one name cannot get
// past the limit together (they are counted when they start).
func TestLoginLockConcurrentAttempts(t *testing.T) {
	e := newLimitEnv(t, lockConfig)
	e.register("race@example.com", "Secret!pw1")
	const n = 20
	statuses := make(chan int, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses <- e.loginFrom("10.4.0.1", "race@example.com", "Wrong!pw1").Status
		}()
	}
	wg.Wait()
	close(statuses)
	count := map[int]int{}
	for s := range statuses {
		count[s]++
	}
	if count[401] != lockConfig.LoginFailures || count[429] != n-lockConfig.LoginFailures {
		t.Fatalf("statuses %v, want %d × 401 and the rest 429", count, lockConfig.LoginFailures)
	}
	noFailOpen(t, e.logs)
}

// TestRateLimitsSharedBetweenInstances: two services on one database
// count together, for addresses and account names alike.
func TestRateLimitsSharedBetweenInstances(t *testing.T) {
	rl := RateLimitConfig{IPRequests: 4, IPWindow: time.Minute, LoginFailures: 3, LoginWindow: time.Minute, Lockout: 10 * time.Second}
	e := newLimitEnv(t, rl)
	pool2, err := NewPool(context.Background(), e.db.Config().ConnString(), 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool2.Close)
	keys, err := NewKeySet(testKey(t, 0))
	if err != nil {
		t.Fatal(err)
	}
	core, logs2 := observer.New(zap.DebugLevel)
	svc2, err := New(pool2, keys, Config{Argon2: fastArgon2, RateLimit: rl}, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	srvs := []*httptest.Server{e.srv, serveWithTestIP(t, svc2)}

	missing := formOf("username", "x@example.com")
	for i := 0; i < 4; i++ {
		if r := doVia(t, srvs[i%2], "10.5.0.1", "POST", "/api/auth/login", missing); r.Status != 422 {
			t.Fatalf("request %d: %d %s", i+1, r.Status, r.Body)
		}
	}
	for i, srv := range srvs {
		want429(t, "instance "+strconv.Itoa(i+1), doVia(t, srv, "10.5.0.1", "POST", "/api/auth/login", missing), ipDetail, 60)
	}

	e.register("shared@example.com", "Secret!pw1")
	login := func(i int, password string) *response {
		return doVia(t, srvs[i%2], "10.5.1."+strconv.Itoa(i), "POST", "/api/auth/login",
			formOf("username", "shared@example.com", "password", password))
	}
	for i := 0; i < 3; i++ {
		if r := login(i, "Wrong!pw1"); r.Status != 401 {
			t.Fatalf("failure %d: %d %s", i+1, r.Status, r.Body)
		}
	}
	want429(t, "locked on the other instance", login(3, "Secret!pw1"), lockDetail, 10)
	want429(t, "locked on the first instance", login(4, "Secret!pw1"), lockDetail, 10)
	e.expireLocks()
	if r := login(5, "Secret!pw1"); r.Status != 200 {
		t.Fatalf("after the lock: %d %s", r.Status, r.Body)
	}
	// The success on instance 2 reset the count for instance 1 as well.
	for i := 6; i < 9; i++ {
		if r := login(i, "Wrong!pw1"); r.Status != 401 {
			t.Fatalf("failure after the reset: %d %s", r.Status, r.Body)
		}
	}
	noFailOpen(t, e.logs)
	noFailOpen(t, logs2)
}

// TestRateLimitFailsOpen: a limiter that cannot reach its table lets
// requests through with a log line; a database that is down gives the
// request's own 503, never a 500 or a 429.
func TestRateLimitFailsOpen(t *testing.T) {
	e := newLimitEnv(t, RateLimitConfig{IPRequests: 1, LoginFailures: 1})
	e.exec("DROP TABLE rate_limits")
	e.register("open@example.com", "Secret!pw1")
	for i := 0; i < 3; i++ {
		if r := e.loginFrom("10.6.0.1", "open@example.com", "Secret!pw1"); r.Status != 200 {
			t.Fatalf("login %d without the limiter's table: %d %s", i+1, r.Status, r.Body)
		}
	}
	limits := map[string]bool{}
	for _, l := range e.logs.FilterMessage(failOpenMsg).All() {
		limits[l.ContextMap()["limit"].(string)] = true
	}
	if !limits["ip"] || !limits["login"] {
		t.Fatalf("fail-open log lines for %v, want ip and login", limits)
	}

	e.db.Close()
	for _, r := range []*response{
		e.loginFrom("10.6.0.1", "open@example.com", "Secret!pw1"),
		e.loginFrom("10.6.0.1", "open@example.com", "Secret!pw1"),
		e.doFrom("10.6.0.1", "POST", "/api/auth/register", map[string]any{"email": "down@example.com", "password": "Secret!pw1"}),
	} {
		if r.Status != 503 || r.Detail(t) != `"Service temporarily unavailable"` {
			t.Fatalf("database down: %d %s, want 503", r.Status, r.Body)
		}
	}
}

func TestRateLimitConfig(t *testing.T) {
	got, err := RateLimitConfig{}.withDefaults()
	want := RateLimitConfig{IPRequests: 60, IPWindow: time.Minute, LoginFailures: 10, LoginWindow: 15 * time.Minute, Lockout: 5 * time.Minute, LockoutMax: time.Hour}
	if err != nil || got != want {
		t.Fatalf("defaults %+v, %v", got, err)
	}
	if got, _ := (RateLimitConfig{Lockout: 2 * time.Hour}).withDefaults(); got.LockoutMax != 2*time.Hour {
		t.Fatalf("lockout 2h gives lockout max %s", got.LockoutMax)
	}
	db := newTestEnv(t).db
	for _, bad := range []RateLimitConfig{
		{IPWindow: -time.Second}, {LoginWindow: -1}, {Lockout: -1}, {LockoutMax: -1},
		{Lockout: time.Hour, LockoutMax: time.Minute},
	} {
		if _, err := New(db, nil, Config{Argon2: fastArgon2, RateLimit: bad}, nil); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

// TestRateLimitsOff: negative counts turn the limits off.
func TestRateLimitsOff(t *testing.T) {
	e := newLimitEnv(t, RateLimitConfig{IPRequests: -1, LoginFailures: -1})
	e.register("off@example.com", "Secret!pw1")
	for i := 0; i < 15; i++ {
		if r := e.loginFrom("10.7.0.1", "off@example.com", "Wrong!pw1"); r.Status != 401 {
			t.Fatalf("attempt %d: %d %s", i+1, r.Status, r.Body)
		}
	}
	var n int
	if err := e.db.QueryRow(context.Background(), "SELECT count(*) FROM rate_limits").Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d rate_limits rows (%v), want none", n, err)
	}
}

// TestRateLimitCleanup: rows live as long as their window, and a locked
// name's row a day past its lock (to remember it); then they go.
func TestRateLimitCleanup(t *testing.T) {
	rl := lockConfig
	rl.IPRequests = 5
	e := newLimitEnv(t, rl)
	e.lockOut("clean@example.com")
	e.loginFrom("10.8.0.1", "other@example.com", "Wrong!pw1")

	ctx := context.Background()
	var ipLife, lockedLife, plainLife float64
	row := e.db.QueryRow(ctx, `SELECT
		(SELECT EXTRACT(EPOCH FROM expires_at - window_start)::float8 FROM rate_limits WHERE key = $1),
		(SELECT EXTRACT(EPOCH FROM expires_at - locked_until)::float8 FROM rate_limits WHERE key = $2),
		(SELECT EXTRACT(EPOCH FROM expires_at - window_start)::float8 FROM rate_limits WHERE key = $3)`,
		ipKey("10.8.0.1"), loginKey("clean@example.com"), loginKey("other@example.com"))
	if err := row.Scan(&ipLife, &lockedLife, &plainLife); err != nil {
		t.Fatal(err)
	}
	if ipLife != 60 || lockedLife != lockoutMemory.Seconds() || plainLife != 60 {
		t.Fatalf("row lifetimes: address %vs, locked name %vs after the lock, name %vs", ipLife, lockedLife, plainLife)
	}

	n, err := e.svc.limiter.deleteExpired(ctx)
	if err != nil || n != 0 {
		t.Fatalf("deleted %d live rows (%v)", n, err)
	}
	e.exec("UPDATE rate_limits SET expires_at = now() - interval '1 second' WHERE key <> $1", loginKey("clean@example.com"))
	n, err = e.svc.limiter.deleteExpired(ctx)
	if err != nil || n != 3 { // two addresses, one name
		t.Fatalf("deleted %d expired rows (%v), want 3", n, err)
	}
	var left string
	if err := e.db.QueryRow(ctx, "SELECT string_agg(key, ',') FROM rate_limits").Scan(&left); err != nil || left != loginKey("clean@example.com") {
		t.Fatalf("rows left: %q (%v)", left, err)
	}
}

// TestPasswordChangeCountsAsLoginFailures: wrong current passwords on
// POST /api/users/me/password use up the account's login failures, so a
// stolen session cannot guess the password without limit; the right one
// clears them like a successful login.
func TestPasswordChangeCountsAsLoginFailures(t *testing.T) {
	e := newLimitEnv(t, lockConfig)
	e.register("guess@example.com", "Secret!pw1")
	token := e.login("guess@example.com", "Secret!pw1")
	change := func(current string) *response {
		return e.do("POST", "/api/users/me/password", token, map[string]string{"current_password": current, "new_password": "Changed!pw2"})
	}

	// A right one resets the count: two failures, a success, then three more.
	for i := 0; i < lockConfig.LoginFailures-1; i++ {
		if r := change("Wrong!pw1"); r.Status != 400 || r.Detail(t) != `"Incorrect password"` {
			t.Fatalf("guess %d: %d %s", i+1, r.Status, r.Body)
		}
	}
	if r := change("Secret!pw1"); r.Status != http.StatusNoContent {
		t.Fatalf("right password: %d %s", r.Status, r.Body)
	}
	for i := 0; i < lockConfig.LoginFailures; i++ {
		if r := change("Wrong!pw1"); r.Status != 400 {
			t.Fatalf("guess %d after the reset: %d %s", i+1, r.Status, r.Body)
		}
	}
	want429(t, "password change while locked", change("Changed!pw2"), lockDetail, 10)
	// The lock is the account's: login is locked too.
	want429(t, "login while locked", e.loginFrom("10.3.0.1", "guess@example.com", "Changed!pw2"), lockDetail, 10)
	e.expireLocks()
	if r := e.loginFrom("10.3.0.1", "guess@example.com", "Changed!pw2"); r.Status != 200 {
		t.Fatalf("login after the lock: %d %s", r.Status, r.Body)
	}
}
