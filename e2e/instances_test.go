package e2e

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// Several gateway instances on one database behave as one: a change made
// through one instance (an admin's, a logout-all, a refresh-token
// rotation, rate-limit counts) holds on the others, within a second for
// what travels by the database's notifications (accounts/notify.go).

// propagationLimit is how soon a change made through one instance must
// hold on another.
const propagationLimit = time.Second

// instanceOptions are the accounts options of TestInstancesShareOneDatabase:
// no refresh reuse grace (any second use of a refresh token is a reuse),
// and rate limits small enough to reach.
const instanceOptions = `sessions {
	refresh_reuse_grace off
}
rate_limit {
	ip_requests 10 1m
	login_failures 3 1m
	lockout 1m
}`

// startInstances starts n gateways at once on one fresh database with
// one stub document service, running caddyfile, and stops them when t
// ends.
func startInstances(t *testing.T, n int, caddyfile string) []*Gateway {
	t.Helper()
	opts := make([]GatewayOptions, n)
	for i := range opts {
		opts[i].Caddyfile = caddyfile
	}
	return startInstancesWith(t, opts...)
}

// startInstancesWith starts one gateway per options at once, all on one
// fresh database with one stub document service (their DatabaseURL and
// DocService are set), and stops them when t ends.
func startInstancesWith(t *testing.T, opts ...GatewayOptions) []*Gateway {
	t.Helper()
	dbURL := newDatabase(t)
	doc := NewDocStub()
	t.Cleanup(doc.Close)
	gws := make([]*Gateway, len(opts))
	errs := make([]error, len(opts))
	var wg sync.WaitGroup
	for i := range gws {
		o := opts[i]
		o.DatabaseURL, o.DocService = dbURL, doc.Addr()
		wg.Go(func() {
			gws[i], errs[i] = launchGateway(o)
		})
	}
	wg.Wait()
	for _, g := range gws {
		if g == nil {
			continue
		}
		g.Doc = doc
		t.Cleanup(func() {
			if err := g.Stop(); err != nil {
				t.Errorf("stopping the gateway: %v\n--- gateway output (tail):\n%s", err, g.LogTail(4000))
			}
		})
	}
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return gws
}

// viaGateway returns a copy of c that speaks to gateway g, from the same client
// address.
func viaGateway(c *Client, g *Gateway) *Client {
	cc := *c
	cc.Base = g.URL
	return &cc
}

