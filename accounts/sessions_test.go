package accounts

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
)

// secondInstance is another gateway instance on e's database, with the
// same key and cfg, listening for changes, served over HTTP.
func (e *testEnv) secondInstance(cfg ...func(*Config)) (*Service, *httptest.Server) {
	e.t.Helper()
	keys, err := NewKeySet(testKey(e.t, 0))
	if err != nil {
		e.t.Fatal(err)
	}
	c := Config{Argon2: fastArgon2}
	for _, f := range cfg {
		f(&c)
	}
	svc, err := New(e.db, keys, c, zap.NewNop())
	if err != nil {
		e.t.Fatal(err)
	}
	listen(e.t, svc)
	return svc, newServer(e.t, svc)
}

// listen runs svc's change listener until the test ends.
func listen(t testing.TB, svc *Service) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		svc.Run(ctx)
	}()
	t.Cleanup(func() { cancel(); <-done })
	deadline := time.Now().Add(10 * time.Second)
	for !svc.cache.listening.Load() {
		if time.Now().After(deadline) {
			t.Fatal("the listener did not start")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// get sends a request to another instance's server.
func get(t testing.TB, srv *httptest.Server, path, token string) *response {
	t.Helper()
	return send(t, srv.Client(), srv.URL, "GET", path, nil, "Authorization", "Bearer "+token)
}

// loginTokens logs in without browser headers and returns the body's
// access token and the refresh token of the Set-Cookie header.
func (e *testEnv) loginTokens(email, password string) (access, refresh string) {
	e.t.Helper()
	r := e.do("POST", "/api/auth/login", "", url.Values{"username": {email}, "password": {password}})
	if r.Status != http.StatusOK {
		e.t.Fatalf("login %s: %d %s", email, r.Status, r.Body)
	}
	c := setCookies(r)["refresh_token"]
	if c == nil {
		e.t.Fatalf("login %s set no refresh cookie", email)
	}
	return r.JSON(e.t).(map[string]any)["access_token"].(string), c.Value
}

// refreshBody refreshes with the token in a JSON body.
func (e *testEnv) refreshBody(token string) *response {
	e.t.Helper()
	return e.do("POST", "/api/auth/refresh", "", map[string]string{"refresh_token": token})
}

// sidOf returns the session id of an access token.
func (e *testEnv) sidOf(token string) string {
	e.t.Helper()
	c, err := e.svc.Tokens().Verify(token)
	if err != nil {
		e.t.Fatal(err)
	}
	return c.SessionID
}

// ageRetiredTokens moves the retirement of every retired token back by
// d: time passing, without waiting.
func (e *testEnv) ageRetiredTokens(d time.Duration) {
	e.t.Helper()
	e.exec("UPDATE refresh_tokens SET retired_at = retired_at - $1::float8 * interval '1 second' WHERE retired_at IS NOT NULL", d.Seconds())
}

// auditCount counts audit events of one kind about user id.
func (e *testEnv) auditCount(event, id string) int {
	e.t.Helper()
	var n int
	if err := e.db.QueryRow(context.Background(),
		"SELECT count(*) FROM audit_events WHERE event = $1 AND target_id = $2", event, id).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

// wantInvalidRefresh checks the refused-refresh answer.
func wantInvalidRefresh(t *testing.T, what string, r *response) {
	t.Helper()
	if r.Status != http.StatusUnauthorized || r.Detail(t) != `"Invalid refresh token"` || r.Header.Get("WWW-Authenticate") != "Bearer" {
		t.Fatalf("%s: %d %s %v, want 401 Invalid refresh token", what, r.Status, r.Body, r.Header)
	}
	assertCleared(t, what, r)
}

// wantRefused checks that an access token is refused.
func wantRefused(t *testing.T, what string, r *response) {
	t.Helper()
	if r.Status != http.StatusUnauthorized || r.Detail(t) != `"Could not validate credentials"` {
		t.Fatalf("%s: %d %s, want 401 Could not validate credentials", what, r.Status, r.Body)
	}
}

func TestRefreshRotatesAndDetectsReuse(t *testing.T) {
	e := newTestEnv(t, noRateLimit)
	e.startListening()
	u := e.register("rotate@example.com", "Secret!pw1")
	b := e.newBrowser("TestBrowser/1.0")
	loginBearer := b.login("rotate@example.com", "Secret!pw1")["access_token"].(string)
	sid := e.sidOf(loginBearer)
	r0, a0 := b.cookie("refresh_token", "/api/auth"), b.cookie("access_token", "/")

	r := b.do("POST", "/api/auth/refresh", nil)
	if r.Status != http.StatusOK {
		t.Fatalf("refresh: %d %s", r.Status, r.Body)
	}
	body := r.JSON(t).(map[string]any)
	r1, a1 := b.cookie("refresh_token", "/api/auth"), b.cookie("access_token", "/")
	if len(body) != 3 || body["token_type"] != "bearer" || body["expires_in"] != float64(900) || body["access_token"] != a1 {
		t.Fatalf("refresh body = %v (the refresh token stays out of it in the cookie flow)", body)
	}
	if r1 == r0 || r1 == "" || a1 == a0 {
		t.Fatal("the cookies were not replaced")
	}
	if c, _ := e.svc.Tokens().Verify(a1); c.SessionID != sid || c.ExpiresAt.Sub(c.IssuedAt.Time) != 15*time.Minute {
		t.Fatalf("refreshed token claims %+v", c)
	}
	if r := b.do("GET", "/api/users/me", nil); r.Status != http.StatusOK {
		t.Fatalf("me with the refreshed cookie: %d %s", r.Status, r.Body)
	}

	// Within the grace window, the token just retired still refreshes
	// (another tab raced this one); the session lives on.
	graced := e.refreshBody(r0)
	if graced.Status != http.StatusOK {
		t.Fatalf("replay within the grace window: %d %s", graced.Status, graced.Body)
	}
	gb := graced.JSON(t).(map[string]any)
	r2 := gb["refresh_token"].(string)
	if len(gb) != 4 || r2 == r1 || r2 == r0 || len(graced.Header.Values("Set-Cookie")) != 0 {
		t.Fatalf("grace refresh body %v, cookies %v", gb, graced.Header.Values("Set-Cookie"))
	}
	// Both racing tabs hold a working token; the next ordinary exchange
	// of either retires both.
	if r := b.do("POST", "/api/auth/refresh", nil); r.Status != http.StatusOK {
		t.Fatalf("refresh with the racing tab's token: %d %s", r.Status, r.Body)
	}
	r3 := b.cookie("refresh_token", "/api/auth")
	if r := b.do("GET", "/api/users/me", nil); r.Status != http.StatusOK {
		t.Fatalf("me: %d %s", r.Status, r.Body)
	}

	// After the grace window, a retired token is a stolen one: the whole
	// session ends, its newest tokens too.
	e.ageRetiredTokens(time.Minute)
	reuse := e.refreshBody(r0)
	wantInvalidRefresh(t, "replay after the grace window", reuse)
	wantInvalidRefresh(t, "the newest refresh token after a reuse", e.refreshBody(r3))
	wantInvalidRefresh(t, "the sibling after a reuse", e.refreshBody(r2))
	wantRefused(t, "the session's access cookie after a reuse", b.do("GET", "/api/users/me", nil))
	wantRefused(t, "the session's login token after a reuse", e.do("GET", "/api/users/me", loginBearer, nil))
	var reason string
	_ = e.db.QueryRow(context.Background(), "SELECT revoked_reason FROM sessions WHERE id = $1", sid).Scan(&reason)
	if reason != "reuse" {
		t.Fatalf("revoked_reason = %q", reason)
	}
	if n := e.auditCount(EventRefreshReuse, u.ID); n != 1 {
		t.Fatalf("%d refresh.reuse_detected events", n)
	}
	for _, line := range e.logs.All() {
		for _, f := range line.Context {
			for _, secret := range []string{r0, r1, r2, r3, a0, a1} {
				if strings.Contains(f.String, secret) {
					t.Fatalf("a token is in the log: %v", line)
				}
			}
		}
	}
}

func TestRefreshRefusals(t *testing.T) {
	e := newTestEnv(t, noRateLimit)
	u := e.register("refuse@example.com", "Secret!pw1")

	wantInvalidRefresh(t, "no token at all", e.do("POST", "/api/auth/refresh", "", nil))
	wantInvalidRefresh(t, "an unknown token", e.refreshBody("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"))
	wantInvalidRefresh(t, "an empty token", e.refreshBody(""))
	for _, c := range []struct {
		name   string
		body   any
		status int
		detail string
	}{
		{"empty object", map[string]any{}, 422, `[{"type":"missing","loc":["body","refresh_token"],"msg":"Field required"}]`},
		{"not a string", map[string]any{"refresh_token": 1}, 422, `[{"type":"string_type","loc":["body","refresh_token"],"msg":"Input should be a valid string"}]`},
		{"extra field", map[string]any{"refresh_token": "x", "user_id": "y"}, 422, `[{"type":"extra_forbidden","loc":["body","user_id"],"msg":"Extra inputs are not permitted"}]`},
		{"not JSON", `refresh_token=x`, 422, `[{"type":"json_invalid","loc":["body",0],"msg":"JSON decode error"}]`},
	} {
		r := e.do("POST", "/api/auth/refresh", "", c.body)
		if r.Status != c.status || r.Detail(t) != c.detail {
			t.Errorf("%s: %d %s, want %d %s", c.name, r.Status, r.Detail(t), c.status, c.detail)
		}
	}
	if r := e.do("GET", "/api/auth/refresh", "", nil); r.Status != 405 || r.Detail(t) != `"Method Not Allowed"` {
		t.Errorf("GET refresh: %d %s", r.Status, r.Body)
	}

	// An inactive user's token is refused but not burnt: it works again
	// once the account is reactivated.
	_, rt := e.loginTokens("refuse@example.com", "Secret!pw1")
	e.exec("UPDATE users SET is_active = false WHERE id = $1", u.ID)
	wantInvalidRefresh(t, "inactive user", e.refreshBody(rt))
	e.exec("UPDATE users SET is_active = true WHERE id = $1", u.ID)
	if r := e.refreshBody(rt); r.Status != 200 {
		t.Fatalf("reactivated user: %d %s", r.Status, r.Body)
	}

	// Idle and absolute expiry.
	_, idle := e.loginTokens("refuse@example.com", "Secret!pw1")
	e.exec("UPDATE sessions SET last_used_at = now() - interval '7 days 1 minute' WHERE id = (SELECT session_id FROM refresh_tokens WHERE token_hash = $1)", hashRefreshToken(idle))
	wantInvalidRefresh(t, "idle session", e.refreshBody(idle))
	_, old := e.loginTokens("refuse@example.com", "Secret!pw1")
	e.exec("UPDATE sessions SET created_at = now() - interval '30 days 1 minute' WHERE id = (SELECT session_id FROM refresh_tokens WHERE token_hash = $1)", hashRefreshToken(old))
	wantInvalidRefresh(t, "session past its max lifetime", e.refreshBody(old))
	_, fresh := e.loginTokens("refuse@example.com", "Secret!pw1")
	e.exec("UPDATE sessions SET created_at = now() - interval '29 days', last_used_at = now() - interval '6 days' WHERE id = (SELECT session_id FROM refresh_tokens WHERE token_hash = $1)", hashRefreshToken(fresh))
	if r := e.refreshBody(fresh); r.Status != 200 {
		t.Fatalf("session within both limits: %d %s", r.Status, r.Body)
	}
	// A refresh cookie lives as long as its session can: here one more
	// day, the rest of the max lifetime, not the 7 days of idle timeout.
	b := e.newBrowser("TestBrowser/1.0")
	b.login("refuse@example.com", "Secret!pw1")
	e.exec("UPDATE sessions SET created_at = now() - interval '29 days' WHERE id = (SELECT session_id FROM refresh_tokens WHERE token_hash = $1)",
		hashRefreshToken(b.cookie("refresh_token", "/api/auth")))
	r := b.do("POST", "/api/auth/refresh", nil)
	if c := setCookies(r)["refresh_token"]; r.Status != 200 || c == nil || c.MaxAge > 24*3600 || c.MaxAge < 24*3600-60 {
		t.Fatalf("refresh near the max lifetime: %d %v", r.Status, r.Header.Values("Set-Cookie"))
	}

	// A deleted user's token.
	_, gone := e.loginTokens("refuse@example.com", "Secret!pw1")
	e.exec("DELETE FROM users WHERE id = $1", u.ID)
	wantInvalidRefresh(t, "deleted user", e.refreshBody(gone))
}

// TestRefreshTokenInBody: non-browser clients get the refresh token in
// the login body when configured, and refresh with it in JSON.
func TestRefreshTokenInBody(t *testing.T) {
	e := newTestEnv(t, noRateLimit, func(c *Config) { c.Sessions.RefreshTokenInBody = true })
	e.register("body@example.com", "Secret!pw1")
	r := e.do("POST", "/api/auth/login", "", url.Values{"username": {"body@example.com"}, "password": {"Secret!pw1"}})
	body := r.JSON(t).(map[string]any)
	rt, _ := body["refresh_token"].(string)
	if r.Status != 200 || len(body) != 4 || len(rt) != 43 || body["expires_in"] != float64(28800) {
		t.Fatalf("login: %d %v", r.Status, body)
	}
	sid := e.sidOf(body["access_token"].(string))

	ref := e.refreshBody(rt)
	rb := ref.JSON(t).(map[string]any)
	if ref.Status != 200 || len(rb) != 4 || rb["token_type"] != "bearer" || rb["expires_in"] != float64(900) ||
		rb["refresh_token"] == rt || len(ref.Header.Values("Set-Cookie")) != 0 {
		t.Fatalf("refresh: %d %v %v", ref.Status, rb, ref.Header.Values("Set-Cookie"))
	}
	if e.sidOf(rb["access_token"].(string)) != sid {
		t.Fatal("the refreshed token is of another session")
	}
	if r := e.do("GET", "/api/users/me", rb["access_token"].(string), nil); r.Status != 200 {
		t.Fatalf("me: %d %s", r.Status, r.Body)
	}
	if r := e.refreshBody(rb["refresh_token"].(string)); r.Status != 200 {
		t.Fatalf("second refresh: %d %s", r.Status, r.Body)
	}
}

// TestConcurrentRefreshAcrossInstances races two gateway instances on one
// database, refreshing with the same token. With the grace window both
// get a working successor of the same session; without it the second
// exchange is a reuse and ends the session. Never two independent
// families.
func TestConcurrentRefreshAcrossInstances(t *testing.T) {
	for _, tc := range []struct {
		name  string
		grace time.Duration
	}{{"grace", 10 * time.Second}, {"no grace", -1}} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := []func(*Config){noRateLimit, func(c *Config) { c.Sessions.RefreshReuseGrace = tc.grace }}
			e := newTestEnv(t, cfg...)
			_, other := e.secondInstance(cfg...)
			e.register("race@example.com", "Secret!pw1")
			servers := []*httptest.Server{e.srv, other}
			for round := 0; round < 5; round++ {
				_, rt := e.loginTokens("race@example.com", "Secret!pw1")
				var sid string
				_ = e.db.QueryRow(context.Background(), "SELECT session_id::text FROM refresh_tokens WHERE token_hash = $1", hashRefreshToken(rt)).Scan(&sid)

				var wg sync.WaitGroup
				start := make(chan struct{})
				results := make([]*response, 2)
				for i, srv := range servers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						<-start
						results[i] = send(t, srv.Client(), srv.URL, "POST", "/api/auth/refresh", map[string]string{"refresh_token": rt})
					}()
				}
				close(start)
				wg.Wait()

				var won []string
				var lost int
				for _, r := range results {
					switch r.Status {
					case 200:
						won = append(won, r.JSON(t).(map[string]any)["refresh_token"].(string))
					case 401:
						lost++
					default:
						t.Fatalf("round %d: %d %s", round, r.Status, r.Body)
					}
				}
				var active, all int
				var revoked *string
				_ = e.db.QueryRow(context.Background(), `SELECT count(*) FILTER (WHERE retired_at IS NULL), count(*),
					(SELECT revoked_reason FROM sessions WHERE id = $1) FROM refresh_tokens WHERE session_id = $1`, sid).Scan(&active, &all, &revoked)
				var parents int
				_ = e.db.QueryRow(context.Background(), "SELECT count(*) FROM refresh_tokens WHERE session_id = $1 AND parent_hash = $2", sid, hashRefreshToken(rt)).Scan(&parents)
				if tc.grace > 0 {
					if len(won) != 2 || won[0] == won[1] || active != 2 || all != 3 || parents != 2 || revoked != nil {
						t.Fatalf("round %d: won %d, %d active of %d tokens, %d children, revoked %v; want both successors in the one session",
							round, len(won), active, all, parents, revoked)
					}
					// Either successor works, and its exchange retires the other.
					if r := e.refreshBody(won[round%2]); r.Status != 200 {
						t.Fatalf("round %d: successor refused: %d %s", round, r.Status, r.Body)
					}
				} else {
					if len(won) != 1 || lost != 1 || active != 0 || all != 2 || revoked == nil || *revoked != "reuse" {
						t.Fatalf("round %d: won %d, lost %d, %d active of %d, revoked %v; want one winner and the session revoked",
							round, len(won), lost, active, all, revoked)
					}
					wantInvalidRefresh(t, "the winner's token after the reuse", e.refreshBody(won[0]))
				}
			}
		})
	}
}

