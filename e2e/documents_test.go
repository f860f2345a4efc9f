package e2e

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyaccounts/gateway/internal/apitest"
)

// The document service behind the gateway's token check (Caddy's
// reverse_proxy after accounts_auth), and the frontend routes.

// spoofIdentity adds every spelling of X-User-Id a client could try to
// pose as user id with; the names are written exactly as given.
func spoofIdentity(h http.Header, id string) {
	for _, name := range []string{"X-User-Id", "x-user-id", "X-USER-ID", "X_User_Id", "X-User_Id", "x_user_id"} {
		h[name] = append(h[name], id)
	}
}

// identityHeaders returns the headers of h that some server could read
// as X-User-Id: the name in any case, with "_" for "-".
func identityHeaders(h http.Header) map[string][]string {
	out := map[string][]string{}
	for name, vs := range h {
		if strings.ReplaceAll(strings.ToLower(name), "_", "-") == "x-user-id" {
			out[name] = vs
		}
	}
	return out
}

// expectOnlyUserID checks that a request reached the service with exactly
// one X-User-Id, id, and no other spelling of it.
func expectOnlyUserID(t *testing.T, rec StubRequest, id string) {
	t.Helper()
	got := identityHeaders(rec.Header)
	if len(got) != 1 || !slices.Equal(got["X-User-Id"], []string{id}) {
		t.Errorf("%s %s reached the service with identity headers %v, want exactly X-User-Id: [%s]", rec.Method, rec.RequestURI, got, id)
	}
}

// oneRequest returns the single stub request matching keep.
func oneRequest(t *testing.T, s *DocStub, what string, keep func(StubRequest) bool) StubRequest {
	t.Helper()
	got := s.Where(keep)
	if len(got) != 1 {
		t.Fatalf("%s: the service got %d requests, want 1", what, len(got))
	}
	return got[0]
}

func TestDocumentsProxyPathQueryAndUserID(t *testing.T) {
	t.Parallel()
	g := sharedGateway(t)
	c := g.Client(t)
	u, _, token := c.NewUser()
	for _, target := range []string{
		"/api/documents",
		"/api/documents/",
		"/api/documents/categories/x?a=1&b=2",
		"/api/documents/categories/x/y?a=1&a=2&empty=",
		"/api/documents/some%20file.pdf?q=a%2Fb&q=%C3%A9",
	} {
		r := c.Get(target, token)
		expectStatus(t, r, http.StatusOK)
		rec := oneRequest(t, g.Doc, target, func(r StubRequest) bool {
			return r.RequestURI == target && slices.Contains(r.Header.Values("X-User-Id"), u.ID)
		})
		if rec.Method != http.MethodGet {
			t.Errorf("%s: method %s", target, rec.Method)
		}
		expectOnlyUserID(t, rec, u.ID)
	}
	for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		target := "/api/documents/42?method=" + method
		req := c.NewRequest(method, target, strings.NewReader(`{"k":"v"}`))
		req.Header.Set("Content-Type", "application/json")
		setToken(req, token)
		expectStatus(t, c.Do(req), http.StatusOK)
		rec := oneRequest(t, g.Doc, method+" "+target, func(r StubRequest) bool {
			return r.RequestURI == target && slices.Contains(r.Header.Values("X-User-Id"), u.ID)
		})
		if rec.Method != method || string(rec.Body) != `{"k":"v"}` {
			t.Errorf("%s %s reached the service as %s with body %q", method, target, rec.Method, rec.Body)
		}
	}
}

func TestDocumentsReplaceClientUserID(t *testing.T) {
	t.Parallel()
	g := sharedGateway(t)
	c := g.Client(t)
	u, _, token := c.NewUser()
	victim, _, _ := c.NewUser()
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		target := "/api/documents/spoof-" + randomHex(6) + "?x=1"
		req := c.NewRequest(method, target, strings.NewReader("payload"))
		setToken(req, token)
		spoofIdentity(req.Header, victim.ID)
		expectStatus(t, c.Do(req), http.StatusOK)
		rec := oneRequest(t, g.Doc, target, func(r StubRequest) bool { return r.RequestURI == target })
		expectOnlyUserID(t, rec, u.ID)
	}
	if got := g.Doc.ForUser(victim.ID); len(got) != 0 {
		t.Errorf("the service got %d requests in the name of the spoofed user", len(got))
	}
}

