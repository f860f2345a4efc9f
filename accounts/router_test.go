package accounts

import (
	"net/http"
	"net/url"
	"testing"
)

func TestRoutingErrors(t *testing.T) {
	e := newTestEnv(t)
	if r := e.do("GET", "/api/nothing-here", "", nil); r.Status != 404 || r.Detail(t) != `"Not Found"` {
		t.Errorf("unknown path: %d %s", r.Status, r.Body)
	}
	r := e.do("GET", "/api/auth/login", "", nil)
	if r.Status != 405 || r.Detail(t) != `"Method Not Allowed"` || r.Header.Get("Allow") != "POST" {
		t.Errorf("wrong method: %d %s %v", r.Status, r.Body, r.Header)
	}
	if r := e.do("GET", "/api/health", "", nil); r.Status != 200 || string(r.Body) != `{"status":"ok"}` {
		t.Errorf("health: %d %s", r.Status, r.Body)
	}
}

// TestDatabaseOutage closes the pool under the service: requests get 503
// with a JSON detail, never a 500.
func TestDatabaseOutage(t *testing.T) {
	e := newTestEnv(t)
	_, token := e.user("down@example.com")
	e.db.Close()
	for _, c := range []struct{ method, path, token string }{
		{"GET", "/api/health", ""},
		{"GET", "/api/users/me", token},
	} {
		r := e.do(c.method, c.path, c.token, nil)
		if r.Status != http.StatusServiceUnavailable {
			t.Errorf("%s %s with the database gone: %d %s, want 503", c.method, c.path, r.Status, r.Body)
		}
	}
	r := e.do("POST", "/api/auth/login", "", url.Values{"username": {"down@example.com"}, "password": {"Secret!pw1"}})
	if r.Status != 503 || r.Detail(t) != `"Service temporarily unavailable"` {
		t.Errorf("login with the database gone: %d %s", r.Status, r.Body)
	}
}
