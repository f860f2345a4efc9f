package accounts

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/caddyaccounts/gateway/internal/testcheck"
)

// newSettingsEnv is a testEnv whose settings directory is dir/settings,
// which does not exist yet.
func newSettingsEnv(t *testing.T) (*testEnv, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "settings")
	return newTestEnv(t, func(c *Config) { c.Settings.Dir = dir }), dir
}

// jsonEqual fails unless got is the JSON value want, ignoring the fields
// named in skip (such as a time).
func jsonEqual(t *testing.T, what string, got []byte, want string, skip ...string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("%s: %q is not JSON: %v", what, got, err)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("%s: bad want: %v", what, err)
	}
	if m, ok := g.(map[string]any); ok {
		for _, k := range skip {
			if _, ok := m[k]; !ok {
				t.Errorf("%s: no field %q in %s", what, k, got)
			}
			delete(m, k)
		}
	}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("%s:\n got %s\nwant %s", what, got, want)
	}
}

// fileMode returns the permission bits of path.
func fileMode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// recentTime fails unless v is an RFC 3339 UTC time of the last minute.
func recentTime(t *testing.T, what string, v any) time.Time {
	t.Helper()
	s, _ := v.(string)
	ts, err := time.Parse(time.RFC3339Nano, s)
	if err != nil || !strings.HasSuffix(s, "Z") || time.Since(ts) > time.Minute || time.Until(ts) > time.Second {
		t.Fatalf("%s = %v, want a recent RFC 3339 UTC time", what, v)
	}
	return ts
}

// assertNoSecretInLogs fails if any log line holds one of the secrets.
func assertNoSecretInLogs(t *testing.T, e *testEnv, secrets ...string) {
	t.Helper()
	testcheck.NoSecretInLogs(t, e.logs, secrets...)
}

const defaultAIJSON = `{"provider":"openai","model":"gpt-4o-mini","base_url":null,"api_key":null,` +
	`"api_key_set":false,"temperature":0.7,"max_tokens":1024,"updated_at":null}`

func TestAISettingsDefaults(t *testing.T) {
	e, dir := newSettingsEnv(t)
	_, admin := e.admin("root@example.com")
	r := e.do("GET", "/api/settings/ai", admin, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("GET: %d %s", r.Status, r.Body)
	}
	jsonEqual(t, "defaults", r.Body, defaultAIJSON)
	if r.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control = %q", r.Header.Get("Cache-Control"))
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("a GET created the settings directory: %v", err)
	}
}