// TestDocumentsUserPlaceholders: accounts_auth fills Caddy's
// {http.auth.user.*} placeholders, which later handlers of the route can
// use (here a header_up added to the project's documents proxy).
func TestDocumentsUserPlaceholders(t *testing.T) {
	t.Parallel()
	caddyfile := caddyfileWithLines(t, "\treverse_proxy @documents {$DOC_SERVICE:doc-service:8001} {",
		`header_up X-Auth-User "{http.auth.user.id} {http.auth.user.email} {http.auth.user.role}"`)
	g := startGateway(t, GatewayOptions{Caddyfile: caddyfile})
	c := g.Client(t)
	u, _, token := c.NewUser()
	expectStatus(t, c.Get("/api/documents/placeholders", token), http.StatusOK)
	rec := oneRequest(t, g.Doc, "placeholders", func(r StubRequest) bool { return r.RequestURI == "/api/documents/placeholders" })
	if got, want := rec.Header.Values("X-Auth-User"), []string{u.ID + " " + u.Email + " user"}; !slices.Equal(got, want) {
		t.Errorf("X-Auth-User %q, want %q", got, want)
	}
}

func TestDocumentsRequireAuthentication(t *testing.T) {
	t.Parallel()
	g := sharedGateway(t)
	c := g.Client(t)
	marker := "/api/documents/unauth-" + randomHex(6)
	spoofed := "5f0c8a8e-1f7e-4c55-9a39-" + randomHex(6)

	// refused is a request posing as the spoofed user, with auth (if
	// any) as its Authorization, refused with a 401 saying detail.
	refused := func(method, target, auth string, body any, detail string) apitest.Scenario {
		s := apitest.Scenario{
			Name: strings.TrimSpace(method + " " + target + " " + auth), Method: method, URL: target, Body: body,
			Request:        func(req *http.Request) { spoofIdentity(req.Header, spoofed) },
			ExpectedStatus: http.StatusUnauthorized, ExpectedBody: apitest.Detail(detail), ExpectedHeaders: bearerHeaders,
		}
		if auth != "" {
			s.Headers = map[string]string{"Authorization": auth}
		}
		return s
	}
	c.Table(t, []apitest.Scenario{
		refused(http.MethodGet, marker, "", nil, "Not authenticated"),
		refused(http.MethodGet, marker+"/x?y=1", "", nil, "Not authenticated"),
		refused(http.MethodPost, marker, "", "upload", "Not authenticated"),
		refused(http.MethodGet, "/api/documents", "", nil, "Not authenticated"),
		refused(http.MethodGet, marker, "Basic dXNlcjpwYXNz", nil, "Not authenticated"),
		refused(http.MethodGet, marker, "Bearer garbage", nil, "Could not validate credentials"),
		refused(http.MethodPost, marker, "Bearer a.b.c", "upload", "Could not validate credentials"),
		refused(http.MethodGet, "/api/documents", "Bearer garbage", nil, "Could not validate credentials"),
	})

	if got := g.Doc.WithPathPrefix(marker); len(got) != 0 {
		t.Errorf("unauthenticated requests reached the document service: %d", len(got))
	}
	if got := g.Doc.Where(func(r StubRequest) bool {
		for _, vs := range r.Header {
			if slices.ContainsFunc(vs, func(v string) bool { return strings.Contains(v, spoofed) }) {
				return true
			}
		}
		return false
	}); len(got) != 0 {
		t.Errorf("requests with the spoofed id reached the document service: %d", len(got))
	}
}

