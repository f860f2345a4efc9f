package accounts

import (
	"net/http"
	"sync"
	"testing"
	"time"
)

// startListening runs the service's change listener for the test and
// waits until it listens.
func (e *testEnv) startListening() {
	e.t.Helper()
	runService(e.t, e.svc)
	deadline := time.Now().Add(10 * time.Second)
	for !e.svc.cache.listening.Load() {
		if time.Now().After(deadline) {
			e.t.Fatal("the listener did not start")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// eventually polls cond for up to a second: the contract's bound for a
// change to reach every instance.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 1s: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestCachedUserStateFollowsTheDatabase changes a user behind the
// service's back, as another instance would, and sees the next requests
// refused although the user's state was cached.
func TestCachedUserStateFollowsTheDatabase(t *testing.T) {
	e := newTestEnv(t)
	e.startListening()
	u, token := e.user("cached@example.com")
	_, adminToken := e.admin("boss@example.com")

	for i := 0; i < 3; i++ { // warm both caches
		if r := e.do("GET", "/api/users/me", token, nil); r.Status != 200 {
			t.Fatalf("me: %d %s", r.Status, r.Body)
		}
	}
	if _, ok := e.svc.cache.user(u.ID, time.Now()); !ok {
		t.Fatal("the user's state is not cached while listening")
	}

	e.exec("UPDATE users SET is_active = false WHERE id = $1", u.ID)
	eventually(t, "deactivation refuses the old token", func() bool {
		r := e.do("GET", "/api/users/me", token, nil)
		return r.Status == http.StatusUnauthorized && r.Detail(t) == `"Could not validate credentials"`
	})

	e.exec("UPDATE users SET is_active = true WHERE id = $1", u.ID)
	eventually(t, "reactivation lets the token in again", func() bool {
		return e.do("GET", "/api/users/me", token, nil).Status == http.StatusOK
	})

	e.exec("DELETE FROM users WHERE id = $1", u.ID)
	eventually(t, "deletion refuses the old token", func() bool {
		return e.do("GET", "/api/users/me", token, nil).Status == http.StatusUnauthorized
	})

	if r := e.do("GET", "/api/users/me", adminToken, nil); r.Status != 200 || r.JSON(t).(map[string]any)["role"] != "admin" {
		t.Fatalf("admin me: %d %s", r.Status, r.Body)
	}
	e.exec("UPDATE users SET role = 'user' WHERE email = 'boss@example.com'")
	eventually(t, "demotion shows in the next request", func() bool {
		r := e.do("GET", "/api/users/me", adminToken, nil)
		return r.Status == 200 && r.JSON(t).(map[string]any)["role"] == "user"
	})
}

// TestUserCacheNeverKeepsAStaleRead races reads of a user against
// notifications: a read that started before a change must not be cached
// after the change's notification.
func TestUserCacheNeverKeepsAStaleRead(t *testing.T) {
	c := newAuthCache(10)
	c.listening.Store(true)
	now := time.Now()
	stale := &User{ID: "u", IsActive: true}

	epoch := c.epoch.Load() // a read begins
	c.invalidate("u")       // the change's notification arrives
	c.storeUser(stale, epoch, now)
	if _, ok := c.user("u", now); ok {
		t.Fatal("a read older than a notification was cached")
	}

	var wg sync.WaitGroup
	for i := 0; i < 100; i++ {
		wg.Add(2)
		go func() { defer wg.Done(); c.storeUser(stale, c.epoch.Load(), now) }()
		go func() { defer wg.Done(); c.invalidate("u") }()
	}
	wg.Wait()
	c.invalidate("u")
	if _, ok := c.user("u", now); ok {
		t.Fatal("cached after the last invalidation")
	}

	c.listening.Store(false)
	c.storeUser(stale, c.epoch.Load(), now)
	if _, ok := c.user("u", now); ok {
		t.Fatal("cached while not listening")
	}
}

func TestTokenCacheHonoursExpiry(t *testing.T) {
	ti := newTestIssuer(t)
	tok, claims, err := ti.Issue(testUser)
	if err != nil {
		t.Fatal(err)
	}
	c := newAuthCache(2)
	key := tokenKey(tok)
	c.tokens.put(key, claims)
	if _, ok := c.claims(key, time.Now(), 0); !ok {
		t.Fatal("fresh token not found")
	}
	if _, ok := c.claims(key, claims.ExpiresAt.Add(time.Second), 0); ok {
		t.Fatal("expired token served from the cache")
	}
	if _, ok := c.tokens.get(key); ok {
		t.Fatal("expired token kept in the cache")
	}
	for i := 0; i < 10; i++ {
		c.tokens.put([32]byte{byte(i)}, claims)
	}
	if n := len(c.tokens.m); n > 2 {
		t.Fatalf("cache holds %d entries, bound is 2", n)
	}
}