func TestAISettingsPatch(t *testing.T) {
	e, dir := newSettingsEnv(t)
	admin, token := e.admin("root@example.com")
	path := filepath.Join(dir, "ai.json")
	const key = "sk-live-0123456789abcdefWXYZ"

	r := e.do("PATCH", "/api/settings/ai", token, map[string]any{
		"provider": "anthropic", "model": "claude-test", "base_url": "https://llm.example.com/api",
		"api_key": " " + key + "\n", "temperature": 1.25, "max_tokens": 4096,
	})
	if r.Status != http.StatusOK {
		t.Fatalf("PATCH: %d %s", r.Status, r.Body)
	}
	jsonEqual(t, "PATCH response", r.Body, `{"provider":"anthropic","model":"claude-test","base_url":"https://llm.example.com/api",`+
		`"api_key":"****WXYZ","api_key_set":true,"temperature":1.25,"max_tokens":4096}`, "updated_at")
	updated := recentTime(t, "updated_at", r.JSON(t).(map[string]any)["updated_at"])

	// The file: every field, the key in clear (trimmed), mode 0600, in a
	// directory created 0750, and nothing else left behind.
	onDisk := testcheck.JSONFile(t, path)
	recentTime(t, "file updated_at", onDisk["updated_at"])
	delete(onDisk, "updated_at")
	want := map[string]any{"provider": "anthropic", "model": "claude-test", "base_url": "https://llm.example.com/api",
		"api_key": key, "temperature": 1.25, "max_tokens": float64(4096)}
	if !reflect.DeepEqual(onDisk, want) {
		t.Fatalf("ai.json = %v\nwant %v", onDisk, want)
	}
	if m := fileMode(t, path); m != 0o600 {
		t.Errorf("ai.json mode %v, want 0600", m)
	}
	if m := fileMode(t, dir); m != 0o750 {
		t.Errorf("settings directory mode %v, want 0750", m)
	}
	testcheck.DirHolds(t, dir, ".ai.json.lock", "ai.json")

	get := e.do("GET", "/api/settings/ai", token, nil)
	if get.Status != 200 || !bytes.Equal(get.Body, r.Body) {
		t.Fatalf("GET after PATCH: %d %s\nwant %s", get.Status, get.Body, r.Body)
	}

	// Absent fields are unchanged, the key included.
	r = e.do("PATCH", "/api/settings/ai", token, map[string]any{"model": "claude-2"})
	jsonEqual(t, "model only", r.Body, `{"provider":"anthropic","model":"claude-2","base_url":"https://llm.example.com/api",`+
		`"api_key":"****WXYZ","api_key_set":true,"temperature":1.25,"max_tokens":4096}`, "updated_at")
	if testcheck.JSONFile(t, path)["api_key"] != key {
		t.Fatal("a PATCH without api_key changed the key")
	}

	// The mask sent back keeps the key; a PATCH that changes nothing
	// does not write.
	before, _ := os.ReadFile(path)
	beforeUpdated := testcheck.JSONFile(t, path)["updated_at"]
	for _, mask := range []string{"****WXYZ", "****"} {
		r = e.do("PATCH", "/api/settings/ai", token, map[string]any{"api_key": mask, "model": "claude-2"})
		if r.Status != 200 || r.JSON(t).(map[string]any)["api_key"] != "****WXYZ" || r.JSON(t).(map[string]any)["updated_at"] != beforeUpdated {
			t.Fatalf("PATCH with the mask %q: %d %s", mask, r.Status, r.Body)
		}
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Fatalf("a PATCH that changes nothing rewrote the file:\n%s\n%s", before, after)
	}

	// A new key replaces it.
	const key2 = "sk-other-abcdefghijklmn9876"
	r = e.do("PATCH", "/api/settings/ai", token, map[string]any{"api_key": key2})
	if got := r.JSON(t).(map[string]any); r.Status != 200 || got["api_key"] != "****9876" || got["api_key_set"] != true {
		t.Fatalf("replace: %d %s", r.Status, r.Body)
	}
	if testcheck.JSONFile(t, path)["api_key"] != key2 {
		t.Fatal("the key was not replaced on disk")
	}
	if ts := recentTime(t, "updated_at", r.JSON(t).(map[string]any)["updated_at"]); ts.Before(updated) {
		t.Fatalf("updated_at went back: %v < %v", ts, updated)
	}

	// null and "" clear the key and the base URL.
	for _, empty := range []any{nil, ""} {
		e.do("PATCH", "/api/settings/ai", token, map[string]any{"api_key": "sk-again-0123456789", "base_url": "http://127.0.0.1:9/v1"})
		r = e.do("PATCH", "/api/settings/ai", token, map[string]any{"api_key": empty, "base_url": empty})
		jsonEqual(t, fmt.Sprintf("clear with %q", empty), r.Body, `{"provider":"anthropic","model":"claude-2","base_url":null,`+
			`"api_key":null,"api_key_set":false,"temperature":1.25,"max_tokens":4096}`, "updated_at")
		if f := testcheck.JSONFile(t, path); f["api_key"] != nil || f["base_url"] != nil {
			t.Fatalf("cleared fields on disk: %v", f)
		}
	}

	// A short key is masked without any of its characters.
	r = e.do("PATCH", "/api/settings/ai", token, map[string]any{"api_key": "short-key"})
	if got := r.JSON(t).(map[string]any); got["api_key"] != "****" || got["api_key_set"] != true {
		t.Fatalf("short key: %s", r.Body)
	}
	r = e.do("PATCH", "/api/settings/ai", token, map[string]any{"api_key": "****", "temperature": 0})
	if got := r.JSON(t).(map[string]any); got["api_key"] != "****" || got["temperature"] != float64(0) || testcheck.JSONFile(t, path)["api_key"] != "short-key" {
		t.Fatalf("short key kept by its mask: %s", r.Body)
	}

	// Every change is audited by field name, never by value.
	var n int
	var details string
	err := e.db.QueryRow(context.Background(),
		`SELECT count(*), string_agg(details::text, ' ') FROM audit_events WHERE event = $1 AND actor_id = $2`,
		EventSettingsChange, admin.ID).Scan(&n, &details)
	if err != nil || n < 5 {
		t.Fatalf("audit rows: %d, %v", n, err)
	}
	for _, secret := range []string{key, key2, "short-key", "sk-again"} {
		if strings.Contains(details, secret) {
			t.Fatalf("a key is in the audit log: %s", details)
		}
	}
	assertNoSecretInLogs(t, e, key, key2, "short-key", "sk-again")
}

