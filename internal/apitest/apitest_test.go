package apitest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
)

// api is a small handler to run scenarios against. /echo answers 200 with
// what it received as JSON; /refuse answers 401 in FastAPI's shape with a
// Bearer challenge; /moved redirects to /echo.
func api() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Echo", "yes")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"method":            r.Method,
			"uri":               r.RequestURI,
			"host":              r.Host,
			"content_length":    r.ContentLength,
			"transfer_encoding": r.TransferEncoding,
			"content_type":      r.Header.Get("Content-Type"),
			"odd":               oddHeader(r.Header),
			"auth":              r.Header.Values("Authorization"),
			"body":              string(body),
		})
	})
	mux.HandleFunc("/refuse", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("WWW-Authenticate", "Bearer")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, `{"detail":"Not authenticated"}`)
	})
	mux.HandleFunc("/moved", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/echo", http.StatusFound)
	})
	return mux
}

// oddHeader returns the values of x_odd, in whatever case the server
// left its name.
func oddHeader(h http.Header) []string {
	for name, vs := range h {
		if strings.EqualFold(name, "x_odd") {
			return vs
		}
	}
	return nil
}

// failure runs f with a testing.TB that records its failure instead of
// failing t, and returns the failure message ("" if none).
func failure(f func(tb testing.TB)) string {
	tb := &recordingTB{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(tb)
	}()
	<-done
	return tb.msg
}

// recordingTB is a testing.TB whose Fatalf records the message and ends
// the goroutine, as testing's does. Only what apitest calls is
// implemented.
type recordingTB struct {
	testing.TB
	msg string
}

func (tb *recordingTB) Helper() {}

