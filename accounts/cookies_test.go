package accounts

import (
	"context"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/caddyaccounts/gateway/fastapi"
)

// noRateLimit turns the /api/auth/* limits off: these tests make many
// auth requests from one address.
func noRateLimit(c *Config) { c.RateLimit.IPRequests, c.RateLimit.LoginFailures = -1, -1 }

// browser is a browser-like client of a service over HTTPS (the cookies
// are Secure): a cookie jar, and the Sec-Fetch-Site header a browser
// sends (same-origin unless the test says otherwise).
type browser struct {
	t      testing.TB
	srv    *httptest.Server
	client *http.Client
	// ua is the User-Agent sent.
	ua string
}

// newBrowser serves e's API over TLS and returns a browser for it.
func (e *testEnv) newBrowser(ua string) *browser {
	e.t.Helper()
	return newBrowserOf(e.t, e.svc, ua)
}

func newBrowserOf(t testing.TB, svc *Service, ua string) *browser {
	t.Helper()
	srv := httptest.NewTLSServer(svc.Handler())
	t.Cleanup(srv.Close)
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	client := srv.Client()
	client.Jar = jar
	return &browser{t: t, srv: srv, client: client, ua: ua}
}

// do sends a same-origin request, as the frontend would.
func (b *browser) do(method, path string, body any, header ...string) *response {
	b.t.Helper()
	h := []string{"User-Agent", b.ua, "Sec-Fetch-Site", "same-origin", "Origin", b.srv.URL}
	return send(b.t, b.client, b.srv.URL, method, path, body, append(h, header...)...)
}

// login logs in through the form and returns the JSON body.
func (b *browser) login(email, password string) map[string]any {
	b.t.Helper()
	r := b.do("POST", "/api/auth/login", url.Values{"username": {email}, "password": {password}})
	if r.Status != http.StatusOK {
		b.t.Fatalf("login %s: %d %s", email, r.Status, r.Body)
	}
	return r.JSON(b.t).(map[string]any)
}

// cookie returns the value of the jar's cookie name as sent to path.
func (b *browser) cookie(name, path string) string {
	u, _ := url.Parse(b.srv.URL + path)
	for _, c := range b.client.Jar.Cookies(u) {
		if c.Name == name {
			return c.Value
		}
	}
	return ""
}

// setCookie puts a cookie in the jar, as a stolen or stale one would be.
func (b *browser) setCookie(name, value, path string) {
	u, _ := url.Parse(b.srv.URL + path)
	b.client.Jar.SetCookies(u, []*http.Cookie{{Name: name, Value: value, Path: path, Secure: true, HttpOnly: true}})
}

// setCookies returns the Set-Cookie headers of r by cookie name.
func setCookies(r *response) map[string]*http.Cookie {
	out := map[string]*http.Cookie{}
	for _, c := range (&http.Response{Header: r.Header}).Cookies() {
		out[c.Name] = c
	}
	return out
}

// assertCleared checks that r clears both session cookies.
func assertCleared(t *testing.T, what string, r *response) {
	t.Helper()
	cs := setCookies(r)
	for name, path := range map[string]string{"access_token": "/", "refresh_token": "/api/auth"} {
		c := cs[name]
		if c == nil || c.Value != "" || c.MaxAge != -1 || c.Path != path {
			t.Errorf("%s: cookie %s not cleared: %+v", what, name, c)
		}
	}
}