func TestAISettingsRefusesBadInput(t *testing.T) {
	e, dir := newSettingsEnv(t)
	_, token := e.admin("root@example.com")
	const secret = "sk has spaces secret"
	enum := `[{"type":"enum","loc":["body","provider"],"msg":"Input should be 'openai' or 'anthropic'"}]`
	tests := []struct {
		name   string
		body   any
		status int
		detail string
	}{
		{"unknown provider", map[string]any{"provider": "gemini"}, 422, enum},
		{"provider in another case", map[string]any{"provider": "OpenAI"}, 422, enum},
		{"provider not a string", map[string]any{"provider": 5}, 422, enum},
		{"provider null", map[string]any{"provider": nil}, 422, enum},
		{"empty model", map[string]any{"model": ""}, 422,
			`[{"type":"string_too_short","loc":["body","model"],"msg":"String should have at least 1 character"}]`},
		{"model too long", map[string]any{"model": strings.Repeat("m", 201)}, 422,
			`[{"type":"string_too_long","loc":["body","model"],"msg":"String should have at most 200 characters"}]`},
		{"model null", map[string]any{"model": nil}, 422,
			`[{"type":"string_type","loc":["body","model"],"msg":"Input should be a valid string"}]`},
		{"model not a string", map[string]any{"model": 4}, 422,
			`[{"type":"string_type","loc":["body","model"],"msg":"Input should be a valid string"}]`},
		{"base_url relative", map[string]any{"base_url": "api.example.com/v1"}, 422,
			`[{"type":"url_parsing","loc":["body","base_url"],"msg":"Input should be a valid URL, relative URL without a base"}]`},
		{"base_url ftp", map[string]any{"base_url": "ftp://example.com"}, 422,
			`[{"type":"url_scheme","loc":["body","base_url"],"msg":"URL scheme should be 'http' or 'https'"}]`},
		{"base_url no host", map[string]any{"base_url": "https://"}, 422,
			`[{"type":"url_parsing","loc":["body","base_url"],"msg":"Input should be a valid URL, empty host"}]`},
		{"base_url with a query", map[string]any{"base_url": "https://example.com/v1?key=x"}, 422,
			`[{"type":"value_error","loc":["body","base_url"],"msg":"Value error, Base URL must not contain credentials, a query or a fragment"}]`},
		{"base_url with credentials", map[string]any{"base_url": "https://u:p@example.com/v1"}, 422,
			`[{"type":"value_error","loc":["body","base_url"],"msg":"Value error, Base URL must not contain credentials, a query or a fragment"}]`},
		{"base_url too long", map[string]any{"base_url": "https://example.com/" + strings.Repeat("a", 2049)}, 422,
			`[{"type":"string_too_long","loc":["body","base_url"],"msg":"String should have at most 2048 characters"}]`},
		{"base_url not a string", map[string]any{"base_url": true}, 422,
			`[{"type":"string_type","loc":["body","base_url"],"msg":"Input should be a valid string"}]`},
		{"api_key with spaces", map[string]any{"api_key": secret}, 422,
			`[{"type":"value_error","loc":["body","api_key"],"msg":"Value error, API key must be printable ASCII without spaces"}]`},
		{"api_key too long", map[string]any{"api_key": strings.Repeat("k", 1001)}, 422,
			`[{"type":"string_too_long","loc":["body","api_key"],"msg":"String should have at most 1000 characters"}]`},
		{"api_key not a string", map[string]any{"api_key": 12345}, 422,
			`[{"type":"string_type","loc":["body","api_key"],"msg":"Input should be a valid string"}]`},
		{"temperature below 0", map[string]any{"temperature": -0.1}, 422,
			`[{"type":"greater_than_equal","loc":["body","temperature"],"msg":"Input should be greater than or equal to 0"}]`},
		{"temperature above 2", map[string]any{"temperature": 2.01}, 422,
			`[{"type":"less_than_equal","loc":["body","temperature"],"msg":"Input should be less than or equal to 2"}]`},
		{"temperature a string", map[string]any{"temperature": "hot"}, 422,
			`[{"type":"float_type","loc":["body","temperature"],"msg":"Input should be a valid number"}]`},
		{"temperature null", map[string]any{"temperature": nil}, 422,
			`[{"type":"float_type","loc":["body","temperature"],"msg":"Input should be a valid number"}]`},
		{"max_tokens 0", map[string]any{"max_tokens": 0}, 422,
			`[{"type":"greater_than_equal","loc":["body","max_tokens"],"msg":"Input should be greater than or equal to 1"}]`},
		{"max_tokens too many", map[string]any{"max_tokens": 200001}, 422,
			`[{"type":"less_than_equal","loc":["body","max_tokens"],"msg":"Input should be less than or equal to 200000"}]`},
		{"max_tokens fractional", map[string]any{"max_tokens": 1.5}, 422,
			`[{"type":"int_type","loc":["body","max_tokens"],"msg":"Input should be a valid integer"}]`},
		{"max_tokens a string", map[string]any{"max_tokens": "10"}, 422,
			`[{"type":"int_type","loc":["body","max_tokens"],"msg":"Input should be a valid integer"}]`},
		{"unknown fields", map[string]any{"model": "ok", "role": "admin", "api_key_set": true}, 422,
			`[{"type":"extra_forbidden","loc":["body","api_key_set"],"msg":"Extra inputs are not permitted"},` +
				`{"type":"extra_forbidden","loc":["body","role"],"msg":"Extra inputs are not permitted"}]`},
		{"several at once", map[string]any{"provider": "x", "temperature": 3, "max_tokens": 0, "updated_at": "now"}, 422,
			enum[:len(enum)-1] + `,{"type":"less_than_equal","loc":["body","temperature"],"msg":"Input should be less than or equal to 2"},` +
				`{"type":"greater_than_equal","loc":["body","max_tokens"],"msg":"Input should be greater than or equal to 1"},` +
				`{"type":"extra_forbidden","loc":["body","updated_at"],"msg":"Extra inputs are not permitted"}]`},
		{"not JSON", `provider=openai`, 422, `[{"type":"json_invalid","loc":["body",0],"msg":"JSON decode error"}]`},
		{"not an object", `[]`, 422,
			`[{"type":"model_attributes_type","loc":["body"],"msg":"Input should be a valid dictionary or object to extract fields from"}]`},
		{"no body", nil, 422, `[{"type":"missing","loc":["body"],"msg":"Field required"}]`},
		{"too large", `{"model":"` + strings.Repeat("a", 1<<20) + `"}`, 413, `"Request body too large"`},
	}
	for _, tt := range tests {
		r := e.do("PATCH", "/api/settings/ai", token, tt.body)
		if r.Status != tt.status || r.Detail(t) != tt.detail {
			t.Errorf("%s: got %d %s\nwant %d %s", tt.name, r.Status, r.Detail(t), tt.status, tt.detail)
		}
		if strings.Contains(string(r.Body), "spaces secret") {
			t.Errorf("%s: the key is echoed back: %s", tt.name, r.Body)
		}
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("refused PATCHes touched the settings directory: %v", err)
	}
	assertNoSecretInLogs(t, e, "spaces secret")
}