func TestLogout(t *testing.T) {
	e := newTestEnv(t, noRateLimit)
	e.startListening()
	u := e.register("logout@example.com", "Secret!pw1")

	// A browser, by its cookies.
	b := e.newBrowser("TestBrowser/1.0")
	bodyToken := b.login("logout@example.com", "Secret!pw1")["access_token"].(string)
	access, refresh := b.cookie("access_token", "/"), b.cookie("refresh_token", "/api/auth")
	for i := 0; i < 2; i++ { // warm the caches
		if r := b.do("GET", "/api/users/me", nil); r.Status != 200 {
			t.Fatalf("me: %d %s", r.Status, r.Body)
		}
	}
	r := b.do("POST", "/api/auth/logout", nil)
	if r.Status != http.StatusNoContent || len(r.Body) != 0 {
		t.Fatalf("logout: %d %s", r.Status, r.Body)
	}
	assertCleared(t, "logout", r)
	if b.cookie("access_token", "/") != "" || b.cookie("refresh_token", "/api/auth") != "" {
		t.Fatal("the browser kept its cookies")
	}
	cookieReq := func() *response {
		return send(t, b.client, b.srv.URL, "GET", "/api/users/me", nil, "Cookie", "access_token="+access)
	}
	wantRefused(t, "the access cookie after logout", cookieReq())
	wantRefused(t, "the login's body token after logout", e.do("GET", "/api/users/me", bodyToken, nil))
	wantInvalidRefresh(t, "the refresh token after logout", e.refreshBody(refresh))
	if n := e.auditCount(EventLogout, u.ID); n != 1 {
		t.Fatalf("%d logout events", n)
	}

	// A Bearer client, by its token's session.
	bearer, bearerRefresh := e.loginTokens("logout@example.com", "Secret!pw1")
	if r := e.do("GET", "/api/users/me", bearer, nil); r.Status != 200 {
		t.Fatalf("me: %d", r.Status)
	}
	if r := e.do("POST", "/api/auth/logout", bearer, nil); r.Status != http.StatusNoContent {
		t.Fatalf("Bearer logout: %d %s", r.Status, r.Body)
	}
	wantRefused(t, "the Bearer token after its logout", e.do("GET", "/api/users/me", bearer, nil))
	wantInvalidRefresh(t, "its session's refresh token", e.refreshBody(bearerRefresh))

	// A non-browser client, by the refresh token in the body.
	other, otherRefresh := e.loginTokens("logout@example.com", "Secret!pw1")
	if r := e.do("POST", "/api/auth/logout", "", map[string]string{"refresh_token": otherRefresh}); r.Status != http.StatusNoContent {
		t.Fatalf("logout by body: %d %s", r.Status, r.Body)
	}
	wantRefused(t, "the access token of a session logged out by refresh token", e.do("GET", "/api/users/me", other, nil))

	// Idempotent: nothing, a bad token, a revoked one: still 204.
	for name, req := range map[string]func() *response{
		"no credentials":  func() *response { return e.do("POST", "/api/auth/logout", "", nil) },
		"a bad token":     func() *response { return e.do("POST", "/api/auth/logout", "garbage", nil) },
		"a revoked token": func() *response { return e.do("POST", "/api/auth/logout", bearer, nil) },
		"an unknown token": func() *response {
			return e.do("POST", "/api/auth/logout", "", map[string]string{"refresh_token": "nope"})
		},
	} {
		r := req()
		if r.Status != http.StatusNoContent {
			t.Errorf("logout with %s: %d %s", name, r.Status, r.Body)
		}
		assertCleared(t, name, r)
	}
	if r := e.do("POST", "/api/auth/logout", "", map[string]any{"token": "x"}); r.Status != 422 ||
		r.Detail(t) != `[{"type":"missing","loc":["body","refresh_token"],"msg":"Field required"},{"type":"extra_forbidden","loc":["body","token"],"msg":"Extra inputs are not permitted"}]` {
		t.Errorf("malformed logout body: %d %s", r.Status, r.Body)
	}

	// A token without a session (the old backend's) has nothing to
	// revoke: logout answers 204 and the token lives until it expires.
	legacy, _, err := e.svc.Tokens().Issue(e.register("legacy@example.com", "Secret!pw1"))
	if err != nil {
		t.Fatal(err)
	}
	if r := e.do("POST", "/api/auth/logout", legacy, nil); r.Status != http.StatusNoContent {
		t.Fatalf("legacy logout: %d", r.Status)
	}
	if r := e.do("GET", "/api/users/me", legacy, nil); r.Status != 200 {
		t.Fatalf("legacy token after logout: %d", r.Status)
	}
}

