package accounts

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/caddyaccounts/gateway/settings"
)

// providerStub is a fake AI provider on loopback that records what it got.
type providerStub struct {
	srv      *httptest.Server
	mu       sync.Mutex
	requests []stubRequest
	// conns counts the connections it accepted.
	conns atomic.Int32
}

type stubRequest struct {
	Method, Path string
	Header       http.Header
	Body         []byte
}

// newProviderStub serves answer for every request after recording it.
func newProviderStub(t *testing.T, answer http.HandlerFunc) *providerStub {
	t.Helper()
	p := &providerStub{}
	p.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		p.mu.Lock()
		p.requests = append(p.requests, stubRequest{r.Method, r.URL.RequestURI(), r.Header.Clone(), body})
		p.mu.Unlock()
		answer(w, r)
	}))
	p.srv.Config.ConnState = func(_ net.Conn, state http.ConnState) {
		if state == http.StateNew {
			p.conns.Add(1)
		}
	}
	p.srv.Start()
	t.Cleanup(p.srv.Close)
	return p
}

func (p *providerStub) got() []stubRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]stubRequest(nil), p.requests...)
}

// answerJSON answers with status and a JSON body.
func answerJSON(status int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
}

// loopbackAllowed lets the connection test reach the stub providers on
// loopback, which its policy refuses by default.
var loopbackAllowed = []string{"127.0.0.0/8", "::1/128"}

// aiTestEnv is a settings env with an admin and the stored AI settings,
// whose connection test may reach loopback; opts change the settings'
// options.
func aiTestEnv(t *testing.T, stored map[string]any, opts ...func(*settings.Config)) (*testEnv, string, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "settings")
	e := newTestEnv(t, func(c *Config) {
		c.Settings.Dir = dir
		c.Settings.AITestAllow = loopbackAllowed
		for _, opt := range opts {
			opt(&c.Settings)
		}
	})
	return aiTestEnvWith(t, e, dir, stored)
}

// aiTestEnvWith stores the AI settings in e as a new admin.
func aiTestEnvWith(t *testing.T, e *testEnv, dir string, stored map[string]any) (*testEnv, string, string) {
	t.Helper()
	_, token := e.admin("root@example.com")
	if stored != nil {
		if r := e.do("PATCH", "/api/settings/ai", token, stored); r.Status != 200 {
			t.Fatalf("storing the settings: %d %s", r.Status, r.Body)
		}
	}
	return e, dir, token
}

// testAI calls POST /api/settings/ai/test and checks that the key is not
// in the answer.
func testAIRoute(t *testing.T, e *testEnv, token string, body any, keys ...string) *response {
	t.Helper()
	r := e.do("POST", "/api/settings/ai/test", token, body)
	for _, k := range keys {
		if strings.Contains(string(r.Body), k) {
			t.Fatalf("the key is in the response: %s", r.Body)
		}
	}
	return r
}

const openAIKey = "sk-proj-Abc123Def456Ghi789Jkl0"

// msgStoredKeyOrigin is the 422 message of a test that would send the
// stored key to another origin.
const msgStoredKeyOrigin = "The stored API key is only sent to the stored base URL's scheme, host and port; " +
	"to test another one, send its key in api_key"

func TestAIConnectionTestOpenAI(t *testing.T) {
	stub := newProviderStub(t, answerJSON(200, `{"id":"chatcmpl-1","choices":[{"message":{"role":"assistant","content":"p"}}]}`))
	e, _, token := aiTestEnv(t, map[string]any{"model": "gpt-test", "base_url": stub.srv.URL + "/v1/", "api_key": openAIKey})

	r := testAIRoute(t, e, token, nil, openAIKey)
	if r.Status != 200 {
		t.Fatalf("test: %d %s", r.Status, r.Body)
	}
	got := r.JSON(t).(map[string]any)
	if latency, ok := got["latency_ms"].(float64); !ok || latency < 0 || latency > 5000 {
		t.Fatalf("latency_ms = %v", got["latency_ms"])
	}
	jsonEqual(t, "result", r.Body, `{"ok":true,"status_code":200,"model":"gpt-test","message":"Connection OK"}`, "latency_ms")

	reqs := stub.got()
	if len(reqs) != 1 {
		t.Fatalf("the provider got %d requests, want 1", len(reqs))
	}
	req := reqs[0]
	if req.Method != "POST" || req.Path != "/v1/chat/completions" {
		t.Errorf("request line: %s %s", req.Method, req.Path)
	}
	if req.Header.Get("Authorization") != "Bearer "+openAIKey || req.Header.Get("Content-Type") != "application/json" ||
		req.Header.Get("X-Api-Key") != "" || req.Header.Get("Anthropic-Version") != "" {
		t.Errorf("headers: %v", req.Header)
	}
	jsonEqual(t, "request body", req.Body, `{"model":"gpt-test","messages":[{"role":"user","content":"ping"}],"max_tokens":1}`)

	// An empty body and a null body test the stored settings too.
	for _, body := range []any{"", "null", map[string]any{}} {
		if r := testAIRoute(t, e, token, body, openAIKey); r.Status != 200 || r.JSON(t).(map[string]any)["ok"] != true {
			t.Errorf("test with body %q: %d %s", body, r.Status, r.Body)
		}
	}
	assertNoSecretInLogs(t, e, openAIKey)
}