func TestSettingsPermissions(t *testing.T) {
	e, _ := newSettingsEnv(t)
	_, user := e.user("user@example.com")
	adminOnly := []struct {
		method, path string
		body         any
	}{
		{"GET", "/api/settings/ai", nil},
		{"PATCH", "/api/settings/ai", map[string]any{"model": "x"}},
		{"POST", "/api/settings/ai/test", nil},
		{"PATCH", "/api/settings/documents/limits", map[string]any{"max_pdf_size_mb": 5}},
	}
	for _, c := range adminOnly {
		if r := e.do(c.method, c.path, user, c.body); r.Status != 403 || r.Detail(t) != `"Not enough permissions"` {
			t.Errorf("%s %s as a user: %d %s", c.method, c.path, r.Status, r.Body)
		}
	}
	all := append(adminOnly, struct {
		method, path string
		body         any
	}{"GET", "/api/settings/documents/limits", nil})
	for _, c := range all {
		r := e.do(c.method, c.path, "", c.body)
		if r.Status != 401 || r.Detail(t) != `"Not authenticated"` || r.Header.Get("WWW-Authenticate") != "Bearer" {
			t.Errorf("%s %s without a token: %d %s", c.method, c.path, r.Status, r.Body)
		}
	}
	if r := e.do("GET", "/api/settings/documents/limits", user, nil); r.Status != 200 || string(r.Body) != `{"max_pdf_size_mb":25}` {
		t.Errorf("limits as a user: %d %s", r.Status, r.Body)
	}
	if r := e.do("DELETE", "/api/settings/ai", user, nil); r.Status != 405 || r.Detail(t) != `"Method Not Allowed"` {
		t.Errorf("DELETE: %d %s", r.Status, r.Body)
	}
}

