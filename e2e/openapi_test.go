package e2e

// The OpenAPI check of the run. The harness records every response a
// Client gets under /api/ (client_test.go: record); once every test has
// ended, TestMain validates each of them against the OpenAPI document
// that the shared gateway serves at /api/openapi.json, which is what
// clients see, with libopenapi-validator: the status must be one the
// operation lists, the body must match its schema (formats asserted), and
// its required headers (WWW-Authenticate, Retry-After, X-Total-Count)
// must be there and valid. A response that breaks the document fails the
// run, with the test, the request, the response and the validator's
// reasons.
//
// Not validated: the document service's own responses, proxied under
// /api/documents (only the gateway's 401s there would be, were those
// routes in the document: they are not), and responses of routes the
// document does not describe (an unknown path's 404, a wrong method's
// 405), which are counted and listed with -v.
//
// The check runs after m.Run rather than as a test, since parallel tests
// end after every sequential one has run. -e2e.openapi=false turns the
// recording and the check off.

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	"github.com/pb33f/libopenapi-validator/config"
	verrors "github.com/pb33f/libopenapi-validator/errors"
)

// checkOpenAPI turns the recording of /api/* responses, and their check
// against the OpenAPI document after the run, on or off.
var checkOpenAPI = flag.Bool("e2e.openapi", true,
	"record every /api/* response of the run and validate it against the OpenAPI document the gateway serves")

// openAPIChecker validates recorded exchanges against one document.
type openAPIChecker struct {
	v validator.Validator
	// source says where the document came from.
	source string
}

// newOpenAPIChecker parses doc (read from source).
func newOpenAPIChecker(doc []byte, source string) (*openAPIChecker, error) {
	d, err := libopenapi.NewDocument(doc)
	if err != nil {
		return nil, fmt.Errorf("parsing the OpenAPI document (%s): %w", source, err)
	}
	v, errs := validator.NewValidator(d, config.WithFormatAssertions())
	if len(errs) > 0 {
		return nil, fmt.Errorf("the OpenAPI document (%s): %w", source, errors.Join(errs...))
	}
	return &openAPIChecker{v: v, source: source}, nil
}

// servedOpenAPIDocument returns the document the shared gateway serves,
// or, when no test of the run started it, the one the binary embeds
// (accounts/openapi.json of the tree it was built from).
func servedOpenAPIDocument() (doc []byte, source string, err error) {
	shared.mu.Lock()
	gw := shared.gw
	shared.mu.Unlock()
	if gw == nil {
		path := filepath.Join(repoRoot, "accounts", "openapi.json")
		doc, err = os.ReadFile(path)
		return doc, path + " (the shared gateway did not run)", err
	}
	source = "GET " + gw.URL + "/api/openapi.json"
	hc := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	res, err := hc.Get(gw.URL + "/api/openapi.json")
	if err != nil {
		return nil, source, err
	}
	defer res.Body.Close()
	doc, err = io.ReadAll(res.Body)
	if err == nil && res.StatusCode != http.StatusOK {
		err = fmt.Errorf("status %d: %s", res.StatusCode, truncate(doc, 200))
	}
	return doc, source, err
}

// isDocumentsPath reports whether path is the document service's
// (Caddyfile: @documents).
func isDocumentsPath(path string) bool {
	return path == "/api/documents" || strings.HasPrefix(path, "/api/documents/")
}

// checkResult is what the check of a run's exchanges found.
type checkResult struct {
	// validated counts the responses validated (failures included).
	validated int
	// documents counts the document service's responses, not validated.
	documents int
	// undocumented counts the responses of routes the document does not
	// describe, by "METHOD path -> status".
	undocumented map[string]int
	// failures are the responses that break the document, grouped by
	// operation, status and reasons, in the order first seen.
	failures []*checkFailure
}