func TestLoginSetsSessionCookies(t *testing.T) {
	e := newTestEnv(t, noRateLimit)
	u := e.register("cookie@example.com", "Secret!pw1")
	b := e.newBrowser("TestBrowser/1.0")

	r := b.do("POST", "/api/auth/login", url.Values{"username": {"cookie@example.com"}, "password": {"Secret!pw1"}})
	if r.Status != http.StatusOK {
		t.Fatalf("login: %d %s", r.Status, r.Body)
	}
	// The body is API.md's, unchanged: three fields, an 8-hour token.
	body := r.JSON(t).(map[string]any)
	if len(body) != 3 || body["token_type"] != "bearer" || body["expires_in"] != float64(28800) {
		t.Fatalf("login body = %v", body)
	}
	bodyClaims, err := e.svc.Tokens().Verify(body["access_token"].(string))
	if err != nil || bodyClaims.Subject != u.ID || !fastapi.IsUUID(bodyClaims.SessionID) ||
		bodyClaims.ExpiresAt.Sub(bodyClaims.IssuedAt.Time) != 8*time.Hour {
		t.Fatalf("body token claims %+v, %v", bodyClaims, err)
	}

	cs := setCookies(r)
	access, refresh := cs["access_token"], cs["refresh_token"]
	if access == nil || refresh == nil {
		t.Fatalf("cookies set: %v", r.Header.Values("Set-Cookie"))
	}
	if !access.HttpOnly || !access.Secure || access.SameSite != http.SameSiteLaxMode || access.Path != "/" ||
		access.Domain != "" || access.MaxAge < 890 || access.MaxAge > 900 {
		t.Errorf("access cookie = %+v", access)
	}
	if !refresh.HttpOnly || !refresh.Secure || refresh.SameSite != http.SameSiteStrictMode || refresh.Path != "/api/auth" ||
		refresh.Domain != "" || refresh.MaxAge < 7*24*3600-10 || refresh.MaxAge > 7*24*3600 {
		t.Errorf("refresh cookie = %+v", refresh)
	}
	cookieClaims, err := e.svc.Tokens().Verify(access.Value)
	if err != nil || cookieClaims.SessionID != bodyClaims.SessionID ||
		cookieClaims.ExpiresAt.Sub(cookieClaims.IssuedAt.Time) != 15*time.Minute {
		t.Fatalf("cookie token claims %+v, %v", cookieClaims, err)
	}
	if len(refresh.Value) != 43 || strings.ContainsAny(refresh.Value, "+/=") {
		t.Errorf("refresh token %q is not 256 bits in base64url", refresh.Value)
	}
	var stored int
	_ = e.db.QueryRow(context.Background(), "SELECT count(*) FROM refresh_tokens WHERE token_hash = $1", hashRefreshToken(refresh.Value)).Scan(&stored)
	var clear int
	_ = e.db.QueryRow(context.Background(), "SELECT count(*) FROM refresh_tokens WHERE token_hash = convert_to($1, 'UTF8')", refresh.Value).Scan(&clear)
	if stored != 1 || clear != 0 {
		t.Errorf("refresh token rows by hash %d, in clear %d; want 1 and 0", stored, clear)
	}

	// The cookie alone authenticates, for the API...
	me := b.do("GET", "/api/users/me", nil)
	if me.Status != http.StatusOK || me.JSON(t).(map[string]any)["id"] != u.ID {
		t.Fatalf("me by cookie: %d %s", me.Status, me.Body)
	}
	if strings.Contains(string(me.Body), "tokens_valid_after") || len(me.JSON(t).(map[string]any)) != 7 {
		t.Fatalf("user object = %s", me.Body)
	}
	// ... and for the auth check of the Caddy handler, which is the same.
	req := httptest.NewRequest("GET", "/api/documents", nil)
	req.AddCookie(&http.Cookie{Name: "access_token", Value: access.Value})
	if p, err := e.svc.Authenticate(req); err != nil || p.User.ID != u.ID || !p.ViaCookie {
		t.Fatalf("Authenticate by cookie: %+v, %v", p, err)
	}

	// The header wins over the cookie, even when it is bad.
	bad := b.do("GET", "/api/users/me", nil, "Authorization", "Bearer garbage")
	if bad.Status != 401 || bad.Detail(t) != `"Could not validate credentials"` {
		t.Fatalf("bad header with a good cookie: %d %s", bad.Status, bad.Body)
	}
	// A bad cookie alone is a bad token; none is "Not authenticated".
	b.setCookie("access_token", "garbage", "/")
	if r := b.do("GET", "/api/users/me", nil); r.Status != 401 || r.Detail(t) != `"Could not validate credentials"` ||
		r.Header.Get("WWW-Authenticate") != "Bearer" {
		t.Fatalf("bad cookie: %d %s", r.Status, r.Body)
	}
	if r := e.do("GET", "/api/users/me", "", nil); r.Status != 401 || r.Detail(t) != `"Not authenticated"` {
		t.Fatalf("no cookie: %d %s", r.Status, r.Body)
	}
	// The refresh cookie is no access token.
	req = httptest.NewRequest("GET", "/api/users/me", nil)
	req.AddCookie(&http.Cookie{Name: "refresh_token", Value: refresh.Value})
	if _, err := e.svc.Authenticate(req); err != errNotAuthenticated {
		t.Fatalf("refresh cookie as access token: %v", err)
	}
}

