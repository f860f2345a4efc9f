package accounts

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyaccounts/gateway/internal/apitest"
)

// newAdminEnv is a testEnv whose auth routes are not rate limited: the
// admin tests sign many accounts in.
func newAdminEnv(t *testing.T) *testEnv {
	return newTestEnv(t, func(c *Config) { c.RateLimit.IPRequests = -1 })
}

// insertUser stores a user directly (no profile, no usable password) and
// returns its id.
func (e *testEnv) insertUser(email, role string, active bool, createdAt time.Time) string {
	e.t.Helper()
	var id string
	err := e.db.QueryRow(context.Background(),
		`INSERT INTO users (email, hashed_password, role, is_active, created_at, updated_at)
		 VALUES ($1, 'x', $2, $3, $4, $4) RETURNING id::text`, email, role, active, createdAt).Scan(&id)
	if err != nil {
		e.t.Fatal(err)
	}
	return id
}

// storedUser reads a user's role, active state and updated_at.
func (e *testEnv) storedUser(id string) (role string, active bool, updatedAt time.Time) {
	e.t.Helper()
	err := e.db.QueryRow(context.Background(), "SELECT role, is_active, updated_at FROM users WHERE id = $1", id).
		Scan(&role, &active, &updatedAt)
	if err != nil {
		e.t.Fatal(err)
	}
	return role, active, updatedAt
}