// checkFailure is a group of responses that break the document the same
// way.
type checkFailure struct {
	// route is "METHOD /template -> status".
	route   string
	reasons string
	count   int
	// example is the first response of the group.
	example Exchange
}

// check validates exchanges.
func (c *openAPIChecker) check(exchanges []Exchange) *checkResult {
	res := &checkResult{undocumented: map[string]int{}}
	groups := map[string]*checkFailure{}
	for _, ex := range exchanges {
		req, err := http.NewRequest(ex.Method, "http://gateway"+ex.URI, nil)
		if err != nil {
			res.undocumented[ex.Method+" "+ex.URI+" (not a URL: "+err.Error()+")"]++
			continue
		}
		if isDocumentsPath(req.URL.Path) && ex.Status != http.StatusUnauthorized {
			res.documents++
			continue
		}
		resp := &http.Response{
			StatusCode: ex.Status,
			Status:     fmt.Sprintf("%d %s", ex.Status, http.StatusText(ex.Status)),
			Header:     ex.Header,
			Body:       io.NopCloser(bytes.NewReader(ex.Body)),
			Request:    req,
		}
		ok, verrs := c.v.ValidateHttpResponse(req, resp)
		if !ok && routeMissing(verrs) {
			if isDocumentsPath(req.URL.Path) {
				res.documents++
			} else {
				res.undocumented[fmt.Sprintf("%s %s -> %d", ex.Method, req.URL.Path, ex.Status)]++
			}
			continue
		}
		res.validated++
		if ok {
			continue
		}
		route := fmt.Sprintf("%s %s -> %d", ex.Method, req.URL.Path, ex.Status)
		if verrs[0].SpecPath != "" {
			route = fmt.Sprintf("%s %s -> %d", ex.Method, verrs[0].SpecPath, ex.Status)
		}
		reasons := validationReasons(verrs)
		key := route + "\n" + reasons
		g := groups[key]
		if g == nil {
			g = &checkFailure{route: route, reasons: reasons, example: ex}
			groups[key] = g
			res.failures = append(res.failures, g)
		}
		g.count++
	}
	return res
}

// routeMissing reports whether the validator found no operation for the
// request: a path or a method the document does not describe.
func routeMissing(errs []*verrors.ValidationError) bool {
	for _, e := range errs {
		if !e.IsPathMissingError() && !e.IsOperationMissingError() {
			return false
		}
	}
	return len(errs) > 0
}

// validationReasons formats the validator's errors, one per line.
func validationReasons(errs []*verrors.ValidationError) string {
	var lines []string
	for _, e := range errs {
		line := "- " + e.Message
		if e.Reason != "" && e.Reason != e.Message {
			line += ": " + e.Reason
		}
		for _, f := range e.SchemaValidationErrors {
			line += "\n    " + f.Reason
			if f.FieldPath != "" {
				line += " at " + f.FieldPath
			}
		}
		lines = append(lines, line)
	}
	return strings.Join(lines, "\n")
}

// report writes what r found; verbose adds the routes not validated.
func (r *checkResult) report(w io.Writer, source string, total int, verbose bool) {
	undocumented := 0
	for _, n := range r.undocumented {
		undocumented += n
	}
	if len(r.failures) > 0 {
		bad := 0
		for _, f := range r.failures {
			bad += f.count
		}
		fmt.Fprintf(w, "e2e: FAIL: %d of the run's %d validated /api/* responses break the OpenAPI document (%s):\n", bad, r.validated, source)
		for _, f := range r.failures {
			ex := f.example
			fmt.Fprintf(w, "\n%s (%d response(s)); first in %s: %s %s\n", f.route, f.count, ex.Test, ex.Method, ex.URI)
			fmt.Fprintf(w, "  response: %d, Content-Type %q, body: %s\n", ex.Status, ex.Header.Get("Content-Type"), truncate(ex.Body, 500))
			fmt.Fprintf(w, "  %s\n", strings.ReplaceAll(f.reasons, "\n", "\n  "))
		}
		fmt.Fprintln(w, "\nFix the handler or accounts/openapi.json (and docs/API.md), whichever is wrong.")
	}
	if verbose || len(r.failures) > 0 {
		fmt.Fprintf(w, "e2e: OpenAPI check: %d responses recorded, %d validated, %d of the document service not validated, %d of undocumented routes\n",
			total, r.validated, r.documents, undocumented)
	}
	if verbose && undocumented > 0 {
		keys := make([]string, 0, len(r.undocumented))
		for k := range r.undocumented {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(w, "  not in the document: %s (%d)\n", k, r.undocumented[k])
		}
	}
}

