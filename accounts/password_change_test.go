package accounts

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

func TestChangePassword(t *testing.T) {
	e := newTestEnv(t, noRateLimit)
	e.startListening()
	u := e.register("change@example.com", "Secret!pw1")
	mine, mineRefresh := e.loginTokens("change@example.com", "Secret!pw1")
	b := e.newBrowser("TestBrowser/1.0")
	b.login("change@example.com", "Secret!pw1")
	otherRefresh := b.cookie("refresh_token", "/api/auth")
	legacy, _, _ := e.svc.Tokens().Issue(u)
	if r := b.do("GET", "/api/users/me", nil); r.Status != 200 {
		t.Fatalf("me: %d", r.Status)
	}

	for _, c := range []struct {
		name   string
		body   any
		status int
		detail string
	}{
		{"wrong current password", map[string]string{"current_password": "Wrong!pw1", "new_password": "Changed!pw2"}, 400, `"Incorrect password"`},
		{"weak new password", map[string]string{"current_password": "Secret!pw1", "new_password": "weak"}, 422,
			`[{"type":"value_error","loc":["body","new_password"],"msg":"Value error, Password must be at least 8 characters long"},` +
				`{"type":"value_error","loc":["body","new_password"],"msg":"Value error, Password must contain at least one uppercase letter"},` +
				`{"type":"value_error","loc":["body","new_password"],"msg":"Value error, Password must contain at least one special character"}]`},
		{"new password with test", map[string]string{"current_password": "Wrong!pw1", "new_password": "MyTest!pw2"}, 422,
			`[{"type":"value_error","loc":["body","new_password"],"msg":"Value error, Password must not contain the word \"test\""}]`},
		{"missing fields", map[string]string{}, 422,
			`[{"type":"missing","loc":["body","current_password"],"msg":"Field required"},{"type":"missing","loc":["body","new_password"],"msg":"Field required"}]`},
		{"not strings", map[string]any{"current_password": 1, "new_password": nil}, 422,
			`[{"type":"string_type","loc":["body","current_password"],"msg":"Input should be a valid string"},{"type":"string_type","loc":["body","new_password"],"msg":"Input should be a valid string"}]`},
		{"extra field", map[string]string{"current_password": "Secret!pw1", "new_password": "Changed!pw2", "email": "x@y.co"}, 422,
			`[{"type":"extra_forbidden","loc":["body","email"],"msg":"Extra inputs are not permitted"}]`},
		{"same password", map[string]string{"current_password": "Secret!pw1", "new_password": "Secret!pw1"}, 400, `"New password cannot be the same as the current one"`},
	} {
		r := e.do("POST", "/api/users/me/password", mine, c.body)
		if r.Status != c.status || r.Detail(t) != c.detail {
			t.Errorf("%s: %d %s\nwant %d %s", c.name, r.Status, r.Detail(t), c.status, c.detail)
		}
		if strings.Contains(string(r.Body), "pw1") || strings.Contains(string(r.Body), "pw2") {
			t.Errorf("%s: a password is echoed: %s", c.name, r.Body)
		}
	}
	if r := e.do("POST", "/api/users/me/password", "", map[string]string{"current_password": "Secret!pw1", "new_password": "Changed!pw2"}); r.Status != 401 {
		t.Fatalf("unauthenticated: %d", r.Status)
	}
	e.login("change@example.com", "Secret!pw1") // nothing changed so far

	r := e.do("POST", "/api/users/me/password", mine, map[string]string{"current_password": "Secret!pw1", "new_password": "Changed!pw2"})
	if r.Status != http.StatusNoContent || len(r.Body) != 0 {
		t.Fatalf("change: %d %s", r.Status, r.Body)
	}
	// This session goes on; every other one has ended.
	if r := e.do("GET", "/api/users/me", mine, nil); r.Status != 200 {
		t.Fatalf("the changing session's token: %d %s", r.Status, r.Body)
	}
	if r := e.refreshBody(mineRefresh); r.Status != 200 {
		t.Fatalf("the changing session's refresh token: %d %s", r.Status, r.Body)
	}
	wantRefused(t, "another session's access cookie", b.do("GET", "/api/users/me", nil))
	wantInvalidRefresh(t, "another session's refresh token", e.refreshBody(otherRefresh))
	if r := e.do("GET", "/api/users/me", legacy, nil); r.Status != 200 {
		t.Fatalf("a token without a session lives until it expires: %d", r.Status)
	}
	if r := e.do("POST", "/api/auth/login", "", url.Values{"username": {"change@example.com"}, "password": {"Secret!pw1"}}); r.Status != 401 {
		t.Fatalf("login with the old password: %d", r.Status)
	}
	e.login("change@example.com", "Changed!pw2")
	if n := e.auditCount(EventPasswordChange, u.ID); n != 1 {
		t.Fatalf("%d password.change events", n)
	}
	for _, line := range e.logs.All() {
		for _, f := range line.Context {
			if strings.Contains(f.String, "pw1") || strings.Contains(f.String, "pw2") {
				t.Fatalf("a password is in the log: %v", line)
			}
		}
	}
}