func TestAIConnectionTestAnthropic(t *testing.T) {
	const key = "sk-ant-api03-0123456789abcdefXYZ"
	stub := newProviderStub(t, answerJSON(200, `{"id":"msg_1","type":"message","content":[]}`))
	e, _, token := aiTestEnv(t, map[string]any{"provider": "anthropic", "model": "claude-test", "base_url": stub.srv.URL, "api_key": key})

	r := testAIRoute(t, e, token, nil, key)
	jsonEqual(t, "result", r.Body, `{"ok":true,"status_code":200,"model":"claude-test","message":"Connection OK"}`, "latency_ms")
	reqs := stub.got()
	if len(reqs) != 1 {
		t.Fatalf("the provider got %d requests, want 1", len(reqs))
	}
	req := reqs[0]
	if req.Method != "POST" || req.Path != "/v1/messages" {
		t.Errorf("request line: %s %s", req.Method, req.Path)
	}
	if req.Header.Get("X-Api-Key") != key || req.Header.Get("Anthropic-Version") != "2023-06-01" ||
		req.Header.Get("Content-Type") != "application/json" || req.Header.Get("Authorization") != "" {
		t.Errorf("headers: %v", req.Header)
	}
	jsonEqual(t, "request body", req.Body, `{"model":"claude-test","max_tokens":1,"messages":[{"role":"user","content":"ping"}]}`)
	assertNoSecretInLogs(t, e, key)
}

