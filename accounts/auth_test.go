package accounts

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/caddyaccounts/gateway/fastapi"
)

func TestRegister(t *testing.T) {
	e := newTestEnv(t)
	r := e.do("POST", "/api/auth/register", "", map[string]any{"email": "  Ada@Example.com ", "password": "Secret!pw1", "full_name": "Ada"})
	if r.Status != http.StatusCreated {
		t.Fatalf("register: %d %s", r.Status, r.Body)
	}
	u := r.JSON(t).(map[string]any)
	if u["email"] != "Ada@Example.com" || u["role"] != "user" || u["is_active"] != true || !fastapi.IsUUID(u["id"].(string)) {
		t.Fatalf("user = %v", u)
	}
	if len(u) != 6 {
		t.Fatalf("user object has fields %v, want exactly id, email, role, is_active, created_at, updated_at", u)
	}
	for _, f := range []string{"created_at", "updated_at"} {
		ts, err := time.Parse(time.RFC3339Nano, u[f].(string))
		if err != nil || !strings.HasSuffix(u[f].(string), "Z") || time.Since(ts) > time.Minute {
			t.Fatalf("%s = %v, want a recent RFC 3339 UTC time", f, u[f])
		}
	}
	var fullName string
	if err := e.db.QueryRow(context.Background(), "SELECT full_name FROM profiles WHERE user_id = $1", u["id"]).Scan(&fullName); err != nil || fullName != "Ada" {
		t.Fatalf("profile row: %q, %v", fullName, err)
	}

	dup := e.do("POST", "/api/auth/register", "", map[string]any{"email": "ada@EXAMPLE.com", "password": "Secret!pw1"})
	if dup.Status != http.StatusConflict || dup.Detail(t) != `"Email already registered"` {
		t.Fatalf("duplicate: %d %s", dup.Status, dup.Body)
	}
}

func TestRegisterRefusesBadInput(t *testing.T) {
	e := newTestEnv(t)
	tests := []struct {
		name   string
		body   any
		status int
		detail string
	}{
		{"weak password", map[string]any{"email": "a@b.co", "password": "weakpass"}, 422,
			`[{"type":"value_error","loc":["body","password"],"msg":"Value error, Password must contain at least one uppercase letter"},` +
				`{"type":"value_error","loc":["body","password"],"msg":"Value error, Password must contain at least one special character"}]`},
		{"password with test", map[string]any{"email": "a@b.co", "password": "MyTEST!pw"}, 422,
			`[{"type":"value_error","loc":["body","password"],"msg":"Value error, Password must not contain the word \"test\""}]`},
		{"bad email", map[string]any{"email": "nobody", "password": "Secret!pw1"}, 422,
			`[{"type":"value_error","loc":["body","email"],"msg":"value is not a valid email address: An email address must have an @-sign."}]`},
		{"missing fields", map[string]any{}, 422,
			`[{"type":"missing","loc":["body","email"],"msg":"Field required"},{"type":"missing","loc":["body","password"],"msg":"Field required"}]`},
		{"mass assignment", map[string]any{"email": "a@b.co", "password": "Secret!pw1", "role": "admin", "is_active": false}, 422,
			`[{"type":"extra_forbidden","loc":["body","is_active"],"msg":"Extra inputs are not permitted"},{"type":"extra_forbidden","loc":["body","role"],"msg":"Extra inputs are not permitted"}]`},
		{"full name too long", map[string]any{"email": "a@b.co", "password": "Secret!pw1", "full_name": strings.Repeat("x", 201)}, 422,
			`[{"type":"string_too_long","loc":["body","full_name"],"msg":"String should have at most 200 characters"}]`},
		{"NUL in full name", map[string]any{"email": "a@b.co", "password": "Secret!pw1", "full_name": "a\x00b"}, 422,
			`[{"type":"value_error","loc":["body","full_name"],"msg":"Value error, Text must not contain NUL characters"}]`},
		{"not JSON", `email=a@b.co`, 422,
			`[{"type":"json_invalid","loc":["body",0],"msg":"JSON decode error"}]`},
		{"too large", `{"email":"` + strings.Repeat("a", 1<<20) + `"}`, 413, `"Request body too large"`},
	}
	for _, tt := range tests {
		r := e.do("POST", "/api/auth/register", "", tt.body)
		if r.Status != tt.status || r.Detail(t) != tt.detail {
			t.Errorf("%s: got %d %s\nwant %d %s", tt.name, r.Status, r.Detail(t), tt.status, tt.detail)
		}
		if strings.Contains(string(r.Body), "Secret!pw1") || strings.Contains(string(r.Body), "weakpass") {
			t.Errorf("%s: the password is echoed back: %s", tt.name, r.Body)
		}
	}
	var n int
	_ = e.db.QueryRow(context.Background(), "SELECT count(*) FROM users").Scan(&n)
	if n != 0 {
		t.Fatalf("%d users created by refused requests", n)
	}
}

