package e2e

import (
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// Browser sessions through the real binary: the cookies that login sets,
// refresh-token rotation and reuse detection, logout, the cross-origin
// check of cookie-authenticated requests, and the rate limits of
// /api/auth/*.
//
// The gateways run the project's Caddyfile with a few options added to
// its accounts block (testCaddyfile): short session and rate-limit
// settings, which the project's Caddyfile does not take from the
// environment. The browser scenarios speak HTTPS to the gateway
// (startHTTPSGateway, Caddy's internal CA, trusted by the client only),
// because a browser, like net/http/cookiejar, sends Secure cookies over
// HTTPS alone.

// ---------------------------------------------------------------------
// A Caddyfile variant

// testCaddyfile writes the project's Caddyfile with global added to its
// global options and accountsOpts added to its accounts block (both
// Caddyfile text, one option a line) and returns its path. The site, the
// routes and the environment placeholders stay the project's own.
func testCaddyfile(tb testing.TB, global, accountsOpts string) string {
	tb.Helper()
	raw, err := os.ReadFile(filepath.Join(repoRoot, "Caddyfile"))
	if err != nil {
		tb.Fatal(err)
	}
	text := string(raw)
	const open = "\n\taccounts {\n"
	i := strings.Index(text, open)
	if i < 0 || strings.Count(text, open) != 1 {
		tb.Fatalf("the project's Caddyfile has no single %q line in its global options", strings.TrimSpace(open))
	}
	j := strings.Index(text[i+len(open):], "\n\t}\n")
	if j < 0 {
		tb.Fatal("the accounts block of the project's Caddyfile does not end with a \"\\t}\" line")
	}
	end := i + len(open) + j + 1 // the start of the block's closing line
	text = text[:end] + indentLines(accountsOpts, "\t\t") + text[end:]
	text = text[:i+1] + indentLines(global, "\t") + text[i+1:]
	path := filepath.Join(tb.TempDir(), "Caddyfile")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		tb.Fatal(err)
	}
	return path
}

// indentLines prefixes every line of text with indent and ends it with a
// newline ("" stays "").
func indentLines(text, indent string) string {
	text = strings.TrimSpace(text)
	if text == "" {
		return ""
	}
	var b strings.Builder
	for line := range strings.SplitSeq(text, "\n") {
		b.WriteString(indent + strings.TrimSpace(line) + "\n")
	}
	return b.String()
}

// ---------------------------------------------------------------------
// A gateway over HTTPS, and a browser

// httpsGlobal are the global options of a gateway served over HTTPS by
// Caddy's internal CA (which an IP address site gets): the CA's root is
// not installed into the system's trust store (the test clients trust
// it themselves), and no HTTP-to-HTTPS redirect server takes port 80.
const httpsGlobal = "skip_install_trust\nauto_https disable_redirects"

// httpsGateway is a gateway whose site address is https://127.0.0.1:PORT.
type httpsGateway struct {
	*Gateway
}

// startHTTPSGateway starts a gateway with caddyfile (which must carry
// httpsGlobal) on https://127.0.0.1:PORT; it is healthy over TLS verified
// with the gateway's own CA root, in Roots.
func startHTTPSGateway(t *testing.T, caddyfile string) *httpsGateway {
	t.Helper()
	return &httpsGateway{startGateway(t, GatewayOptions{Caddyfile: caddyfile, HTTPS: true})}
}

// Plain returns a client of the gateway's HTTPS site without cookies or
// browser headers: a script, or a thief replaying a stolen cookie.
func (g *httpsGateway) Plain(tb testing.TB) *Client {
	c := newClient(tb, g.URL)
	c.HTTP.Transport.(*http.Transport).TLSClientConfig = &tls.Config{RootCAs: g.Roots}
	return c
}

// Browser returns a new browser profile of the gateway's site: its own
// cookie jar (and client address), HTTPS, and the headers a browser's
// fetch() sends.
func (g *httpsGateway) Browser(tb testing.TB) *browser {
	c := g.Plain(tb)
	jar, err := cookiejar.New(nil)
	if err != nil {
		tb.Fatal(err)
	}
	c.HTTP.Jar = jar
	return &browser{Client: c, Jar: jar, origin: g.URL}
}