// TestAIConnectionTestOverrides: the body's fields are tested without
// being saved.
func TestAIConnectionTestOverrides(t *testing.T) {
	stub := newProviderStub(t, answerJSON(200, `{}`))
	e, dir, token := aiTestEnv(t, map[string]any{"model": "stored-model", "base_url": "http://127.0.0.1:9", "api_key": openAIKey})
	path := filepath.Join(dir, "ai.json")
	before, _ := os.ReadFile(path)

	const newKey = "sk-candidate-key-999888777"
	r := testAIRoute(t, e, token, map[string]any{"provider": "anthropic", "model": "claude-new", "base_url": stub.srv.URL + "/proxy", "api_key": newKey}, newKey, openAIKey)
	jsonEqual(t, "result", r.Body, `{"ok":true,"status_code":200,"model":"claude-new","message":"Connection OK"}`, "latency_ms")
	// The mask stands for the stored key, which only goes to the stored
	// base URL's origin: not to the stub (another port).
	r = testAIRoute(t, e, token, map[string]any{"base_url": stub.srv.URL, "api_key": "****Jkl0"}, openAIKey)
	if r.Status != 422 || r.Detail(t) != `[{"type":"value_error","loc":["body","api_key"],"msg":"Value error, `+msgStoredKeyOrigin+`"}]` {
		t.Fatalf("the stored key to another origin: %d %s", r.Status, r.Body)
	}

	reqs := stub.got()
	if len(reqs) != 1 || reqs[0].Path != "/proxy/v1/messages" || reqs[0].Header.Get("X-Api-Key") != newKey {
		t.Fatalf("the provider got %+v", reqs)
	}
	if after, _ := os.ReadFile(path); string(after) != string(before) {
		t.Fatalf("a test saved the settings:\n%s\n%s", before, after)
	}

	// A cleared key sends nothing.
	r = testAIRoute(t, e, token, map[string]any{"api_key": nil, "base_url": stub.srv.URL})
	if r.Status != 200 || string(r.Body) != `{"ok":false,"status_code":null,"latency_ms":0,"model":"stored-model","message":"No API key configured"}` {
		t.Fatalf("cleared key: %d %s", r.Status, r.Body)
	}
	if len(stub.got()) != 1 {
		t.Fatal("a test without a key sent a request")
	}

	// The body is validated as PATCH's.
	for _, c := range []struct {
		body   any
		status int
		detail string
	}{
		{map[string]any{"temperature": 5}, 422, `[{"type":"less_than_equal","loc":["body","temperature"],"msg":"Input should be less than or equal to 2"}]`},
		{map[string]any{"provider": "gemini"}, 422, `[{"type":"enum","loc":["body","provider"],"msg":"Input should be 'openai' or 'anthropic'"}]`},
		{map[string]any{"api_key": "bad key value"}, 422, `[{"type":"value_error","loc":["body","api_key"],"msg":"Value error, API key must be printable ASCII without spaces"}]`},
		{map[string]any{"save": true}, 422, `[{"type":"extra_forbidden","loc":["body","save"],"msg":"Extra inputs are not permitted"}]`},
		{`{"model":`, 422, `[{"type":"json_invalid","loc":["body",9],"msg":"JSON decode error"}]`},
		{`"model"`, 422, `[{"type":"model_attributes_type","loc":["body"],"msg":"Input should be a valid dictionary or object to extract fields from"}]`},
	} {
		r := testAIRoute(t, e, token, c.body, "bad key value")
		if r.Status != c.status || r.Detail(t) != c.detail {
			t.Errorf("body %v: %d %s\nwant %d %s", c.body, r.Status, r.Detail(t), c.status, c.detail)
		}
	}
	assertNoSecretInLogs(t, e, openAIKey, newKey, "bad key value")
}

func TestAIConnectionTestWithoutKey(t *testing.T) {
	stub := newProviderStub(t, answerJSON(200, `{}`))
	e, _, token := aiTestEnv(t, map[string]any{"base_url": stub.srv.URL})
	r := testAIRoute(t, e, token, nil)
	if r.Status != 200 || string(r.Body) != `{"ok":false,"status_code":null,"latency_ms":0,"model":"gpt-4o-mini","message":"No API key configured"}` {
		t.Fatalf("no key: %d %s", r.Status, r.Body)
	}
	if len(stub.got()) != 0 {
		t.Fatal("a request was sent without a key")
	}
}

// TestAIConnectionTestProviderErrors: the provider's refusal is reported
// with its status and message, the key scrubbed even when the provider
// echoes it whole or in part.
func TestAIConnectionTestProviderErrors(t *testing.T) {
	partial := openAIKey[:12] + "**********" + openAIKey[len(openAIKey)-4:]
	long := strings.Repeat("overloaded ", 40)
	tests := []struct {
		name    string
		status  int
		body    string
		message string
	}{
		{"OpenAI 401 echoing the key", 401,
			`{"error":{"message":"Incorrect API key provided: ` + openAIKey + `. You can find your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","code":"invalid_api_key"}}`,
			"Provider answered 401: Incorrect API key provided: ****. You can find your API key at https://platform.openai.com/account/api-keys."},
		{"OpenAI 401 echoing part of the key", 401,
			`{"error":{"message":"Incorrect API key provided: ` + partial + `.","code":"invalid_api_key"}}`,
			"Provider answered 401: Incorrect API key provided: ****"},
		{"Anthropic 404", 404,
			`{"type":"error","error":{"type":"not_found_error","message":"model: gpt-test"}}`,
			"Provider answered 404: model: gpt-test"},
		{"plain text echoing the key", 403, "forbidden for key\n" + openAIKey + "\n",
			"Provider answered 403: forbidden for key ****"},
		{"error as a string", 400, `{"error":"bad request for ` + openAIKey + `"}`,
			"Provider answered 400: bad request for ****"},
		{"FastAPI-style detail", 422, `{"detail":"Unprocessable"}`,
			"Provider answered 422: Unprocessable"},
		{"empty body", 503, ``, "Provider answered 503: Service Unavailable"},
		{"long message", 500, `{"error":{"message":"` + long + openAIKey + `"}}`,
			"Provider answered 500: " + strings.TrimSpace(long)[:200]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stub := newProviderStub(t, answerJSON(tt.status, tt.body))
			e, _, token := aiTestEnv(t, map[string]any{"model": "gpt-test", "base_url": stub.srv.URL, "api_key": openAIKey})
			r := testAIRoute(t, e, token, nil, openAIKey, partial, openAIKey[4:20])
			want := fmt.Sprintf(`{"ok":false,"status_code":%d,"model":"gpt-test","message":%q}`, tt.status, tt.message)
			jsonEqual(t, "result", r.Body, want, "latency_ms")
			if msg := r.JSON(t).(map[string]any)["message"].(string); len([]rune(msg)) > len("Provider answered 500: ")+200 {
				t.Errorf("message of %d characters", len(msg))
			}
			assertNoSecretInLogs(t, e, openAIKey, partial)
		})
	}
}