func TestDocumentsUploadStreamsIntact(t *testing.T) {
	t.Parallel()
	g := sharedGateway(t)
	c := g.Client(t)
	u, _, token := c.NewUser()
	for _, tc := range []struct {
		name    string
		size    int
		chunked bool
	}{
		{"Content-Length", 5 << 20, false},
		{"chunked", 3<<20 + 12345, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := make([]byte, tc.size)
			if _, err := rand.Read(data); err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(data)
			target := "/api/documents/upload-" + randomHex(6)
			var body io.Reader = bytes.NewReader(data)
			if tc.chunked {
				body = io.MultiReader(body) // unknown length: sent chunked
			}
			req := c.NewRequest(http.MethodPost, target, body)
			req.Header.Set("Content-Type", "application/pdf")
			setToken(req, token)
			r := c.Do(req)
			expectStatus(t, r, http.StatusOK)
			rec := oneRequest(t, g.Doc, target, func(r StubRequest) bool { return r.Path == target })
			if rec.BodyLen != int64(tc.size) || rec.BodySHA256 != hex.EncodeToString(sum[:]) {
				t.Errorf("the service got %d bytes (sha256 %s), want %d (%x)", rec.BodyLen, rec.BodySHA256, tc.size, sum)
			}
			if ct := rec.Header.Get("Content-Type"); ct != "application/pdf" {
				t.Errorf("the service got Content-Type %q", ct)
			}
			expectOnlyUserID(t, rec, u.ID)
		})
	}
}