func TestLogoutAll(t *testing.T) {
	e := newTestEnv(t, noRateLimit)
	e.startListening()
	_, other := e.secondInstance(noRateLimit)
	u := e.register("all@example.com", "Secret!pw1")

	b := e.newBrowser("TestBrowser/1.0")
	b.login("all@example.com", "Secret!pw1")
	browserRefresh := b.cookie("refresh_token", "/api/auth")
	bearer, bearerRefresh := e.loginTokens("all@example.com", "Secret!pw1")
	legacy, _, err := e.svc.Tokens().Issue(u) // no sid: only tokens_valid_after refuses it
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ { // warm the caches of both instances
		for _, tok := range []string{bearer, legacy} {
			if r := e.do("GET", "/api/users/me", tok, nil); r.Status != 200 {
				t.Fatalf("me: %d %s", r.Status, r.Body)
			}
			if r := get(t, other, "/api/users/me", tok); r.Status != 200 {
				t.Fatalf("me on the other instance: %d %s", r.Status, r.Body)
			}
		}
		if r := b.do("GET", "/api/users/me", nil); r.Status != 200 {
			t.Fatalf("me by cookie: %d", r.Status)
		}
	}

	if r := e.do("POST", "/api/auth/logout-all", "", nil); r.Status != 401 || r.Detail(t) != `"Not authenticated"` {
		t.Fatalf("unauthenticated logout-all: %d %s", r.Status, r.Body)
	}
	before := time.Now()
	r := e.do("POST", "/api/auth/logout-all", bearer, nil)
	if r.Status != http.StatusNoContent {
		t.Fatalf("logout-all: %d %s", r.Status, r.Body)
	}
	assertCleared(t, "logout-all", r)
	// The very next request, on this instance: every old token is refused,
	// the one issued this same second without a session too.
	wantRefused(t, "the Bearer token", e.do("GET", "/api/users/me", bearer, nil))
	wantRefused(t, "a token without a session issued before logout-all", e.do("GET", "/api/users/me", legacy, nil))
	wantRefused(t, "the access cookie", b.do("GET", "/api/users/me", nil))
	wantInvalidRefresh(t, "the browser's refresh token", e.refreshBody(browserRefresh))
	wantInvalidRefresh(t, "the Bearer client's refresh token", e.refreshBody(bearerRefresh))
	// Every other instance follows within moments.
	for _, tok := range []string{bearer, legacy} {
		eventually(t, "the other instance refuses the old token", func() bool {
			return get(t, other, "/api/users/me", tok).Status == http.StatusUnauthorized
		})
	}

	var validAfter time.Time
	_ = e.db.QueryRow(context.Background(), "SELECT tokens_valid_after FROM users WHERE id = $1", u.ID).Scan(&validAfter)
	if !validAfter.Equal(validAfter.Truncate(time.Second)) || !validAfter.After(before) || validAfter.Sub(before) > 2*time.Second {
		t.Fatalf("tokens_valid_after = %v, logout-all at %v", validAfter, before)
	}

	// A login right after, in the same second, gives a working token.
	fresh := e.login("all@example.com", "Secret!pw1")
	me := e.do("GET", "/api/users/me", fresh, nil)
	if me.Status != 200 {
		t.Fatalf("login after logout-all: %d %s", me.Status, me.Body)
	}
	if strings.Contains(string(me.Body), "valid_after") {
		t.Fatalf("tokens_valid_after in the user object: %s", me.Body)
	}
	if r := get(t, other, "/api/users/me", fresh); r.Status != 200 {
		t.Fatalf("the fresh token on the other instance: %d %s", r.Status, r.Body)
	}
	if n := e.auditCount(EventLogoutAll, u.ID); n != 1 {
		t.Fatalf("%d logout.all events", n)
	}
}

