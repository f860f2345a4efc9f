package accounts

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyaccounts/gateway/fastapi"
	"github.com/caddyaccounts/gateway/internal/apitest"
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
	if len(u) != 7 || u["email_verified"] != false {
		t.Fatalf("user object has fields %v, want exactly id, email, role, is_active, email_verified (false), created_at, updated_at", u)
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
	var scenarios []apitest.Scenario
	for _, tt := range tests {
		scenarios = append(scenarios, apitest.Scenario{
			Name: tt.name, Method: "POST", URL: "/api/auth/register", Body: tt.body,
			ExpectedStatus: tt.status, ExpectedBody: `{"detail":` + tt.detail + `}`,
			NotExpectedContent: []string{"Secret!pw1", "weakpass"},
		})
	}
	e.table(t, scenarios)
	var n int
	_ = e.db.QueryRow(context.Background(), "SELECT count(*) FROM users").Scan(&n)
	if n != 0 {
		t.Fatalf("%d users created by refused requests", n)
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