func TestLogin(t *testing.T) {
	e := newTestEnv(t)
	u := e.register("bob@example.com", "Secret!pw1")

	r := e.do("POST", "/api/auth/login", "", url.Values{"username": {"BOB@example.com"}, "password": {"Secret!pw1"}, "grant_type": {"password"}, "scope": {""}})
	if r.Status != http.StatusOK {
		t.Fatalf("login: %d %s", r.Status, r.Body)
	}
	body := r.JSON(t).(map[string]any)
	if body["token_type"] != "bearer" || body["expires_in"] != float64(28800) || len(body) != 3 {
		t.Fatalf("login body = %v", body)
	}
	claims, err := e.svc.Tokens().Verify(body["access_token"].(string))
	if err != nil || claims.Subject != u.ID || claims.Email != "bob@example.com" || claims.Role != "user" {
		t.Fatalf("token claims %+v, %v", claims, err)
	}

	for name, form := range map[string]url.Values{
		"wrong password": {"username": {"bob@example.com"}, "password": {"Secret!pw2"}},
		"unknown email":  {"username": {"nobody@example.com"}, "password": {"Secret!pw1"}},
		// No stored email holds these; PostgreSQL could not even compare them.
		"NUL in email":    {"username": {"bob@example.com\x00"}, "password": {"Secret!pw1"}},
		"email not UTF-8": {"username": {"bob\xff@example.com"}, "password": {"Secret!pw1"}},
	} {
		r := e.do("POST", "/api/auth/login", "", form)
		if r.Status != http.StatusUnauthorized || r.Detail(t) != `"Incorrect email or password"` || r.Header.Get("WWW-Authenticate") != "Bearer" {
			t.Errorf("%s: %d %s %v", name, r.Status, r.Body, r.Header)
		}
	}

	missing := e.do("POST", "/api/auth/login", "", url.Values{"username": {""}})
	if want := `[{"type":"missing","loc":["body","username"],"msg":"Field required"},{"type":"missing","loc":["body","password"],"msg":"Field required"}]`; missing.Status != 422 || missing.Detail(t) != want {
		t.Errorf("missing fields: %d %s", missing.Status, missing.Body)
	}
	grant := e.do("POST", "/api/auth/login", "", url.Values{"username": {"bob@example.com"}, "password": {"Secret!pw1"}, "grant_type": {"client_credentials"}})
	if want := `[{"type":"string_pattern_mismatch","loc":["body","grant_type"],"msg":"String should match pattern '^password$'"}]`; grant.Status != 422 || grant.Detail(t) != want {
		t.Errorf("bad grant_type: %d %s", grant.Status, grant.Body)
	}
	asJSON := e.do("POST", "/api/auth/login", "", map[string]string{"username": "bob@example.com", "password": "Secret!pw1"})
	if asJSON.Status != 422 {
		t.Errorf("JSON login: %d %s, want 422 (the OAuth2 password flow is a form)", asJSON.Status, asJSON.Body)
	}

	e.exec("UPDATE users SET is_active = false WHERE id = $1", u.ID)
	inactive := e.do("POST", "/api/auth/login", "", url.Values{"username": {"bob@example.com"}, "password": {"Secret!pw1"}})
	if inactive.Status != http.StatusForbidden || inactive.Detail(t) != `"Inactive user"` {
		t.Errorf("inactive: %d %s", inactive.Status, inactive.Body)
	}
	wrongInactive := e.do("POST", "/api/auth/login", "", url.Values{"username": {"bob@example.com"}, "password": {"nope"}})
	if wrongInactive.Status != http.StatusUnauthorized {
		t.Errorf("inactive with a wrong password: %d, want 401 (the state is only told to the password's owner)", wrongInactive.Status)
	}

	for _, line := range e.logs.All() {
		for _, f := range line.Context {
			if strings.Contains(f.String, "Secret!pw") {
				t.Fatalf("a password is in the log: %v", line)
			}
		}
	}
}

// TestLoginUpgradesBcryptHashes logs in with a hash as the old backend
// wrote it, and finds it replaced by argon2id.
func TestLoginUpgradesBcryptHashes(t *testing.T) {
	e := newTestEnv(t)
	old, err := bcrypt.GenerateFromPassword([]byte("Legacy!pw1"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	e.exec("INSERT INTO users (email, hashed_password) VALUES ('old@example.com', $1)", string(old))
	e.login("old@example.com", "Legacy!pw1")
	var hash string
	_ = e.db.QueryRow(context.Background(), "SELECT hashed_password FROM users WHERE email = 'old@example.com'").Scan(&hash)
	if !strings.HasPrefix(hash, "$argon2id$") {
		t.Fatalf("hash after login = %.10s..., want argon2id", hash)
	}
	e.login("old@example.com", "Legacy!pw1")
}

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

// TestConcurrentRegistrationsOfOneEmail: exactly one wins, the others get
// 409, none 500.
func TestConcurrentRegistrationsOfOneEmail(t *testing.T) {
	e := newTestEnv(t)
	var wg sync.WaitGroup
	statuses := make(chan int, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			email := "race@example.com"
			if i%2 == 1 {
				email = "RACE@example.com"
			}
			statuses <- e.do("POST", "/api/auth/register", "", map[string]any{"email": email, "password": "Secret!pw1"}).Status
		}(i)
	}
	wg.Wait()
	close(statuses)
	count := map[int]int{}
	for s := range statuses {
		count[s]++
	}
	if count[201] != 1 || count[409] != 7 {
		t.Fatalf("statuses %v, want one 201 and seven 409", count)
	}
}