func TestSessionsListAndRevoke(t *testing.T) {
	e := newTestEnv(t, noRateLimit)
	e.startListening()
	e.register("list@example.com", "Secret!pw1")
	long := "Mozilla/5.0 " + strings.Repeat("x", 300)
	a := e.newBrowser(long)
	aBody := a.login("list@example.com", "Secret!pw1")
	aSID := e.sidOf(aBody["access_token"].(string))
	bearer, _ := e.loginTokens("list@example.com", "Secret!pw1")
	bSID := e.sidOf(bearer)
	e.register("stranger@example.com", "Secret!pw1")
	stranger, _ := e.loginTokens("stranger@example.com", "Secret!pw1")

	list := func(r *response) []map[string]any {
		t.Helper()
		if r.Status != 200 {
			t.Fatalf("list: %d %s", r.Status, r.Body)
		}
		var out []map[string]any
		for _, v := range r.JSON(t).([]any) {
			out = append(out, v.(map[string]any))
		}
		return out
	}
	got := list(a.do("GET", "/api/users/me/sessions", nil))
	if len(got) != 2 {
		t.Fatalf("sessions: %v", got)
	}
	byID := map[string]map[string]any{}
	for _, s := range got {
		keys := make([]string, 0, len(s))
		for k := range s {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		if strings.Join(keys, ",") != "created_at,current,device,id,ip,last_used_at" {
			t.Fatalf("session fields %v", keys)
		}
		byID[s["id"].(string)] = s
	}
	if s := byID[aSID]; s["current"] != true || s["device"] != long[:256] || s["ip"] != "127.0.0.1" {
		t.Fatalf("browser session %v", s)
	}
	if s := byID[bSID]; s["current"] != false || s["device"] != "Go-http-client/1.1" {
		t.Fatalf("Bearer session %v", s)
	}
	if got[0]["id"] != bSID {
		t.Fatalf("order %v, want the most recently used first", got)
	}
	if cur := list(e.do("GET", "/api/users/me/sessions", bearer, nil)); len(cur) != 2 || byIDOf(cur)[bSID]["current"] != true {
		t.Fatalf("list by the Bearer client: %v", cur)
	}

	// Revoke the browser's session from the Bearer client.
	if r := e.do("DELETE", "/api/users/me/sessions/"+aSID, bearer, nil); r.Status != http.StatusNoContent || len(r.Body) != 0 {
		t.Fatalf("revoke: %d %s", r.Status, r.Body)
	}
	wantRefused(t, "the revoked session's cookie", a.do("GET", "/api/users/me", nil))
	wantInvalidRefresh(t, "the revoked session's refresh cookie", a.do("POST", "/api/auth/refresh", nil))
	if rest := list(e.do("GET", "/api/users/me/sessions", bearer, nil)); len(rest) != 1 || rest[0]["id"] != bSID {
		t.Fatalf("after revoking: %v", rest)
	}

	var strangerSID string
	_ = e.db.QueryRow(context.Background(), "SELECT id::text FROM sessions WHERE user_id = (SELECT id FROM users WHERE email = 'stranger@example.com')").Scan(&strangerSID)
	for name, c := range map[string]struct {
		id     string
		status int
		detail string
	}{
		"revoked already": {aSID, 404, `"Session not found"`},
		"another user's":  {strangerSID, 404, `"Session not found"`},
		"unknown":         {"0b5a3c1e-8c1f-4b7e-9a43-3f6c1d2e4f50", 404, `"Session not found"`},
		"not a UUID":      {"nope", 422, `[{"type":"uuid_parsing","loc":["path","session_id"],"msg":"Input should be a valid UUID, invalid character: expected an optional prefix of ` + "`urn:uuid:`" + ` followed by [0-9a-fA-F-], found ` + "`n`" + ` at 1"}]`},
		"almost a UUID":   {"0b5a3c1e-8c1f-4b7e-9a43-3f6c1d2e4f5z", 422, `[{"type":"uuid_parsing","loc":["path","session_id"],"msg":"Input should be a valid UUID, invalid character: expected an optional prefix of ` + "`urn:uuid:`" + ` followed by [0-9a-fA-F-], found ` + "`z`" + ` at 36"}]`},
	} {
		r := e.do("DELETE", "/api/users/me/sessions/"+c.id, bearer, nil)
		if r.Status != c.status || r.Detail(t) != c.detail {
			t.Errorf("%s: %d %s, want %d %s", name, r.Status, r.Body, c.status, c.detail)
		}
	}
	if r := e.do("GET", "/api/users/me", stranger, nil); r.Status != 200 {
		t.Fatalf("the stranger's session was touched: %d", r.Status)
	}
	if r := e.do("DELETE", "/api/users/me/sessions/"+aSID, "", nil); r.Status != 401 {
		t.Fatalf("unauthenticated delete: %d", r.Status)
	}

	// Revoking one's own current session is a logout.
	r := e.do("DELETE", "/api/users/me/sessions/"+strings.ToUpper(bSID), bearer, nil)
	if r.Status != http.StatusNoContent {
		t.Fatalf("revoke current: %d %s", r.Status, r.Body)
	}
	assertCleared(t, "revoking the current session", r)
	wantRefused(t, "the token of the revoked current session", e.do("GET", "/api/users/me", bearer, nil))
}

func byIDOf(list []map[string]any) map[string]map[string]any {
	out := map[string]map[string]any{}
	for _, s := range list {
		out[s["id"].(string)] = s
	}
	return out
}

// TestRevocationsNeedNoNotificationOnTheirOwnInstance: the instance that
// revokes drops its own cached state at once, without waiting for the
// database's notification (here: one that never comes).
func TestRevocationsNeedNoNotificationOnTheirOwnInstance(t *testing.T) {
	e := newTestEnv(t, noRateLimit)
	e.svc.cache.listening.Store(true) // caches as if notified, but nothing is
	e.register("local@example.com", "Secret!pw1")
	warm := func(tok string) {
		t.Helper()
		for i := 0; i < 2; i++ {
			if r := e.do("GET", "/api/users/me", tok, nil); r.Status != 200 {
				t.Fatalf("me: %d %s", r.Status, r.Body)
			}
		}
	}

	a, _ := e.loginTokens("local@example.com", "Secret!pw1")
	warm(a)
	if r := e.do("POST", "/api/auth/logout", a, nil); r.Status != 204 {
		t.Fatalf("logout: %d", r.Status)
	}
	wantRefused(t, "after logout", e.do("GET", "/api/users/me", a, nil))

	b, _ := e.loginTokens("local@example.com", "Secret!pw1")
	c, _ := e.loginTokens("local@example.com", "Secret!pw1")
	warm(b)
	warm(c)
	if r := e.do("DELETE", "/api/users/me/sessions/"+e.sidOf(b), c, nil); r.Status != 204 {
		t.Fatalf("revoke: %d", r.Status)
	}
	wantRefused(t, "after revoking its session", e.do("GET", "/api/users/me", b, nil))

	d, _ := e.loginTokens("local@example.com", "Secret!pw1")
	warm(d)
	if r := e.do("POST", "/api/users/me/password", c, map[string]string{"current_password": "Secret!pw1", "new_password": "Changed!pw2"}); r.Status != 204 {
		t.Fatalf("password change: %d %s", r.Status, r.Body)
	}
	wantRefused(t, "after a password change elsewhere", e.do("GET", "/api/users/me", d, nil))

	warm(c)
	if r := e.do("POST", "/api/auth/logout-all", c, nil); r.Status != 204 {
		t.Fatalf("logout-all: %d", r.Status)
	}
	wantRefused(t, "after logout-all", e.do("GET", "/api/users/me", c, nil))
}
