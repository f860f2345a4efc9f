package accounts

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

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
