package accounts

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// profileOf decodes a profile response, checking the object's shape.
func profileOf(t *testing.T, r *response) map[string]any {
	t.Helper()
	if r.Status != http.StatusOK {
		t.Fatalf("profile: %d %s", r.Status, r.Body)
	}
	p := r.JSON(t).(map[string]any)
	want := []string{"user_id", "full_name", "phone", "job_title", "department", "bio", "avatar_url", "updated_at"}
	if len(p) != len(want) {
		t.Fatalf("profile %v, want exactly the fields %v", p, want)
	}
	for _, k := range want {
		if _, ok := p[k]; !ok {
			t.Fatalf("profile %v lacks %s", p, k)
		}
	}
	ts, ok := p["updated_at"].(string)
	if !ok || !strings.HasSuffix(ts, "Z") {
		t.Fatalf("updated_at = %v, want RFC 3339 UTC", p["updated_at"])
	}
	if _, err := time.Parse(time.RFC3339Nano, ts); err != nil {
		t.Fatalf("updated_at = %q: %v", ts, err)
	}
	return p
}

// profileUpdatedAt reads a profile's updated_at from the database.
func (e *testEnv) profileUpdatedAt(userID string) time.Time {
	e.t.Helper()
	var ts time.Time
	if err := e.db.QueryRow(context.Background(), "SELECT updated_at FROM profiles WHERE user_id = $1", userID).Scan(&ts); err != nil {
		e.t.Fatal(err)
	}
	return ts
}

func TestProfileGet(t *testing.T) {
	e := newTestEnv(t)
	u, token := e.user("ada@example.com")
	p := profileOf(t, e.do("GET", "/api/profile", token, nil))
	if p["user_id"] != u.ID {
		t.Fatalf("user_id = %v, want %s", p["user_id"], u.ID)
	}
	for _, k := range []string{"full_name", "phone", "job_title", "department", "bio", "avatar_url"} {
		if p[k] != nil {
			t.Errorf("%s = %v, want null", k, p[k])
		}
	}

	// An account without a profile row (made outside the API, or by the
	// old backend) gets an empty one on its first read, once, even when
	// the first reads come at the same time.
	e.exec("DELETE FROM profiles WHERE user_id = $1", u.ID)
	var wg sync.WaitGroup
	responses := make([]*response, 8)
	for i := range responses {
		wg.Add(1)
		go func() {
			defer wg.Done()
			responses[i] = e.do("GET", "/api/profile", token, nil)
		}()
	}
	wg.Wait()
	for _, r := range responses {
		if p := profileOf(t, r); p["user_id"] != u.ID || p["full_name"] != nil {
			t.Fatalf("created profile = %v", p)
		}
	}
	var n int
	if err := e.db.QueryRow(context.Background(), "SELECT count(*) FROM profiles WHERE user_id = $1", u.ID).Scan(&n); err != nil || n != 1 {
		t.Fatalf("%d profile rows (%v), want 1", n, err)
	}
}