// evilOrigin is a foreign site that tries to use a visitor's cookies.
const evilOrigin = "https://evil.example"

// browser is a browser profile: requests carry its cookies.
type browser struct {
	*Client
	Jar    *cookiejar.Jar
	origin string
}

// from says where a fetch() comes from: its Origin header ("" for none)
// and its Sec-Fetch-Site header ("" for none, as older browsers send).
type from struct{ origin, site string }

// sameOrigin is a script of the gateway's own site.
func (b *browser) sameOrigin() from { return from{b.origin, "same-origin"} }

// crossSite is a script of a foreign site.
var crossSite = from{evilOrigin, "cross-site"}

// fetch sends a request as a page's script does: with the profile's
// cookies, the Sec-Fetch-* headers, and Origin on anything but a
// same-origin GET or HEAD.
func (b *browser) fetch(f from, method, path string, body io.Reader, contentType string) *Response {
	b.t.Helper()
	req := b.NewRequest(method, path, body)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if f.site != "" {
		req.Header.Set("Sec-Fetch-Site", f.site)
		req.Header.Set("Sec-Fetch-Mode", "cors")
		req.Header.Set("Sec-Fetch-Dest", "empty")
	}
	safe := method == http.MethodGet || method == http.MethodHead
	if f.origin != "" && (!safe || f.site != "same-origin") {
		req.Header.Set("Origin", f.origin)
	}
	return b.Do(req)
}

// login posts the sign-in form from f.
func (b *browser) login(f from, email, password string) *Response {
	b.t.Helper()
	form := url.Values{"username": {email}, "password": {password}}
	return b.fetch(f, http.MethodPost, "/api/auth/login", strings.NewReader(form.Encode()), "application/x-www-form-urlencoded")
}

// cookie returns the value of the cookie name that the profile would
// send to path, or "".
func (b *browser) cookie(name, path string) string {
	for _, c := range b.Jar.Cookies(b.mustURL(path)) {
		if c.Name == name {
			return c.Value
		}
	}
	return ""
}

// cookieNames returns the names of the cookies the profile sends to path.
func (b *browser) cookieNames(path string) []string {
	var names []string
	for _, c := range b.Jar.Cookies(b.mustURL(path)) {
		names = append(names, c.Name)
	}
	slices.Sort(names)
	return names
}

func (b *browser) mustURL(path string) *url.URL {
	u, err := url.Parse(b.Base + path)
	if err != nil {
		b.t.Fatal(err)
	}
	return u
}

// withCookie sends method path with exactly the given Cookie header and
// the optional browser origin f (a zero f sends no browser headers).
func withCookie(c *Client, f from, method, path, cookie string) *Response {
	c.t.Helper()
	req := c.NewRequest(method, path, nil)
	req.Header.Set("Cookie", cookie)
	if f.site != "" {
		req.Header.Set("Sec-Fetch-Site", f.site)
	}
	if f.origin != "" {
		req.Header.Set("Origin", f.origin)
	}
	return c.Do(req)
}

// ---------------------------------------------------------------------
// Assertions on cookies and tokens

// setCookies returns the Set-Cookie headers of r by cookie name; a name
// set twice fails tb.
func setCookies(tb testing.TB, r *Response) map[string]string {
	tb.Helper()
	out := map[string]string{}
	for _, raw := range r.Header.Values("Set-Cookie") {
		name, _, _ := strings.Cut(raw, "=")
		if _, dup := out[name]; dup {
			tb.Fatalf("cookie %s is set twice: %q", name, r.Header.Values("Set-Cookie"))
		}
		out[name] = raw
	}
	return out
}

// expectCookieNames fails tb unless r sets exactly the cookies names.
func expectCookieNames(tb testing.TB, r *Response, names ...string) map[string]string {
	tb.Helper()
	got := setCookies(tb, r)
	var have []string
	for name := range got {
		have = append(have, name)
	}
	slices.Sort(have)
	slices.Sort(names)
	if !slices.Equal(have, names) {
		tb.Fatalf("Set-Cookie of %v, want %v: %q", have, names, r.Header.Values("Set-Cookie"))
	}
	return got
}