// TestDocumentsResponseStreams: the service's answer reaches the client
// as it is written, not when it is complete: Caddy flushes an answer of
// unknown length at once.
func TestDocumentsResponseStreams(t *testing.T) {
	t.Parallel()
	g := sharedGateway(t)
	c := g.Client(t)
	_, _, token := c.NewUser()
	id := randomHex(6)
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { g.Doc.Release(id) }) }
	t.Cleanup(release)

	req := c.NewRequest(http.MethodGet, "/api/documents/stream?id="+id, nil)
	setToken(req, token)
	res, err := c.HTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status %d", res.StatusCode)
	}
	br := bufio.NewReader(res.Body)
	line := make(chan string, 1)
	go func() {
		s, _ := br.ReadString('\n')
		line <- s
	}()
	select {
	case s := <-line:
		if s != "chunk 1\n" {
			t.Fatalf("first chunk %q", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the first chunk did not arrive before the service finished its answer: the response is buffered")
	}
	release()
	rest, err := io.ReadAll(br)
	if err != nil || string(rest) != "chunk 2\n" {
		t.Fatalf("rest %q, %v", rest, err)
	}
}

// TestDocumentsServiceAnswersPassThrough: the service's own errors reach
// the client unchanged; only the gateway's errors get the JSON shape.
func TestDocumentsServiceAnswersPassThrough(t *testing.T) {
	t.Parallel()
	g := sharedGateway(t)
	c := g.Client(t)
	_, _, token := c.NewUser()
	for _, code := range []int{404, 409, 500, 502, 503} {
		r := c.Run(t, apitest.Scenario{
			URL: fmt.Sprintf("/api/documents/status/%d", code), Headers: map[string]string{"Authorization": "Bearer " + token},
			ExpectedStatus: code, ExpectedBody: apitest.Detail(fmt.Sprintf("stub status %d", code)),
			// The service's headers, not replaced.
			ExpectedHeaders: map[string]string{"X-Stub": "yes", "Content-Type": "application/json"},
		})
		// Byte for byte: the service's body, not the gateway's.
		if want := fmt.Sprintf("{\"detail\":\"stub status %d\"}\n", code); string(r.Body) != want {
			t.Errorf("%d: body %q, want the service's %q", code, r.Body, want)
		}
	}
}

// TestDocumentsServiceDown: a slow service is 504, an unreachable one
// 502, both in the API's JSON shape.
func TestDocumentsServiceDown(t *testing.T) {
	t.Parallel()
	stub := NewDocStub()
	t.Cleanup(stub.Close)
	g := startGateway(t, GatewayOptions{DocService: stub.Addr(), Env: map[string]string{"DOC_SERVICE_TIMEOUT": "1s"}})
	c := g.Client(t)
	_, _, token := c.NewUser()
	expectStatus(t, c.Get("/api/documents", token), http.StatusOK)

	// The stub would answer 200 after 5 s; the gateway gives up after 1 s.
	r := c.Get("/api/documents/slow?ms=5000", token)
	expectDetail(t, r, http.StatusGatewayTimeout, "Gateway Timeout")

	stub.Close()
	expectDetail(t, c.Get("/api/documents", token), http.StatusBadGateway, "Bad Gateway")
	expectDetail(t, c.Get("/api/documents/categories/x?a=1", token), http.StatusBadGateway, "Bad Gateway")
	req := c.NewRequest(http.MethodPost, "/api/documents/upload", strings.NewReader(strings.Repeat("x", 100000)))
	setToken(req, token)
	expectDetail(t, c.Do(req), http.StatusBadGateway, "Bad Gateway")
	// Authentication still comes first.
	expectBearerError(t, c.Get("/api/documents", ""), "Not authenticated")
}

// ---------------------------------------------------------------------
// The frontend

func TestFrontendServesIndexAndAssets(t *testing.T) {
	t.Parallel()
	g := sharedGateway(t)
	c := g.Client(t)
	for _, target := range []string{"/", "/some/spa/route", "/some/spa/route?tab=2", "/login"} {
		r := c.Get(target, "")
		expectStatus(t, r, http.StatusOK)
		if string(r.Body) != indexHTML {
			t.Errorf("%s: body %q, want index.html", target, truncate(r.Body, 200))
		}
		if ct := r.ContentType(); ct != "text/html" {
			t.Errorf("%s: Content-Type %q", target, r.Header.Get("Content-Type"))
		}
	}
	r := c.Get(assetPath, "")
	expectStatus(t, r, http.StatusOK)
	if string(r.Body) != assetJS {
		t.Errorf("asset body %q", r.Body)
	}
	if ct := r.ContentType(); ct != "text/javascript" && ct != "application/javascript" {
		t.Errorf("asset Content-Type %q", r.Header.Get("Content-Type"))
	}
	// An API path never falls back to index.html.
	expectDetail(t, c.Get("/api/unknown", ""), http.StatusNotFound, "Not Found")
}

// TestFrontendViteDevServer: with VITE_DEV_SERVER set, the frontend comes
// from the dev server, which never sees a client's X-User-Id.
func TestFrontendViteDevServer(t *testing.T) {
	t.Parallel()
	vite := NewDocStub()
	t.Cleanup(vite.Close)
	g := startGateway(t, GatewayOptions{Env: map[string]string{"VITE_DEV_SERVER": vite.Addr()}})
	c := g.Client(t)
	u, _, token := c.NewUser()

	for _, tc := range []struct{ target, token string }{
		{"/", ""},
		{"/some/page?x=1", ""},
		{"/src/main.ts", token},
		{"/@vite/client", token},
	} {
		req := c.NewRequest(http.MethodGet, tc.target, nil)
		setToken(req, tc.token)
		spoofIdentity(req.Header, u.ID)
		expectStatus(t, c.Do(req), http.StatusOK)
		rec := oneRequest(t, vite, tc.target, func(r StubRequest) bool { return r.RequestURI == tc.target })
		if got := identityHeaders(rec.Header); len(got) != 0 {
			t.Errorf("%s: the dev server got identity headers %v", tc.target, got)
		}
	}
	// The API and the document service are not the dev server's.
	me := c.Get("/api/users/me", token)
	expectStatus(t, me, http.StatusOK)
	expectStatus(t, c.Get("/api/documents/x", token), http.StatusOK)
	if got := vite.WithPathPrefix("/api"); len(got) != 0 {
		t.Errorf("the dev server got %d API requests", len(got))
	}
	if got := g.Doc.ForUser(u.ID); len(got) != 1 {
		t.Errorf("the document service got %d requests, want 1", len(got))
	}
}