func TestDocumentLimits(t *testing.T) {
	e, dir := newSettingsEnv(t)
	_, admin := e.admin("root@example.com")
	_, user := e.user("user@example.com")
	path := filepath.Join(dir, "documents.json")

	if n, err := e.svc.Settings().MaxUploadBytes(); n != 25<<20 || err != nil {
		t.Fatalf("default MaxUploadBytes = %d, %v", n, err)
	}
	r := e.do("PATCH", "/api/settings/documents/limits", admin, map[string]any{"max_pdf_size_mb": 100})
	if r.Status != 200 || string(r.Body) != `{"max_pdf_size_mb":100}` {
		t.Fatalf("PATCH: %d %s", r.Status, r.Body)
	}
	if r := e.do("GET", "/api/settings/documents/limits", user, nil); r.Status != 200 || string(r.Body) != `{"max_pdf_size_mb":100}` {
		t.Fatalf("GET after PATCH: %d %s", r.Status, r.Body)
	}
	if n, err := e.svc.Settings().MaxUploadBytes(); n != 100<<20 || err != nil {
		t.Fatalf("MaxUploadBytes after PATCH = %d, %v", n, err)
	}
	f := testcheck.JSONFile(t, path)
	recentTime(t, "updated_at", f["updated_at"])
	if f["max_pdf_size_mb"] != float64(100) || len(f) != 2 {
		t.Fatalf("documents.json = %v", f)
	}
	if m := fileMode(t, path); m != 0o644 {
		t.Errorf("documents.json mode %v, want 0644", m)
	}
	for _, n := range []int{1, 1024} {
		if r := e.do("PATCH", "/api/settings/documents/limits", admin, map[string]any{"max_pdf_size_mb": n}); r.Status != 200 ||
			string(r.Body) != fmt.Sprintf(`{"max_pdf_size_mb":%d}`, n) {
			t.Errorf("PATCH %d: %d %s", n, r.Status, r.Body)
		}
	}

	tests := []struct {
		name   string
		body   any
		status int
		detail string
	}{
		{"missing", map[string]any{}, 422, `[{"type":"missing","loc":["body","max_pdf_size_mb"],"msg":"Field required"}]`},
		{"zero", map[string]any{"max_pdf_size_mb": 0}, 422,
			`[{"type":"greater_than_equal","loc":["body","max_pdf_size_mb"],"msg":"Input should be greater than or equal to 1"}]`},
		{"negative", map[string]any{"max_pdf_size_mb": -5}, 422,
			`[{"type":"greater_than_equal","loc":["body","max_pdf_size_mb"],"msg":"Input should be greater than or equal to 1"}]`},
		{"too big", map[string]any{"max_pdf_size_mb": 1025}, 422,
			`[{"type":"less_than_equal","loc":["body","max_pdf_size_mb"],"msg":"Input should be less than or equal to 1024"}]`},
		{"fractional", map[string]any{"max_pdf_size_mb": 2.5}, 422,
			`[{"type":"int_type","loc":["body","max_pdf_size_mb"],"msg":"Input should be a valid integer"}]`},
		{"string", map[string]any{"max_pdf_size_mb": "10"}, 422,
			`[{"type":"int_type","loc":["body","max_pdf_size_mb"],"msg":"Input should be a valid integer"}]`},
		{"null", map[string]any{"max_pdf_size_mb": nil}, 422,
			`[{"type":"int_type","loc":["body","max_pdf_size_mb"],"msg":"Input should be a valid integer"}]`},
		{"bool", map[string]any{"max_pdf_size_mb": true}, 422,
			`[{"type":"int_type","loc":["body","max_pdf_size_mb"],"msg":"Input should be a valid integer"}]`},
		{"extra field", map[string]any{"max_pdf_size_mb": 5, "max_files": 3}, 422,
			`[{"type":"extra_forbidden","loc":["body","max_files"],"msg":"Extra inputs are not permitted"}]`},
		{"not JSON", `{"max_pdf_size_mb": }`, 422, `[{"type":"json_invalid","loc":["body",20],"msg":"JSON decode error"}]`},
		{"no body", nil, 422, `[{"type":"missing","loc":["body"],"msg":"Field required"}]`},
	}
	for _, tt := range tests {
		r := e.do("PATCH", "/api/settings/documents/limits", admin, tt.body)
		if r.Status != tt.status || r.Detail(t) != tt.detail {
			t.Errorf("%s: got %d %s\nwant %d %s", tt.name, r.Status, r.Detail(t), tt.status, tt.detail)
		}
	}
	if n, _ := e.svc.Settings().MaxUploadBytes(); n != 1024<<20 {
		t.Fatalf("refused PATCHes changed the limit: %d", n)
	}
}