func TestProfileUpdate(t *testing.T) {
	e := newTestEnv(t)
	u, token := e.user("bob@example.com")
	old := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	e.exec("UPDATE profiles SET updated_at = $2 WHERE user_id = $1", u.ID, old)

	full := map[string]any{
		"full_name":  strings.Repeat("é", 200), // characters, not bytes
		"phone":      "+44 (20) 7946-0958",
		"job_title":  "Engineer",
		"department": "",
		"bio":        strings.Repeat("b", 2000),
		"avatar_url": "https://cdn.example.com/a.png?size=64",
	}
	p := profileOf(t, e.do("PUT", "/api/profile", token, full))
	for k, v := range full {
		if p[k] != v {
			t.Errorf("%s = %v, want %v", k, p[k], v)
		}
	}
	if p["user_id"] != u.ID {
		t.Errorf("user_id = %v", p["user_id"])
	}
	bumped := e.profileUpdatedAt(u.ID)
	if !bumped.After(old) || p["updated_at"] != bumped.UTC().Format(time.RFC3339Nano) {
		t.Fatalf("updated_at = %v (stored %v), want bumped from %v", p["updated_at"], bumped, old)
	}
	if got := profileOf(t, e.do("GET", "/api/profile", token, nil)); !jsonSame(got, p) {
		t.Fatalf("GET after PUT = %v, want %v", got, p)
	}

	// Absent fields stay, null clears.
	e.exec("UPDATE profiles SET updated_at = $2 WHERE user_id = $1", u.ID, old)
	p = profileOf(t, e.do("PUT", "/api/profile", token, `{"phone": null, "job_title": "Lead", "avatar_url": null}`))
	if p["phone"] != nil || p["avatar_url"] != nil || p["job_title"] != "Lead" || p["full_name"] != full["full_name"] || p["bio"] != full["bio"] || p["department"] != "" {
		t.Fatalf("after partial update: %v", p)
	}
	if !e.profileUpdatedAt(u.ID).After(old) {
		t.Fatal("updated_at not bumped by a partial update")
	}

	// No change, no new updated_at: an empty body, or the same values.
	e.exec("UPDATE profiles SET updated_at = $2 WHERE user_id = $1", u.ID, old)
	for _, body := range []string{`{}`, `{"job_title": "Lead", "phone": null}`} {
		p = profileOf(t, e.do("PUT", "/api/profile", token, body))
		if p["updated_at"] != old.Format(time.RFC3339Nano) || p["job_title"] != "Lead" {
			t.Fatalf("PUT %s changed the profile: %v", body, p)
		}
	}

	// A PUT without a profile row creates it.
	e.exec("DELETE FROM profiles WHERE user_id = $1", u.ID)
	p = profileOf(t, e.do("PUT", "/api/profile", token, map[string]any{"bio": "Hi"}))
	if p["bio"] != "Hi" || p["full_name"] != nil || p["user_id"] != u.ID {
		t.Fatalf("PUT on a missing profile: %v", p)
	}
}

// jsonSame reports whether a and b encode to the same JSON.
func jsonSame(a, b any) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

func TestProfilePhoneAndAvatarRules(t *testing.T) {
	e := newTestEnv(t)
	_, token := e.user("rules@example.com")
	for _, phone := range []string{"12345", "+1 555 0100", "(030) 1234-5678", "0044.20.7946.0958", strings.Repeat("1", 32)} {
		if r := e.do("PUT", "/api/profile", token, map[string]any{"phone": phone}); r.Status != 200 {
			t.Errorf("phone %q: %d %s", phone, r.Status, r.Body)
		}
	}
	for _, u := range []string{"http://example.com", "HTTPS://EXAMPLE.COM/a", "https://user@example.com:8443/a.png#x", "http://[::1]/a", "http://127.0.0.1:65535/"} {
		if r := e.do("PUT", "/api/profile", token, map[string]any{"avatar_url": u}); r.Status != 200 {
			t.Errorf("avatar_url %q: %d %s", u, r.Status, r.Body)
		}
	}
}