// checkRecordedResponses validates every exchange recorded in the run
// and reports to w. It returns false when a response breaks the document
// or the document cannot be had.
func checkRecordedResponses(w io.Writer) bool {
	exchanges := recordedExchanges()
	if len(exchanges) == 0 {
		return true
	}
	start := time.Now()
	doc, source, err := servedOpenAPIDocument()
	if err != nil {
		fmt.Fprintf(w, "e2e: FAIL: the OpenAPI check: getting the document (%s): %v\n", source, err)
		return false
	}
	c, err := newOpenAPIChecker(doc, source)
	if err != nil {
		fmt.Fprintf(w, "e2e: FAIL: the OpenAPI check: %v\n", err)
		return false
	}
	res := c.check(exchanges)
	res.report(w, source, len(exchanges), testing.Verbose())
	if testing.Verbose() {
		fmt.Fprintf(w, "e2e: OpenAPI check took %v\n", time.Since(start).Round(time.Millisecond))
	}
	return len(res.failures) == 0
}

// TestOpenAPICheck proves the run's check: a Client's /api/* responses
// are recorded, and the checker, with the document the shared gateway
// serves, passes good responses, flags each kind of bad one, and leaves
// out the document service's and undocumented routes'.
func TestOpenAPICheck(t *testing.T) {
	t.Parallel()
	g := sharedGateway(t)
	c := g.Client(t)
	if *checkOpenAPI {
		before := len(recordedExchanges()) // earlier runs of this test (-count) count too
		expectStatus(t, c.Get("/api/health", ""), http.StatusOK)
		c.Get(assetPath, "") // not the API's: not recorded
		var mine []Exchange
		for _, ex := range recordedExchanges()[before:] {
			if ex.Test == t.Name() {
				mine = append(mine, ex)
			}
		}
		if len(mine) != 1 || mine[0].Method != "GET" || mine[0].URI != "/api/health" || mine[0].Status != 200 ||
			!bytes.Contains(mine[0].Body, []byte(`"ok"`)) || mine[0].Header.Get("Content-Type") != "application/json" {
			t.Fatalf("recorded %+v, want the one GET /api/health", mine)
		}
	}

	doc, source, err := servedOpenAPIDocument()
	if err != nil {
		t.Fatal(err)
	}
	checker, err := newOpenAPIChecker(doc, source)
	if err != nil {
		t.Fatal(err)
	}
	jsonHeader := func(kv ...string) http.Header {
		h := http.Header{"Content-Type": {"application/json"}}
		for i := 0; i+1 < len(kv); i += 2 {
			h.Set(kv[i], kv[i+1])
		}
		return h
	}
	const user = `{"id":"6f1c2a34-5b6d-4e7f-8a9b-0c1d2e3f4a5b","email":"a@example.com","role":"user","is_active":true,"email_verified":true,` +
		`"created_at":"2024-01-01T00:00:00Z","updated_at":"2024-01-01T00:00:00Z"}`
	good := []Exchange{
		{Method: "GET", URI: "/api/health", Status: 200, Header: jsonHeader(), Body: []byte(`{"status":"ok"}`)},
		{Method: "GET", URI: "/api/users/me", Status: 200, Header: jsonHeader(), Body: []byte(user)},
		{Method: "GET", URI: "/api/users/me", Status: 401, Header: jsonHeader("WWW-Authenticate", "Bearer"), Body: []byte(`{"detail":"Not authenticated"}`)},
		{Method: "GET", URI: "/api/admin/users?limit=1", Status: 200, Header: jsonHeader("X-Total-Count", "1"), Body: []byte("[" + user + "]")},
	}
	bad := map[string]Exchange{
		"a body off its schema":    {Method: "GET", URI: "/api/users/me", Status: 200, Header: jsonHeader(), Body: []byte(`{"id":5}`)},
		"an extra member":          {Method: "GET", URI: "/api/users/me", Status: 200, Header: jsonHeader(), Body: []byte(user[:len(user)-1] + `,"hashed_password":"x"}`)},
		"a bad format":             {Method: "GET", URI: "/api/users/me", Status: 200, Header: jsonHeader(), Body: []byte(strings.Replace(user, "2024-01-01T00:00:00Z", "yesterday", 1))},
		"an undocumented status":   {Method: "GET", URI: "/api/users/me", Status: 418, Header: jsonHeader(), Body: []byte(`{"detail":"teapot"}`)},
		"a 401 without its header": {Method: "GET", URI: "/api/users/me", Status: 401, Header: jsonHeader(), Body: []byte(`{"detail":"Not authenticated"}`)},
		"no X-Total-Count":         {Method: "GET", URI: "/api/admin/users", Status: 200, Header: jsonHeader(), Body: []byte("[]")},
		"not JSON":                 {Method: "GET", URI: "/api/health", Status: 200, Header: http.Header{"Content-Type": {"text/html"}}, Body: []byte("<html>")},
		"a 422 of another shape":   {Method: "GET", URI: "/api/admin/users?limit=0", Status: 422, Header: jsonHeader(), Body: []byte(`{"detail":"bad"}`)},
		"a templated path's body":  {Method: "PATCH", URI: "/api/admin/users/6f1c2a34-5b6d-4e7f-8a9b-0c1d2e3f4a5b", Status: 200, Header: jsonHeader(), Body: []byte(`{}`)},
	}
	skipped := []Exchange{
		{Method: "GET", URI: "/api/documents/x", Status: 200, Header: jsonHeader(), Body: []byte(`{"anything":1}`)},
		{Method: "POST", URI: "/api/documents", Status: 502, Header: jsonHeader(), Body: []byte(`{"detail":"Bad Gateway"}`)},
		{Method: "GET", URI: "/api/nope", Status: 404, Header: jsonHeader(), Body: []byte(`{"detail":"Not Found"}`)},
		{Method: "DELETE", URI: "/api/users/me", Status: 405, Header: jsonHeader(), Body: []byte(`{"detail":"Method Not Allowed"}`)},
	}

	if r := checker.check(append(slices.Clone(good), skipped...)); len(r.failures) > 0 || r.validated != len(good) || r.documents != 2 || len(r.undocumented) != 2 {
		var b bytes.Buffer
		r.report(&b, source, len(good)+len(skipped), true)
		t.Errorf("good and skipped responses: %d validated, %d of the document service, undocumented %v, want %d, 2, 2:\n%s",
			r.validated, r.documents, r.undocumented, len(good), b.String())
	}
	for name, ex := range bad {
		ex.Test = t.Name()
		r := checker.check([]Exchange{ex, ex})
		if len(r.failures) != 1 || r.failures[0].count != 2 || r.validated != 2 {
			t.Errorf("%s: not reported once for both responses: %+v", name, r)
			continue
		}
		var b bytes.Buffer
		r.report(&b, source, 2, false)
		if out := b.String(); !strings.Contains(out, "FAIL") || !strings.Contains(out, ex.Method+" "+ex.URI) || !strings.Contains(out, t.Name()) {
			t.Errorf("%s: the report does not say what failed:\n%s", name, out)
		}
	}
}