func (tb *recordingTB) Fatalf(format string, args ...any) {
	tb.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

var bearer = map[string]string{"Content-Type": "application/json", "WWW-Authenticate": "Bearer"}

func TestRunPasses(t *testing.T) {
	r := Scenario{
		Name:               "refused",
		URL:                "/refuse",
		ExpectedStatus:     http.StatusUnauthorized,
		ExpectedBody:       ` { "detail" : "Not authenticated" } `,
		ExpectedContent:    []string{"Not auth"},
		NotExpectedContent: []string{"secret"},
		ExpectedHeaders:    map[string]string{"Content-Type": "application/json", "www-authenticate": "Bearer", "Set-Cookie": ""},
	}.Run(t, "", Handler(api()))
	if r.Status != http.StatusUnauthorized || r.JSON(t)["detail"] != "Not authenticated" || r.ContentType() != "application/json" {
		t.Errorf("Run returned %d %v %s", r.Status, r.Header, r.Body)
	}
}

// TestCheckFailures: each expectation fails on its own, the failure names
// the mismatch and shows the body.
func TestCheckFailures(t *testing.T) {
	answer := &Response{
		Status: http.StatusUnauthorized,
		Header: http.Header{"Content-Type": {"application/json; charset=utf-8"}, "Www-Authenticate": {"Bearer", "Basic"}},
		Body:   []byte(`{"detail":"Not authenticated","secret":"s3cr3t"}`),
	}
	for _, tc := range []struct {
		name string
		s    Scenario
		want string
	}{
		{"no status", Scenario{}, "the scenario sets no ExpectedStatus"},
		{"status", Scenario{ExpectedStatus: 403}, "status 401, want 403"},
		{"body", Scenario{ExpectedStatus: 401, ExpectedBody: Detail("Not authenticated")},
			`got {"detail":"Not authenticated","secret":"s3cr3t"}` + "\n  want " + `{"detail":"Not authenticated"}`},
		{"content", Scenario{ExpectedStatus: 401, ExpectedContent: []string{"Forbidden"}}, `the body lacks "Forbidden"`},
		{"not expected content", Scenario{ExpectedStatus: 401, NotExpectedContent: []string{"s3cr3t"}}, `the body holds "s3cr3t"`},
		{"empty content", Scenario{ExpectedStatus: 401, ExpectedContent: []string{""}}, `ExpectedContent holds ""`},
		{"empty not expected content", Scenario{ExpectedStatus: 401, NotExpectedContent: []string{""}}, `NotExpectedContent holds ""`},
		{"header value", Scenario{ExpectedStatus: 401, ExpectedHeaders: map[string]string{"Content-Type": "application/json"}},
			`header Content-Type ["application/json; charset=utf-8"], want exactly ["application/json"]`},
		{"header twice", Scenario{ExpectedStatus: 401, ExpectedHeaders: map[string]string{"WWW-Authenticate": "Bearer"}},
			`header WWW-Authenticate ["Bearer" "Basic"], want exactly ["Bearer"]`},
		{"header missing", Scenario{ExpectedStatus: 401, ExpectedHeaders: map[string]string{"Cache-Control": "no-store"}},
			`header Cache-Control [], want exactly ["no-store"]`},
		{"header present", Scenario{ExpectedStatus: 401, ExpectedHeaders: map[string]string{"Content-Type": ""}},
			`header Content-Type ["application/json; charset=utf-8"], want none`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg := failure(func(tb testing.TB) { tc.s.Check(tb, answer) })
			if !strings.Contains(msg, tc.want) {
				t.Errorf("failure %q, want it to say %q", msg, tc.want)
			}
			if !strings.Contains(msg, string(answer.Body)) {
				t.Errorf("failure %q does not show the body", msg)
			}
		})
	}

	t.Run("every mismatch at once", func(t *testing.T) {
		msg := failure(func(tb testing.TB) {
			Scenario{Name: "both", ExpectedStatus: 403, ExpectedContent: []string{"Forbidden"}}.Check(tb, answer)
		})
		if !strings.HasPrefix(msg, "both:") || !strings.Contains(msg, "status 401, want 403") || !strings.Contains(msg, `lacks "Forbidden"`) {
			t.Errorf("failure %q", msg)
		}
	})
	t.Run("body not JSON", func(t *testing.T) {
		msg := failure(func(tb testing.TB) {
			Scenario{ExpectedStatus: 200, ExpectedBody: `{}`}.Check(tb, &Response{Status: 200, Body: []byte("<html>")})
		})
		if !strings.Contains(msg, "the body is not JSON") || !strings.Contains(msg, "<html>") {
			t.Errorf("failure %q", msg)
		}
	})
	t.Run("ExpectedBody not JSON", func(t *testing.T) {
		msg := failure(func(tb testing.TB) {
			Scenario{ExpectedStatus: 200, ExpectedBody: `{bad`}.Check(tb, &Response{Status: 200, Body: []byte("{}")})
		})
		if !strings.HasPrefix(msg, "the answer: ExpectedBody {bad is not JSON") {
			t.Errorf("failure %q", msg)
		}
	})
	t.Run("long body truncated", func(t *testing.T) {
		msg := failure(func(tb testing.TB) {
			Scenario{ExpectedStatus: 200}.Check(tb, &Response{Status: 500, Body: []byte(strings.Repeat("x", 5000))})
		})
		if !strings.Contains(msg, "... (5000 bytes)") || len(msg) > 2300 {
			t.Errorf("failure of %d bytes: %.200q", len(msg), msg)
		}
	})
	t.Run("send error", func(t *testing.T) {
		msg := failure(func(tb testing.TB) {
			send := func(*http.Request) (*Response, error) { return nil, fmt.Errorf("connection refused") }
			Scenario{URL: "/x", ExpectedStatus: 200}.Run(tb, "http://127.0.0.1:1", send)
		})
		if msg != "GET /x: connection refused" {
			t.Errorf("failure %q", msg)
		}
	})
}

// echoOf runs s against /echo and returns what the handler received.
func echoOf(t *testing.T, s Scenario, send Sender, base string) map[string]any {
	t.Helper()
	s.URL = "/echo" + s.URL
	s.ExpectedStatus = http.StatusOK
	return s.Run(t, base, send).JSON(t)
}