func TestAIConnectionTestTimeout(t *testing.T) {
	stub := newProviderStub(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	})
	e, _, token := aiTestEnv(t, map[string]any{"base_url": stub.srv.URL, "api_key": openAIKey},
		func(c *settings.Config) { c.AITestTimeout = 300 * time.Millisecond })
	start := time.Now()
	r := testAIRoute(t, e, token, nil, openAIKey)
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Fatalf("the test took %v", elapsed)
	}
	jsonEqual(t, "result", r.Body, `{"ok":false,"status_code":null,"model":"gpt-4o-mini","message":"Timed out after 300ms"}`, "latency_ms")
	if latency := r.JSON(t).(map[string]any)["latency_ms"].(float64); latency < 300 {
		t.Errorf("latency_ms = %v, want at least the timeout", latency)
	}
	if settings.DefaultAITestTimeout.String() != "15s" {
		t.Errorf("default timeout %v, want 15s (\"Timed out after 15s\")", settings.DefaultAITestTimeout)
	}
	assertNoSecretInLogs(t, e, openAIKey)
}

func TestAIConnectionTestRefused(t *testing.T) {
	addr := refusingAddr(t)
	e, _, token := aiTestEnv(t, map[string]any{"base_url": "http://" + addr + "/v1", "api_key": openAIKey})
	r := testAIRoute(t, e, token, nil, openAIKey)
	jsonEqual(t, "refused", r.Body, `{"ok":false,"status_code":null,"model":"gpt-4o-mini","message":"Connection failed: dial `+addr+`: connection refused"}`, "latency_ms")
	assertNoSecretInLogs(t, e, openAIKey)
}

// refusingAddr returns a loopback address that refuses connections for
// the whole test: a socket bound to it but not listening holds the port,
// so that no other test's connection or listener can take it meanwhile.
func refusingAddr(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return "127.0.0.1:" + strconv.Itoa(sa.(*syscall.SockaddrInet4).Port)
}

// TestAIConnectionTestRedirects: a redirect to another host is not
// followed (the key would go with it); one on the same host is.
func TestAIConnectionTestRedirects(t *testing.T) {
	elsewhere := newProviderStub(t, answerJSON(200, `{}`))
	self := newProviderStub(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/away/chat/completions":
			http.Redirect(w, r, elsewhere.srv.URL+"/v1/chat/completions", http.StatusTemporaryRedirect)
		case "/moved/chat/completions":
			http.Redirect(w, r, "/v1/chat/completions", http.StatusPermanentRedirect)
		default:
			answerJSON(200, `{}`)(w, r)
		}
	})
	e, _, token := aiTestEnv(t, map[string]any{"base_url": self.srv.URL + "/away", "api_key": openAIKey})
	r := testAIRoute(t, e, token, nil, openAIKey)
	jsonEqual(t, "redirect elsewhere", r.Body,
		`{"ok":false,"status_code":307,"model":"gpt-4o-mini","message":"Provider answered 307: redirect to another host not followed"}`, "latency_ms")
	if n := len(elsewhere.got()); n != 0 {
		t.Fatalf("the other host got %d requests", n)
	}

	r = testAIRoute(t, e, token, map[string]any{"base_url": self.srv.URL + "/moved"}, openAIKey)
	jsonEqual(t, "redirect on the same host", r.Body, `{"ok":true,"status_code":200,"model":"gpt-4o-mini","message":"Connection OK"}`, "latency_ms")
	reqs := self.got()
	last := reqs[len(reqs)-1]
	if last.Path != "/v1/chat/completions" || last.Header.Get("Authorization") != "Bearer "+openAIKey {
		t.Fatalf("redirected request: %+v", last)
	}
	jsonEqual(t, "redirected body", last.Body, `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"ping"}],"max_tokens":1}`)
}

