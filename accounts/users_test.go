package accounts

import (
	"net/http"
	"strings"
	"testing"
)

func TestMe(t *testing.T) {
	e := newTestEnv(t)
	u, token := e.user("me@example.com")
	r := e.do("GET", "/api/users/me", token, nil)
	if r.Status != http.StatusOK || r.JSON(t).(map[string]any)["id"] != u.ID {
		t.Fatalf("me: %d %s", r.Status, r.Body)
	}
	if strings.Contains(string(r.Body), "hashed_password") {
		t.Fatal("the hash is in the user object")
	}

	noAuth := e.do("GET", "/api/users/me", "", nil)
	if noAuth.Status != 401 || noAuth.Detail(t) != `"Not authenticated"` || noAuth.Header.Get("WWW-Authenticate") != "Bearer" {
		t.Fatalf("no token: %d %s", noAuth.Status, noAuth.Body)
	}
	bad := e.do("GET", "/api/users/me", "garbage", nil)
	if bad.Status != 401 || bad.Detail(t) != `"Could not validate credentials"` || bad.Header.Get("WWW-Authenticate") != "Bearer" {
		t.Fatalf("bad token: %d %s", bad.Status, bad.Body)
	}

	e.exec("UPDATE users SET is_active = false WHERE id = $1", u.ID)
	if r := e.do("GET", "/api/users/me", token, nil); r.Status != 401 || r.Detail(t) != `"Could not validate credentials"` {
		t.Fatalf("inactive user: %d %s", r.Status, r.Body)
	}
	e.exec("DELETE FROM users WHERE id = $1", u.ID)
	if r := e.do("GET", "/api/users/me", token, nil); r.Status != 401 || r.Detail(t) != `"Could not validate credentials"` {
		t.Fatalf("deleted user: %d %s", r.Status, r.Body)
	}
}
