package accounts

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	"github.com/pb33f/libopenapi-validator/config"
	verrors "github.com/pb33f/libopenapi-validator/errors"

	"github.com/caddyaccounts/gateway/fastapi"
)

// The OpenAPI document (openapi.json) is checked three ways:
//
//   - TestOpenAPIDocument: it is a valid OpenAPI 3.1 document, and keeps
//     the API's rules (explicit security, 401 with WWW-Authenticate on
//     authenticated routes, 429 with Retry-After under /api/auth/, request
//     bodies that refuse unknown fields, ...).
//   - TestOpenAPIRoutes: every route registered in router.go is in the
//     document, under the same path parameter names, and answers through
//     the handler; every route of docs/API.md is in the document.
//   - TestOpenAPIRealResponses: real requests to every registered route,
//     through the real handler and a real database, each request and
//     response validated against the document. Every registered route
//     must have at least one validated 2xx exchange there, so a new route
//     cannot land without a test that holds the document to its code.

// openAPIPendingRoutes are routes the document describes (from API.md)
// that router.go does not register yet. Once one lands it leaves this
// list, and TestOpenAPIRealResponses must exercise it.
var openAPIPendingRoutes = map[string]bool{}

// TestOpenAPIDocument parses the document with libopenapi and validates
// it against the OpenAPI 3.1 specification's schema.
func TestOpenAPIDocument(t *testing.T) {
	doc, err := libopenapi.NewDocument(openAPIDocument)
	if err != nil {
		t.Fatalf("parsing openapi.json: %v", err)
	}
	info := doc.GetSpecInfo()
	if info.SpecType != "openapi" || info.Version != "3.1.0" {
		t.Fatalf("openapi.json is %s %s, want openapi 3.1.0", info.SpecType, info.Version)
	}
	model, err := doc.BuildV3Model()
	if err != nil {
		t.Fatalf("building the 3.1 model (unresolved $ref?): %v", err)
	}
	v, errs := validator.NewValidator(doc)
	if len(errs) > 0 {
		t.Fatalf("validator: %v", errs)
	}
	if ok, verrs := v.ValidateDocument(); !ok {
		t.Fatalf("openapi.json is not a valid OpenAPI 3.1 document:\n%s", validationMessages(verrs))
	}
	if !strings.Contains(model.Model.Info.Description, "docs/API.md") {
		t.Error("info.description does not say the document mirrors docs/API.md")
	}
	checkOpenAPIRules(t, openAPIDocument)
}

// checkOpenAPIRules checks the rules of the API that every operation of
// the document must state, on the raw JSON.
func checkOpenAPIRules(t *testing.T, raw []byte) {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	resolve := func(v any) map[string]any {
		m, _ := v.(map[string]any)
		for m != nil {
			ref, ok := m["$ref"].(string)
			if !ok {
				break
			}
			var cur any = doc
			for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
				cm, _ := cur.(map[string]any)
				cur = cm[part]
			}
			next, ok := cur.(map[string]any)
			if !ok {
				t.Errorf("$ref %s does not resolve", ref)
				return nil
			}
			m = next
		}
		return m
	}
	ids := map[string]string{}
	paths, _ := doc["paths"].(map[string]any)
	for path, item := range paths {
		for method, o := range item.(map[string]any) {
			if method == "parameters" {
				continue
			}
			route := strings.ToUpper(method) + " " + path
			op := o.(map[string]any)
			id, _ := op["operationId"].(string)
			if id == "" {
				t.Errorf("%s: no operationId", route)
			} else if other, dup := ids[id]; dup {
				t.Errorf("%s: operationId %q already used by %s", route, id, other)
			}
			ids[id] = route
			responses, _ := op["responses"].(map[string]any)
			sec, ok := op["security"].([]any)
			if !ok {
				t.Errorf("%s: no explicit security (use [] for a public route)", route)
			}
			authed := len(sec) > 0
			for _, req := range sec {
				if len(req.(map[string]any)) == 0 {
					authed = false // {}: credentials optional
				}
			}
			if authed {
				r := resolve(responses["401"])
				if r == nil {
					t.Errorf("%s: authenticated route without a 401 response", route)
				} else if h, _ := r["headers"].(map[string]any); h["WWW-Authenticate"] == nil {
					t.Errorf("%s: 401 without WWW-Authenticate", route)
				}
			}
			if strings.HasPrefix(path, "/api/auth/") && path != "/api/auth/jwks.json" && responses["429"] == nil {
				t.Errorf("%s: rate-limited route without a 429 response", route)
			}
			for status, rv := range responses {
				r := resolve(rv)
				h, _ := r["headers"].(map[string]any)
				if status == "429" && h["Retry-After"] == nil {
					t.Errorf("%s: 429 without Retry-After", route)
				}
				if status == "401" && h["WWW-Authenticate"] == nil {
					t.Errorf("%s: 401 without WWW-Authenticate", route)
				}
			}
			body := resolve(op["requestBody"])
			if body == nil {
				continue
			}
			for _, status := range []string{"413", "422"} {
				if responses[status] == nil {
					t.Errorf("%s: a body but no %s response", route, status)
				}
			}
			content, _ := body["content"].(map[string]any)
			mt := resolve(content["application/json"])
			if mt == nil {
				continue
			}
			schema := resolve(mt["schema"])
			branches := []map[string]any{schema}
			if one, ok := schema["oneOf"].([]any); ok {
				branches = nil
				for _, b := range one {
					branches = append(branches, resolve(b))
				}
			}
			for _, b := range branches {
				if b["type"] == "object" && b["additionalProperties"] != false {
					t.Errorf("%s: JSON body schema without additionalProperties: false (the API refuses unknown fields)", route)
				}
			}
		}
	}
}

// routerRoutes returns the routes that router.go registers, read from its
// source: the "METHOD /path" pattern of every call that starts a line,
// such as handle("GET /api/health", ...) and authed("GET /api/users/me", ...).
func routerRoutes(t *testing.T) []string {
	t.Helper()
	src, err := os.ReadFile("router.go")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?m)^\s*[A-Za-z_.]+\("((?:GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS) /[^"]*)"`)
	var routes []string
	for _, m := range re.FindAllSubmatch(src, -1) {
		routes = append(routes, string(m[1]))
	}
	if len(routes) < 5 {
		t.Fatalf("found only %d routes in router.go: has its shape changed?", len(routes))
	}
	return routes
}

// openAPIRoutes returns the document's routes, "METHOD /path".
func openAPIRoutes(t *testing.T) []string {
	t.Helper()
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(openAPIDocument, &doc); err != nil {
		t.Fatal(err)
	}
	var routes []string
	for path, item := range doc.Paths {
		for method := range item {
			switch method {
			case "get", "put", "post", "delete", "patch", "head", "options", "trace":
				routes = append(routes, strings.ToUpper(method)+" "+path)
			}
		}
	}
	sort.Strings(routes)
	return routes
}

// openAPIRouteTraits returns the document's routes that require
// credentials (security without an empty alternative), those that take a
// request body, and those whose body is required.
func openAPIRouteTraits(t *testing.T) (authed, withBody, bodyRequired map[string]bool) {
	t.Helper()
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(openAPIDocument, &doc); err != nil {
		t.Fatal(err)
	}
	authed, withBody, bodyRequired = map[string]bool{}, map[string]bool{}, map[string]bool{}
	for path, item := range doc.Paths {
		for method, raw := range item {
			var op struct {
				Security    []map[string]any `json:"security"`
				RequestBody *struct {
					Required bool `json:"required"`
				} `json:"requestBody"`
			}
			if method == "parameters" || json.Unmarshal(raw, &op) != nil {
				continue
			}
			route := strings.ToUpper(method) + " " + path
			authed[route] = len(op.Security) > 0
			for _, req := range op.Security {
				if len(req) == 0 {
					authed[route] = false
				}
			}
			withBody[route] = op.RequestBody != nil
			bodyRequired[route] = op.RequestBody != nil && op.RequestBody.Required
		}
	}
	return authed, withBody, bodyRequired
}