// TestAIConnectionTestDestinationRefused: by default the test does not
// connect to loopback, whatever name or form the address has; the stub
// there accepts no connection at all.
func TestAIConnectionTestDestinationRefused(t *testing.T) {
	stub := newProviderStub(t, answerJSON(200, `{}`))
	dir := filepath.Join(t.TempDir(), "settings")
	e, _, token := aiTestEnvWith(t, newTestEnv(t, func(c *Config) { c.Settings.Dir = dir }), dir,
		map[string]any{"model": "gpt-test", "base_url": stub.srv.URL + "/v1", "api_key": openAIKey})
	port := stub.srv.Listener.Addr().(*net.TCPAddr).Port

	r := testAIRoute(t, e, token, nil, openAIKey)
	jsonEqual(t, "stored settings", r.Body,
		`{"ok":false,"status_code":null,"model":"gpt-test","message":"Destination not allowed: 127.0.0.1 is a loopback address"}`, "latency_ms")
	for host, message := range map[string]string{
		"localhost":          "Destination not allowed: localhost resolves to a loopback address",
		"LocalHost":          "Destination not allowed: LocalHost resolves to a loopback address",
		"[::1]":              "Destination not allowed: ::1 is a loopback address",
		"[::ffff:127.0.0.1]": "Destination not allowed: ::ffff:127.0.0.1 is a loopback address",
		"0.0.0.0":            "Destination not allowed: 0.0.0.0 is an unspecified address",
	} {
		base := fmt.Sprintf("http://%s:%d/v1", host, port)
		r := testAIRoute(t, e, token, map[string]any{"base_url": base, "api_key": "sk-other-key-0123456789"}, openAIKey, "sk-other-key-0123456789")
		jsonEqual(t, base, r.Body, fmt.Sprintf(`{"ok":false,"status_code":null,"model":"gpt-test","message":%q}`, message), "latency_ms")
	}
	if n := stub.conns.Load(); n != 0 || len(stub.got()) != 0 {
		t.Fatalf("the stub on loopback got %d connections", n)
	}
	assertNoSecretInLogs(t, e, openAIKey, "sk-other-key-0123456789")
}

// TestAIConnectionTestStoredKeyOrigin: the stored key goes only to the
// stored base URL's origin; another one needs its key in the body.
func TestAIConnectionTestStoredKeyOrigin(t *testing.T) {
	const otherKey = "sk-other-provider-key-42424242"
	stored := newProviderStub(t, answerJSON(200, `{}`))
	other := newProviderStub(t, answerJSON(200, `{}`))
	e, _, token := aiTestEnv(t, map[string]any{"model": "gpt-test", "base_url": stored.srv.URL + "/v1", "api_key": openAIKey})
	refused := `[{"type":"value_error","loc":["body","api_key"],"msg":"Value error, ` + msgStoredKeyOrigin + `"}]`
	ok := `{"ok":true,"status_code":200,"model":"gpt-test","message":"Connection OK"}`
	for _, c := range []struct {
		name string
		body any
		want string // the result, or the 422 detail
	}{
		{"the stored settings", nil, ok},
		{"another path of the stored origin", map[string]any{"base_url": stored.srv.URL + "/other/"}, ok},
		{"the stored origin, upper case", map[string]any{"base_url": strings.ToUpper(stored.srv.URL) + "/v1"}, ok},
		{"the mask to the stored origin", map[string]any{"api_key": "****Jkl0"}, ok},
		{"another origin", map[string]any{"base_url": other.srv.URL}, refused},
		{"another origin with the mask", map[string]any{"base_url": other.srv.URL, "api_key": "****Jkl0"}, refused},
		{"another origin with a stale mask", map[string]any{"base_url": other.srv.URL, "api_key": "****"}, refused},
		{"the same address by another name", map[string]any{"base_url": strings.Replace(stored.srv.URL, "127.0.0.1", "localhost", 1)}, refused},
		{"the provider's default URL", map[string]any{"base_url": nil}, refused},
		{"another provider's default URL", map[string]any{"provider": "anthropic", "base_url": ""}, refused},
		{"another origin with its own key", map[string]any{"base_url": other.srv.URL, "api_key": otherKey}, ok},
	} {
		r := testAIRoute(t, e, token, c.body, openAIKey, otherKey)
		if strings.HasPrefix(c.want, "[") {
			if r.Status != 422 || r.Detail(t) != c.want {
				t.Errorf("%s: %d %s", c.name, r.Status, r.Body)
			}
			continue
		}
		if r.Status != 200 {
			t.Errorf("%s: %d %s", c.name, r.Status, r.Body)
			continue
		}
		jsonEqual(t, c.name, r.Body, c.want, "latency_ms")
	}
	if reqs := stored.got(); len(reqs) != 4 {
		t.Errorf("the stored origin got %d requests, want 4", len(reqs))
	}
	for _, req := range stored.got() {
		if req.Header.Get("Authorization") != "Bearer "+openAIKey {
			t.Errorf("the stored origin got %q", req.Header.Get("Authorization"))
		}
	}
	reqs := other.got()
	if n := other.conns.Load(); n != 1 || len(reqs) != 1 || reqs[0].Header.Get("Authorization") != "Bearer "+otherKey {
		t.Fatalf("the other origin got %d connections, requests %+v", n, reqs)
	}
	assertNoSecretInLogs(t, e, openAIKey, otherKey)
}