// expectCookie checks a session cookie's Set-Cookie header exactly:
// name, a non-empty value, Path, Expires maxAge from now (to the
// second, a little latency allowed), Max-Age, HttpOnly, Secure and
// SameSite, in that order and nothing else (no Domain: host-only). It
// returns the value.
func expectCookie(tb testing.TB, raw, name, path, sameSite string, maxAge int) string {
	tb.Helper()
	c, err := http.ParseSetCookie(raw)
	if err != nil {
		tb.Fatalf("Set-Cookie %q: %v", raw, err)
	}
	if c.Value == "" {
		tb.Fatalf("Set-Cookie %q has no value", raw)
	}
	want := fmt.Sprintf("%s=%s; Path=%s; Expires=%s; Max-Age=%d; HttpOnly; Secure; SameSite=%s",
		name, c.Value, path, c.Expires.UTC().Format(http.TimeFormat), maxAge, sameSite)
	if raw != want {
		tb.Errorf("Set-Cookie\n got %s\nwant %s", raw, want)
	}
	if d := time.Until(c.Expires) - time.Duration(maxAge)*time.Second; d < -3*time.Second || d > time.Second {
		tb.Errorf("cookie %s expires %v, %v off from Max-Age %d", name, c.Expires, d, maxAge)
	}
	return c.Value
}

// expectCookieCleared checks a Set-Cookie header that deletes the
// session cookie name, exactly.
func expectCookieCleared(tb testing.TB, raw, name, path, sameSite string) {
	tb.Helper()
	want := fmt.Sprintf("%s=; Path=%s; Expires=Thu, 01 Jan 1970 00:00:01 GMT; Max-Age=0; HttpOnly; Secure; SameSite=%s",
		name, path, sameSite)
	if raw != want {
		tb.Errorf("Set-Cookie\n got %s\nwant %s", raw, want)
	}
}

// expectSessionCleared checks that r deletes both session cookies and
// sets nothing else.
func expectSessionCleared(tb testing.TB, r *Response) {
	tb.Helper()
	got := expectCookieNames(tb, r, "access_token", "refresh_token")
	expectCookieCleared(tb, got["access_token"], "access_token", "/", "Lax")
	expectCookieCleared(tb, got["refresh_token"], "refresh_token", "/api/auth", "Strict")
}

// jwtClaims decodes the claims of a JWT without verifying it (the
// gateway's own answers are checked elsewhere, tokens_test.go).
func jwtClaims(tb testing.TB, token string) map[string]any {
	tb.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		tb.Fatalf("%q is not a JWT", token)
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		tb.Fatalf("JWT payload: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		tb.Fatalf("JWT payload %s: %v", raw, err)
	}
	return m
}

// expectTokenOf checks that token belongs to user userID and session sid
// ("" for any non-empty one) and lives lifetime, and returns its sid.
func expectTokenOf(tb testing.TB, token, userID, sid string, lifetime time.Duration) string {
	tb.Helper()
	m := jwtClaims(tb, token)
	got, _ := m["sid"].(string)
	if got == "" || (sid != "" && got != sid) {
		tb.Errorf("token sid %v, want %q", m["sid"], sid)
	}
	if m["sub"] != userID {
		tb.Errorf("token sub %v, want %s", m["sub"], userID)
	}
	exp, _ := m["exp"].(float64)
	iat, _ := m["iat"].(float64)
	if d := time.Duration(exp-iat) * time.Second; d != lifetime {
		tb.Errorf("token lifetime (exp - iat) %v, want %v", d, lifetime)
	}
	return got
}

// expectTokenBody checks the JSON body of a login or refresh: exactly
// access_token, token_type bearer and expires_in, and returns the token.
func expectTokenBody(tb testing.TB, r *Response, expiresIn int) string {
	tb.Helper()
	expectStatus(tb, r, http.StatusOK)
	m := r.JSON(tb)
	token, _ := m["access_token"].(string)
	if len(m) != 3 || token == "" || m["token_type"] != "bearer" || m["expires_in"] != float64(expiresIn) {
		tb.Fatalf("body %s, want exactly access_token, token_type \"bearer\", expires_in %d", r.Body, expiresIn)
	}
	return token
}