// TestRequests: what a scenario sends, in process and over HTTP.
func TestRequests(t *testing.T) {
	srv := httptest.NewServer(api())
	t.Cleanup(srv.Close)
	for _, target := range []struct {
		name string
		base string
		send Sender
		host string
	}{
		{"handler", "", Handler(api()), "example.com"},
		{"http", srv.URL, Client(nil), strings.TrimPrefix(srv.URL, "http://")},
	} {
		t.Run(target.name, func(t *testing.T) {
			got := echoOf(t, Scenario{URL: "?a=1&b=%2F"}, target.send, target.base)
			if got["method"] != "GET" || got["uri"] != "/echo?a=1&b=%2F" || got["host"] != target.host || got["body"] != "" {
				t.Errorf("GET: %v", got)
			}

			got = echoOf(t, Scenario{Method: "POST", Body: "raw", Headers: map[string]string{"content-type": "text/plain"}}, target.send, target.base)
			if got["method"] != "POST" || got["body"] != "raw" || got["content_length"] != 3.0 || got["content_type"] != "text/plain" {
				t.Errorf("string body: %v", got)
			}

			got = echoOf(t, Scenario{Method: "PUT", Body: []byte("bytes")}, target.send, target.base)
			if got["body"] != "bytes" || got["content_length"] != 5.0 || got["content_type"] != "" {
				t.Errorf("[]byte body: %v", got)
			}

			got = echoOf(t, Scenario{Method: "POST", Body: io.MultiReader(strings.NewReader("chunked"))}, target.send, target.base)
			if got["body"] != "chunked" || got["content_length"] != -1.0 || fmt.Sprint(got["transfer_encoding"]) != "[chunked]" {
				t.Errorf("reader of unknown length: %v", got)
			}

			got = echoOf(t, Scenario{Method: "POST", Body: map[string]any{"n": 1}}, target.send, target.base)
			if got["body"] != `{"n":1}` || got["content_type"] != "application/json" {
				t.Errorf("JSON body: %v", got)
			}
			got = echoOf(t, Scenario{Method: "POST", Body: []int{1}, Headers: map[string]string{"Content-Type": "text/plain"}}, target.send, target.base)
			if got["body"] != `[1]` || got["content_type"] != "text/plain" {
				t.Errorf("JSON body with a Content-Type of its own: %v", got)
			}

			got = echoOf(t, Scenario{Request: func(req *http.Request) {
				req.Header["Authorization"] = []string{"Bearer a", "Bearer b"}
				req.Header["x_odd"] = []string{"1"}
			}}, target.send, target.base)
			if fmt.Sprint(got["auth"]) != "[Bearer a Bearer b]" || fmt.Sprint(got["odd"]) != "[1]" {
				t.Errorf("Request hook: %v", got)
			}

			r := Scenario{URL: "/moved", ExpectedStatus: http.StatusFound, ExpectedHeaders: map[string]string{"Location": "/echo"}}.Run(t, target.base, target.send)
			if r.Header.Get("X-Echo") != "" {
				t.Errorf("the redirect was followed: %v", r.Header)
			}
		})
	}
	t.Run("absolute URL", func(t *testing.T) {
		got := Scenario{URL: srv.URL + "/echo?abs=1", ExpectedStatus: 200, ExpectedHeaders: map[string]string{"X-Echo": "yes"}}.
			Run(t, "http://127.0.0.1:1", Client(srv.Client())).JSON(t)
		if got["uri"] != "/echo?abs=1" {
			t.Errorf("absolute URL: %v", got)
		}
	})
	t.Run("bad URL", func(t *testing.T) {
		msg := failure(func(tb testing.TB) {
			Scenario{Name: "bad", URL: "/%zz", ExpectedStatus: 200}.Run(tb, srv.URL, Client(nil))
		})
		if !strings.HasPrefix(msg, "bad: ") || !strings.Contains(msg, "invalid URL escape") {
			t.Errorf("failure %q", msg)
		}
	})
}

// TestTable: every scenario runs, in order.
func TestTable(t *testing.T) {
	var ran []string
	send := func(req *http.Request) (*Response, error) {
		ran = append(ran, req.Method+" "+req.URL.Path)
		return Handler(api())(req)
	}
	Table(t, "", send, []Scenario{
		{Name: "no token", URL: "/refuse", ExpectedStatus: 401, ExpectedBody: Detail("Not authenticated"), ExpectedHeaders: bearer},
		{Method: "POST", URL: "/echo", Body: "x", ExpectedStatus: 200, ExpectedContent: []string{`"body":"x"`}},
	})
	if strings.Join(ran, ", ") != "GET /refuse, POST /echo" {
		t.Errorf("ran %q", ran)
	}
}

func TestDetail(t *testing.T) {
	if got := Detail("Not Found"); got != `{"detail":"Not Found"}` {
		t.Errorf("Detail(string) = %s", got)
	}
	entries := []map[string]any{{"type": "missing", "loc": []any{"body", "email"}, "msg": "Field required"}}
	if got := Detail(entries); got != `{"detail":[{"loc":["body","email"],"msg":"Field required","type":"missing"}]}` {
		t.Errorf("Detail(entries) = %s", got)
	}
}