// TestCorruptSettingsFiles: a broken file is reported with 503 and its
// name, is never overwritten, and its content never reaches a log.
func TestCorruptSettingsFiles(t *testing.T) {
	e, dir := newSettingsEnv(t)
	_, admin := e.admin("root@example.com")
	_, user := e.user("user@example.com")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	const leaked = "sk-corrupt-file-key-0123456789"
	aiCorrupt := []string{
		`not json at all ` + leaked,
		`{"provider": "openai", "api_key": "` + leaked + `",`,
		`{"api_key": "` + leaked + `", "temperature": "hot"}`,
		`{"api_key": "` + leaked + `", "provider": "gemini"}`,
		`{"api_key": "` + leaked + `", "max_tokens": 1.5}`,
		`{"api_key": "` + leaked + `", "temperature": 9}`,
		`{"api_key": "has a space ` + leaked + `"}`,
		`{"api_key": 1234567890123}`,
		`{"model": ""}`,
		`{"base_url": "ftp://example.com"}`,
		`["` + leaked + `"]`,
		`null`,
		``,
		`{"model": "a"} {"model": "b"}`,
		"\xff\xfe{}",
	}
	aiPath := filepath.Join(dir, "ai.json")
	for _, content := range aiCorrupt {
		if err := os.WriteFile(aiPath, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		for _, req := range []struct {
			method string
			body   any
		}{{"GET", nil}, {"PATCH", map[string]any{"model": "fixed"}}, {"POST", nil}} {
			path := "/api/settings/ai"
			if req.method == "POST" {
				path += "/test"
			}
			r := e.do(req.method, path, admin, req.body)
			if r.Status != 503 || r.Detail(t) != `"Settings file ai.json is corrupt; fix or remove it"` {
				t.Errorf("%s with ai.json %q: %d %s", req.method, content, r.Status, r.Body)
			}
			if strings.Contains(string(r.Body), leaked) {
				t.Fatalf("the file's key is in a response: %s", r.Body)
			}
		}
		if got, _ := os.ReadFile(aiPath); string(got) != content {
			t.Fatalf("a PATCH overwrote the corrupt ai.json %q with %q", content, got)
		}
	}
	assertNoSecretInLogs(t, e, leaked)
	var logged bool
	for _, line := range e.logs.All() {
		if line.Message == "request failed" && strings.Contains(fmt.Sprint(line.ContextMap()), `field "temperature"`) {
			logged = true
		}
	}
	if !logged {
		t.Error("the cause of a corrupt file is not logged")
	}

	// Removing the file restores the defaults.
	if err := os.Remove(aiPath); err != nil {
		t.Fatal(err)
	}
	if r := e.do("GET", "/api/settings/ai", admin, nil); r.Status != 200 {
		t.Fatalf("after removing the corrupt file: %d %s", r.Status, r.Body)
	}

	docPath := filepath.Join(dir, "documents.json")
	for _, content := range []string{`{"max_pdf_size_mb": 0}`, `{"max_pdf_size_mb": "25"}`, `{"max_pdf_size_mb": 2000}`, `{`} {
		if err := os.WriteFile(docPath, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		get := e.do("GET", "/api/settings/documents/limits", user, nil)
		patch := e.do("PATCH", "/api/settings/documents/limits", admin, map[string]any{"max_pdf_size_mb": 10})
		for _, r := range []*response{get, patch} {
			if r.Status != 503 || r.Detail(t) != `"Settings file documents.json is corrupt; fix or remove it"` {
				t.Errorf("documents.json %q: %d %s", content, r.Status, r.Body)
			}
		}
		if got, _ := os.ReadFile(docPath); string(got) != content {
			t.Fatalf("a PATCH overwrote the corrupt documents.json %q", content)
		}
	}
}

// TestSettingsTolerateHandEdits: fields left out, nulls, "" for none and
// unknown fields are read, not called corrupt.
func TestSettingsTolerateHandEdits(t *testing.T) {
	e, dir := newSettingsEnv(t)
	_, admin := e.admin("root@example.com")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	hand := `{"model": "gpt-x", "api_key": "", "base_url": "", "temperature": null, "comment": "set by ops"}` + "\n"
	if err := os.WriteFile(filepath.Join(dir, "ai.json"), []byte(hand), 0o600); err != nil {
		t.Fatal(err)
	}
	r := e.do("GET", "/api/settings/ai", admin, nil)
	jsonEqual(t, "hand-edited file", r.Body, strings.Replace(defaultAIJSON, "gpt-4o-mini", "gpt-x", 1))
}