// propagation polls check (every few milliseconds, up to five times
// propagationLimit) until it returns "", and returns how long after
// since that was. It fails t if check never succeeds or succeeds only
// after propagationLimit.
func propagation(t *testing.T, what string, since time.Time, check func() string) time.Duration {
	t.Helper()
	deadline := since.Add(5 * propagationLimit)
	for {
		msg := check()
		took := time.Since(since)
		if msg == "" {
			t.Logf("%s: %v", what, took.Round(time.Millisecond))
			if took >= propagationLimit {
				t.Errorf("%s took %v, want less than %v", what, took, propagationLimit)
			}
			return took
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not after %v: %s", what, took, msg)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// statusIs returns a check that r() answers status.
func statusIs(status int, r func() *Response) func() string {
	return func() string {
		if got := r(); got.Status != status {
			return fmt.Sprintf("status %d %s, want %d", got.Status, truncate(got.Body, 200), status)
		}
		return ""
	}
}

// patchUser sends PATCH /api/admin/users/{id} as the admin of token.
func patchUser(c *Client, token, id, body string) *Response {
	c.t.Helper()
	req := c.NewRequest(http.MethodPatch, "/api/admin/users/"+id, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	setToken(req, token)
	return c.Do(req)
}

// refreshCookieOf returns the refresh token that a login answer sets as a
// cookie, as a client that is not a browser reads it.
func refreshCookieOf(t *testing.T, r *Response) string {
	t.Helper()
	for _, raw := range r.Header.Values("Set-Cookie") {
		if c, err := http.ParseSetCookie(raw); err == nil && c.Name == "refresh_token" && c.Value != "" {
			return c.Value
		}
	}
	t.Fatalf("no refresh_token cookie in %q", r.Header.Values("Set-Cookie"))
	return ""
}

// refreshBody is the answer of a refresh made with a body token.
type refreshBody struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	RefreshToken string `json:"refresh_token"`
}

// exchangeRefresh refreshes with a body token and expects success: exactly the
// four members, a new refresh token, and no cookies.
func exchangeRefresh(t *testing.T, c *Client, token string) refreshBody {
	t.Helper()
	r := c.PostJSON("/api/auth/refresh", "", map[string]string{"refresh_token": token})
	expectStatus(t, r, http.StatusOK)
	var b refreshBody
	r.Decode(t, &b)
	if len(r.JSON(t)) != 4 || b.AccessToken == "" || b.TokenType != "bearer" ||
		b.ExpiresIn != int64(15*time.Minute/time.Second) || b.RefreshToken == "" || b.RefreshToken == token {
		t.Fatalf("refresh body %s, want access_token, token_type bearer, expires_in 900 and a new refresh_token", r.Body)
	}
	if got := r.Header.Values("Set-Cookie"); len(got) != 0 {
		t.Errorf("a refresh with a body token sets cookies: %q", got)
	}
	return b
}

// TestInstancesShareOneDatabase runs two gateway processes on one
// database and makes changes through the first (A) that must hold on the
// second (B).
func TestInstancesShareOneDatabase(t *testing.T) {
	t.Parallel()
	gws := startInstances(t, 2, testCaddyfile(t, "", instanceOptions))
	a, b := gws[0], gws[1]

	// An admin, made one through the database, signed in on A.
	adminClient := a.Client(t)
	admin := adminClient.Register(uniqueEmail(t), password)
	a.Exec(t, "UPDATE users SET role = 'admin' WHERE id = $1", admin.ID)
	adminToken := adminClient.Login(admin.Email, password)

	t.Run("Deactivation", func(t *testing.T) {
		t.Parallel()
		ca := a.Client(t)
		cb := viaGateway(ca, b)
		u := ca.Register(uniqueEmail(t), password)
		token := ca.Login(u.Email, password)
		// Both instances know the user (and cache them).
		for _, c := range []*Client{ca, cb, cb} {
			expectStatus(t, c.Get("/api/users/me", token), http.StatusOK)
		}
		expectStatus(t, cb.Get("/api/documents/x", token), http.StatusOK)

		r := patchUser(adminClient, adminToken, u.ID, `{"is_active": false}`)
		done := time.Now()
		expectStatus(t, r, http.StatusOK)
		if got := expectUserObject(t, r.Body); got.IsActive {
			t.Fatalf("PATCH answered %s", r.Body)
		}
		propagation(t, "deactivation on A refused on B after", done,
			statusIs(http.StatusUnauthorized, func() *Response { return cb.Get("/api/users/me", token) }))
		expectBearerError(t, cb.Get("/api/users/me", token), "Could not validate credentials")
		expectBearerError(t, cb.Get("/api/documents/x", token), "Could not validate credentials")
		expectBearerError(t, ca.Get("/api/users/me", token), "Could not validate credentials")
		r = cb.PostForm("/api/auth/login", url.Values{"username": {u.Email}, "password": {password}})
		expectDetail(t, r, http.StatusForbidden, "Inactive user")
	})

	// The instance that made the change does not wait for the database's
	// notification: the user's very next request there sees it (API.md),
	// even sent the moment the PATCH is answered. Repeated, because a
	// stale cache loses that race only now and then. A deactivation ends
	// the user's tokens for good, so each round signs in anew (from a
	// client address of its own: ip_requests is small here).
	t.Run("DeactivationAtOnceOnTheSameInstance", func(t *testing.T) {
		t.Parallel()
		ca := a.Client(t)
		u := ca.Register(uniqueEmail(t), password)
		for i := range 25 {
			token := a.Client(t).Login(u.Email, password)
			expectStatus(t, ca.Get("/api/users/me", token), http.StatusOK)
			expectStatus(t, ca.Get("/api/users/me", token), http.StatusOK) // now cached
			expectStatus(t, patchUser(adminClient, adminToken, u.ID, `{"is_active": false}`), http.StatusOK)
			if r := ca.Get("/api/users/me", token); r.Status != http.StatusUnauthorized {
				t.Fatalf("round %d: the request right after the deactivation got %d %s", i, r.Status, r.Body)
			}
			expectStatus(t, patchUser(adminClient, adminToken, u.ID, `{"is_active": true}`), http.StatusOK)
		}
	})

	t.Run("Demotion", func(t *testing.T) {
		t.Parallel()
		ca := a.Client(t)
		cb := viaGateway(ca, b)
		second := ca.Register(uniqueEmail(t), password)
		a.Exec(t, "UPDATE users SET role = 'admin' WHERE id = $1", second.ID)
		token := ca.Login(second.Email, password)
		for _, c := range []*Client{ca, cb, cb} {
			expectStatus(t, c.Get("/api/admin/users?limit=1", token), http.StatusOK)
		}

		r := patchUser(adminClient, adminToken, second.ID, `{"role": "user"}`)
		done := time.Now()
		expectStatus(t, r, http.StatusOK)
		if got := expectUserObject(t, r.Body); got.Role != "user" {
			t.Fatalf("PATCH answered %s", r.Body)
		}
		propagation(t, "demotion on A refused on B after", done,
			statusIs(http.StatusForbidden, func() *Response { return cb.Get("/api/admin/users?limit=1", token) }))
		expectDetail(t, cb.Get("/api/admin/users?limit=1", token), http.StatusForbidden, "Not enough permissions")
		expectDetail(t, ca.Get("/api/admin/users?limit=1", token), http.StatusForbidden, "Not enough permissions")
		// Still a signed-in user, with a user's rights.
		if got := expectUserObject(t, cb.Get("/api/users/me", token).Body); got.Role != "user" {
			t.Errorf("me on B says role %q, want user", got.Role)
		}
	})

	t.Run("LogoutAll", func(t *testing.T) {
		t.Parallel()
		ca := a.Client(t)
		cb := viaGateway(ca, b)
		u := ca.Register(uniqueEmail(t), password)
		tokenA := ca.Login(u.Email, password)
		tokenB := cb.Login(u.Email, password)
		for _, c := range []*Client{ca, cb, cb} {
			for _, tok := range []string{tokenA, tokenB} {
				expectStatus(t, c.Get("/api/users/me", tok), http.StatusOK)
			}
		}

		req := ca.NewRequest(http.MethodPost, "/api/auth/logout-all", nil)
		setToken(req, tokenA)
		r := ca.Do(req)
		done := time.Now()
		expectStatus(t, r, http.StatusNoContent)
		// On A at once: the instance that logged out refuses on the very next request.
		expectBearerError(t, ca.Get("/api/users/me", tokenB), "Could not validate credentials")
		propagation(t, "logout-all on A refused on B after", done, func() string {
			for _, tok := range []string{tokenA, tokenB} {
				if got := cb.Get("/api/users/me", tok); got.Status != http.StatusUnauthorized {
					return fmt.Sprintf("status %d %s", got.Status, truncate(got.Body, 200))
				}
			}
			return ""
		})
		for _, tok := range []string{tokenA, tokenB} {
			expectBearerError(t, cb.Get("/api/users/me", tok), "Could not validate credentials")
			expectBearerError(t, cb.Get("/api/documents/x", tok), "Could not validate credentials")
		}
		// A new sign-in on B works.
		expectStatus(t, cb.Get("/api/users/me", cb.Login(u.Email, password)), http.StatusOK)
	})

	t.Run("RefreshRotation", func(t *testing.T) {
		t.Parallel()
		ca := a.Client(t)
		cb := viaGateway(ca, b)
		u := ca.Register(uniqueEmail(t), password)
		login := ca.PostForm("/api/auth/login", url.Values{"username": {u.Email}, "password": {password}})
		expectStatus(t, login, http.StatusOK)
		refresh0 := refreshCookieOf(t, login)

		// Rotated on A; the new token is good once, on B.
		first := exchangeRefresh(t, ca, refresh0)
		second := exchangeRefresh(t, cb, first.RefreshToken)
		expectStatus(t, ca.Get("/api/users/me", second.AccessToken), http.StatusOK)
		expectStatus(t, cb.Get("/api/users/me", second.AccessToken), http.StatusOK)

		// Used again, on A: a reuse, which revokes the session everywhere.
		r := ca.PostJSON("/api/auth/refresh", "", map[string]string{"refresh_token": first.RefreshToken})
		revoked := time.Now()
		expectBearerError(t, r, "Invalid refresh token")
		propagation(t, "refresh reuse on A refused on B after", revoked,
			statusIs(http.StatusUnauthorized, func() *Response { return cb.Get("/api/users/me", second.AccessToken) }))
		for _, tok := range []string{first.AccessToken, second.AccessToken} {
			expectBearerError(t, cb.Get("/api/users/me", tok), "Could not validate credentials")
			expectBearerError(t, ca.Get("/api/users/me", tok), "Could not validate credentials")
		}
		for _, tok := range []string{second.RefreshToken, refresh0} {
			expectBearerError(t, cb.PostJSON("/api/auth/refresh", "", map[string]string{"refresh_token": tok}), "Invalid refresh token")
		}
		if got := sessionState(t, a.DatabaseURL, u.ID); got != "reuse" {
			t.Errorf("session ended by %q, want reuse", got)
		}
	})

	// The rate-limit counts are the database's: one address, or one
	// account name, counts the same whichever instance it speaks to.
	t.Run("RateLimitsShared", func(t *testing.T) {
		t.Parallel()
		owner := a.Client(t)
		u := owner.Register(uniqueEmail(t), password)
		attackerA := a.Client(t)
		attackerB := viaGateway(attackerA, b)
		guess := randomPassword()
		var lastTry time.Time // the lock starts with the last allowed attempt
		for _, c := range []*Client{attackerA, attackerB, attackerA} {
			lastTry = time.Now()
			expectBearerError(t, c.PostForm("/api/auth/login", loginForm(u.Email, guess)), "Incorrect email or password")
		}
		r := attackerB.PostForm("/api/auth/login", loginForm(u.Email, guess))
		expectRetryAfter(t, r, detailLoginLocked, retryBounds(time.Minute, lastTry))
		r = attackerA.PostForm("/api/auth/login", loginForm(u.Email, guess))
		expectRetryAfter(t, r, detailLoginLocked, retryBounds(time.Minute, lastTry))
		r = viaGateway(owner, b).PostForm("/api/auth/login", loginForm(u.Email, password))
		expectRetryAfter(t, r, detailLoginLocked, retryBounds(time.Minute, lastTry))

		hammerA := a.Client(t)
		if hammerA.SourceIP == "" {
			t.Skip("every client has the address 127.0.0.1 here")
		}
		hammerB := viaGateway(hammerA, b)
		start := time.Now()
		for i := range 10 {
			c := []*Client{hammerA, hammerB}[i%2]
			expectBearerError(t, c.PostJSON("/api/auth/refresh", "", ""), "Invalid refresh token")
		}
		expectRetryAfter(t, hammerA.PostJSON("/api/auth/refresh", "", ""), detailTooMany, ipWindowRetry(start))
		expectRetryAfter(t, hammerB.PostJSON("/api/auth/refresh", "", ""), detailTooMany, ipWindowRetry(start))
		// Another address is unaffected on either instance.
		other := a.Client(t)
		for _, c := range []*Client{other, viaGateway(other, b)} {
			expectBearerError(t, c.PostJSON("/api/auth/refresh", "", ""), "Invalid refresh token")
		}
	})
}
