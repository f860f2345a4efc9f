package accounts

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

type auditRow struct {
	event, actor, target, ip, ua, details string
}

func (e *testEnv) auditRows() []auditRow {
	e.t.Helper()
	rows, err := e.db.Query(context.Background(),
		`SELECT event, coalesce(actor_id::text, ''), coalesce(target_id::text, ''), coalesce(ip, ''),
		        coalesce(user_agent, ''), details::text FROM audit_events ORDER BY id`)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rows.Close()
	var out []auditRow
	for rows.Next() {
		var a auditRow
		if err := rows.Scan(&a.event, &a.actor, &a.target, &a.ip, &a.ua, &a.details); err != nil {
			e.t.Fatal(err)
		}
		out = append(out, a)
	}
	return out
}

// TestAuditOfRegisterAndLogin records the auth events with actor, target
// and IP, and never a password.
func TestAuditOfRegisterAndLogin(t *testing.T) {
	e := newTestEnv(t)
	u, _ := e.user("audit@example.com")
	e.do("POST", "/api/auth/login", "", formOf("username", "audit@example.com", "password", "Wrong!pw1"))
	e.do("POST", "/api/auth/login", "", formOf("username", "ghost@example.com", "password", "Wrong!pw2"))
	e.exec("UPDATE users SET is_active = false WHERE id = $1", u.ID)
	e.do("POST", "/api/auth/login", "", formOf("username", "audit@example.com", "password", "Secret!pw1"))

	got := e.auditRows()
	want := []auditRow{
		{EventRegister, u.ID, u.ID, "127.0.0.1", "Go-http-client/1.1", `{}`},
		{EventLoginSuccess, u.ID, u.ID, "127.0.0.1", "Go-http-client/1.1", `{}`},
		{EventLoginFailure, "", u.ID, "127.0.0.1", "Go-http-client/1.1", `{"reason": "wrong_password"}`},
		{EventLoginFailure, "", "", "127.0.0.1", "Go-http-client/1.1", `{"email": "ghost@example.com", "reason": "unknown_email"}`},
		{EventLoginFailure, "", u.ID, "127.0.0.1", "Go-http-client/1.1", `{"reason": "inactive"}`},
	}
	if len(got) != len(want) {
		t.Fatalf("audit rows:\n%v\nwant\n%v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("row %d = %+v, want %+v", i, got[i], want[i])
		}
		if strings.Contains(got[i].details, "pw") {
			t.Errorf("row %d holds a password: %s", i, got[i].details)
		}
	}
}

func TestCleanText(t *testing.T) {
	if got := cleanText("a\x00b\xffc"+strings.Repeat("é", 300), 5); got != "abcéé" {
		t.Fatalf("cleanText = %q", got)
	}
}

// insertAudit stores an audit event directly and returns its id. actor,
// target, ip and ua may be "" (NULL).
func (e *testEnv) insertAudit(at time.Time, event, actor, target, ip, ua, details string) int64 {
	e.t.Helper()
	var id int64
	err := e.db.QueryRow(context.Background(),
		`INSERT INTO audit_events (at, event, actor_id, target_id, ip, user_agent, details)
		 VALUES ($1, $2, $3::uuid, $4::uuid, $5, $6, $7::jsonb) RETURNING id`,
		at, event, nullIfEmpty(actor), nullIfEmpty(target), nullIfEmpty(ip), nullIfEmpty(ua), details).Scan(&id)
	if err != nil {
		e.t.Fatal(err)
	}
	return id
}