func TestProfileRefusesBadInput(t *testing.T) {
	e := newTestEnv(t)
	u, token := e.user("carol@example.com")
	e.do("PUT", "/api/profile", token, map[string]any{"full_name": "Carol", "phone": "+1 555 0100"})
	before := string(e.do("GET", "/api/profile", token, nil).Body)

	tooLong := func(field string, n int) string {
		return `[{"type":"string_too_long","loc":["body","` + field + `"],"msg":"String should have at most ` + strconv.Itoa(n) + ` characters"}]`
	}
	const phoneEntry = `{"type":"value_error","loc":["body","phone"],"msg":"Value error, Phone number may contain only digits, spaces, - ( ) . and a leading +, and at least 5 digits"}`
	phoneErr := `[` + phoneEntry + `]`
	urlErr := func(typ, msg string) string {
		return `[{"type":"` + typ + `","loc":["body","avatar_url"],"msg":"` + msg + `"}]`
	}
	tests := []struct {
		name   string
		body   any
		status int
		detail string
	}{
		{"full_name too long", map[string]any{"full_name": strings.Repeat("é", 201)}, 422, tooLong("full_name", 200)},
		{"phone too long", map[string]any{"phone": strings.Repeat("1", 33)}, 422, tooLong("phone", 32)},
		{"job_title too long", map[string]any{"job_title": strings.Repeat("x", 201)}, 422, tooLong("job_title", 200)},
		{"department too long", map[string]any{"department": strings.Repeat("x", 201)}, 422, tooLong("department", 200)},
		{"bio too long", map[string]any{"bio": strings.Repeat("x", 2001)}, 422, tooLong("bio", 2000)},
		{"avatar_url too long", map[string]any{"avatar_url": "https://example.com/" + strings.Repeat("a", 2029)}, 422, tooLong("avatar_url", 2048)},
		{"phone with letters", map[string]any{"phone": "call 12345"}, 422, phoneErr},
		{"phone with 4 digits", map[string]any{"phone": "+1 (23) 4"}, 422, phoneErr},
		{"phone with + inside", map[string]any{"phone": "1+2345"}, 422, phoneErr},
		{"phone with leading space before +", map[string]any{"phone": " +12345"}, 422, phoneErr},
		{"phone empty", map[string]any{"phone": ""}, 422, phoneErr},
		{"phone with a fullwidth digit", map[string]any{"phone": "1234５"}, 422, phoneErr},
		{"avatar_url empty", map[string]any{"avatar_url": ""}, 422, urlErr("url_parsing", "Input should be a valid URL, input is empty")},
		{"avatar_url relative", map[string]any{"avatar_url": "/img/a.png"}, 422, urlErr("url_parsing", "Input should be a valid URL, relative URL without a base")},
		{"avatar_url ftp", map[string]any{"avatar_url": "ftp://example.com/a.png"}, 422, urlErr("url_scheme", "URL scheme should be 'http' or 'https'")},
		{"avatar_url javascript", map[string]any{"avatar_url": "javascript:alert(1)"}, 422, urlErr("url_scheme", "URL scheme should be 'http' or 'https'")},
		{"avatar_url data", map[string]any{"avatar_url": "data:image/png;base64,AAAA"}, 422, urlErr("url_scheme", "URL scheme should be 'http' or 'https'")},
		{"avatar_url without host", map[string]any{"avatar_url": "http:///a.png"}, 422, urlErr("url_parsing", "Input should be a valid URL, empty host")},
		{"avatar_url opaque", map[string]any{"avatar_url": "http:example.com"}, 422, urlErr("url_parsing", "Input should be a valid URL, empty host")},
		{"avatar_url with a space", map[string]any{"avatar_url": "https://example.com/a b.png"}, 422, urlErr("url_parsing", "Input should be a valid URL, invalid URL")},
		{"avatar_url bad host", map[string]any{"avatar_url": "https://exa%zzmple.com/"}, 422, urlErr("url_parsing", "Input should be a valid URL, invalid URL")},
		{"avatar_url bad port", map[string]any{"avatar_url": "https://example.com:65536/"}, 422, urlErr("url_parsing", "Input should be a valid URL, invalid port number")},
		{"not a string", map[string]any{"full_name": 5, "bio": []string{"x"}, "phone": true}, 422,
			`[{"type":"string_type","loc":["body","full_name"],"msg":"Input should be a valid string"},` +
				`{"type":"string_type","loc":["body","phone"],"msg":"Input should be a valid string"},` +
				`{"type":"string_type","loc":["body","bio"],"msg":"Input should be a valid string"}]`},
		{"NUL in text", `{"bio": "a\u0000b"}`, 422,
			`[{"type":"value_error","loc":["body","bio"],"msg":"Value error, Text must not contain NUL characters"}]`},
		{"several fields, in the model's order", map[string]any{"avatar_url": "x", "full_name": strings.Repeat("x", 201), "phone": "abc"}, 422,
			`[{"type":"string_too_long","loc":["body","full_name"],"msg":"String should have at most 200 characters"},` +
				phoneEntry + `,` +
				`{"type":"url_parsing","loc":["body","avatar_url"],"msg":"Input should be a valid URL, relative URL without a base"}]`},
		{"privileged fields", map[string]any{"full_name": "Mallory", "user_id": u.ID, "role": "admin", "is_active": true, "id": u.ID, "email": "m@example.com", "updated_at": "2030-01-01T00:00:00Z"}, 422,
			`[{"type":"extra_forbidden","loc":["body","email"],"msg":"Extra inputs are not permitted"},` +
				`{"type":"extra_forbidden","loc":["body","id"],"msg":"Extra inputs are not permitted"},` +
				`{"type":"extra_forbidden","loc":["body","is_active"],"msg":"Extra inputs are not permitted"},` +
				`{"type":"extra_forbidden","loc":["body","role"],"msg":"Extra inputs are not permitted"},` +
				`{"type":"extra_forbidden","loc":["body","updated_at"],"msg":"Extra inputs are not permitted"},` +
				`{"type":"extra_forbidden","loc":["body","user_id"],"msg":"Extra inputs are not permitted"}]`},
		{"unknown field", map[string]any{"nickname": "c"}, 422,
			`[{"type":"extra_forbidden","loc":["body","nickname"],"msg":"Extra inputs are not permitted"}]`},
		{"not JSON", `phone=12345`, 422, `[{"type":"json_invalid","loc":["body",0],"msg":"JSON decode error"}]`},
		{"JSON array", `[]`, 422, `[{"type":"model_attributes_type","loc":["body"],"msg":"Input should be a valid dictionary or object to extract fields from"}]`},
		{"empty body", ``, 422, `[{"type":"missing","loc":["body"],"msg":"Field required"}]`},
		{"too large", `{"bio":"` + strings.Repeat("a", 1<<20) + `"}`, 413, `"Request body too large"`},
	}
	for _, tt := range tests {
		r := e.do("PUT", "/api/profile", token, tt.body)
		if r.Status != tt.status || r.Detail(t) != tt.detail {
			t.Errorf("%s: got %d %s\nwant %d %s", tt.name, r.Status, r.Detail(t), tt.status, tt.detail)
		}
	}
	if after := string(e.do("GET", "/api/profile", token, nil).Body); after != before {
		t.Fatalf("refused requests changed the profile:\n%s\nwas\n%s", after, before)
	}
}