// TestCookieRequestsAreProtectedFromCSRF: an unsafe request authenticated
// by a cookie must come from the same origin; Bearer requests are never
// checked.
func TestCookieRequestsAreProtectedFromCSRF(t *testing.T) {
	e := newTestEnv(t, noRateLimit)
	e.register("csrf@example.com", "Secret!pw1")
	b := e.newBrowser("TestBrowser/1.0")
	bearer := b.login("csrf@example.com", "Secret!pw1")["access_token"].(string)
	refresh := b.cookie("refresh_token", "/api/auth")

	crossSite := []string{"Sec-Fetch-Site", "cross-site", "Origin", "https://evil.example"}
	oldBrowser := []string{"Sec-Fetch-Site", "", "Origin", "https://evil.example"}
	sameSite := []string{"Sec-Fetch-Site", "same-site", "Origin", "https://sub.example"}
	for _, c := range []struct {
		name   string
		path   string
		body   any
		header []string
	}{
		{"logout-all, cross-site", "/api/auth/logout-all", nil, crossSite},
		{"logout-all, old browser with a foreign Origin", "/api/auth/logout-all", nil, oldBrowser},
		{"logout-all, same-site but another origin", "/api/auth/logout-all", nil, sameSite},
		{"password change, cross-site", "/api/users/me/password", map[string]string{"current_password": "Secret!pw1", "new_password": "Other!pw2"}, crossSite},
		{"refresh by cookie, cross-site", "/api/auth/refresh", nil, crossSite},
		{"logout by cookie, cross-site", "/api/auth/logout", nil, crossSite},
	} {
		r := b.do("POST", c.path, c.body, c.header...)
		if r.Status != http.StatusForbidden || r.Detail(t) != `"Cross-origin request refused"` ||
			r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s: %d %s, want 403", c.name, r.Status, r.Body)
		}
		if len(r.Header.Values("Set-Cookie")) != 0 {
			t.Errorf("%s: cookies changed by a refused request: %v", c.name, r.Header.Values("Set-Cookie"))
		}
	}
	if b.cookie("refresh_token", "/api/auth") != refresh {
		t.Fatal("a refused request rotated the refresh token")
	}
	// Nothing happened: the session and the password are intact.
	if r := b.do("GET", "/api/users/me", nil, crossSite...); r.Status != http.StatusOK {
		t.Fatalf("safe cross-site GET by cookie: %d %s, want 200", r.Status, r.Body)
	}
	e.login("csrf@example.com", "Secret!pw1")

	// The same requests with a Bearer header and a foreign origin pass:
	// a foreign page cannot make a browser send the header.
	if r := send(t, b.client, b.srv.URL, "POST", "/api/users/me/password", map[string]string{"current_password": "Secret!pw1", "new_password": "Secret!pw1"},
		append([]string{"Authorization", "Bearer " + bearer}, crossSite...)...); r.Status != 400 ||
		r.Detail(t) != `"New password cannot be the same as the current one"` {
		t.Fatalf("Bearer cross-site POST: %d %s, want the route's own answer", r.Status, r.Body)
	}
	// So do non-browser requests (no Sec-Fetch-Site, no Origin).
	if r := send(t, b.client, b.srv.URL, "POST", "/api/users/me/password", map[string]string{"current_password": "x", "new_password": "Other!pw2"}); r.Status != 400 ||
		r.Detail(t) != `"Incorrect password"` {
		t.Fatalf("cookie POST without browser headers: %d %s", r.Status, r.Body)
	}

	// Same-origin passes: the frontend's own requests.
	if r := b.do("POST", "/api/auth/refresh", nil); r.Status != http.StatusOK {
		t.Fatalf("same-origin refresh: %d %s", r.Status, r.Body)
	}
	if r := b.do("POST", "/api/auth/logout-all", nil); r.Status != http.StatusNoContent {
		t.Fatalf("same-origin logout-all: %d %s", r.Status, r.Body)
	}
}

