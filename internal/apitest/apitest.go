// Package apitest checks HTTP answers with table-driven scenarios: a
// Scenario is one request and what its answer must be, exactly: the
// status, the JSON body (compared as JSON), header values, and substrings
// the body must or must not hold. A scenario runs against an http.Handler
// in process (Handler) or against a server over real HTTP (Client); either
// way Run returns the answer for further checks, and a failure prints
// every mismatch with the answer's body.
//
// A table of refusals, in process:
//
//	func TestMeRefusals(t *testing.T) {
//		h := newAPI(t) // an http.Handler
//		bearer := map[string]string{"Content-Type": "application/json", "WWW-Authenticate": "Bearer"}
//		apitest.Table(t, "", apitest.Handler(h), []apitest.Scenario{
//			{Name: "no token", URL: "/api/users/me",
//				ExpectedStatus: 401, ExpectedBody: apitest.Detail("Not authenticated"), ExpectedHeaders: bearer},
//			{Name: "bad token", URL: "/api/users/me", Headers: map[string]string{"Authorization": "Bearer x"},
//				ExpectedStatus: 401, ExpectedBody: apitest.Detail("Could not validate credentials"), ExpectedHeaders: bearer},
//		})
//	}
//
// The same scenarios over HTTP: apitest.Table(t, srv.URL, apitest.Client(nil), ...).
// One scenario, keeping its answer:
//
//	r := apitest.Scenario{Method: "POST", URL: "/api/auth/register", Body: map[string]string{"email": e, "password": pw},
//		ExpectedStatus: 201, NotExpectedContent: []string{pw}}.Run(t, base, send)
//	var u user
//	r.Decode(t, &u)
//
// Check applies the same expectations to an answer got some other way.
package apitest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

// Scenario is one request and the answer it must get. ExpectedStatus is
// required; every other expectation is checked only when set.
type Scenario struct {
	// Name names the scenario in failures and, in Table, its subtest;
	// default "METHOD URL".
	Name string
	// Method is the request's method; default GET.
	Method string
	// URL is the request target: a path (with its query) appended to the
	// base URL the scenario runs against, or an absolute http(s) URL.
	URL string
	// Body is the request body. A string, []byte or io.Reader is sent as
	// is (a reader other than *bytes.Reader, *bytes.Buffer and
	// *strings.Reader has no known length and goes chunked); any other
	// non-nil value is sent as its JSON, with Content-Type
	// application/json unless Headers sets one.
	Body any
	// Headers are set on the request, one value a name.
	Headers map[string]string
	// Request, if set, makes the last changes to the request before it
	// is sent: several values of one header, a name spelled as no
	// canonical header is, an unknown length.
	Request func(*http.Request)

	// ExpectedStatus is the exact status of the answer.
	ExpectedStatus int
	// ExpectedBody, if set, is the exact body as JSON: both are decoded
	// and compared as JSON values (member order and spacing aside).
	// Detail makes the body of an error.
	ExpectedBody string
	// ExpectedContent are substrings the body must hold.
	ExpectedContent []string
	// NotExpectedContent are substrings the body must not hold (a
	// secret that must not be echoed, say).
	NotExpectedContent []string
	// ExpectedHeaders are exact header values: the answer carries the
	// header exactly once, with this value; "" means that it does not
	// carry the header at all.
	ExpectedHeaders map[string]string
}

// Response is an answer, its body read whole.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// Decode unmarshals the JSON body into v, failing tb if it cannot.
func (r *Response) Decode(tb testing.TB, v any) {
	tb.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		tb.Fatalf("body %q is not the expected JSON: %v", r.Body, err)
	}
}

// JSON decodes the body as a JSON object, failing tb if it is not one.
func (r *Response) JSON(tb testing.TB) map[string]any {
	tb.Helper()
	var m map[string]any
	r.Decode(tb, &m)
	return m
}

// ContentType is the media type of the answer, without parameters.
func (r *Response) ContentType() string {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return mt
}

// Sender sends a request and returns its whole answer: it is what a
// scenario runs against.
type Sender func(*http.Request) (*Response, error)

// Handler sends requests to h in process, through an
// httptest.ResponseRecorder, as a server would hand them over: from
// 127.0.0.1, with Host example.com unless the URL names one.
func Handler(h http.Handler) Sender {
	return func(req *http.Request) (*Response, error) {
		in := req.Clone(req.Context())
		in.URL = &url.URL{Path: req.URL.Path, RawPath: req.URL.RawPath, RawQuery: req.URL.RawQuery}
		in.RequestURI = in.URL.RequestURI()
		if in.Host == "" {
			in.Host = "example.com"
		}
		in.RemoteAddr = "127.0.0.1:40000"
		if in.Body == nil {
			in.Body = http.NoBody
		} else if in.Body != http.NoBody && in.ContentLength == 0 {
			in.ContentLength = -1
			in.TransferEncoding = []string{"chunked"}
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, in)
		res := rec.Result()
		body, err := io.ReadAll(res.Body)
		if err != nil {
			return nil, fmt.Errorf("reading the body: %w", err)
		}
		return &Response{Status: res.StatusCode, Header: res.Header, Body: body}, nil
	}
}