var pathParam = regexp.MustCompile(`\{[^}]*\}`)

// TestOpenAPIRoutes checks the document's routes against router.go and
// docs/API.md, and that every registered route answers.
func TestOpenAPIRoutes(t *testing.T) {
	documented := map[string]bool{}
	for _, r := range openAPIRoutes(t) {
		documented[r] = true
	}
	// By shape, to tell a renamed path parameter from a missing route.
	shapes := map[string]string{}
	for r := range documented {
		shapes[pathParam.ReplaceAllString(r, "{}")] = r
	}
	registered := map[string]bool{}
	for _, r := range routerRoutes(t) {
		registered[r] = true
		switch {
		case documented[r]:
		case shapes[pathParam.ReplaceAllString(r, "{}")] != "":
			t.Errorf("router.go registers %q but openapi.json names its parameters differently: %q", r, shapes[pathParam.ReplaceAllString(r, "{}")])
		default:
			t.Errorf("router.go registers %q, which openapi.json does not describe", r)
		}
		if openAPIPendingRoutes[r] {
			t.Errorf("%q is registered now: remove it from openAPIPendingRoutes (and test it in TestOpenAPIRealResponses)", r)
		}
	}
	for r := range documented {
		if !registered[r] && !openAPIPendingRoutes[r] {
			t.Errorf("openapi.json describes %q, which router.go does not register", r)
		}
		if !registered[r] {
			t.Logf("described without code yet: %s", r)
		}
	}

	// The project's API reference names its routes in headings.
	ref, err := os.ReadFile(filepath.Join("..", "docs", "API.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile("(?m)^#+ `([A-Z]+) (/[^`]*)`").FindAllSubmatch(ref, -1) {
		r := string(m[1]) + " " + string(m[2])
		if !documented[r] {
			t.Errorf("docs/API.md documents %q, which openapi.json does not", r)
		}
	}

	// Every registered route answers through the handler: neither the
	// mux's 404 nor its 405.
	e := newTestEnv(t, func(c *Config) { c.Settings.Dir = t.TempDir() })
	for r := range registered {
		method, path, _ := strings.Cut(r, " ")
		path = pathParam.ReplaceAllString(path, "00000000-0000-4000-8000-000000000000")
		res := e.do(method, path, "", nil)
		if res.Status == http.StatusMethodNotAllowed ||
			(res.Status == http.StatusNotFound && res.Detail(t) == `"Not Found"`) {
			t.Errorf("%s: %d %s: not routed", r, res.Status, res.Body)
		}
	}
}

// validationMessages formats the validator's errors, one per line.
func validationMessages(errs []*verrors.ValidationError) string {
	var b strings.Builder
	for _, e := range errs {
		fmt.Fprintf(&b, "  - %s: %s", e.Message, e.Reason)
		for _, f := range e.SchemaValidationErrors {
			fmt.Fprintf(&b, "\n      %s", f.Reason)
			if f.FieldPath != "" {
				fmt.Fprintf(&b, " at %s", f.FieldPath)
			}
			if f.KeywordLocation != "" {
				fmt.Fprintf(&b, " (%s)", f.KeywordLocation)
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

// openAPIAuthenticate is the validator's check of the security schemes:
// libopenapi-validator accepts any request for an oauth2 scheme, so the
// Bearer header is checked here; cookie schemes need their cookie.
func openAPIAuthenticate(_ context.Context, in *config.AuthenticationInput) error {
	s := in.SecurityScheme
	switch {
	case s.Type == "oauth2":
		if _, ok := bearerToken(in.Request); !ok {
			return errors.New("no Authorization: Bearer header")
		}
	case s.Type == "apiKey" && s.In == "cookie":
		if _, ok := cookieValue(in.Request, s.Name); !ok {
			return fmt.Errorf("no %s cookie", s.Name)
		}
	case s.Type == "apiKey" && s.In == "header":
		if in.Request.Header.Get(s.Name) == "" {
			return fmt.Errorf("no %s header", s.Name)
		}
	}
	return nil
}

// newOpenAPIValidator returns a validator of requests and responses
// against the document: formats asserted, forms validated, security
// checked.
func newOpenAPIValidator(t *testing.T) (validator.Validator, []string) {
	t.Helper()
	doc, err := libopenapi.NewDocument(openAPIDocument)
	if err != nil {
		t.Fatal(err)
	}
	v, errs := validator.NewValidator(doc,
		config.WithFormatAssertions(),
		config.WithURLEncodedBodyValidation(),
		config.WithAuthenticationFunc(openAPIAuthenticate),
	)
	if len(errs) > 0 {
		t.Fatalf("validator: %v", errs)
	}
	return v, openAPIRoutes(t)
}

// oaCall is one request of TestOpenAPIRealResponses and what it must get.
type oaCall struct {
	method, path string
	// token is sent as "Authorization: Bearer <token>" when not empty.
	token string
	// body: nil, a string (raw, sent as JSON), []byte (raw, no type),
	// url.Values (a form) or any other value (sent as JSON).
	body any
	// contentType overrides the body's Content-Type.
	contentType string
	header      http.Header
	cookies     []*http.Cookie
	// status is the status the API must answer.
	status int
	// invalid says the request breaks the document on purpose (a
	// missing field, an unknown one, no credentials, ...): the
	// validator must then refuse it too. Otherwise it must accept it.
	invalid bool
}

// oaHarness sends oaCalls to a testEnv and validates them.
type oaHarness struct {
	t         *testing.T
	env       *testEnv
	v         validator.Validator
	templates []string
	// covered holds the statuses validated for each documented route.
	covered map[string]map[int]bool
}

// template returns the documented route that method and path match, or "".
func (h *oaHarness) template(method, path string) string {
	segs := strings.Split(path, "/")
	for _, r := range h.templates {
		m, p, _ := strings.Cut(r, " ")
		if m != method {
			continue
		}
		tsegs := strings.Split(p, "/")
		if len(tsegs) != len(segs) {
			continue
		}
		match := true
		for i := range tsegs {
			if !strings.HasPrefix(tsegs[i], "{") && tsegs[i] != segs[i] {
				match = false
				break
			}
		}
		if match {
			return r
		}
	}
	return ""
}

// do sends c, checks its status, and validates the request and the
// response against the document.
func (h *oaHarness) do(c oaCall) *response {
	t := h.t
	t.Helper()
	var body []byte
	contentType := ""
	switch b := c.body.(type) {
	case nil:
	case string:
		body, contentType = []byte(b), "application/json"
	case []byte:
		body = b
	case url.Values:
		body, contentType = []byte(b.Encode()), "application/x-www-form-urlencoded"
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		body, contentType = j, "application/json"
	}
	if c.contentType != "" {
		contentType = c.contentType
	}
	newRequest := func() *http.Request {
		var rd io.Reader
		if body != nil {
			rd = bytes.NewReader(body)
		}
		req, err := http.NewRequest(c.method, h.env.srv.URL+c.path, rd)
		if err != nil {
			t.Fatal(err)
		}
		for k, vs := range c.header {
			req.Header[k] = vs
		}
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		if c.token != "" {
			req.Header.Set("Authorization", "Bearer "+c.token)
		}
		for _, ck := range c.cookies {
			req.AddCookie(ck)
		}
		return req
	}
	res, err := h.env.srv.Client().Do(newRequest())
	if err != nil {
		t.Fatal(err)
	}
	resBody, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	name := c.method + " " + c.path
	if res.StatusCode != c.status {
		t.Errorf("%s: status %d, want %d; body %s", name, res.StatusCode, c.status, resBody)
	}

	ok, verrs := h.v.ValidateHttpRequest(newRequest())
	switch {
	case !ok && !c.invalid:
		t.Errorf("%s: the document refuses the request:\n%s", name, validationMessages(verrs))
	case ok && c.invalid:
		t.Errorf("%s: the document accepts a request the test means to break it (answered %d %s)", name, res.StatusCode, resBody)
	}

	req := newRequest()
	vres := &http.Response{
		StatusCode: res.StatusCode,
		Status:     res.Status,
		Header:     res.Header,
		Body:       io.NopCloser(bytes.NewReader(resBody)),
		Request:    req,
	}
	if ok, verrs := h.v.ValidateHttpResponse(req, vres); !ok {
		t.Errorf("%s: the response %d %s breaks the document:\n%s", name, res.StatusCode, resBody, validationMessages(verrs))
	}

	if tpl := h.template(c.method, strings.SplitN(c.path, "?", 2)[0]); tpl != "" {
		if h.covered[tpl] == nil {
			h.covered[tpl] = map[int]bool{}
		}
		h.covered[tpl][res.StatusCode] = true
	}
	return &response{Status: res.StatusCode, Header: res.Header, Body: resBody}
}

// TestOpenAPIRealResponses validates real exchanges with every registered
// route against the document: every status the test can produce.
func TestOpenAPIRealResponses(t *testing.T) {
	settingsDir := filepath.Join(t.TempDir(), "settings")
	// A service that mails through a sink on loopback, so that the
	// routes of email verification and password reset run their 2xx
	// paths with real link tokens.
	e, sink := newMailEnv(t, func(c *Config) {
		c.Settings.Dir = settingsDir
		c.RateLimit.IPRequests = 1 << 20
		c.RateLimit.LoginFailures = 3
		c.Sessions.RefreshTokenInBody = true
		// The stub provider is on loopback.
		c.Settings.AITestAllow = loopbackAllowed
	})
	v, templates := newOpenAPIValidator(t)
	h := &oaHarness{t: t, env: e, v: v, templates: templates, covered: map[string]map[int]bool{}}
	registered := map[string]bool{}
	for _, r := range routerRoutes(t) {
		registered[r] = true
	}
	authedRoutes, bodyRoutes, bodyRequired := openAPIRouteTraits(t)
	H := func(kv ...string) http.Header {
		hd := http.Header{}
		for i := 0; i+1 < len(kv); i += 2 {
			hd.Set(kv[i], kv[i+1])
		}
		return hd
	}
	const pw = "Secret!pw1"
	unknownID := "00000000-0000-4000-8000-000000000000"
	huge := `{"email": "big@example.com", "password": "` + pw + `", "full_name": "` + strings.Repeat("a", fastapi.MaxBodyBytes) + `"}`

	// ---- meta ----
	h.do(oaCall{method: "GET", path: "/api/health", status: 200})
	res := h.do(oaCall{method: "GET", path: "/api/openapi.json", status: 200})
	if !bytes.Equal(res.Body, openAPIDocument) {
		t.Error("GET /api/openapi.json does not serve openapi.json")
	}
	if ct, cc := res.Header.Get("Content-Type"), res.Header.Get("Cache-Control"); ct != "application/json" || cc != "public, max-age=300" {
		t.Errorf("GET /api/openapi.json: Content-Type %q, Cache-Control %q", ct, cc)
	}
	h.do(oaCall{method: "GET", path: "/api/auth/jwks.json", status: 200})
	h.do(oaCall{method: "GET", path: "/.well-known/jwks.json", status: 200})

	// ---- register ----
	h.do(oaCall{method: "POST", path: "/api/auth/register", body: map[string]any{"email": "ada@example.com", "password": pw, "full_name": "Ada"}, status: 201})
	h.do(oaCall{method: "POST", path: "/api/auth/register", body: map[string]any{"email": "bob@example.com", "password": pw, "full_name": nil}, status: 201})
	h.do(oaCall{method: "POST", path: "/api/auth/register", body: map[string]any{"email": "ADA@example.com", "password": pw}, status: 409})
	h.do(oaCall{method: "POST", path: "/api/auth/register", body: map[string]any{"email": "nope", "password": pw}, status: 422})
	h.do(oaCall{method: "POST", path: "/api/auth/register", body: map[string]any{"email": "c@example.com"}, status: 422, invalid: true})
	h.do(oaCall{method: "POST", path: "/api/auth/register", body: map[string]any{"email": "c@example.com", "password": pw, "role": "admin"}, status: 422, invalid: true})
	h.do(oaCall{method: "POST", path: "/api/auth/register", body: map[string]any{"email": "c@example.com", "password": "short"}, status: 422, invalid: true})
	h.do(oaCall{method: "POST", path: "/api/auth/register", body: map[string]any{"email": "c@example.com", "password": "Attest!ing1"}, status: 422, invalid: true})
	h.do(oaCall{method: "POST", path: "/api/auth/register", body: map[string]any{"email": "c@example.com", "password": "nouppercase!1"}, status: 422, invalid: true})
	h.do(oaCall{method: "POST", path: "/api/auth/register", body: map[string]any{"email": "c@example.com", "password": "NoSpecial1x"}, status: 422, invalid: true})
	h.do(oaCall{method: "POST", path: "/api/auth/register", body: map[string]any{"email": "c@example.com", "password": pw, "full_name": strings.Repeat("x", 201)}, status: 422, invalid: true})
	h.do(oaCall{method: "POST", path: "/api/auth/register", body: map[string]any{"email": 7, "password": pw}, status: 422, invalid: true})
	h.do(oaCall{method: "POST", path: "/api/auth/register", body: `{"email": "c@example.com",`, status: 422, invalid: true})
	h.do(oaCall{method: "POST", path: "/api/auth/register", body: `["c@example.com"]`, status: 422, invalid: true})
	h.do(oaCall{method: "POST", path: "/api/auth/register", body: `{"email": "c@example.com", "password": "` + pw + `"}`, contentType: "text/plain", status: 422, invalid: true})
	h.do(oaCall{method: "POST", path: "/api/auth/register", body: huge, status: 413, invalid: true})

	// ---- login ----
	login := func(email string) (string, *response) {
		res := h.do(oaCall{method: "POST", path: "/api/auth/login", body: url.Values{"username": {email}, "password": {pw}}, status: 200})
		var tr struct {
			AccessToken string `json:"access_token"`
		}
		if err := json.Unmarshal(res.Body, &tr); err != nil || tr.AccessToken == "" {
			t.Fatalf("login %s: %s", email, res.Body)
		}
		return tr.AccessToken, res
	}
	userToken, loginRes := login("ada@example.com")
	h.do(oaCall{method: "POST", path: "/api/auth/login", body: url.Values{"username": {"BOB@example.com"}, "password": {pw}, "grant_type": {"password"}, "scope": {""}}, status: 200})
	h.do(oaCall{method: "POST", path: "/api/auth/login", body: url.Values{"username": {"ada@example.com"}, "password": {"Wrong!pw1"}}, status: 401})
	h.do(oaCall{method: "POST", path: "/api/auth/login", body: url.Values{"username": {"nobody@example.com"}, "password": {pw}}, status: 401})
	h.do(oaCall{method: "POST", path: "/api/auth/login", body: url.Values{"username": {"ada@example.com"}}, status: 422, invalid: true})
	h.do(oaCall{method: "POST", path: "/api/auth/login", body: url.Values{"username": {""}, "password": {pw}}, status: 422, invalid: true})
	h.do(oaCall{method: "POST", path: "/api/auth/login", body: url.Values{"username": {"ada@example.com"}, "password": {pw}, "grant_type": {"client_credentials"}}, status: 422, invalid: true})
	h.do(oaCall{method: "POST", path: "/api/auth/login", body: map[string]any{"username": "ada@example.com", "password": pw}, status: 422, invalid: true})
	h.do(oaCall{method: "POST", path: "/api/auth/login", body: []byte("username=a&password=" + strings.Repeat("a", fastapi.MaxBodyBytes)), contentType: "application/x-www-form-urlencoded", status: 413})
	// An inactive account, with the right password.
	e.register("ina@example.com", pw)
	e.exec("UPDATE users SET is_active = false WHERE email = 'ina@example.com'")
	h.do(oaCall{method: "POST", path: "/api/auth/login", body: url.Values{"username": {"ina@example.com"}, "password": {pw}}, status: 403})
	// A locked account name (3 failures allowed here).
	for i := 0; i < 3; i++ {
		h.do(oaCall{method: "POST", path: "/api/auth/login", body: url.Values{"username": {"lock@example.com"}, "password": {"Wrong!pw1"}}, status: 401})
	}
	h.do(oaCall{method: "POST", path: "/api/auth/login", body: url.Values{"username": {"lock@example.com"}, "password": {"Wrong!pw1"}}, status: 429})

	// The per-address limit, on a service that allows one request per
	// address: the login, then 429 on every rate-limited route.
	limited := newTestEnv(t, func(c *Config) { c.RateLimit.IPRequests = 1 })
	lh := &oaHarness{t: t, env: limited, v: v, templates: templates, covered: h.covered}
	if _, _, err := limited.svc.CreateAdmin(context.Background(), "rl@example.com", pw); err != nil {
		t.Fatal(err)
	}
	res = lh.do(oaCall{method: "POST", path: "/api/auth/login", body: url.Values{"username": {"rl@example.com"}, "password": {pw}}, status: 200})
	var limitedLogin struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(res.Body, &limitedLogin); err != nil {
		t.Fatal(err)
	}
	for route := range registered {
		method, path, _ := strings.Cut(route, " ")
		if !strings.HasPrefix(path, "/api/auth/") || path == "/api/auth/jwks.json" {
			continue
		}
		lh.do(oaCall{method: method, path: path, token: limitedLogin.AccessToken, status: 429, invalid: bodyRequired[route]})
	}

	// ---- users ----
	h.do(oaCall{method: "GET", path: "/api/users/me", token: userToken, status: 200})
	h.do(oaCall{method: "GET", path: "/api/users/me", status: 401, invalid: true})
	h.do(oaCall{method: "GET", path: "/api/users/me", token: "not-a-jwt", status: 401})
	h.do(oaCall{method: "GET", path: "/api/users/me", header: H("Authorization", "Basic YTpi"), status: 401, invalid: true})

	// Browser sessions: the cookies set at login, once login sets them.
	var accessCookie, refreshCookie *http.Cookie
	for _, c := range (&http.Response{Header: loginRes.Header}).Cookies() {
		switch c.Name {
		case e.svc.cfg.Sessions.AccessCookieName:
			accessCookie = c
		case e.svc.cfg.Sessions.RefreshCookieName:
			refreshCookie = c
		}
	}
	if accessCookie == nil || refreshCookie == nil {
		t.Fatalf("login set no session cookies: %v", loginRes.Header["Set-Cookie"])
	}
	withAccess := []*http.Cookie{{Name: accessCookie.Name, Value: accessCookie.Value}}
	withRefresh := []*http.Cookie{{Name: refreshCookie.Name, Value: refreshCookie.Value}}
	crossSite := H("Sec-Fetch-Site", "cross-site")
	h.do(oaCall{method: "GET", path: "/api/users/me", cookies: withAccess, status: 200})
	h.do(oaCall{method: "GET", path: "/api/users/me", cookies: []*http.Cookie{{Name: accessCookie.Name, Value: "nope"}}, status: 401})

	// ---- admin and settings ----
	_, adminToken := e.admin("root@example.com")
	h.do(oaCall{method: "GET", path: "/api/settings/ai", token: adminToken, status: 200})
	h.do(oaCall{method: "GET", path: "/api/settings/ai", token: userToken, status: 403})
	h.do(oaCall{method: "GET", path: "/api/settings/ai", status: 401, invalid: true})
	h.do(oaCall{method: "POST", path: "/api/settings/ai/test", token: adminToken, status: 200}) // no key: nothing sent
	provider := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/chat/completions" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"id": "chatcmpl-1", "choices": [{"message": {"role": "assistant", "content": "p"}}]}`)
	}))
	t.Cleanup(provider.Close)
	h.do(oaCall{method: "PATCH", path: "/api/settings/ai", token: adminToken, body: map[string]any{
		"provider": "openai", "model": "gpt-4o-mini", "base_url": provider.URL + "/v1",
		"api_key": "sk-abcdefghijklmnop", "temperature": 0.2, "max_tokens": 64,
	}, status: 200})
	h.do(oaCall{method: "PATCH", path: "/api/settings/ai", token: adminToken, body: map[string]any{"api_key": "****mnop", "base_url": nil}, status: 200})
	h.do(oaCall{method: "PATCH", path: "/api/settings/ai", token: adminToken, body: map[string]any{"base_url": provider.URL + "/v1"}, status: 200})
	h.do(oaCall{method: "PATCH", path: "/api/settings/ai", token: adminToken, body: map[string]any{"base_url": "ftp://example.com"}, status: 422})
	h.do(oaCall{method: "PATCH", path: "/api/settings/ai", token: adminToken, body: map[string]any{"temperature": 5}, status: 422, invalid: true})
	h.do(oaCall{method: "PATCH", path: "/api/settings/ai", token: adminToken, body: map[string]any{"provider": "mistral"}, status: 422, invalid: true})
	h.do(oaCall{method: "PATCH", path: "/api/settings/ai", token: adminToken, body: map[string]any{"max_tokens": 1.5}, status: 422, invalid: true})
	h.do(oaCall{method: "PATCH", path: "/api/settings/ai", token: adminToken, body: map[string]any{"updated_at": "2026-01-01T00:00:00Z"}, status: 422, invalid: true})
	h.do(oaCall{method: "PATCH", path: "/api/settings/ai", token: userToken, body: map[string]any{"model": "x"}, status: 403})
	h.do(oaCall{method: "POST", path: "/api/settings/ai/test", token: adminToken, status: 200})
	h.do(oaCall{method: "POST", path: "/api/settings/ai/test", token: adminToken, body: "null", status: 200})
	h.do(oaCall{method: "POST", path: "/api/settings/ai/test", token: adminToken, body: map[string]any{"model": "gpt-4o"}, status: 200})
	h.do(oaCall{method: "POST", path: "/api/settings/ai/test", token: adminToken, body: map[string]any{"max_tokens": 0}, status: 422, invalid: true})
	h.do(oaCall{method: "POST", path: "/api/settings/ai/test", token: adminToken, body: map[string]any{"base_url": "https://llm.example.com/v1"}, status: 422}) // the stored key, another origin
	h.do(oaCall{method: "POST", path: "/api/settings/ai/test", token: userToken, status: 403})
	// A corrupt ai.json: 503 until it is fixed.
	if err := os.WriteFile(filepath.Join(settingsDir, "ai.json"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	h.do(oaCall{method: "GET", path: "/api/settings/ai", token: adminToken, status: 503})
	if err := os.Remove(filepath.Join(settingsDir, "ai.json")); err != nil {
		t.Fatal(err)
	}
	h.do(oaCall{method: "GET", path: "/api/settings/documents/limits", token: userToken, status: 200})
	h.do(oaCall{method: "GET", path: "/api/settings/documents/limits", status: 401, invalid: true})
	h.do(oaCall{method: "PATCH", path: "/api/settings/documents/limits", token: adminToken, body: map[string]any{"max_pdf_size_mb": 50}, status: 200})
	h.do(oaCall{method: "PATCH", path: "/api/settings/documents/limits", token: adminToken, body: map[string]any{}, status: 422, invalid: true})
	h.do(oaCall{method: "PATCH", path: "/api/settings/documents/limits", token: adminToken, body: map[string]any{"max_pdf_size_mb": 0}, status: 422, invalid: true})
	h.do(oaCall{method: "PATCH", path: "/api/settings/documents/limits", token: adminToken, body: map[string]any{"max_pdf_size_mb": 5000}, status: 422, invalid: true})
	h.do(oaCall{method: "PATCH", path: "/api/settings/documents/limits", token: adminToken, body: `{"max_pdf_size_mb": 5, "x": "` + strings.Repeat("a", fastapi.MaxBodyBytes) + `"}`, status: 413, invalid: true})
	h.do(oaCall{method: "PATCH", path: "/api/settings/documents/limits", token: userToken, body: map[string]any{"max_pdf_size_mb": 5}, status: 403})

	// ---- profile (profile.go) ----
	if registered["GET /api/profile"] {
		h.do(oaCall{method: "GET", path: "/api/profile", token: userToken, status: 200})
		h.do(oaCall{method: "GET", path: "/api/profile", status: 401, invalid: true})
	}
	if registered["PUT /api/profile"] {
		h.do(oaCall{method: "PUT", path: "/api/profile", token: userToken, body: map[string]any{
			"full_name": "Ada Lovelace", "phone": "+44 20 7946 0000", "job_title": "Analyst",
			"department": "Engines", "bio": nil, "avatar_url": "https://example.com/ada.png",
		}, status: 200})
		h.do(oaCall{method: "PUT", path: "/api/profile", token: userToken, body: map[string]any{}, status: 200})
		h.do(oaCall{method: "PUT", path: "/api/profile", token: userToken, body: map[string]any{"user_id": unknownID}, status: 422, invalid: true})
		h.do(oaCall{method: "PUT", path: "/api/profile", token: userToken, body: map[string]any{"bio": strings.Repeat("b", 2001)}, status: 422, invalid: true})
		h.do(oaCall{method: "PUT", path: "/api/profile", token: userToken, body: map[string]any{"avatar_url": "javascript:alert(1)"}, status: 422, invalid: true})
		h.do(oaCall{method: "PUT", path: "/api/profile", token: userToken, body: map[string]any{"avatar_url": "http:///nohost"}, status: 422})
		h.do(oaCall{method: "PUT", path: "/api/profile", token: userToken, body: map[string]any{"phone": "call me"}, status: 422, invalid: true})
		h.do(oaCall{method: "PUT", path: "/api/profile", token: userToken, body: map[string]any{"phone": "+1 23"}, status: 422, invalid: true})
		h.do(oaCall{method: "PUT", path: "/api/profile", cookies: withAccess, body: map[string]any{"bio": "hi"}, status: 200})
		h.do(oaCall{method: "PUT", path: "/api/profile", cookies: withAccess, header: crossSite, body: map[string]any{"bio": "hi"}, status: 403})
		h.do(oaCall{method: "PUT", path: "/api/profile", status: 401, invalid: true, body: map[string]any{"bio": "hi"}})
	}

	// ---- admin (admin.go, audit) ----
	if registered["GET /api/admin/users"] {
		res := h.do(oaCall{method: "GET", path: "/api/admin/users", token: adminToken, status: 200})
		if res.Header.Get("X-Total-Count") == "" {
			t.Error("GET /api/admin/users: no X-Total-Count")
		}
		h.do(oaCall{method: "GET", path: "/api/admin/users?skip=1&limit=2&q=EXAMPLE&role=user&is_active=true", token: adminToken, status: 200})
		h.do(oaCall{method: "GET", path: "/api/admin/users?limit=0", token: adminToken, status: 422, invalid: true})
		h.do(oaCall{method: "GET", path: "/api/admin/users?role=root", token: adminToken, status: 422, invalid: true})
		h.do(oaCall{method: "GET", path: "/api/admin/users", token: userToken, status: 403})
		h.do(oaCall{method: "GET", path: "/api/admin/users", status: 401, invalid: true})
	}
	for route := range registered {
		if !strings.HasPrefix(route, "PATCH /api/admin/users/{") {
			continue
		}
		bob, _, err := e.svc.userByEmail(context.Background(), "bob@example.com")
		if err != nil {
			t.Fatal(err)
		}
		root, _, err := e.svc.userByEmail(context.Background(), "root@example.com")
		if err != nil {
			t.Fatal(err)
		}
		h.do(oaCall{method: "PATCH", path: "/api/admin/users/" + bob.ID, token: adminToken, body: map[string]any{"role": "user", "is_active": true}, status: 200})
		h.do(oaCall{method: "PATCH", path: "/api/admin/users/" + unknownID, token: adminToken, body: map[string]any{"is_active": false}, status: 404})
		h.do(oaCall{method: "PATCH", path: "/api/admin/users/not-a-uuid", token: adminToken, body: map[string]any{"is_active": false}, status: 422, invalid: true})
		h.do(oaCall{method: "PATCH", path: "/api/admin/users/" + bob.ID, token: adminToken, body: map[string]any{"role": "root"}, status: 422, invalid: true})
		h.do(oaCall{method: "PATCH", path: "/api/admin/users/" + root.ID, token: adminToken, body: map[string]any{"role": "user"}, status: 409})
		h.do(oaCall{method: "PATCH", path: "/api/admin/users/" + bob.ID, token: userToken, body: map[string]any{"role": "admin"}, status: 403})
	}
	if registered["GET /api/admin/audit"] {
		res := h.do(oaCall{method: "GET", path: "/api/admin/audit", token: adminToken, status: 200})
		if res.Header.Get("X-Total-Count") == "" {
			t.Error("GET /api/admin/audit: no X-Total-Count")
		}
		h.do(oaCall{method: "GET", path: "/api/admin/audit?skip=1&limit=2&event=login.success&event=register", token: adminToken, status: 200})
		ada, _, err := e.svc.userByEmail(context.Background(), "ada@example.com")
		if err != nil {
			t.Fatal(err)
		}
		res = h.do(oaCall{method: "GET", path: "/api/admin/audit?event=login.failure&target_id=" + ada.ID, token: adminToken, status: 200})
		if !bytes.Contains(res.Body, []byte(`"reason":"wrong_password"`)) {
			t.Errorf("GET /api/admin/audit: no failed login of ada: %s", res.Body)
		}
		h.do(oaCall{method: "GET", path: "/api/admin/audit?actor_id=" + ada.ID + "&since=2000-01-01T00:00:00Z&until=" + url.QueryEscape("2999-01-01T00:00:00.5+02:00"), token: adminToken, status: 200})
		h.do(oaCall{method: "GET", path: "/api/admin/audit?limit=1001", token: adminToken, status: 422, invalid: true})
		h.do(oaCall{method: "GET", path: "/api/admin/audit?actor_id=nope", token: adminToken, status: 422, invalid: true})
		h.do(oaCall{method: "GET", path: "/api/admin/audit?since=yesterday", token: adminToken, status: 422, invalid: true})
		h.do(oaCall{method: "GET", path: "/api/admin/audit?until=2024-01-01T00:00:00", token: adminToken, status: 422, invalid: true})
		h.do(oaCall{method: "GET", path: "/api/admin/audit", token: userToken, status: 403})
		h.do(oaCall{method: "GET", path: "/api/admin/audit", status: 401, invalid: true})
	}

	// ---- apps, groups and grants (apps.go, groups.go) ----
	if registered["GET /api/admin/groups"] {
		ada, _, err := e.svc.userByEmail(context.Background(), "ada@example.com")
		if err != nil {
			t.Fatal(err)
		}
		admin := func(method, path string, body any, status int, invalid ...bool) *response {
			return h.do(oaCall{method: method, path: path, token: adminToken, body: body, status: status, invalid: len(invalid) > 0})
		}
		h.do(oaCall{method: "GET", path: "/api/apps", token: userToken, status: 200})
		h.do(oaCall{method: "GET", path: "/api/users/me/groups", token: userToken, status: 200})
		admin("GET", "/api/admin/apps", nil, 200)
		h.do(oaCall{method: "GET", path: "/api/admin/apps", token: userToken, status: 403})
		admin("PUT", "/api/admin/apps/wiki", map[string]any{"name": "Wiki", "description": "Pages"}, 201)
		admin("PUT", "/api/admin/apps/wiki", map[string]any{"name": "Wiki", "open_to_all": false}, 200)
		admin("PUT", "/api/admin/apps/Wiki", map[string]any{"name": "Wiki"}, 422, true)
		admin("PUT", "/api/admin/apps/wiki", map[string]any{"name": ""}, 422, true)
		admin("PUT", "/api/admin/apps/wiki", map[string]any{"name": "  "}, 422)
		admin("PUT", "/api/admin/apps/wiki", map[string]any{"name": "W", "x": 1}, 422, true)
		admin("DELETE", "/api/admin/apps/gone", nil, 404)
		e.svc.RequireApp("documents")
		admin("DELETE", "/api/admin/apps/documents", nil, 409)
		admin("DELETE", "/api/admin/apps/-", nil, 422, true)
		admin("PUT", "/api/admin/apps/gone", map[string]any{"name": "Gone"}, 201)
		admin("DELETE", "/api/admin/apps/gone", nil, 204)

		res := admin("POST", "/api/admin/groups", map[string]any{"name": "Readers", "description": nil}, 201)
		var g Group
		if err := json.Unmarshal(res.Body, &g); err != nil {
			t.Fatal(err)
		}
		admin("POST", "/api/admin/groups", map[string]any{"name": "READERS"}, 409)
		admin("POST", "/api/admin/groups", map[string]any{}, 422, true)
		admin("POST", "/api/admin/groups", map[string]any{"name": strings.Repeat("n", 101)}, 422, true)
		h.do(oaCall{method: "GET", path: "/api/admin/groups", token: userToken, status: 403})
		res = admin("GET", "/api/admin/groups?skip=0&limit=5&q=read", nil, 200)
		if res.Header.Get("X-Total-Count") != "1" {
			t.Errorf("GET /api/admin/groups: X-Total-Count %q", res.Header.Get("X-Total-Count"))
		}
		admin("GET", "/api/admin/groups?limit=0", nil, 422, true)
		gp := "/api/admin/groups/" + g.ID
		admin("GET", gp, nil, 200)
		admin("GET", "/api/admin/groups/"+unknownID, nil, 404)
		admin("GET", "/api/admin/groups/nope", nil, 422, true)
		h.do(oaCall{method: "GET", path: gp, token: userToken, status: 403})
		other := admin("POST", "/api/admin/groups", map[string]any{"name": "Other"}, 201)
		admin("PATCH", gp, map[string]any{"name": "Readers 2", "description": "d"}, 200)
		admin("PATCH", gp, map[string]any{"name": "other"}, 409)
		admin("PATCH", "/api/admin/groups/"+unknownID, map[string]any{"description": nil}, 404)
		admin("PATCH", gp, map[string]any{"members": []string{}}, 422, true)
		admin("GET", gp+"/members", nil, 200)
		admin("GET", "/api/admin/groups/"+unknownID+"/members", nil, 404)
		admin("GET", "/api/admin/groups/nope/members", nil, 422, true)
		h.do(oaCall{method: "GET", path: gp + "/members", token: userToken, status: 403})
		admin("PUT", gp+"/members/"+ada.ID, nil, 204)
		admin("PUT", gp+"/members/"+unknownID, nil, 404)
		capped := e.register("capped@example.com", pw)
		e.exec(`INSERT INTO groups (name) SELECT 'cap ' || n FROM generate_series(1, 200) n`)
		e.exec(`INSERT INTO group_members (group_id, user_id) SELECT id, $1 FROM groups WHERE name LIKE 'cap %'`, capped.ID)
		admin("PUT", gp+"/members/"+capped.ID, nil, 409)
		admin("PUT", gp+"/members/nope", nil, 422, true)
		admin("DELETE", gp+"/members/"+ada.ID, nil, 204)
		admin("DELETE", gp+"/members/"+ada.ID, nil, 404)
		admin("DELETE", gp+"/members/nope", nil, 422, true)
		admin("PUT", gp+"/members/"+ada.ID, nil, 204)
		admin("PUT", gp+"/apps/wiki", nil, 204)
		admin("PUT", gp+"/apps/nope", nil, 404)
		admin("PUT", gp+"/apps/NOPE", nil, 422, true)
		admin("DELETE", gp+"/apps/wiki", nil, 204)
		admin("DELETE", "/api/admin/groups/"+unknownID+"/apps/wiki", nil, 404)
		admin("DELETE", gp+"/apps/NOPE", nil, 422, true)
		admin("PUT", gp+"/apps/wiki", nil, 204)
		up := "/api/admin/users/" + ada.ID + "/apps"
		admin("PUT", up+"/ai", nil, 204)
		admin("PUT", "/api/admin/users/"+unknownID+"/apps/ai", nil, 404)
		admin("PUT", up+"/A", nil, 422, true)
		admin("DELETE", up+"/ai", nil, 204)
		admin("DELETE", up+"/nope", nil, 404)
		admin("DELETE", up+"/A", nil, 422, true)
		res = admin("GET", up, nil, 200)
		if !strings.Contains(string(res.Body), `{"key":"wiki","direct":false,"groups":["`+g.ID+`"],"open_to_all":false}`) {
			t.Errorf("GET %s: %s", up, res.Body)
		}
		admin("GET", "/api/admin/users/"+unknownID+"/apps", nil, 404)
		admin("GET", "/api/admin/users/nope/apps", nil, 422, true)
		h.do(oaCall{method: "GET", path: up, token: userToken, status: 403})
		var o Group
		if err := json.Unmarshal(other.Body, &o); err != nil {
			t.Fatal(err)
		}
		admin("DELETE", "/api/admin/groups/"+o.ID, nil, 204)
		admin("DELETE", "/api/admin/groups/"+o.ID, nil, 404)
		admin("DELETE", "/api/admin/groups/nope", nil, 422, true)
	}

	// ---- email verification and password reset (password_reset.go,
	// outbox.go) ----
	if registered["POST /api/auth/verify-email"] {
		// An account of its own: the reset below ends its sessions.
		mu, _ := e.user("mail@example.com")
		verifyToken := linkTo(t, sink, mu.Email, "verify-email")
		h.do(oaCall{method: "POST", path: "/api/auth/verify-email", body: map[string]any{"token": strings.Repeat("A", 43)}, status: 400})
		h.do(oaCall{method: "POST", path: "/api/auth/verify-email", body: map[string]any{"token": "x"}, status: 400})
		h.do(oaCall{method: "POST", path: "/api/auth/verify-email", body: map[string]any{"token": 5}, status: 422, invalid: true})
		h.do(oaCall{method: "POST", path: "/api/auth/verify-email", body: map[string]any{}, status: 422, invalid: true})
		h.do(oaCall{method: "POST", path: "/api/auth/verify-email", body: map[string]any{"token": verifyToken, "user_id": mu.ID}, status: 422, invalid: true})
		res := h.do(oaCall{method: "POST", path: "/api/auth/verify-email", body: map[string]any{"token": verifyToken}, status: 200})
		if !bytes.Contains(res.Body, []byte(`"email_verified":true`)) {
			t.Errorf("POST /api/auth/verify-email: %s", res.Body)
		}
		h.do(oaCall{method: "POST", path: "/api/auth/verify-email", body: map[string]any{"token": verifyToken}, status: 400})

		for _, route := range []string{"/api/auth/verify-email/resend", "/api/auth/password-reset"} {
			h.do(oaCall{method: "POST", path: route, body: map[string]any{"email": "bob@example.com"}, status: 202})
			h.do(oaCall{method: "POST", path: route, body: map[string]any{"email": "nobody@example.com"}, status: 202})
			h.do(oaCall{method: "POST", path: route, body: map[string]any{"email": "nope"}, status: 422})
			h.do(oaCall{method: "POST", path: route, body: map[string]any{}, status: 422, invalid: true})
			h.do(oaCall{method: "POST", path: route, body: map[string]any{"email": "bob@example.com", "purpose": "x"}, status: 422, invalid: true})
		}

		h.do(oaCall{method: "POST", path: "/api/auth/password-reset", body: map[string]any{"email": mu.Email}, status: 202})
		resetToken := linkTo(t, sink, mu.Email, "reset-password")
		confirm := func(body any, status int, invalid bool) *response {
			return h.do(oaCall{method: "POST", path: "/api/auth/password-reset/confirm", body: body, status: status, invalid: invalid})
		}
		confirm(map[string]any{"token": resetToken, "new_password": "weak"}, 422, true)
		confirm(map[string]any{"token": resetToken}, 422, true)
		confirm(map[string]any{"token": resetToken, "new_password": "Other!pw2", "user_id": mu.ID}, 422, true)
		confirm(map[string]any{"token": verifyToken, "new_password": "Other!pw2"}, 400, false)
		res = confirm(map[string]any{"token": resetToken, "new_password": "Other!pw2"}, 200, false)
		if string(res.Body) != `{"detail":"Password has been reset"}` {
			t.Errorf("POST /api/auth/password-reset/confirm: %s", res.Body)
		}
		confirm(map[string]any{"token": resetToken, "new_password": "Other!pw3"}, 400, false)

		// Login of an unverified account where verification is required.
		strict := newTestEnv(t, func(c *Config) {
			c.Mail = testMailConfig(t, sink)
			c.Mail.RequireVerification = true
		})
		sh := &oaHarness{t: t, env: strict, v: v, templates: templates, covered: h.covered}
		strict.register("unverified@example.com", pw)
		res = sh.do(oaCall{method: "POST", path: "/api/auth/login", body: url.Values{"username": {"unverified@example.com"}, "password": {pw}}, status: 403})
		if string(res.Body) != `{"detail":"Email not verified"}` {
			t.Errorf("login of an unverified account: %s", res.Body)
		}
		mailID := "/api/admin/users/" + mu.ID + "/password-reset"
		h.do(oaCall{method: "POST", path: mailID, token: adminToken, status: 202})
		h.do(oaCall{method: "POST", path: "/api/admin/users/" + unknownID + "/password-reset", token: adminToken, status: 404})
		h.do(oaCall{method: "POST", path: "/api/admin/users/nope/password-reset", token: adminToken, status: 422, invalid: true})
		h.do(oaCall{method: "POST", path: mailID, token: userToken, status: 403})
		// Without mail, the admin hears it.
		plain := newTestEnv(t)
		ph := &oaHarness{t: t, env: plain, v: v, templates: templates, covered: h.covered}
		plainUser := plain.register("plain@example.com", pw)
		_, plainAdmin := plain.admin("plain-root@example.com")
		res = ph.do(oaCall{method: "POST", path: "/api/admin/users/" + plainUser.ID + "/password-reset", token: plainAdmin, status: 409})
		if string(res.Body) != `{"detail":"Mail is not configured"}` {
			t.Errorf("admin reset without mail: %s", res.Body)
		}
		res = ph.do(oaCall{method: "GET", path: "/api/admin/mail", token: plainAdmin, status: 200})
		if !bytes.Contains(res.Body, []byte(`"enabled":false`)) {
			t.Errorf("GET /api/admin/mail without mail: %s", res.Body)
		}

		res = h.do(oaCall{method: "GET", path: "/api/admin/mail", token: adminToken, status: 200})
		if !bytes.Contains(res.Body, []byte(`"enabled":true`)) {
			t.Errorf("GET /api/admin/mail: %s", res.Body)
		}
		// A mail given up: last_failure filled in.
		e.exec(`INSERT INTO mail_outbox (kind, user_id, state, done_at, last_error) VALUES ('password_changed', $1, 'failed', now(), '550 no such mailbox')`, mu.ID)
		res = h.do(oaCall{method: "GET", path: "/api/admin/mail", token: adminToken, status: 200})
		if !bytes.Contains(res.Body, []byte(`"last_failure":{"kind":"password_changed","user_id":"`+mu.ID+`","at":"`)) ||
			!bytes.Contains(res.Body, []byte(`"reason":"550 no such mailbox"}`)) {
			t.Errorf("GET /api/admin/mail after a failure: %s", res.Body)
		}
		h.do(oaCall{method: "GET", path: "/api/admin/mail", token: userToken, status: 403})
	}

	// ---- every route: no credentials, two Authorization headers, a
	// cross-origin cookie, and a body over 1 MiB ----
	for route := range registered {
		method, path, _ := strings.Cut(route, " ")
		path = pathParam.ReplaceAllString(strings.ReplaceAll(path, "{key}", "unknown-app"), unknownID)
		if authedRoutes[route] {
			h.do(oaCall{method: method, path: path, status: 401, invalid: true})
			twice := http.Header{"Authorization": {"Bearer " + adminToken, "Bearer " + userToken}}
			h.do(oaCall{method: method, path: path, header: twice, status: 400, invalid: bodyRequired[route]})
			if method != "GET" {
				h.do(oaCall{method: method, path: path, cookies: withAccess, header: crossSite, status: 403, invalid: bodyRequired[route]})
			}
		}
		if bodyRoutes[route] {
			token := ""
			if authedRoutes[route] {
				token = adminToken
			}
			h.do(oaCall{method: method, path: path, token: token, body: `{"x": "` + strings.Repeat("a", fastapi.MaxBodyBytes) + `"}`, status: 413, invalid: true})
		}
	}

	// ---- sessions (sessions.go, refresh.go, password_change.go) ----
	if registered["GET /api/users/me/sessions"] {
		e.login("ada@example.com", pw) // a second session
		res := h.do(oaCall{method: "GET", path: "/api/users/me/sessions", token: userToken, status: 200})
		h.do(oaCall{method: "GET", path: "/api/users/me/sessions", status: 401, invalid: true})
		var sessions []sessionInfo
		if err := json.Unmarshal(res.Body, &sessions); err != nil {
			t.Fatal(err)
		}
		if registered["DELETE /api/users/me/sessions/{session_id}"] {
			h.do(oaCall{method: "DELETE", path: "/api/users/me/sessions/" + unknownID, token: userToken, status: 404})
			h.do(oaCall{method: "DELETE", path: "/api/users/me/sessions/not-a-uuid", token: userToken, status: 422, invalid: true})
			h.do(oaCall{method: "DELETE", path: "/api/users/me/sessions/" + unknownID, status: 401, invalid: true})
			revoked := false
			for _, s := range sessions {
				if !s.Current {
					h.do(oaCall{method: "DELETE", path: "/api/users/me/sessions/" + s.ID, token: userToken, status: 204})
					revoked = true
					break
				}
			}
			if !revoked {
				t.Errorf("no other session to revoke in %s", res.Body)
			}
		}
	}
	var tr struct {
		RefreshToken string `json:"refresh_token"`
	}
	if err := json.Unmarshal(loginRes.Body, &tr); err != nil || tr.RefreshToken == "" {
		t.Fatalf("login with RefreshTokenInBody: no refresh_token in %s", loginRes.Body)
	}
	refreshToken := tr.RefreshToken
	if registered["POST /api/auth/refresh"] {
		h.do(oaCall{method: "POST", path: "/api/auth/refresh", status: 401})
		h.do(oaCall{method: "POST", path: "/api/auth/refresh", body: map[string]any{"refresh_token": "nope"}, status: 401})
		h.do(oaCall{method: "POST", path: "/api/auth/refresh", body: map[string]any{"refresh_token": "nope", "user_id": unknownID}, status: 422, invalid: true})
		h.do(oaCall{method: "POST", path: "/api/auth/refresh", body: map[string]any{}, status: 422, invalid: true})
		res := h.do(oaCall{method: "POST", path: "/api/auth/refresh", body: map[string]any{"refresh_token": refreshToken}, status: 200})
		if err := json.Unmarshal(res.Body, &tr); err != nil || tr.RefreshToken == "" {
			t.Fatalf("refresh: no refresh_token in %s", res.Body)
		}
		refreshToken = tr.RefreshToken
		// The cookie's own session (the login's cookie belongs to the
		// same session as the body's token, now rotated: a reuse). A
		// fresh login gives a fresh pair.
		_, res = login("bob@example.com")
		var fresh *http.Cookie
		for _, c := range (&http.Response{Header: res.Header}).Cookies() {
			if c.Name == refreshCookie.Name {
				fresh = c
			}
		}
		if fresh == nil {
			t.Fatal("login set no refresh cookie")
		}
		h.do(oaCall{method: "POST", path: "/api/auth/refresh", cookies: []*http.Cookie{{Name: fresh.Name, Value: fresh.Value}}, status: 200})
		h.do(oaCall{method: "POST", path: "/api/auth/refresh", cookies: withRefresh, header: crossSite, status: 403})
	}
	if registered["POST /api/users/me/password"] {
		_, tok := e.user("pw@example.com")
		h.do(oaCall{method: "POST", path: "/api/users/me/password", token: tok, body: map[string]any{"current_password": "Wrong!pw1", "new_password": "Other!pw2"}, status: 400})
		h.do(oaCall{method: "POST", path: "/api/users/me/password", token: tok, body: map[string]any{"current_password": pw, "new_password": pw}, status: 400})
		h.do(oaCall{method: "POST", path: "/api/users/me/password", token: tok, body: map[string]any{"current_password": pw}, status: 422, invalid: true})
		h.do(oaCall{method: "POST", path: "/api/users/me/password", token: tok, body: map[string]any{"current_password": pw, "new_password": "weak"}, status: 422, invalid: true})
		h.do(oaCall{method: "POST", path: "/api/users/me/password", token: tok, body: map[string]any{"current_password": pw, "new_password": "Other!pw2", "role": "admin"}, status: 422, invalid: true})
		h.do(oaCall{method: "POST", path: "/api/users/me/password", body: map[string]any{"current_password": pw, "new_password": "Other!pw2"}, status: 401, invalid: true})
		h.do(oaCall{method: "POST", path: "/api/users/me/password", token: tok, body: map[string]any{"current_password": pw, "new_password": "Other!pw2"}, status: 204})
	}
	if registered["POST /api/auth/logout"] {
		h.do(oaCall{method: "POST", path: "/api/auth/logout", body: map[string]any{"refresh_token": refreshToken}, status: 204})
		h.do(oaCall{method: "POST", path: "/api/auth/logout", status: 204})
		h.do(oaCall{method: "POST", path: "/api/auth/logout", cookies: withRefresh, status: 204})
		h.do(oaCall{method: "POST", path: "/api/auth/logout", cookies: withRefresh, header: crossSite, status: 403})
		h.do(oaCall{method: "POST", path: "/api/auth/logout", body: map[string]any{"refresh_token": 5}, status: 422, invalid: true})
	}
	if registered["POST /api/auth/logout-all"] {
		_, tok := e.user("all@example.com")
		h.do(oaCall{method: "POST", path: "/api/auth/logout-all", token: tok, status: 204})
		h.do(oaCall{method: "POST", path: "/api/auth/logout-all", status: 401, invalid: true})
		h.do(oaCall{method: "GET", path: "/api/users/me", token: tok, status: 401})
	}

	// ---- the database down: 503 ----
	dead := newTestEnv(t, func(c *Config) {
		c.Settings.Dir = t.TempDir()
		// With mail, a request for mail must queue it: 503.
		c.Mail = testMailConfig(t, sink)
	})
	dh := &oaHarness{t: t, env: dead, v: v, templates: templates, covered: h.covered}
	_, deadAdmin := dead.admin("dead@example.com")
	dead.db.Close()
	publicBodies := map[string]any{
		"GET /api/health":                       nil,
		"POST /api/auth/register":               map[string]any{"email": "late@example.com", "password": pw},
		"POST /api/auth/login":                  url.Values{"username": {"dead@example.com"}, "password": {pw}},
		"POST /api/auth/refresh":                map[string]any{"refresh_token": "x"},
		"POST /api/auth/logout":                 map[string]any{"refresh_token": "x"},
		"POST /api/auth/verify-email":           map[string]any{"token": strings.Repeat("A", 43)},
		"POST /api/auth/verify-email/resend":    map[string]any{"email": "dead@example.com"},
		"POST /api/auth/password-reset":         map[string]any{"email": "dead@example.com"},
		"POST /api/auth/password-reset/confirm": map[string]any{"token": strings.Repeat("A", 43), "new_password": "Other!pw2"},
		"GET /api/openapi.json":                 nil, // needs no database
		"GET /api/auth/jwks.json":               nil,
		"GET /.well-known/jwks.json":            nil,
	}
	for route := range registered {
		method, path, _ := strings.Cut(route, " ")
		path = pathParam.ReplaceAllString(strings.ReplaceAll(path, "{key}", "unknown-app"), unknownID)
		switch body, ok := publicBodies[route]; {
		case authedRoutes[route]:
			dh.do(oaCall{method: method, path: path, token: deadAdmin, status: 503, invalid: bodyRequired[route]})
		case route == "GET /api/openapi.json" || strings.HasSuffix(route, "/jwks.json"):
			dh.do(oaCall{method: method, path: path, status: 200})
		case ok:
			dh.do(oaCall{method: method, path: path, body: body, status: 503})
		default:
			t.Errorf("%s: add its 503 request (public route with the database down)", route)
		}
	}

	// Every registered route has a validated 2xx exchange above.
	for route := range registered {
		has2xx := false
		for status := range h.covered[route] {
			has2xx = has2xx || (status >= 200 && status < 300)
		}
		if !has2xx {
			t.Errorf("%s: no validated 2xx exchange; add its requests to TestOpenAPIRealResponses", route)
		}
	}
	// What the document lists that no exchange produced (informative).
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(openAPIDocument, &doc); err != nil {
		t.Fatal(err)
	}
	var never []string
	for path, item := range doc.Paths {
		for method, raw := range item {
			route := strings.ToUpper(method) + " " + path
			var op struct {
				Responses map[string]json.RawMessage `json:"responses"`
			}
			if !registered[route] || json.Unmarshal(raw, &op) != nil {
				continue
			}
			for status := range op.Responses {
				var n int
				if _, err := fmt.Sscan(status, &n); err == nil && !h.covered[route][n] {
					never = append(never, route+" "+status)
				}
			}
		}
	}
	sort.Strings(never)
	t.Logf("documented statuses not produced by this test: %s", strings.Join(never, ", "))
}
