package e2e

// Rate limits of /api/auth/*, per client address and per account name,
// shared by every instance.

import (
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

// ---------------------------------------------------------------------
// Rate limits

// Details and limits of TestRateLimits. The lock is short, for the test
// to see it end, but long enough for a loaded machine to make the next
// attempts while it lasts.
const (
	detailTooMany     = "Too many requests"
	detailLoginLocked = "Too many failed login attempts, try again later"
	rlIPRequests      = 8
	rlIPWindow        = time.Minute
	rlLoginFailures   = 3
	rlLockout         = 4 * time.Second
	rateLimitOptions  = `rate_limit {
		ip_requests 8 1m
		login_failures 3 1m
		lockout 4s 4s
	}`
)

// retryRange is the range a Retry-After must be in, in whole seconds.
type retryRange struct{ lo, hi int }

// expectRetryAfter checks a 429 with detail and a Retry-After of whole
// seconds in want, and returns it.
func expectRetryAfter(tb testing.TB, r *Response, detail string, want retryRange) int {
	tb.Helper()
	lo, hi := want.lo, want.hi
	expectDetail(tb, r, http.StatusTooManyRequests, detail)
	got := r.Header.Values("Retry-After")
	n, err := 0, error(nil)
	if len(got) == 1 {
		n, err = strconv.Atoi(got[0])
	}
	if len(got) != 1 || err != nil || n < lo || n > hi {
		tb.Fatalf("Retry-After %q, want one value in [%d, %d]", got, lo, hi)
	}
	return n
}

// retryBounds returns the range of a Retry-After (whole seconds, rounded
// up) of a limit that lasts limit from some moment after since: from
// what may be left of it now, to all of it.
func retryBounds(limit time.Duration, since time.Time) retryRange {
	left := limit - time.Since(since)
	return retryRange{max(1, int(math.Ceil(left.Seconds()))), int(math.Ceil(limit.Seconds()))}
}

// ipWindowRetry is retryBounds of the per-address window (1m in both
// TestRateLimits and TestInstancesShareOneDatabase) whose first request
// was sent at start.
func ipWindowRetry(start time.Time) retryRange { return retryBounds(rlIPWindow, start) }

// loginForm is a sign-in form.
func loginForm(email, password string) url.Values {
	return url.Values{"username": {email}, "password": {password}}
}

func TestRateLimits(t *testing.T) {
	t.Parallel()
	g := startGateway(t, GatewayOptions{Caddyfile: testCaddyfile(t, "", rateLimitOptions)})

	// An attacker guessing one account's password is stopped after
	// login_failures attempts, the owner too (the price of the limit);
	// but the lock ends by itself, and then the owner signs in.
	t.Run("LoginLockout", func(t *testing.T) {
		t.Parallel()
		owner, attacker := g.Client(t), g.Client(t)
		pw := randomPassword()
		u := owner.Register(uniqueEmail(t), pw)
		guess := randomPassword()
		var lastTry time.Time // the lock starts with the last allowed attempt
		for range rlLoginFailures {
			lastTry = time.Now()
			expectBearerError(t, attacker.PostForm("/api/auth/login", loginForm(u.Email, guess)), "Incorrect email or password")
		}
		r := attacker.PostForm("/api/auth/login", loginForm(u.Email, guess))
		locked := time.Now()
		if took := locked.Sub(lastTry); took >= rlLockout {
			t.Fatalf("the last attempts took %v, as long as the lock (%v): too slow to see it", took, rlLockout)
		}
		retry := expectRetryAfter(t, r, detailLoginLocked, retryBounds(rlLockout, lastTry))
		expectNoEcho(t, r, guess)
		// The name is locked, whatever the address and the password.
		r = owner.PostForm("/api/auth/login", loginForm(strings.ToUpper(u.Email), pw))
		expectRetryAfter(t, r, detailLoginLocked, retryRange{retryBounds(rlLockout, lastTry).lo, retry})
		expectNoEcho(t, r, pw)

		// No permanent lockout: after Retry-After, the owner gets in.
		time.Sleep(time.Until(locked.Add(time.Duration(retry) * time.Second)))
		token := owner.Login(u.Email, pw)
		expectStatus(t, owner.Get("/api/users/me", token), http.StatusOK)
		// Success forgot the failures: a wrong guess is a plain 401
		// again, not a lock.
		expectBearerError(t, attacker.PostForm("/api/auth/login", loginForm(u.Email, guess)), "Incorrect email or password")
	})

	// One address hammering /api/auth/* is refused after ip_requests in
	// the window; another address is not affected.
	t.Run("PerAddress", func(t *testing.T) {
		t.Parallel()
		hammer, other := g.Client(t), g.Client(t)
		if hammer.SourceIP == "" {
			t.Skip("every client has the address 127.0.0.1 here")
		}
		start := time.Now()
		for i := range rlIPRequests {
			// A different name each time: the per-account limit stays out of it.
			r := hammer.PostForm("/api/auth/login", loginForm(fmt.Sprintf("nobody%d.%s", i, uniqueEmail(t)), password))
			expectBearerError(t, r, "Incorrect email or password")
		}
		r := hammer.PostForm("/api/auth/login", loginForm("late."+uniqueEmail(t), password))
		expectRetryAfter(t, r, detailTooMany, ipWindowRetry(start))
		// Every /api/auth/* route is behind the limit ...
		r = hammer.PostJSON("/api/auth/register", "", map[string]string{"email": uniqueEmail(t), "password": password})
		expectRetryAfter(t, r, detailTooMany, ipWindowRetry(start))
		expectRetryAfter(t, hammer.PostJSON("/api/auth/refresh", "", ""), detailTooMany, ipWindowRetry(start))
		// ... but the public keys and the rest of the API are not.
		expectStatus(t, hammer.Get("/api/auth/jwks.json", ""), http.StatusOK)
		expectBearerError(t, hammer.Get("/api/users/me", ""), "Not authenticated")

		// Another address is unaffected.
		expectBearerError(t, other.PostForm("/api/auth/login", loginForm("nobody."+uniqueEmail(t), password)), "Incorrect email or password")
		u, _, token := other.NewUser()
		if got := expectUserObject(t, other.Get("/api/users/me", token).Body); got.ID != u.ID {
			t.Errorf("me is %s, want %s", got.ID, u.ID)
		}
	})
}