// TestCrossOriginLoginSetsNoCookies: a foreign page posting the login form
// cannot plant a session of its choosing in the visitor's browser; the
// JSON answer is unchanged (non-browser and Bearer clients).
func TestCrossOriginLoginSetsNoCookies(t *testing.T) {
	e := newTestEnv(t, noRateLimit)
	e.register("planted@example.com", "Secret!pw1")
	b := e.newBrowser("TestBrowser/1.0")
	r := b.do("POST", "/api/auth/login", url.Values{"username": {"planted@example.com"}, "password": {"Secret!pw1"}},
		"Sec-Fetch-Site", "cross-site", "Origin", "https://evil.example")
	if r.Status != http.StatusOK || len(r.JSON(t).(map[string]any)) != 3 {
		t.Fatalf("cross-origin login: %d %s", r.Status, r.Body)
	}
	if len(r.Header.Values("Set-Cookie")) != 0 {
		t.Fatalf("cross-origin login set cookies: %v", r.Header.Values("Set-Cookie"))
	}
}

func TestTrustedOrigins(t *testing.T) {
	e := newTestEnv(t, noRateLimit, func(c *Config) {
		c.Sessions.TrustedOrigins = []string{"https://app.example.com"}
		c.Sessions.CookieDomain = "example.com"
	})
	e.register("trusted@example.com", "Secret!pw1")
	// The jar will not send Domain=example.com cookies to 127.0.0.1: set
	// the header by hand.
	r := e.do("POST", "/api/auth/login", "", url.Values{"username": {"trusted@example.com"}, "password": {"Secret!pw1"}})
	cs := setCookies(r)
	if cs["access_token"] == nil || cs["access_token"].Domain != "example.com" || cs["refresh_token"].Domain != "example.com" {
		t.Fatalf("cookies %v", r.Header.Values("Set-Cookie"))
	}
	client := e.srv.Client()
	cookie := "access_token=" + cs["access_token"].Value
	if r := send(t, client, e.srv.URL, "POST", "/api/auth/logout-all", nil,
		"Cookie", cookie, "Sec-Fetch-Site", "same-site", "Origin", "https://evil.example.com"); r.Status != 403 {
		t.Fatalf("untrusted origin: %d %s", r.Status, r.Body)
	}
	if r := send(t, client, e.srv.URL, "POST", "/api/auth/logout-all", nil,
		"Cookie", cookie, "Sec-Fetch-Site", "same-site", "Origin", "https://app.example.com"); r.Status != 204 {
		t.Fatalf("trusted origin: %d %s", r.Status, r.Body)
	}
}