// Client sends requests over HTTP with c; nil is a client that follows
// no redirect and gives up after 30 seconds.
func Client(c *http.Client) Sender {
	if c == nil {
		c = &http.Client{
			Timeout:       30 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	return func(req *http.Request) (*Response, error) {
		res, err := c.Do(req)
		if err != nil {
			return nil, err
		}
		defer res.Body.Close()
		body, err := io.ReadAll(res.Body)
		if err != nil {
			return nil, fmt.Errorf("reading the body: %w", err)
		}
		return &Response{Status: res.StatusCode, Header: res.Header, Body: body}, nil
	}
}

// Run sends the scenario's request to base (a URL such as
// http://127.0.0.1:8080, or "" for Handler) with send, checks the answer
// (Check) and returns it. It fails tb at the first error.
func (s Scenario) Run(tb testing.TB, base string, send Sender) *Response {
	tb.Helper()
	req, err := s.NewRequest(base)
	if err != nil {
		tb.Fatalf("%s: %v", s.name(), err)
	}
	r, err := send(req)
	if err != nil {
		tb.Fatalf("%s: %v", s.name(), err)
	}
	s.Check(tb, r)
	return r
}

// Table runs each scenario as a subtest of t named after it.
func Table(t *testing.T, base string, send Sender, scenarios []Scenario) {
	t.Helper()
	for _, s := range scenarios {
		t.Run(s.name(), func(t *testing.T) {
			t.Helper()
			s.Run(t, base, send)
		})
	}
}

// NewRequest makes the scenario's request for base.
func (s Scenario) NewRequest(base string) (*http.Request, error) {
	target := s.URL
	if !strings.HasPrefix(target, "http://") && !strings.HasPrefix(target, "https://") {
		target = base + target
	}
	method := s.Method
	if method == "" {
		method = http.MethodGet
	}
	var body io.Reader
	jsonBody := false
	switch b := s.Body.(type) {
	case nil:
	case string:
		body = strings.NewReader(b)
	case []byte:
		body = bytes.NewReader(b)
	case io.Reader:
		body = b
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			return nil, fmt.Errorf("the body as JSON: %w", err)
		}
		body, jsonBody = bytes.NewReader(raw), true
	}
	req, err := http.NewRequest(method, target, body)
	if err != nil {
		return nil, err
	}
	for name, v := range s.Headers {
		req.Header.Set(name, v)
	}
	if jsonBody && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if s.Request != nil {
		s.Request(req)
	}
	return req, nil
}

// Check fails tb unless r meets every expectation of s; the failure
// names each mismatch and shows the body.
func (s Scenario) Check(tb testing.TB, r *Response) {
	tb.Helper()
	var bad []string
	if s.ExpectedStatus == 0 {
		bad = append(bad, "the scenario sets no ExpectedStatus")
	} else if r.Status != s.ExpectedStatus {
		bad = append(bad, fmt.Sprintf("status %d, want %d", r.Status, s.ExpectedStatus))
	}
	names := make([]string, 0, len(s.ExpectedHeaders))
	for name := range s.ExpectedHeaders {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		want, got := s.ExpectedHeaders[name], r.Header.Values(name)
		switch {
		case want == "" && len(got) != 0:
			bad = append(bad, fmt.Sprintf("header %s %q, want none", name, got))
		case want != "" && !slices.Equal(got, []string{want}):
			bad = append(bad, fmt.Sprintf("header %s %q, want exactly [%q]", name, got, want))
		}
	}
	if s.ExpectedBody != "" {
		want, err := canonicalJSON([]byte(s.ExpectedBody))
		if err != nil {
			tb.Fatalf("%s: ExpectedBody %s is not JSON: %v", s.name(), s.ExpectedBody, err)
		}
		if got, err := canonicalJSON(r.Body); err != nil {
			bad = append(bad, fmt.Sprintf("the body is not JSON (%v), want %s", err, want))
		} else if got != want {
			bad = append(bad, fmt.Sprintf("body\n   got %s\n  want %s", got, want))
		}
	}
	for _, sub := range s.ExpectedContent {
		if sub == "" {
			bad = append(bad, "ExpectedContent holds \"\", which any body holds")
		} else if !bytes.Contains(r.Body, []byte(sub)) {
			bad = append(bad, fmt.Sprintf("the body lacks %q", sub))
		}
	}
	for _, sub := range s.NotExpectedContent {
		if sub == "" {
			bad = append(bad, "NotExpectedContent holds \"\", which any body holds")
		} else if bytes.Contains(r.Body, []byte(sub)) {
			bad = append(bad, fmt.Sprintf("the body holds %q", sub))
		}
	}
	if len(bad) > 0 {
		tb.Fatalf("%s:\n  %s\n  answer: %d, body (%d bytes): %s", s.name(), strings.Join(bad, "\n  "), r.Status, len(r.Body), truncate(r.Body, 2000))
	}
}

// name is the scenario's Name, else its method and URL, else (a
// scenario used only to Check) "the answer".
func (s Scenario) name() string {
	switch {
	case s.Name != "":
		return s.Name
	case s.URL == "":
		return "the answer"
	case s.Method == "":
		return http.MethodGet + " " + s.URL
	}
	return s.Method + " " + s.URL
}

// Detail returns the JSON of an error answer in FastAPI's shape,
// {"detail": detail}: detail is a message, or the entries of a 422.
func Detail(detail any) string {
	b, err := json.Marshal(map[string]any{"detail": detail})
	if err != nil {
		panic(fmt.Sprintf("apitest.Detail: %v", err))
	}
	return string(b)
}

// canonicalJSON re-encodes JSON text with sorted object members and no
// spacing.
func canonicalJSON(raw []byte) (string, error) {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return "", err
	}
	out, err := json.Marshal(v)
	return string(out), err
}

// truncate shows at most n bytes of b.
func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + fmt.Sprintf("... (%d bytes)", len(b))
	}
	return string(b)
}
