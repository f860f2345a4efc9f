package accounts

import (
	_ "embed"
	"net/http"
	"strconv"
)

// openAPIDocument is the OpenAPI 3.1 description of every route of the
// JSON API, maintained by hand beside docs/API.md (which it mirrors). Tools
// and frontends generate clients from it; openapi_test.go validates real
// requests and responses of every route against it, so it cannot drift
// from the code unnoticed.
//
//go:embed openapi.json
var openAPIDocument []byte

// handleOpenAPI serves GET /api/openapi.json: the OpenAPI document of
// the API, maintained beside docs/API.md.
func (s *Service) handleOpenAPI(w http.ResponseWriter, r *http.Request) error {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "public, max-age=300")
	h.Set("Content-Length", strconv.Itoa(len(openAPIDocument)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(openAPIDocument)
	}
	return nil
}