// auditIDsOf returns the ids of an audit-list response, in order, after
// checking that every event has exactly the members of AuditEvent.
func auditIDsOf(t *testing.T, r *response) []int64 {
	t.Helper()
	if r.Status != http.StatusOK {
		t.Fatalf("audit list: %d %s", r.Status, r.Body)
	}
	var list []map[string]json.RawMessage
	if err := json.Unmarshal(r.Body, &list); err != nil || list == nil {
		t.Fatalf("audit list body %s is not an array of objects: %v", r.Body, err)
	}
	ids := []int64{}
	for _, ev := range list {
		for _, k := range []string{"id", "at", "event", "actor_id", "target_id", "ip", "user_agent", "details"} {
			if _, ok := ev[k]; !ok || len(ev) != 8 {
				t.Fatalf("event %s: want exactly id, at, event, actor_id, target_id, ip, user_agent, details", r.Body)
			}
		}
		var id int64
		if err := json.Unmarshal(ev["id"], &id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

// TestAdminListAudit pages and filters the audit log: newest first (the
// id breaks ties), every filter alone and together, X-Total-Count.
func TestAdminListAudit(t *testing.T) {
	e := newAdminEnv(t)
	_, token := e.admin("root@example.com")
	e.exec("DELETE FROM audit_events") // the admin's login
	const (
		a = "11111111-1111-4111-8111-111111111111"
		b = "22222222-2222-4222-8222-222222222222"
	)
	t0 := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	e1 := e.insertAudit(t0, EventRegister, a, a, "192.0.2.1", "UA/1", `{}`)
	e2 := e.insertAudit(t0.Add(time.Hour), EventLoginSuccess, a, a, "192.0.2.1", "UA/1", `{}`)
	e3 := e.insertAudit(t0.Add(2*time.Hour), EventLoginFailure, "", a, "2001:db8::1", "", `{"reason": "wrong_password"}`)
	e4 := e.insertAudit(t0.Add(2*time.Hour), EventLoginFailure, "", "", "", "", `{"email": "ghost@example.com", "reason": "unknown_email"}`)
	e5 := e.insertAudit(t0.Add(3*time.Hour), EventUserRoleChange, b, a, "192.0.2.2", "UA/2", `{"from": "user", "to": "admin"}`)
	e6 := e.insertAudit(t0.Add(4*time.Hour), EventSettingsChange, b, "", "192.0.2.2", "UA/2", `{"file": "ai.json", "fields": ["model"], "n": 12345678901234567}`)
	all := []int64{e6, e5, e4, e3, e2, e1}
	ts := func(d time.Duration) string { return url.QueryEscape(t0.Add(d).Format(time.RFC3339Nano)) }

	tests := []struct {
		query string
		total int
		want  []int64
	}{
		{"", 6, all},
		{"skip=0&limit=100", 6, all},
		{"limit=2", 6, all[:2]},
		{"skip=2&limit=2", 6, all[2:4]},
		{"skip=5", 6, all[5:]},
		{"skip=6", 6, []int64{}},
		{"skip=99999999999999999999999999", 6, []int64{}},
		{"limit=1000", 6, all},
		{"limit=2.0", 6, all[:2]},
		{"limit=abc&limit=1", 6, all[:1]}, // the last value counts
		{"unknown=1", 6, all},
		{"event=login.failure", 2, []int64{e4, e3}},
		{"event=login.failure&event=register", 3, []int64{e4, e3, e1}},
		{"event=register&event=register", 1, []int64{e1}},
		{"event=login.failure&limit=1&skip=1", 2, []int64{e3}},
		{"event=LOGIN.FAILURE", 0, []int64{}},
		{"event=login", 0, []int64{}},
		{"event=", 0, []int64{}},
		{"event=%00", 0, []int64{}},
		{"event=%FF", 0, []int64{}},
		{"event=register&event=%00", 1, []int64{e1}},
		{"actor_id=" + a, 2, []int64{e2, e1}},
		{"actor_id=" + strings.ToUpper(b), 2, []int64{e6, e5}},
		{"actor_id={" + b + "}", 2, []int64{e6, e5}},
		{"actor_id=urn:uuid:" + b, 2, []int64{e6, e5}},
		{"actor_id=" + strings.ReplaceAll(b, "-", ""), 2, []int64{e6, e5}},
		{"actor_id=00000000-0000-4000-8000-000000000000", 0, []int64{}},
		{"target_id=" + a, 4, []int64{e5, e3, e2, e1}},
		{"actor_id=" + b + "&target_id=" + a, 1, []int64{e5}},
		{"since=" + ts(2*time.Hour), 4, all[:4]}, // since is inclusive
		{"until=" + ts(2*time.Hour), 2, all[4:]}, // until is exclusive
		{"since=" + ts(time.Hour) + "&until=" + ts(3*time.Hour), 3, []int64{e4, e3, e2}},
		{"since=" + url.QueryEscape("2024-01-01T03:00:00+01:00"), 4, all[:4]},
		{"since=2024-01-01T01:59:59.999999Z", 4, all[:4]},
		{"since=2024-01-01T02:00:00.000001Z", 2, all[:2]},
		{"since=" + ts(3*time.Hour) + "&until=" + ts(time.Hour), 0, []int64{}},
		{"since=1999-01-01T00:00:00Z&until=2999-01-01T00:00:00Z", 6, all},
		{"event=login.failure&target_id=" + a + "&since=" + ts(time.Hour), 1, []int64{e3}},
		{"event=login.success&event=user.role_change&target_id=" + a + "&skip=1", 2, []int64{e2}},
	}
	for _, tt := range tests {
		r := e.do("GET", "/api/admin/audit?"+tt.query, token, nil)
		got := auditIDsOf(t, r)
		if fmt.Sprint(got) != fmt.Sprint(tt.want) || r.Header.Get("X-Total-Count") != fmt.Sprint(tt.total) {
			t.Errorf("?%s: got %v (X-Total-Count %q), want %v (%d)", tt.query, got, r.Header.Get("X-Total-Count"), tt.want, tt.total)
		}
	}

	// The objects, exactly: UTC times, nulls, details as stored.
	r := e.do("GET", "/api/admin/audit?since="+ts(2*time.Hour)+"&until="+ts(3*time.Hour), token, nil)
	want := fmt.Sprintf(`[{"id":%d,"at":"2024-01-01T02:00:00Z","event":"login.failure","actor_id":null,"target_id":null,"ip":null,"user_agent":null,"details":{"email":"ghost@example.com","reason":"unknown_email"}},`+
		`{"id":%d,"at":"2024-01-01T02:00:00Z","event":"login.failure","actor_id":null,"target_id":"%s","ip":"2001:db8::1","user_agent":null,"details":{"reason":"wrong_password"}}]`, e4, e3, a)
	if string(r.Body) != want {
		t.Errorf("body\n %s\nwant\n %s", r.Body, want)
	}
	if ct, cc := r.Header.Get("Content-Type"), r.Header.Get("Cache-Control"); ct != "application/json" || cc != "no-store" {
		t.Errorf("Content-Type %q, Cache-Control %q", ct, cc)
	}
	r = e.do("GET", "/api/admin/audit?event=settings.change", token, nil)
	if !strings.Contains(string(r.Body), `"details":{"n":12345678901234567,"file":"ai.json","fields":["model"]}`) {
		t.Errorf("details not as stored (jsonb's order, numbers exact): %s", r.Body)
	}
	if r := e.do("GET", "/api/admin/audit?event=nothing", token, nil); string(r.Body) != "[]" || r.Header.Get("X-Total-Count") != "0" {
		t.Errorf("empty list: %s %v", r.Body, r.Header)
	}

	// Events written by the API itself show up, newest first.
	u, _ := e.user("fresh@example.com")
	ids := auditIDsOf(t, e.do("GET", "/api/admin/audit?target_id="+u.ID, token, nil))
	rows := e.auditRows()
	if len(ids) != 2 || len(rows) < 2 || rows[len(rows)-1].event != EventLoginSuccess || rows[len(rows)-2].event != EventRegister || ids[0] < ids[1] {
		t.Errorf("register and login of %s: ids %v, rows %v", u.ID, ids, rows)
	}
}

// TestAdminListAuditRefusals: credentials first, then one 422 entry per
// bad parameter, in the order of the parameters.
func TestAdminListAuditRefusals(t *testing.T) {
	e := newAdminEnv(t)
	admin, adminToken := e.admin("root@example.com")
	_, userToken := e.user("user@example.com")
	_, otherToken := e.admin("other@example.com")

	for _, path := range []string{"/api/admin/audit", "/api/admin/audit?limit=0&actor_id=x&since=never"} {
		r := e.do("GET", path, "", nil)
		if r.Status != 401 || r.Detail(t) != `"Not authenticated"` || r.Header.Get("WWW-Authenticate") != "Bearer" {
			t.Errorf("%s without a token: %d %s %v", path, r.Status, r.Body, r.Header)
		}
		r = e.do("GET", path, "garbage", nil)
		if r.Status != 401 || r.Detail(t) != `"Could not validate credentials"` || r.Header.Get("WWW-Authenticate") != "Bearer" {
			t.Errorf("%s with a bad token: %d %s", path, r.Status, r.Body)
		}
		r = e.do("GET", path, userToken, nil)
		if r.Status != 403 || r.Detail(t) != `"Not enough permissions"` {
			t.Errorf("%s as a user: %d %s", path, r.Status, r.Body)
		}
		if r.Header.Get("X-Total-Count") != "" {
			t.Errorf("%s: X-Total-Count on a refusal", path)
		}
	}
	// The role as stored now counts, not the token's.
	e.exec("UPDATE users SET role = 'user' WHERE id = $1", admin.ID)
	if r := e.do("GET", "/api/admin/audit", adminToken, nil); r.Status != 403 || r.Detail(t) != `"Not enough permissions"` {
		t.Errorf("a demoted admin: %d %s", r.Status, r.Body)
	}
	e.exec("UPDATE users SET role = 'admin', is_active = false WHERE id = $1", admin.ID)
	if r := e.do("GET", "/api/admin/audit", adminToken, nil); r.Status != 401 || r.Detail(t) != `"Could not validate credentials"` {
		t.Errorf("a deactivated admin: %d %s", r.Status, r.Body)
	}

	entry := func(typ, name, msg string) string {
		return `{"type":"` + typ + `","loc":["query","` + name + `"],"msg":"` + msg + `"}`
	}
	const (
		notInt   = "Input should be a valid integer, unable to parse string as an integer"
		notTime  = "Input should be a valid datetime, expected an RFC 3339 date-time with a time zone"
		badChar  = "Input should be a valid UUID, invalid character: expected an optional prefix of `urn:uuid:` followed by [0-9a-fA-F-], found `n` at 1"
		tooShort = "Input should be a valid UUID, invalid length: expected length 32 for simple format, found 0"
	)
	tests := []struct{ query, detail string }{
		{"skip=-1", entry("greater_than_equal", "skip", "Input should be greater than or equal to 0")},
		{"skip=x", entry("int_parsing", "skip", notInt)},
		{"limit=0", entry("greater_than_equal", "limit", "Input should be greater than or equal to 1")},
		{"limit=1001", entry("less_than_equal", "limit", "Input should be less than or equal to 1000")},
		{"limit=", entry("int_parsing", "limit", notInt)},
		{"actor_id=nope", entry("uuid_parsing", "actor_id", badChar)},
		{"actor_id=", entry("uuid_parsing", "actor_id", tooShort)},
		{"target_id=1234", entry("uuid_parsing", "target_id", "Input should be a valid UUID, invalid length: expected length 32 for simple format, found 4")},
		{"target_id=11111111-1111-4111-8111-11111111111", entry("uuid_parsing", "target_id", "Input should be a valid UUID, invalid group length in group 4: expected 12, found 11")},
		{"since=yesterday", entry("datetime_parsing", "since", notTime)},
		{"since=", entry("datetime_parsing", "since", notTime)},
		{"since=2024-01-01", entry("datetime_parsing", "since", notTime)},
		{"since=2024-01-01T00:00:00", entry("datetime_parsing", "since", notTime)},              // no time zone
		{"since=2024-01-01T00:00:00+01:00", entry("datetime_parsing", "since", notTime)},        // "+" is a space
		{"since=%202024-01-01T00:00:00Z", entry("datetime_parsing", "since", notTime)},          // surrounding space
		{"until=2024-13-01T00:00:00Z", entry("datetime_parsing", "until", notTime)},             // no such month
		{"until=2024-01-01%2000:00:00Z", entry("datetime_parsing", "until", notTime)},           // no T
		{"until=1704067200", entry("datetime_parsing", "until", notTime)},                       // no Unix time
		{"until=2024-01-01T00:00:00Z&until=later", entry("datetime_parsing", "until", notTime)}, // the last value counts
		{"until=later&skip=x&since=x&event=%00&target_id=x&limit=0&actor_id=nope",
			entry("int_parsing", "skip", notInt) + "," +
				entry("greater_than_equal", "limit", "Input should be greater than or equal to 1") + "," +
				entry("uuid_parsing", "actor_id", badChar) + "," +
				entry("uuid_parsing", "target_id", "Input should be a valid UUID, invalid character: expected an optional prefix of `urn:uuid:` followed by [0-9a-fA-F-], found `x` at 1") + "," +
				entry("datetime_parsing", "since", notTime) + "," +
				entry("datetime_parsing", "until", notTime)},
	}
	for _, tt := range tests {
		r := e.do("GET", "/api/admin/audit?"+tt.query, otherToken, nil)
		if want := "[" + tt.detail + "]"; r.Status != 422 || r.Detail(t) != want {
			t.Errorf("?%.60s: got %d %s\nwant 422 %s", tt.query, r.Status, r.Detail(t), want)
		}
		if r.Header.Get("X-Total-Count") != "" {
			t.Errorf("?%.60s: X-Total-Count on an error", tt.query)
		}
	}
	if r := e.do("POST", "/api/admin/audit", otherToken, `{}`); r.Status != 405 || r.Detail(t) != `"Method Not Allowed"` {
		t.Errorf("POST: %d %s", r.Status, r.Body)
	}
}

// TestAuditLogHoldsNoSecret runs the flows that handle secrets (register,
// failed and good logins, refresh and its reuse, password changes,
// logouts) and checks that no password, token or token hash is in any
// audit event, as the API lists them and as they are stored.
func TestAuditLogHoldsNoSecret(t *testing.T) {
	e := newTestEnv(t, noRateLimit)
	e.startListening()
	const (
		email = "secret@example.com"
		pw1   = "First!Secret1"
		pw2   = "Second!Secret2"
	)
	wrong := []string{"Wrong!Secret3", "Other!Secret4"}
	u := e.register(email, pw1)
	secrets := []string{pw1, pw2}
	secrets = append(secrets, wrong...)
	refreshTokens := []string{}

	if r := e.do("POST", "/api/auth/login", "", formOf("username", email, "password", wrong[0])); r.Status != 401 {
		t.Fatalf("wrong password: %d", r.Status)
	}
	access1, refresh1 := e.loginTokens(email, pw1)
	r := e.refreshBody(refresh1)
	if r.Status != 200 {
		t.Fatalf("refresh: %d %s", r.Status, r.Body)
	}
	// Refreshed by the body: the new pair is in the body.
	pair := r.JSON(t).(map[string]any)
	refresh2, _ := pair["refresh_token"].(string)
	access2, _ := pair["access_token"].(string)
	if refresh2 == "" || access2 == "" {
		t.Fatalf("refresh body %s", r.Body)
	}
	e.ageRetiredTokens(time.Hour)
	wantInvalidRefresh(t, "reuse of a retired refresh token", e.refreshBody(refresh1))
	access3, refresh3 := e.loginTokens(email, pw1)
	if r := e.do("POST", "/api/users/me/password", access3, map[string]string{"current_password": wrong[1], "new_password": pw2}); r.Status != 400 {
		t.Fatalf("password change with a wrong password: %d %s", r.Status, r.Body)
	}
	if r := e.do("POST", "/api/users/me/password", access3, map[string]string{"current_password": pw1, "new_password": pw2}); r.Status != 204 {
		t.Fatalf("password change: %d %s", r.Status, r.Body)
	}
	if r := e.do("POST", "/api/auth/logout", "", map[string]string{"refresh_token": refresh3}); r.Status != 204 {
		t.Fatalf("logout: %d %s", r.Status, r.Body)
	}
	access4, refresh4 := e.loginTokens(email, pw2)
	if r := e.do("POST", "/api/auth/logout-all", access4, nil); r.Status != 204 {
		t.Fatalf("logout-all: %d %s", r.Status, r.Body)
	}
	refreshTokens = append(refreshTokens, refresh1, refresh2, refresh3, refresh4)
	secrets = append(secrets, access1, access2, access3, access4)
	for _, rt := range refreshTokens {
		h := sha256.Sum256([]byte(rt))
		secrets = append(secrets, rt, hex.EncodeToString(h[:]), base64.StdEncoding.EncodeToString(h[:]),
			base64.RawURLEncoding.EncodeToString(h[:]))
	}
	var hash string
	if err := e.db.QueryRow(context.Background(), "SELECT hashed_password FROM users WHERE id = $1", u.ID).Scan(&hash); err != nil {
		t.Fatal(err)
	}
	secrets = append(secrets, hash)

	_, adminToken := e.admin("root@example.com")
	r = e.do("GET", "/api/admin/audit?limit=1000&target_id="+u.ID, adminToken, nil)
	if r.Status != 200 {
		t.Fatalf("audit: %d %s", r.Status, r.Body)
	}
	var events []AuditEvent
	if err := json.Unmarshal(r.Body, &events); err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, ev := range events {
		seen[ev.Event]++
	}
	for _, ev := range []string{EventRegister, EventLoginFailure, EventLoginSuccess, EventRefreshReuse, EventPasswordChange, EventLogout, EventLogoutAll} {
		if seen[ev] == 0 {
			t.Errorf("no %s event about the user in %s", ev, r.Body)
		}
	}
	stored := e.auditRows()
	for _, secret := range secrets {
		if strings.Contains(string(r.Body), secret) {
			t.Errorf("GET /api/admin/audit shows a secret (%.12s...): %s", secret, r.Body)
		}
		for _, row := range stored {
			if strings.Contains(fmt.Sprint(row), secret) {
				t.Errorf("an audit row holds a secret (%.12s...): %+v", secret, row)
			}
		}
	}
	for _, word := range []string{"hashed_password", "access_token", "refresh_token", "Secret"} {
		if strings.Contains(string(r.Body), word) {
			t.Errorf("GET /api/admin/audit mentions %q: %s", word, r.Body)
		}
	}
}