func TestProfileNeedsAuthentication(t *testing.T) {
	e := newTestEnv(t)
	u, token := e.user("dave@example.com")
	for _, method := range []string{"GET", "PUT"} {
		r := e.do(method, "/api/profile", "", map[string]any{"full_name": "x"})
		if r.Status != 401 || r.Detail(t) != `"Not authenticated"` || r.Header.Get("WWW-Authenticate") != "Bearer" {
			t.Errorf("%s without a token: %d %s", method, r.Status, r.Body)
		}
		r = e.do(method, "/api/profile", "not.a.token", map[string]any{"full_name": "x"})
		if r.Status != 401 || r.Detail(t) != `"Could not validate credentials"` {
			t.Errorf("%s with a bad token: %d %s", method, r.Status, r.Body)
		}
	}
	e.exec("UPDATE users SET is_active = false WHERE id = $1", u.ID)
	if r := e.do("PUT", "/api/profile", token, map[string]any{"full_name": "x"}); r.Status != 401 || r.Detail(t) != `"Could not validate credentials"` {
		t.Errorf("inactive user: %d %s", r.Status, r.Body)
	}
	if r := e.do("DELETE", "/api/profile", token, nil); r.Status != 405 || r.Detail(t) != `"Method Not Allowed"` {
		t.Errorf("DELETE: %d %s", r.Status, r.Body)
	}
}