// sessionState returns how a user's only session ended ("" while it
// goes on), from the database.
func sessionState(tb testing.TB, dbURL, userID string) string {
	tb.Helper()
	var reason *string
	querySQL(tb, dbURL, "SELECT revoked_reason FROM sessions WHERE user_id = $1", []any{userID}, &reason)
	if reason == nil {
		return ""
	}
	return *reason
}

// ---------------------------------------------------------------------
// Browser sessions

// The session options of TestSessionCookies: every lifetime differs from
// its default, so that the cookies show the configured ones.
const (
	cookieAccessLifetime = 5 * time.Minute
	sessionIdleTimeout   = time.Hour
	refreshReuseGrace    = 2 * time.Second
	sessionOptions       = `sessions {
		access_cookie_lifetime 5m
		idle_timeout 1h
		max_lifetime 2h
		refresh_reuse_grace 2s
	}`
)

// accessMaxAge and refreshMaxAge are the Max-Age of the session cookies
// with sessionOptions: the access cookie's lifetime, and the session's
// (the idle timeout, shorter than its max lifetime).
var (
	accessMaxAge  = int(cookieAccessLifetime / time.Second)
	refreshMaxAge = int(sessionIdleTimeout / time.Second)
)

// TestSessionCookies runs a browser against one HTTPS gateway: login's
// cookies, the cookie as the only credential, rotation and reuse of
// refresh tokens, logout, and cross-site requests.
func TestSessionCookies(t *testing.T) {
	t.Parallel()
	g := startHTTPSGateway(t, testCaddyfile(t, httpsGlobal, sessionOptions))

	// newSignedIn registers a user and signs them in from a new browser
	// profile; it returns the login's answer too.
	newSignedIn := func(t *testing.T) (*browser, apiUser, string, *Response) {
		t.Helper()
		b := g.Browser(t)
		pw := randomPassword()
		u := b.Register(uniqueEmail(t), pw)
		r := b.login(b.sameOrigin(), u.Email, pw)
		expectStatus(t, r, http.StatusOK)
		return b, u, pw, r
	}

	t.Run("LoginSetsCookies", func(t *testing.T) {
		t.Parallel()
		b, u, pw, r := newSignedIn(t)

		// The body is API.md's, with a token of token_lifetime (8h).
		bodyToken := expectTokenBody(t, r, tokenLifetime)
		expectNoEcho(t, r, pw)
		cookies := expectCookieNames(t, r, "access_token", "refresh_token")
		access := expectCookie(t, cookies["access_token"], "access_token", "/", "Lax", accessMaxAge)
		refresh := expectCookie(t, cookies["refresh_token"], "refresh_token", "/api/auth", "Strict", refreshMaxAge)

		// The access cookie holds a token of the access cookie lifetime,
		// of the same session as the body's; the refresh token is 256
		// random bits, and neither is in the body.
		sid := expectTokenOf(t, bodyToken, u.ID, "", 8*time.Hour)
		expectTokenOf(t, access, u.ID, sid, cookieAccessLifetime)
		if b, err := base64.RawURLEncoding.DecodeString(refresh); err != nil || len(b) != 32 {
			t.Errorf("refresh token %q is not 32 bytes of base64url (%v)", refresh, err)
		}
		expectNoEcho(t, r, refresh)
		expectNoEcho(t, r, access)

		// The profile sends the access cookie everywhere, the refresh
		// cookie only to /api/auth/*.
		if got := b.cookieNames("/api/users/me"); !slices.Equal(got, []string{"access_token"}) {
			t.Errorf("cookies sent to /api/users/me: %v, want [access_token]", got)
		}
		if got := b.cookieNames("/api/documents/x"); !slices.Equal(got, []string{"access_token"}) {
			t.Errorf("cookies sent to /api/documents/x: %v, want [access_token]", got)
		}
		if got := b.cookieNames("/api/auth/refresh"); !slices.Equal(got, []string{"access_token", "refresh_token"}) {
			t.Errorf("cookies sent to /api/auth/refresh: %v, want both", got)
		}
		if got := b.cookie("access_token", "/"); got != access {
			t.Errorf("the profile holds access cookie %q, want the one set", got)
		}

		// The cookie alone authenticates: /api/users/me ...
		me := b.fetch(b.sameOrigin(), http.MethodGet, "/api/users/me", nil, "")
		expectStatus(t, me, http.StatusOK)
		if got := expectUserObject(t, me.Body); got.ID != u.ID {
			t.Errorf("me is %s, want %s", got.ID, u.ID)
		}
		// ... and the document service, which gets X-User-Id from it,
		// on a read and on a same-origin upload.
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			target := "/api/documents/x?probe=" + randomHex(6)
			var body io.Reader
			if method == http.MethodPost {
				body = strings.NewReader("payload")
			}
			req := b.NewRequest(method, target, body)
			req.Header.Set("Sec-Fetch-Site", "same-origin")
			if method == http.MethodPost {
				req.Header.Set("Origin", g.URL)
			}
			spoofIdentity(req.Header, "00000000-0000-4000-8000-000000000000")
			expectStatus(t, b.Do(req), http.StatusOK)
			rec := oneRequest(t, g.Doc, target, func(r StubRequest) bool { return r.RequestURI == target })
			expectOnlyUserID(t, rec, u.ID)
			if strings.Contains(rec.Header.Get("Cookie"), "refresh_token") {
				t.Errorf("the refresh token reached the document service: %q", rec.Header.Get("Cookie"))
			}
		}
	})

	t.Run("RefreshRotatesAndReuseRevokes", func(t *testing.T) {
		t.Parallel()
		b, u, _, login := newSignedIn(t)
		plain := g.Plain(t)
		bodyToken := expectTokenBody(t, login, tokenLifetime)
		access0, refresh0 := b.cookie("access_token", "/"), b.cookie("refresh_token", "/api/auth")
		sid := expectTokenOf(t, access0, u.ID, "", cookieAccessLifetime)

		// Refresh: both cookies anew, the body has the new access token
		// (of the access cookie lifetime) and not the refresh token.
		started := time.Now()
		r := b.fetch(b.sameOrigin(), http.MethodPost, "/api/auth/refresh", nil, "")
		rotated := time.Now()
		bodyAccess := expectTokenBody(t, r, accessMaxAge)
		cookies := expectCookieNames(t, r, "access_token", "refresh_token")
		access1 := expectCookie(t, cookies["access_token"], "access_token", "/", "Lax", accessMaxAge)
		refresh1 := expectCookie(t, cookies["refresh_token"], "refresh_token", "/api/auth", "Strict", refreshMaxAge)
		if access1 == access0 || refresh1 == refresh0 {
			t.Fatal("refresh did not rotate the cookies")
		}
		if bodyAccess != access1 {
			t.Errorf("the body's access token is not the cookie's")
		}

		// A second tab that sent the old refresh token at the same time
		// (within the grace) gets a working token of the session too.
		tab := g.Plain(t)
		race := withCookie(tab, b.sameOrigin(), http.MethodPost, "/api/auth/refresh", "refresh_token="+refresh0)
		if elapsed := time.Since(started); elapsed >= refreshReuseGrace {
			t.Fatalf("the race took %v, longer than the reuse grace %v: too slow to test it", elapsed, refreshReuseGrace)
		}
		expectTokenBody(t, race, accessMaxAge)
		cookies = expectCookieNames(t, race, "access_token", "refresh_token")
		sibling := expectCookie(t, cookies["refresh_token"], "refresh_token", "/api/auth", "Strict", refreshMaxAge)
		if sibling == refresh1 || sibling == refresh0 {
			t.Errorf("the racing tab got a refresh token already in use")
		}

		expectTokenOf(t, access1, u.ID, sid, cookieAccessLifetime)
		expectNoEcho(t, r, refresh1)
		if got := b.cookie("refresh_token", "/api/auth"); got != refresh1 {
			t.Errorf("the profile holds refresh token %q, want the new one", got)
		}
		expectStatus(t, b.fetch(b.sameOrigin(), http.MethodGet, "/api/users/me", nil, ""), http.StatusOK)
		// Rotation is no logout: the session's earlier access token
		// still works until it expires.
		expectStatus(t, withCookie(plain, from{}, http.MethodGet, "/api/users/me", "access_token="+access0), http.StatusOK)

		// After the grace, someone replays the old refresh token (a
		// stolen copy): refused, and the whole session is revoked.
		time.Sleep(time.Until(rotated.Add(refreshReuseGrace + 200*time.Millisecond)))
		thief := g.Plain(t)
		r = withCookie(thief, from{}, http.MethodPost, "/api/auth/refresh", "refresh_token="+refresh0)
		expectBearerError(t, r, "Invalid refresh token")
		expectSessionCleared(t, r)
		if got := sessionState(t, g.DatabaseURL, u.ID); got != "reuse" {
			t.Errorf("session ended by %q, want reuse", got)
		}

		// The owner's newest refresh token fails too, and the answer
		// clears the profile's cookies.
		r = b.fetch(b.sameOrigin(), http.MethodPost, "/api/auth/refresh", nil, "")
		expectBearerError(t, r, "Invalid refresh token")
		expectSessionCleared(t, r)
		if got := b.cookieNames("/api/auth/refresh"); len(got) != 0 {
			t.Errorf("the profile still sends %v", got)
		}
		r = withCookie(tab, b.sameOrigin(), http.MethodPost, "/api/auth/refresh", "refresh_token="+sibling)
		expectBearerError(t, r, "Invalid refresh token")

		// Every access token of the session is refused at once: the
		// cookies' and the login body's.
		for _, token := range []string{access0, access1} {
			expectBearerError(t, withCookie(plain, from{}, http.MethodGet, "/api/users/me", "access_token="+token),
				"Could not validate credentials")
		}
		expectBearerError(t, plain.Get("/api/users/me", bodyToken), "Could not validate credentials")
		expectBearerError(t, withCookie(plain, from{}, http.MethodGet, "/api/documents/x", "access_token="+access1),
			"Could not validate credentials")
	})

	t.Run("LogoutEndsSession", func(t *testing.T) {
		t.Parallel()
		b, u, pw, login := newSignedIn(t)
		plain := g.Plain(t)
		bodyToken := expectTokenBody(t, login, tokenLifetime)
		access, refresh := b.cookie("access_token", "/"), b.cookie("refresh_token", "/api/auth")

		r := b.fetch(b.sameOrigin(), http.MethodPost, "/api/auth/logout", nil, "")
		expectStatus(t, r, http.StatusNoContent)
		if len(r.Body) != 0 {
			t.Errorf("logout body %q, want none", r.Body)
		}
		expectSessionCleared(t, r)
		if got := b.cookieNames("/api/auth/refresh"); len(got) != 0 {
			t.Errorf("after logout the profile still sends %v", got)
		}
		if got := sessionState(t, g.DatabaseURL, u.ID); got != "logout" {
			t.Errorf("session ended by %q, want logout", got)
		}

		// The profile has no credential left; copies of the old ones
		// are refused.
		expectBearerError(t, b.fetch(b.sameOrigin(), http.MethodGet, "/api/users/me", nil, ""), "Not authenticated")
		expectBearerError(t, withCookie(plain, from{}, http.MethodGet, "/api/users/me", "access_token="+access),
			"Could not validate credentials")
		expectBearerError(t, plain.Get("/api/users/me", bodyToken), "Could not validate credentials")
		r = withCookie(plain, from{}, http.MethodPost, "/api/auth/refresh", "refresh_token="+refresh)
		expectBearerError(t, r, "Invalid refresh token")

		// Logging out again is harmless; signing in again works.
		expectStatus(t, b.fetch(b.sameOrigin(), http.MethodPost, "/api/auth/logout", nil, ""), http.StatusNoContent)
		expectStatus(t, b.login(b.sameOrigin(), u.Email, pw), http.StatusOK)
		expectStatus(t, b.fetch(b.sameOrigin(), http.MethodGet, "/api/users/me", nil, ""), http.StatusOK)
	})

	t.Run("CrossSiteRequestRefused", func(t *testing.T) {
		t.Parallel()
		b, u, pw, _ := newSignedIn(t)
		access, refresh := b.cookie("access_token", "/"), b.cookie("refresh_token", "/api/auth")
		marker := "/api/documents/csrf-" + randomHex(6)

		for _, tc := range []struct {
			name         string
			f            from
			method, path string
			body         string
		}{
			{"upload", crossSite, http.MethodPost, marker, "payload"},
			{"profile", crossSite, http.MethodPut, "/api/profile", `{"full_name": "Pwned"}`},
			{"logout-all", crossSite, http.MethodPost, "/api/auth/logout-all", ""},
			{"refresh", crossSite, http.MethodPost, "/api/auth/refresh", ""},
			{"logout", crossSite, http.MethodPost, "/api/auth/logout", ""},
			{"delete document", crossSite, http.MethodDelete, marker + "/1", ""},
			{"same-site", from{"https://docs.example", "same-site"}, http.MethodPost, marker, "payload"},
			{"older browser, Origin only", from{evilOrigin, ""}, http.MethodPost, marker, "payload"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				var body io.Reader
				if tc.body != "" {
					body = strings.NewReader(tc.body)
				}
				r := b.fetch(tc.f, tc.method, tc.path, body, "application/json")
				expectDetail(t, r, http.StatusForbidden, "Cross-origin request refused")
				if got := r.Header.Values("Set-Cookie"); len(got) != 0 {
					t.Errorf("the refusal sets cookies: %q", got)
				}
			})
		}
		if got := g.Doc.WithPathPrefix(marker); len(got) != 0 {
			t.Errorf("%d cross-site requests reached the document service", len(got))
		}
		// Nothing changed: same session, same cookies, same profile.
		if b.cookie("access_token", "/") != access || b.cookie("refresh_token", "/api/auth") != refresh {
			t.Errorf("a cross-site request changed the cookies")
		}
		if got := sessionState(t, g.DatabaseURL, u.ID); got != "" {
			t.Errorf("a cross-site request ended the session (%s)", got)
		}
		prof := b.fetch(b.sameOrigin(), http.MethodGet, "/api/profile", nil, "")
		expectStatus(t, prof, http.StatusOK)
		if fn := prof.JSON(t)["full_name"]; fn != nil {
			t.Errorf("full_name %v after a cross-site PUT, want null", fn)
		}

		// The same requests from the site itself pass.
		r := b.fetch(b.sameOrigin(), http.MethodPost, marker, strings.NewReader("payload"), "application/json")
		expectStatus(t, r, http.StatusOK)
		expectOnlyUserID(t, oneRequest(t, g.Doc, marker, func(r StubRequest) bool { return r.Path == marker }), u.ID)
		r = b.fetch(b.sameOrigin(), http.MethodPut, "/api/profile", strings.NewReader(`{"full_name": "Ada"}`), "application/json")
		expectStatus(t, r, http.StatusOK)
		if fn := r.JSON(t)["full_name"]; fn != "Ada" {
			t.Errorf("full_name %v, want Ada", fn)
		}

		// A safe cross-site request (a link followed to the site) is
		// not refused: SameSite=Lax cookies come with it by design.
		expectStatus(t, b.fetch(crossSite, http.MethodGet, "/api/users/me", nil, ""), http.StatusOK)
		// A Bearer token is never a browser's ambient credential: a
		// cross-origin request with one is not checked.
		req := b.NewRequest(http.MethodPost, "/api/documents/bearer-"+randomHex(6), strings.NewReader("payload"))
		req.Header.Set("Origin", evilOrigin)
		req.Header.Set("Sec-Fetch-Site", "cross-site")
		setToken(req, access)
		expectStatus(t, b.Do(req), http.StatusOK)

		// A foreign page posting the login form gets no cookies: it
		// cannot sign the visitor in to an account of its choosing.
		other := g.Browser(t)
		r = other.login(crossSite, u.Email, pw)
		expectTokenBody(t, r, tokenLifetime)
		if got := r.Header.Values("Set-Cookie"); len(got) != 0 {
			t.Errorf("a cross-site login sets cookies: %q", got)
		}
		if got := other.cookieNames("/api/auth/refresh"); len(got) != 0 {
			t.Errorf("after a cross-site login the profile holds %v", got)
		}
	})
}
