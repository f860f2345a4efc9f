package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// The AI provider connection test (POST /api/settings/ai/test) against
// stub providers on loopback: refused by the default destination policy,
// reached with ai_test_allow; the stored key only goes to the stored
// origin; every test audited without the key.

// aiStub is a stub AI provider on 127.0.0.1 that records the credentials
// it was sent and counts the connections it accepted.
type aiStub struct {
	srv   *httptest.Server
	conns atomic.Int32
	mu    sync.Mutex
	// keys are the Authorization and x-api-key values of each request.
	keys []string
}

func newAIStub(t *testing.T) *aiStub {
	t.Helper()
	s := &aiStub{}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		s.mu.Lock()
		s.keys = append(s.keys, r.Header.Get("Authorization")+"|"+r.Header.Get("X-Api-Key"))
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"id":"chatcmpl-1","choices":[{"message":{"role":"assistant","content":"p"}}]}`)
	}))
	s.srv.Config.ConnState = func(_ net.Conn, state http.ConnState) {
		if state == http.StateNew {
			s.conns.Add(1)
		}
	}
	s.srv.Start()
	t.Cleanup(s.srv.Close)
	return s
}

func (s *aiStub) got() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.keys...)
}

func (s *aiStub) port() int { return s.srv.Listener.Addr().(*net.TCPAddr).Port }

// aiAdmin creates an admin on g, stores the AI settings and returns the
// admin's token.
func aiAdmin(t *testing.T, g *Gateway, c *Client, settings map[string]any) string {
	t.Helper()
	email, pw := uniqueEmail(t), randomPassword()
	createAdmin(t, g.DatabaseURL, email, pw)
	token := c.Login(email, pw)
	raw, _ := json.Marshal(settings)
	req := c.NewRequest(http.MethodPatch, "/api/settings/ai", bytes.NewReader(raw))
	req.Header.Set("Content-Type", "application/json")
	setToken(req, token)
	expectStatus(t, c.Do(req), http.StatusOK)
	return token
}

// expectAIResult checks a 200 of the connection test, latency_ms aside.
func expectAIResult(t *testing.T, r *Response, ok bool, status any, message string) {
	t.Helper()
	expectStatus(t, r, http.StatusOK)
	got := r.JSON(t)
	if _, has := got["latency_ms"]; !has {
		t.Fatalf("no latency_ms in %s", r.Body)
	}
	delete(got, "latency_ms")
	want := map[string]any{"ok": ok, "status_code": status, "model": "gpt-test", "message": message}
	if canonicalJSON(t, got) != canonicalJSON(t, want) {
		t.Fatalf("result %s\nwant %s", canonicalJSON(t, got), canonicalJSON(t, want))
	}
}

// expectAIAudit checks the settings.ai_test events of g, oldest first:
// exactly want (details), and nowhere a key.
func expectAIAudit(t *testing.T, c *Client, token string, keys []string, want ...map[string]any) {
	t.Helper()
	r := c.Get("/api/admin/audit?event=settings.ai_test", token)
	expectStatus(t, r, http.StatusOK)
	for _, k := range keys {
		expectNoEcho(t, r, k)
	}
	var events []struct {
		Event   string          `json:"event"`
		ActorID *string         `json:"actor_id"`
		Details json.RawMessage `json:"details"`
	}
	r.Decode(t, &events)
	if len(events) != len(want) {
		t.Fatalf("%d settings.ai_test events, want %d: %s", len(events), len(want), r.Body)
	}
	for i, w := range want {
		e := events[len(events)-1-i] // newest first
		if e.Event != "settings.ai_test" || e.ActorID == nil {
			t.Errorf("event %d: %s, actor %v", i, e.Event, e.ActorID)
		}
		if got := canonicalJSON(t, e.Details); got != canonicalJSON(t, w) {
			t.Errorf("event %d details %s\nwant %s", i, got, canonicalJSON(t, w))
		}
	}
}

const (
	aiStoredKey = "sk-e2e-stored-Abc123Def456Ghi789"
	aiOtherKey  = "sk-e2e-other-Zyx987Wvu654Tsr321"
)

// TestAIConnectionTestDefaultPolicy: with the project's Caddyfile the
// test reaches nothing on loopback (the stub, Caddy's admin API), by
// address or by name, and tells so without the resolved address.
func TestAIConnectionTestDefaultPolicy(t *testing.T) {
	t.Parallel()
	stub := newAIStub(t)
	g := startGateway(t, GatewayOptions{})
	c := g.Client(t)
	token := aiAdmin(t, g, c, map[string]any{"model": "gpt-test", "base_url": stub.srv.URL + "/v1", "api_key": aiStoredKey})

	r := c.PostJSON("/api/settings/ai/test", token, nil)
	expectAIResult(t, r, false, nil, "Destination not allowed: 127.0.0.1 is a loopback address")
	r = c.PostJSON("/api/settings/ai/test", token, map[string]any{"base_url": fmt.Sprintf("http://localhost:%d/v1", stub.port()), "api_key": aiOtherKey})
	expectAIResult(t, r, false, nil, "Destination not allowed: localhost resolves to a loopback address")
	r = c.PostJSON("/api/settings/ai/test", token, map[string]any{"base_url": "http://" + g.AdminAddr, "api_key": aiOtherKey})
	expectAIResult(t, r, false, nil, "Destination not allowed: 127.0.0.1 is a loopback address")
	if n := stub.conns.Load(); n != 0 {
		t.Fatalf("the stub on loopback accepted %d connections", n)
	}

	origin := stub.srv.URL
	expectAIAudit(t, c, token, []string{aiStoredKey, aiOtherKey},
		map[string]any{"provider": "openai", "origin": origin, "key": "stored", "outcome": "destination_refused", "status_code": nil},
		map[string]any{"provider": "openai", "origin": fmt.Sprintf("http://localhost:%d", stub.port()), "key": "body", "outcome": "destination_refused", "status_code": nil},
		map[string]any{"provider": "openai", "origin": "http://" + g.AdminAddr, "key": "body", "outcome": "destination_refused", "status_code": nil},
	)
	for _, k := range []string{aiStoredKey, aiOtherKey} {
		if strings.Contains(g.Logs(), k) {
			t.Fatalf("a key is in the gateway's log")
		}
	}
}

// TestAIConnectionTestAllowedLoopback: ai_test_allow lets the test reach
// a model server on loopback; the stored key still goes only to the
// stored origin.
func TestAIConnectionTestAllowedLoopback(t *testing.T) {
	t.Parallel()
	stored, other := newAIStub(t), newAIStub(t)
	g := startGateway(t, GatewayOptions{Caddyfile: testCaddyfile(t, "", "ai_test_allow 127.0.0.0/8 ::1")})
	c := g.Client(t)
	token := aiAdmin(t, g, c, map[string]any{"model": "gpt-test", "base_url": stored.srv.URL + "/v1", "api_key": aiStoredKey})

	// The stored settings reach the stub.
	expectAIResult(t, c.PostJSON("/api/settings/ai/test", token, nil), true, float64(200), "Connection OK")

	// The stored key is not sent to another origin: not with the mask,
	// not by another name of the same address.
	wantKeyError := fieldError{Type: "value_error", Loc: []any{"body", "api_key"},
		Msg: "Value error, The stored API key is only sent to the stored base URL's scheme, host and port; to test another one, send its key in api_key"}
	for _, body := range []map[string]any{
		{"base_url": other.srv.URL + "/v1"},
		{"base_url": other.srv.URL + "/v1", "api_key": "****" + aiStoredKey[len(aiStoredKey)-4:]},
		{"base_url": fmt.Sprintf("http://localhost:%d/v1", stored.port())},
	} {
		r := c.PostJSON("/api/settings/ai/test", token, body)
		expectValidation(t, r, wantKeyError)
		expectNoEcho(t, r, aiStoredKey)
	}
	// With its own key, another origin is tested.
	expectAIResult(t, c.PostJSON("/api/settings/ai/test", token, map[string]any{"base_url": other.srv.URL + "/v1", "api_key": aiOtherKey}),
		true, float64(200), "Connection OK")

	if got := stored.got(); len(got) != 1 || got[0] != "Bearer "+aiStoredKey+"|" {
		t.Errorf("the stored origin got %q", got)
	}
	if got := other.got(); len(got) != 1 || got[0] != "Bearer "+aiOtherKey+"|" || other.conns.Load() != 1 {
		t.Errorf("the other origin got %q in %d connections", got, other.conns.Load())
	}

	refused := map[string]any{"provider": "openai", "origin": other.srv.URL, "key": "stored", "outcome": "stored_key_origin_refused", "status_code": nil}
	expectAIAudit(t, c, token, []string{aiStoredKey, aiOtherKey},
		map[string]any{"provider": "openai", "origin": stored.srv.URL, "key": "stored", "outcome": "ok", "status_code": 200},
		refused, refused,
		map[string]any{"provider": "openai", "origin": fmt.Sprintf("http://localhost:%d", stored.port()), "key": "stored", "outcome": "stored_key_origin_refused", "status_code": nil},
		map[string]any{"provider": "openai", "origin": other.srv.URL, "key": "body", "outcome": "ok", "status_code": 200},
	)
	for _, k := range []string{aiStoredKey, aiOtherKey} {
		if strings.Contains(g.Logs(), k) {
			t.Fatalf("a key is in the gateway's log")
		}
	}
}