// activeAdmins counts the active admins in the database.
func (e *testEnv) activeAdmins() int {
	e.t.Helper()
	var n int
	if err := e.db.QueryRow(context.Background(), "SELECT count(*) FROM users WHERE role = 'admin' AND is_active").Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

// emailsOf returns the emails of a user-list response, in order.
func emailsOf(t *testing.T, r *response) []string {
	t.Helper()
	if r.Status != http.StatusOK {
		t.Fatalf("list: %d %s", r.Status, r.Body)
	}
	list, ok := r.JSON(t).([]any)
	if !ok {
		t.Fatalf("list body %s is not an array", r.Body)
	}
	emails := []string{}
	for _, v := range list {
		u := v.(map[string]any)
		_, verified := u["email_verified"].(bool)
		if len(u) != 7 || u["id"] == nil || u["created_at"] == nil || u["updated_at"] == nil || u["role"] == nil || u["is_active"] == nil || !verified {
			t.Fatalf("user object %v, want exactly id, email, role, is_active, email_verified, created_at, updated_at", u)
		}
		emails = append(emails, u["email"].(string))
	}
	return emails
}

func TestAdminRoutesNeedAnActiveAdmin(t *testing.T) {
	e := newAdminEnv(t)
	u, userToken := e.user("user@example.com")
	routes := []struct{ method, path, body string }{
		{"GET", "/api/admin/users", ""},
		{"GET", "/api/admin/users?limit=0&role=nope", ""}, // auth comes before validation
		{"PATCH", "/api/admin/users/" + u.ID, `{"role": "admin"}`},
		{"PATCH", "/api/admin/users/not-a-uuid", `{"role": "admin"}`},
	}
	for _, rt := range routes {
		var body any
		if rt.body != "" {
			body = rt.body
		}
		r := e.do(rt.method, rt.path, "", body)
		if r.Status != 401 || r.Detail(t) != `"Not authenticated"` || r.Header.Get("WWW-Authenticate") != "Bearer" {
			t.Errorf("%s %s without a token: %d %s", rt.method, rt.path, r.Status, r.Body)
		}
		r = e.do(rt.method, rt.path, "garbage", body)
		if r.Status != 401 || r.Detail(t) != `"Could not validate credentials"` {
			t.Errorf("%s %s with a bad token: %d %s", rt.method, rt.path, r.Status, r.Body)
		}
		r = e.do(rt.method, rt.path, userToken, body)
		if r.Status != 403 || r.Detail(t) != `"Not enough permissions"` {
			t.Errorf("%s %s as a user: %d %s", rt.method, rt.path, r.Status, r.Body)
		}
	}
	if role, _, _ := e.storedUser(u.ID); role != RoleUser {
		t.Fatalf("a user promoted themselves: role %s", role)
	}
	// A token whose role claim says admin is worth nothing: the role is
	// read from the database.
	if claims, err := e.svc.Tokens().Verify(userToken); err != nil || claims.Role != RoleUser {
		t.Fatalf("user token claims: %+v, %v", claims, err)
	}

	// Demoted in the database (by hand, or by another admin): 403 from
	// the very next request, with the same token. Deactivated: 401.
	a, adminToken := e.admin("root@example.com")
	b, otherToken := e.admin("other@example.com")
	if r := e.do("GET", "/api/admin/users", adminToken, nil); r.Status != 200 {
		t.Fatalf("admin list: %d %s", r.Status, r.Body)
	}
	e.exec("UPDATE users SET role = 'user' WHERE id = $1", a.ID)
	if r := e.do("GET", "/api/admin/users", adminToken, nil); r.Status != 403 || r.Detail(t) != `"Not enough permissions"` {
		t.Fatalf("admin demoted in the database: %d %s", r.Status, r.Body)
	}
	e.exec("UPDATE users SET role = 'admin' WHERE id = $1", a.ID)
	if r := e.do("PATCH", "/api/admin/users/"+a.ID, otherToken, map[string]any{"role": "user"}); r.Status != 200 {
		t.Fatalf("demote: %d %s", r.Status, r.Body)
	}
	if r := e.do("PATCH", "/api/admin/users/"+b.ID, adminToken, map[string]any{"role": "user"}); r.Status != 403 || r.Detail(t) != `"Not enough permissions"` {
		t.Fatalf("admin demoted through the API: %d %s", r.Status, r.Body)
	}
	if r := e.do("GET", "/api/users/me", adminToken, nil); r.Status != 200 {
		t.Fatalf("a demoted admin is still a user: %d %s", r.Status, r.Body)
	}
	if r := e.do("PATCH", "/api/admin/users/"+a.ID, otherToken, map[string]any{"is_active": false}); r.Status != 200 {
		t.Fatalf("deactivate: %d %s", r.Status, r.Body)
	}
	if r := e.do("GET", "/api/users/me", adminToken, nil); r.Status != 401 || r.Detail(t) != `"Could not validate credentials"` {
		t.Fatalf("deactivated user: %d %s", r.Status, r.Body)
	}
}

func TestAdminListUsers(t *testing.T) {
	e := newAdminEnv(t)
	_, token := e.admin("root@example.com")
	e.exec("UPDATE users SET created_at = '2000-01-01T00:00:00Z'") // the admin comes first
	t0 := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	e.insertUser("Alice@Example.com", RoleUser, true, t0)
	e.insertUser("per%cent@example.com", RoleUser, true, t0.Add(time.Hour))
	e.insertUser("under_score@example.com", RoleUser, false, t0.Add(2*time.Hour))
	e.insertUser("underXscore@example.com", RoleAdmin, true, t0.Add(3*time.Hour))
	e.insertUser(`back\slash@example.com`, RoleUser, true, t0.Add(4*time.Hour))
	// Same created_at: the id decides.
	twinA := e.insertUser("twin1@example.com", RoleUser, true, t0.Add(5*time.Hour))
	twinB := e.insertUser("twin2@example.com", RoleUser, true, t0.Add(5*time.Hour))
	twins := []string{"twin1@example.com", "twin2@example.com"}
	if twinB < twinA {
		twins = []string{"twin2@example.com", "twin1@example.com"}
	}
	all := append([]string{"root@example.com", "Alice@Example.com", "per%cent@example.com", "under_score@example.com",
		"underXscore@example.com", `back\slash@example.com`}, twins...)

	tests := []struct {
		query string
		total int
		want  []string
	}{
		{"", 8, all},
		{"skip=0&limit=100", 8, all},
		{"limit=2", 8, all[:2]},
		{"skip=2&limit=3", 8, all[2:5]},
		{"skip=7", 8, all[7:]},
		{"skip=8", 8, []string{}},
		{"skip=1000000", 8, []string{}},
		{"skip=99999999999999999999999999", 8, []string{}}, // past int64: past the end
		{"limit=1000", 8, all},
		{"limit=+2", 8, all[:2]},
		{"limit=%202%20", 8, all[:2]}, // surrounding whitespace
		{"limit=2.00", 8, all[:2]},
		{"limit=0_2", 8, all[:2]},
		{"limit=1_0", 8, all},
		{"limit=abc&limit=2", 8, all[:2]}, // the last value counts
		{"q=ALICE", 1, []string{"Alice@Example.com"}},
		{"q=example.COM", 8, all},
		{"q=", 8, all},
		{"q=%25", 1, []string{"per%cent@example.com"}},
		{"q=_", 1, []string{"under_score@example.com"}},
		{"q=r_s", 1, []string{"under_score@example.com"}},
		{"q=" + url.QueryEscape(`\`), 1, []string{`back\slash@example.com`}},
		{"q=" + url.QueryEscape(`k\s`), 1, []string{`back\slash@example.com`}},
		{"q=twin&limit=1", 2, twins[:1]},
		{"q=nobody", 0, []string{}},
		{"q=%00", 0, []string{}},
		{"q=%FF", 0, []string{}},
		{"q=50%", 0, []string{}}, // an invalid escape is kept as text
		{"role=admin", 2, []string{"root@example.com", "underXscore@example.com"}},
		{"role=user&is_active=false", 1, []string{"under_score@example.com"}},
		{"is_active=true", 7, append(all[:3:3], all[4:]...)},
		{"is_active=FALSE", 1, []string{"under_score@example.com"}},
		{"is_active=0", 1, []string{"under_score@example.com"}},
		{"is_active=no", 1, []string{"under_score@example.com"}},
		{"is_active=Off", 1, []string{"under_score@example.com"}},
		{"is_active=n", 1, []string{"under_score@example.com"}},
		{"is_active=1", 7, append(all[:3:3], all[4:]...)},
		{"is_active=yes", 7, append(all[:3:3], all[4:]...)},
		{"is_active=ON", 7, append(all[:3:3], all[4:]...)},
		{"is_active=t", 7, append(all[:3:3], all[4:]...)},
		{"q=under&role=admin&is_active=true", 1, []string{"underXscore@example.com"}},
		{"q=under&role=admin&is_active=false", 0, []string{}},
	}
	for _, tt := range tests {
		r := e.do("GET", "/api/admin/users?"+tt.query, token, nil)
		got := emailsOf(t, r)
		if strings.Join(got, " ") != strings.Join(tt.want, " ") || r.Header.Get("X-Total-Count") != fmt.Sprint(tt.total) {
			t.Errorf("?%s: got %v (X-Total-Count %q), want %v (%d)", tt.query, got, r.Header.Get("X-Total-Count"), tt.want, tt.total)
		}
		if strings.Contains(string(r.Body), "hashed_password") {
			t.Fatalf("?%s: the hash is in the list", tt.query)
		}
	}
	if r := e.do("GET", "/api/admin/users?q=zzz", token, nil); string(r.Body) != "[]" || r.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("empty list: %s %v, want [] and no-store", r.Body, r.Header)
	}
}

func TestAdminListUsersRefusesBadQuery(t *testing.T) {
	e := newAdminEnv(t)
	_, token := e.admin("root@example.com")
	entry := func(typ, name, msg string) string {
		return `{"type":"` + typ + `","loc":["query","` + name + `"],"msg":"` + msg + `"}`
	}
	const (
		notInt  = "Input should be a valid integer, unable to parse string as an integer"
		notBool = "Input should be a valid boolean, unable to interpret input"
		notRole = "Input should be 'user' or 'admin'"
	)
	tests := []struct{ query, detail string }{
		{"skip=-1", entry("greater_than_equal", "skip", "Input should be greater than or equal to 0")},
		{"skip=-99999999999999999999999", entry("greater_than_equal", "skip", "Input should be greater than or equal to 0")},
		{"skip=abc", entry("int_parsing", "skip", notInt)},
		{"skip=", entry("int_parsing", "skip", notInt)},
		{"skip", entry("int_parsing", "skip", notInt)},
		{"skip=1.5", entry("int_parsing", "skip", notInt)},
		{"skip=1e3", entry("int_parsing", "skip", notInt)},
		{"skip=0x10", entry("int_parsing", "skip", notInt)},
		{"skip=1__0", entry("int_parsing", "skip", notInt)},
		{"skip=_1", entry("int_parsing", "skip", notInt)},
		{"skip=%2B-1", entry("int_parsing", "skip", notInt)},
		{"skip=" + strings.Repeat("9", 4301), entry("int_parsing_size", "skip", "Unable to parse input string as an integer, exceeded maximum size")},
		{"limit=0", entry("greater_than_equal", "limit", "Input should be greater than or equal to 1")},
		{"limit=-5", entry("greater_than_equal", "limit", "Input should be greater than or equal to 1")},
		{"limit=1001", entry("less_than_equal", "limit", "Input should be less than or equal to 1000")},
		{"limit=99999999999999999999999", entry("less_than_equal", "limit", "Input should be less than or equal to 1000")},
		{"limit=ten", entry("int_parsing", "limit", notInt)},
		{"limit=2&limit=abc", entry("int_parsing", "limit", notInt)},
		{"role=owner", entry("enum", "role", notRole)},
		{"role=Admin", entry("enum", "role", notRole)},
		{"role=", entry("enum", "role", notRole)},
		{"is_active=maybe", entry("bool_parsing", "is_active", notBool)},
		{"is_active=", entry("bool_parsing", "is_active", notBool)},
		{"is_active=2", entry("bool_parsing", "is_active", notBool)},
		{"is_active=%20true", entry("bool_parsing", "is_active", notBool)},
		{"is_active=-1&role=x&limit=0&skip=-1&q=ok",
			entry("greater_than_equal", "skip", "Input should be greater than or equal to 0") + "," +
				entry("greater_than_equal", "limit", "Input should be greater than or equal to 1") + "," +
				entry("enum", "role", notRole) + "," +
				entry("bool_parsing", "is_active", notBool)},
	}
	bearer := map[string]string{"Authorization": "Bearer " + token}
	var scenarios []apitest.Scenario
	for _, tt := range tests {
		scenarios = append(scenarios, apitest.Scenario{
			Name: fmt.Sprintf("?%.40s", tt.query), URL: "/api/admin/users?" + tt.query, Headers: bearer,
			ExpectedStatus: 422, ExpectedBody: `{"detail":[` + tt.detail + `]}`,
			ExpectedHeaders: map[string]string{"X-Total-Count": ""},
		})
	}
	scenarios = append(scenarios, apitest.Scenario{Method: "POST", URL: "/api/admin/users", Headers: bearer, Body: `{}`,
		ExpectedStatus: 405, ExpectedBody: apitest.Detail("Method Not Allowed")})
	e.table(t, scenarios)
}

func TestAdminPatchUser(t *testing.T) {
	e := newAdminEnv(t)
	admin, token := e.admin("root@example.com")
	u, userToken := e.user("user@example.com")
	old := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	patch := func(id string, body any) map[string]any {
		t.Helper()
		r := e.do("PATCH", "/api/admin/users/"+id, token, body)
		if r.Status != 200 {
			t.Fatalf("PATCH %s %v: %d %s", id, body, r.Status, r.Body)
		}
		got := r.JSON(t).(map[string]any)
		if _, ok := got["email_verified"].(bool); len(got) != 7 || !ok || got["id"] != u.ID || got["email"] != "user@example.com" {
			t.Fatalf("PATCH %v: user %v", body, got)
		}
		return got
	}
	check := func(body any, role string, active, bumped bool) {
		t.Helper()
		e.exec("UPDATE users SET updated_at = $2 WHERE id = $1", u.ID, old)
		got := patch(u.ID, body)
		sRole, sActive, sUpdated := e.storedUser(u.ID)
		if got["role"] != role || got["is_active"] != active || sRole != role || sActive != active {
			t.Fatalf("PATCH %v: got %v, stored %s %v; want %s %v", body, got, sRole, sActive, role, active)
		}
		if bumped != sUpdated.After(old) || got["updated_at"] != sUpdated.UTC().Format(time.RFC3339Nano) {
			t.Fatalf("PATCH %v: updated_at %v (stored %v), bumped want %v", body, got["updated_at"], sUpdated, bumped)
		}
	}
	check(map[string]any{"role": "admin"}, RoleAdmin, true, true)
	if r := e.do("GET", "/api/admin/users", userToken, nil); r.Status != 200 {
		t.Fatalf("promoted user's next request: %d %s", r.Status, r.Body)
	}
	check(map[string]any{"role": "admin"}, RoleAdmin, true, false) // no change
	check(map[string]any{}, RoleAdmin, true, false)
	check(`{"role": null, "is_active": null}`, RoleAdmin, true, false)
	check(map[string]any{"role": "user", "is_active": false}, RoleUser, false, true)
	if r := e.do("GET", "/api/users/me", userToken, nil); r.Status != 401 {
		t.Fatalf("deactivated user's next request: %d %s", r.Status, r.Body)
	}
	check(map[string]any{"is_active": true}, RoleUser, true, true)
	// is_active as pydantic reads a bool in lax mode.
	check(map[string]any{"is_active": "off"}, RoleUser, false, true)
	check(map[string]any{"is_active": 1}, RoleUser, true, true)
	check(map[string]any{"is_active": "F"}, RoleUser, false, true)
	check(map[string]any{"is_active": 1.0}, RoleUser, true, true)
	check(map[string]any{"is_active": 0}, RoleUser, false, true)
	check(map[string]any{"is_active": "YES"}, RoleUser, true, true)

	// The UUID forms pydantic accepts.
	simple := strings.ReplaceAll(u.ID, "-", "")
	for _, id := range []string{strings.ToUpper(u.ID), simple, "{" + u.ID + "}", "urn:uuid:" + u.ID, url.PathEscape("{" + strings.ToUpper(u.ID) + "}")} {
		patch(id, map[string]any{})
	}

	if r := e.do("PATCH", "/api/admin/users/00000000-0000-0000-0000-000000000000", token, map[string]any{"role": "admin"}); r.Status != 404 || r.Detail(t) != `"User not found"` {
		t.Fatalf("unknown id: %d %s", r.Status, r.Body)
	}
	if r := e.do("PATCH", "/api/admin/users/"+strings.ReplaceAll(u.ID, "-", ""), token, map[string]any{"is_active": false}); r.Status != 200 {
		t.Fatalf("simple form: %d %s", r.Status, r.Body)
	}

	// Each change is audited: who, whom, from, to.
	var events []string
	for _, a := range e.auditRows() {
		if a.event == EventUserRoleChange || a.event == EventUserActiveChange {
			if a.actor != admin.ID || a.target != u.ID {
				t.Errorf("audit row %+v: actor/target", a)
			}
			events = append(events, a.event+" "+a.details)
		}
	}
	want := []string{
		`user.role_change {"to": "admin", "from": "user"}`,
		`user.role_change {"to": "user", "from": "admin"}`,
		`user.active_change {"to": false, "from": true}`,
		`user.active_change {"to": true, "from": false}`,
		`user.active_change {"to": false, "from": true}`,
		`user.active_change {"to": true, "from": false}`,
		`user.active_change {"to": false, "from": true}`,
		`user.active_change {"to": true, "from": false}`,
		`user.active_change {"to": false, "from": true}`,
		`user.active_change {"to": true, "from": false}`,
		`user.active_change {"to": false, "from": true}`,
	}
	if strings.Join(events, "\n") != strings.Join(want, "\n") {
		t.Fatalf("audit:\n%s\nwant\n%s", strings.Join(events, "\n"), strings.Join(want, "\n"))
	}

	// email_verified: a registered user starts unverified; an admin
	// marks them verified (a lax bool, as is_active), once audited.
	if got := patch(u.ID, map[string]any{}); got["email_verified"] != false {
		t.Fatalf("a registered user: email_verified %v", got["email_verified"])
	}
	if got := patch(u.ID, map[string]any{"email_verified": "yes", "is_active": nil}); got["email_verified"] != true {
		t.Fatalf("PATCH email_verified yes: %v", got)
	}
	if got := patch(u.ID, map[string]any{"email_verified": true}); got["email_verified"] != true {
		t.Fatalf("PATCH email_verified true again: %v", got)
	}
	var verified []string
	for _, a := range e.auditRows() {
		if a.event == EventEmailVerifiedChange {
			if a.actor != admin.ID || a.target != u.ID {
				t.Errorf("audit row %+v: actor/target", a)
			}
			verified = append(verified, a.details)
		}
	}
	if strings.Join(verified, "\n") != `{"to": true, "from": false}` {
		t.Fatalf("user.email_verified_change events: %v", verified)
	}
}

func TestAdminPatchUserRefusesBadInput(t *testing.T) {
	e := newAdminEnv(t)
	_, token := e.admin("root@example.com")
	u, _ := e.user("user@example.com")
	_, _, before := e.storedUser(u.ID)
	uuidErr := func(reason string) string {
		return `{"type":"uuid_parsing","loc":["path","id"],"msg":"Input should be a valid UUID, ` + reason + `"}`
	}
	badChar := func(c string, at int) string {
		return uuidErr(fmt.Sprintf("invalid character: expected an optional prefix of `urn:uuid:` followed by [0-9a-fA-F-], found `%s` at %d", c, at))
	}
	const (
		roleErr  = `{"type":"enum","loc":["body","role"],"msg":"Input should be 'user' or 'admin'"}`
		boolErr  = `{"type":"bool_parsing","loc":["body","is_active"],"msg":"Input should be a valid boolean, unable to interpret input"}`
		boolType = `{"type":"bool_type","loc":["body","is_active"],"msg":"Input should be a valid boolean"}`
	)
	extra := func(name string) string {
		return `{"type":"extra_forbidden","loc":["body","` + name + `"],"msg":"Extra inputs are not permitted"}`
	}
	tests := []struct {
		name, id string
		body     any
		status   int
		detail   string
	}{
		{"word", "not-a-uuid", `{}`, 422, "[" + badChar("n", 1) + "]"},
		{"number", "123", `{}`, 422, "[" + uuidErr("invalid length: expected length 32 for simple format, found 3") + "]"},
		{"simple, too long", strings.Repeat("a", 33), `{}`, 422, "[" + uuidErr("invalid length: expected length 32 for simple format, found 33") + "]"},
		{"bad hex", "F9168C5E-CEB2-4faa-BGBF-329BF39FA1E4", `{}`, 422, "[" + badChar("G", 21) + "]"},
		{"four groups", "F9168C5E-CEB2-4faa-B6BFF329BF39FA1E4", `{}`, 422, "[" + uuidErr("invalid group count: expected 5, found 4") + "]"},
		{"short group", "F9168C5E-CEB2-4faa-BBF-329BF39FA1E4", `{}`, 422, "[" + uuidErr("invalid group length in group 3: expected 4, found 3") + "]"},
		{"long last group", "F9168C5E-CEB2-4faa-B6BF-329BF39FA1E45", `{}`, 422, "[" + uuidErr("invalid group length in group 4: expected 12, found 13") + "]"},
		{"braced, bad", "{F9168C5E-CEB2-4faa9B6BFF329BF39FA1E41}", `{}`, 422, "[" + uuidErr("invalid group count: expected 5, found 3") + "]"},
		{"urn, bad", "urn:uuid:zz", `{}`, 422, "[" + badChar("z", 10) + "]"},
		{"non-ASCII", "%C3%A9", `{}`, 422, "[" + badChar("é", 1) + "]"},
		{"not UTF-8", "%FF", `{}`, 422, "[" + badChar("\uFFFD", 1) + "]"},
		{"bad role", u.ID, map[string]any{"role": "superuser"}, 422, "[" + roleErr + "]"},
		{"role in capitals", u.ID, map[string]any{"role": "Admin"}, 422, "[" + roleErr + "]"},
		{"role not a string", u.ID, map[string]any{"role": 1}, 422, "[" + roleErr + "]"},
		{"is_active word", u.ID, map[string]any{"is_active": "maybe"}, 422, "[" + boolErr + "]"},
		{"is_active 2", u.ID, map[string]any{"is_active": 2}, 422, "[" + boolErr + "]"},
		{"is_active 0.5", u.ID, map[string]any{"is_active": 0.5}, 422, "[" + boolErr + "]"},
		{"is_active list", u.ID, map[string]any{"is_active": []bool{true}}, 422, "[" + boolType + "]"},
		{"is_active object", u.ID, `{"is_active": {}}`, 422, "[" + boolType + "]"},
		{"both bad", u.ID, map[string]any{"role": "root", "is_active": "x"}, 422, "[" + roleErr + "," + boolErr + "]"},
		{"email_verified word", u.ID, map[string]any{"email_verified": "maybe", "is_active": "x"}, 422,
			"[" + boolErr + "," + strings.ReplaceAll(boolErr, "is_active", "email_verified") + "]"},
		{"email_verified list", u.ID, map[string]any{"email_verified": []bool{true}}, 422, "[" + strings.ReplaceAll(boolType, "is_active", "email_verified") + "]"},
		{"other fields", u.ID, map[string]any{"role": "admin", "email": "x@example.com", "id": u.ID, "hashed_password": "x", "created_at": "2020-01-01T00:00:00Z"}, 422,
			"[" + extra("created_at") + "," + extra("email") + "," + extra("hashed_password") + "," + extra("id") + "]"},
		{"bad id and bad body: path first", "nope", map[string]any{"role": "x", "name": "y"}, 422,
			"[" + badChar("n", 1) + "," + roleErr + "," + extra("name") + "]"},
		{"bad id and no body", "nope", ``, 422,
			"[" + badChar("n", 1) + `,{"type":"missing","loc":["body"],"msg":"Field required"}]`},
		{"bad id and an array body", "nope", `[]`, 422,
			"[" + badChar("n", 1) + `,{"type":"model_attributes_type","loc":["body"],"msg":"Input should be a valid dictionary or object to extract fields from"}]`},
		{"bad id and not JSON: the JSON error alone", "nope", `{"role":`, 422,
			`[{"type":"json_invalid","loc":["body",8],"msg":"JSON decode error"}]`},
		{"no body", u.ID, ``, 422, `[{"type":"missing","loc":["body"],"msg":"Field required"}]`},
		{"too large", u.ID, `{"role":"` + strings.Repeat("a", 1<<20) + `"}`, 413, `"Request body too large"`},
	}
	for _, tt := range tests {
		r := e.do("PATCH", "/api/admin/users/"+tt.id, token, tt.body)
		if r.Status != tt.status || r.Detail(t) != tt.detail {
			t.Errorf("%s: got %d %s\nwant %d %s", tt.name, r.Status, r.Detail(t), tt.status, tt.detail)
		}
	}
	if role, active, updated := e.storedUser(u.ID); role != RoleUser || !active || !updated.Equal(before) {
		t.Fatalf("refused requests changed the user: %s %v %v", role, active, updated)
	}
	for _, path := range []string{"/api/admin/users/", "/api/admin/users/" + u.ID + "/x"} {
		if r := e.do("PATCH", path, token, `{}`); r.Status != 404 || r.Detail(t) != `"Not Found"` {
			t.Errorf("PATCH %s: %d %s", path, r.Status, r.Body)
		}
	}
}

func TestAdminCannotRemoveTheLastActiveAdmin(t *testing.T) {
	e := newAdminEnv(t)
	a, token := e.admin("root@example.com")
	const last = `"Cannot remove the last active admin"`
	for _, body := range []any{
		map[string]any{"role": "user"},
		map[string]any{"is_active": false},
		map[string]any{"role": "user", "is_active": false},
		map[string]any{"role": "admin", "is_active": false},
	} {
		if r := e.do("PATCH", "/api/admin/users/"+a.ID, token, body); r.Status != 409 || r.Detail(t) != last {
			t.Errorf("last admin, %v: %d %s", body, r.Status, r.Body)
		}
	}
	if r := e.do("PATCH", "/api/admin/users/"+a.ID, token, map[string]any{"role": "admin", "is_active": true}); r.Status != 200 {
		t.Errorf("last admin, no change: %d %s", r.Status, r.Body)
	}

	// An inactive admin does not count.
	b, _ := e.admin("second@example.com")
	e.exec("UPDATE users SET is_active = false WHERE id = $1", b.ID)
	if r := e.do("PATCH", "/api/admin/users/"+a.ID, token, map[string]any{"role": "user"}); r.Status != 409 || r.Detail(t) != last {
		t.Errorf("with an inactive second admin: %d %s", r.Status, r.Body)
	}
	// Changing users who are not active admins is never refused.
	u, _ := e.user("user@example.com")
	for _, id := range []string{b.ID, u.ID} {
		if r := e.do("PATCH", "/api/admin/users/"+id, token, map[string]any{"role": "user", "is_active": false}); r.Status != 200 {
			t.Errorf("PATCH %s: %d %s", id, r.Status, r.Body)
		}
	}

	// With another active admin, an admin may demote themselves; their
	// token loses the admin routes at once.
	if r := e.do("PATCH", "/api/admin/users/"+b.ID, token, map[string]any{"role": "admin", "is_active": true}); r.Status != 200 {
		t.Fatalf("reactivate: %d %s", r.Status, r.Body)
	}
	if r := e.do("PATCH", "/api/admin/users/"+a.ID, token, map[string]any{"role": "user"}); r.Status != 200 || r.JSON(t).(map[string]any)["role"] != "user" {
		t.Fatalf("self-demotion with another admin: %d %s", r.Status, r.Body)
	}
	if r := e.do("GET", "/api/admin/users", token, nil); r.Status != 403 || r.Detail(t) != `"Not enough permissions"` {
		t.Fatalf("after self-demotion: %d %s", r.Status, r.Body)
	}
	if n := e.activeAdmins(); n != 1 {
		t.Fatalf("%d active admins, want 1", n)
	}
}

// TestAdminLastActiveAdminUnderConcurrency: the two remaining admins
// remove their own rights at the same moment (one demotes, the other
// deactivates); exactly one wins and the other gets 409, every time.
// (Each removes themselves, so neither request's authentication depends
// on the other's outcome.)
func TestAdminLastActiveAdminUnderConcurrency(t *testing.T) {
	e := newAdminEnv(t)
	a, tokenA := e.admin("a@example.com")
	b, tokenB := e.admin("b@example.com")
	const rounds = 30
	for round := range rounds {
		// Back to two active admins; a won deactivation ended b's
		// sessions and tokens, which are brought back by hand too.
		e.exec("UPDATE users SET role = 'admin', is_active = true, tokens_valid_after = NULL WHERE id = ANY($1)", []string{a.ID, b.ID})
		e.exec("UPDATE sessions SET revoked_at = NULL, revoked_reason = NULL WHERE user_id = ANY($1)", []string{a.ID, b.ID})
		start := make(chan struct{})
		var wg sync.WaitGroup
		statuses := make([]int, 2)
		details := make([]string, 2)
		for i, req := range []struct {
			id, token string
			body      map[string]any
		}{
			{a.ID, tokenA, map[string]any{"role": "user"}},
			{b.ID, tokenB, map[string]any{"is_active": false}},
		} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				r := e.do("PATCH", "/api/admin/users/"+req.id, req.token, req.body)
				statuses[i], details[i] = r.Status, string(r.Body)
			}()
		}
		close(start)
		wg.Wait()
		ok, conflict := 0, 0
		for i, s := range statuses {
			switch {
			case s == 200:
				ok++
			case s == 409 && details[i] == `{"detail":"Cannot remove the last active admin"}`:
				conflict++
			}
		}
		if ok != 1 || conflict != 1 {
			t.Fatalf("round %d: statuses %v %v, want one 200 and one 409", round, statuses, details)
		}
		if n := e.activeAdmins(); n != 1 {
			t.Fatalf("round %d: %d active admins left, want 1", round, n)
		}
	}
}

// TestSetUserAccessUnderConcurrency removes all of several admins at once,
// below the HTTP layer to make the race as tight as it gets: all but one
// removal succeed, and one active admin always remains.
func TestSetUserAccessUnderConcurrency(t *testing.T) {
	e := newAdminEnv(t)
	const admins, rounds = 6, 20
	var ids []string
	for i := range admins {
		ids = append(ids, e.insertUser(fmt.Sprintf("admin%d@example.com", i), RoleAdmin, true, time.Now()))
	}
	demote, deactivate := RoleUser, false
	for round := range rounds {
		e.exec("UPDATE users SET role = 'admin', is_active = true WHERE id = ANY($1)", ids)
		start := make(chan struct{})
		errs := make([]error, admins)
		var wg sync.WaitGroup
		for i, id := range ids {
			c := userAccess{role: &demote}
			if i%2 == 1 {
				c = userAccess{active: &deactivate}
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				_, _, errs[i] = e.svc.setUserAccess(context.Background(), id, c)
			}()
		}
		close(start)
		wg.Wait()
		refused := 0
		for _, err := range errs {
			switch {
			case errors.Is(err, errLastAdmin):
				refused++
			case err != nil:
				t.Fatalf("round %d: %v", round, err)
			}
		}
		if refused != 1 || e.activeAdmins() != 1 {
			t.Fatalf("round %d: %d refused, %d active admins; want 1 and 1", round, refused, e.activeAdmins())
		}
	}
}

func TestEscapeLike(t *testing.T) {
	if got := escapeLike(`a%b_c\d`); got != `a\%b\_c\\d` {
		t.Fatalf("escapeLike = %q", got)
	}
}

// TestDeactivationEndsSessionsForGood: deactivating a user through the
// API ends every session and refuses every token issued before, in the
// same transaction; reactivating the user brings none of them back. A
// role change ends no session (its lost rights hold anyway: every
// request reads the current role).
func TestDeactivationEndsSessionsForGood(t *testing.T) {
	e := newAdminEnv(t)
	ctx := context.Background()
	_, adminToken := e.admin("root@example.com")
	u := e.register("user@example.com", "Secret!pw1")
	access1, refresh1 := e.loginTokens(u.Email, "Secret!pw1")
	access2, refresh2 := e.loginTokens(u.Email, "Secret!pw1")
	// A token without a session, as the old backend issued them: only
	// tokens_valid_after refuses it.
	noSession, _, err := e.svc.Tokens().Issue(u)
	if err != nil {
		t.Fatal(err)
	}
	tokens := map[string]string{"first login": access1, "second login": access2, "no session": noSession}
	for name, tok := range tokens {
		if r := e.do("GET", "/api/users/me", tok, nil); r.Status != http.StatusOK {
			t.Fatalf("%s before: %d %s", name, r.Status, r.Body)
		}
	}
	patch := func(body map[string]any) {
		t.Helper()
		if r := e.do("PATCH", "/api/admin/users/"+u.ID, adminToken, body); r.Status != http.StatusOK {
			t.Fatalf("PATCH %v: %d %s", body, r.Status, r.Body)
		}
	}
	revoked := func() (n int, reasons string) {
		t.Helper()
		if err := e.db.QueryRow(ctx, `SELECT count(*), coalesce(string_agg(DISTINCT revoked_reason, ','), '')
			FROM sessions WHERE user_id = $1 AND revoked_at IS NOT NULL`, u.ID).Scan(&n, &reasons); err != nil {
			t.Fatal(err)
		}
		return n, reasons
	}

	// A demotion and a promotion end nothing.
	patch(map[string]any{"role": "admin"})
	patch(map[string]any{"role": "user"})
	if n, _ := revoked(); n != 0 {
		t.Fatalf("a role change revoked %d sessions", n)
	}

	patch(map[string]any{"is_active": false})
	if n, reasons := revoked(); n != 2 || reasons != "deactivated" {
		t.Fatalf("after deactivation: %d sessions revoked, reasons %q; want 2, deactivated", n, reasons)
	}
	var validAfter *time.Time
	if err := e.db.QueryRow(ctx, "SELECT tokens_valid_after FROM users WHERE id = $1", u.ID).Scan(&validAfter); err != nil {
		t.Fatal(err)
	}
	if validAfter == nil {
		t.Fatal("tokens_valid_after not set by the deactivation")
	}
	patch(map[string]any{"is_active": true})

	for name, tok := range tokens {
		if r := e.do("GET", "/api/users/me", tok, nil); r.Status != http.StatusUnauthorized || r.Detail(t) != `"Could not validate credentials"` {
			t.Errorf("%s after reactivation: %d %s, want 401", name, r.Status, r.Body)
		}
	}
	for name, tok := range map[string]string{"first": refresh1, "second": refresh2} {
		r := e.refreshBody(tok)
		if r.Status != http.StatusUnauthorized || r.Detail(t) != `"Invalid refresh token"` {
			t.Errorf("%s refresh token after reactivation: %d %s, want 401", name, r.Status, r.Body)
		}
	}
	// The user signs in again as usual.
	fresh := e.login(u.Email, "Secret!pw1")
	if r := e.do("GET", "/api/users/me", fresh, nil); r.Status != http.StatusOK {
		t.Fatalf("a token issued after the reactivation: %d %s", r.Status, r.Body)
	}
	// Audited as before: one event per change of the active state.
	if n := e.auditCount(EventUserActiveChange, u.ID); n != 2 {
		t.Fatalf("%d user.active_change events, want 2", n)
	}
}
