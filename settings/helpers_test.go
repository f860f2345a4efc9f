package settings

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddyaccounts/gateway/fastapi"
)

// testActor is the caller's id of the tests' requests.
const testActor = "00000000-0000-4000-8000-000000000001"

// testSettings is a Settings whose log lines are kept.
type testSettings struct {
	*Settings
	logs *observer.ObservedLogs
	// handler serves the settings routes for testActor, as accounts'
	// router does once it has checked the caller's role.
	handler http.Handler
}

// newTestSettings returns the settings of dir.
func newTestSettings(t testing.TB, dir string) *testSettings {
	t.Helper()
	core, logs := observer.New(zap.DebugLevel)
	s, err := New(Config{Dir: dir}, nil, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	for pattern, f := range map[string]func(http.ResponseWriter, *http.Request, string) error{
		"GET /api/settings/ai":                 s.GetAI,
		"PATCH /api/settings/ai":               s.PatchAI,
		"POST /api/settings/ai/test":           s.TestAIConnection,
		"GET /api/settings/documents/limits":   s.GetDocumentLimits,
		"PATCH /api/settings/documents/limits": s.PatchDocumentLimits,
	} {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			if err := f(w, r, testActor); err != nil {
				fastapi.WriteError(w, err)
			}
		})
	}
	return &testSettings{Settings: s, logs: logs, handler: mux}
}

// do sends a request with body (JSON-encoded unless nil) to the routes.
func (s *testSettings) do(method, path string, body any) *httptest.ResponseRecorder {
	var data []byte
	if body != nil {
		data, _ = json.Marshal(body)
	}
	r := httptest.NewRequest(method, path, bytes.NewReader(data))
	r.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	s.handler.ServeHTTP(w, r)
	return w
}