// TestAIConnectionTestAudit: every test is audited, refused ones too,
// without the key.
func TestAIConnectionTestAudit(t *testing.T) {
	stub := newProviderStub(t, answerJSON(401, `{"error":{"message":"bad key `+openAIKey+`"}}`))
	e, _, token := aiTestEnv(t, map[string]any{"base_url": stub.srv.URL + "/v1", "api_key": openAIKey})
	origin := stub.srv.URL
	refusing := "http://" + refusingAddr(t)
	const bodyKey = "sk-body-key-0987654321"
	for _, body := range []any{
		nil,
		map[string]any{"base_url": "https://llm.example.com/v1"},
		map[string]any{"base_url": refusing, "api_key": bodyKey},
		map[string]any{"api_key": nil},
	} {
		testAIRoute(t, e, token, body, openAIKey, bodyKey)
	}
	// A 422 of the body's fields is no test.
	testAIRoute(t, e, token, map[string]any{"temperature": 5})

	rows, err := e.db.Query(context.Background(),
		`SELECT a.details::text, u.email FROM audit_events a JOIN users u ON u.id = a.actor_id
		 WHERE a.event = $1 ORDER BY a.id`, EventSettingsAITest)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var details, email string
		if err := rows.Scan(&details, &email); err != nil {
			t.Fatal(err)
		}
		if email != "root@example.com" {
			t.Errorf("actor %s", email)
		}
		for _, k := range []string{openAIKey, bodyKey, openAIKey[4:12]} {
			if strings.Contains(details, k) {
				t.Fatalf("the key is in the audit log: %s", details)
			}
		}
		got = append(got, details)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	want := []string{
		`{"key": "stored", "origin": "` + origin + `", "outcome": "provider_error", "provider": "openai", "status_code": 401}`,
		`{"key": "stored", "origin": "https://llm.example.com", "outcome": "stored_key_origin_refused", "provider": "openai", "status_code": null}`,
		`{"key": "body", "origin": "` + refusing + `", "outcome": "connection_failed", "provider": "openai", "status_code": null}`,
		`{"key": "none", "origin": "` + origin + `", "outcome": "no_key", "provider": "openai", "status_code": null}`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("audit details:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	assertNoSecretInLogs(t, e, openAIKey, bodyKey)
}

// TestNewRefusesBadAITestAllow: a network of ai_test_allow that does not
// parse stops the service from starting, naming the option.
func TestNewRefusesBadAITestAllow(t *testing.T) {
	cfg := Config{Argon2: fastArgon2, Settings: settings.Config{AITestAllow: []string{"127.0.0.1/33"}}}
	if _, err := New(newTestEnv(t).db, nil, cfg, nil); err == nil ||
		!strings.Contains(err.Error(), `ai_test_allow: "127.0.0.1/33"`) {
		t.Errorf("New with a bad ai_test_allow: %v", err)
	}
}