// TestCookieOptions: other names, refresh_token and no access_token in
// bodies, other lifetimes.
func TestCookieOptions(t *testing.T) {
	e := newTestEnv(t, noRateLimit, func(c *Config) {
		c.Sessions.AccessCookieName = "__Host-at"
		c.Sessions.RefreshCookieName = "rt"
		c.Sessions.AccessCookieLifetime = 5 * time.Minute
		c.Sessions.IdleTimeout = time.Hour
		c.Sessions.RefreshTokenInBody = true
		c.Sessions.OmitTokenFromBody = true
	})
	e.register("opts@example.com", "Secret!pw1")
	b := e.newBrowser("TestBrowser/1.0")
	body := b.login("opts@example.com", "Secret!pw1")
	if _, ok := body["access_token"]; ok || body["expires_in"] != float64(300) || body["token_type"] != "bearer" ||
		body["refresh_token"] != b.cookie("rt", "/api/auth") || len(body) != 3 {
		t.Fatalf("login body = %v", body)
	}
	if b.cookie("__Host-at", "/") == "" || b.cookie("access_token", "/") != "" {
		t.Fatal("access cookie not under its configured name")
	}
	if r := b.do("GET", "/api/users/me", nil); r.Status != 200 {
		t.Fatalf("me by the renamed cookie: %d %s", r.Status, r.Body)
	}
	r := b.do("POST", "/api/auth/refresh", nil)
	rb := r.JSON(t).(map[string]any)
	if r.Status != 200 || rb["refresh_token"] != b.cookie("rt", "/api/auth") || rb["expires_in"] != float64(300) || len(rb) != 3 {
		t.Fatalf("refresh: %d %v", r.Status, rb)
	}
	if rc := setCookies(r)["rt"]; rc == nil || rc.MaxAge > 3600 || rc.MaxAge < 3590 {
		t.Fatalf("refresh cookie of a 1h idle timeout: %+v", rc)
	}

	// A login that sets no cookies (cross-origin) keeps the token in the
	// body.
	nb := b.do("POST", "/api/auth/login", url.Values{"username": {"opts@example.com"}, "password": {"Secret!pw1"}},
		"Sec-Fetch-Site", "cross-site")
	if lb := nb.JSON(t).(map[string]any); lb["access_token"] == nil || lb["expires_in"] != float64(28800) ||
		len(nb.Header.Values("Set-Cookie")) != 0 {
		t.Fatalf("login without cookies: %v %v", lb, nb.Header.Values("Set-Cookie"))
	}
}

func TestSessionConfigRefusesBadOptions(t *testing.T) {
	pool := newTestEnv(t).db
	for name, c := range map[string]SessionConfig{
		"bad cookie name":           {AccessCookieName: "a b"},
		"same names":                {AccessCookieName: "t", RefreshCookieName: "t"},
		"bad domain":                {CookieDomain: "exa mple.com"},
		"access lifetime too long":  {AccessCookieLifetime: 9 * time.Hour},
		"access lifetime too short": {AccessCookieLifetime: time.Second},
		"negative idle":             {IdleTimeout: -time.Hour},
		"long grace":                {RefreshReuseGrace: time.Hour},
		"bad trusted origin":        {TrustedOrigins: []string{"not an origin"}},
	} {
		cfg := Config{Argon2: fastArgon2, Sessions: c}
		if _, err := New(pool, nil, cfg, nil); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	got, err := SessionConfig{RefreshReuseGrace: -1}.withDefaults(8 * time.Hour)
	want := SessionConfig{
		AccessCookieName: "access_token", RefreshCookieName: "refresh_token",
		AccessCookieLifetime: 15 * time.Minute, IdleTimeout: 7 * 24 * time.Hour, MaxLifetime: 30 * 24 * time.Hour,
		RefreshReuseGrace: -1,
	}
	if err != nil || got.AccessCookieName != want.AccessCookieName || got.RefreshCookieName != want.RefreshCookieName ||
		got.AccessCookieLifetime != want.AccessCookieLifetime || got.IdleTimeout != want.IdleTimeout ||
		got.MaxLifetime != want.MaxLifetime || got.RefreshReuseGrace != want.RefreshReuseGrace {
		t.Fatalf("defaults %+v, %v", got, err)
	}
	if d, _ := (SessionConfig{}).withDefaults(8 * time.Hour); d.RefreshReuseGrace != 10*time.Second {
		t.Fatalf("default grace %s", d.RefreshReuseGrace)
	}
}
