package e2e

// The proxy edge: what the document service receives of a client's
// request, tried as an attacker would through the real binary and the
// project's Caddyfile (package edge; SECURITY.md lists each class).

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"

	"github.com/caddyaccounts/gateway/internal/apitest"
)

// rawExchange sends raw (lines joined with CRLF) to addr on a new
// connection and reads one response. It is how a client sends what Go's
// own client would not: HTTP/1.0, trailers of its choice, an h2c
// upgrade. The connection stays open for the caller when conn is wanted.
func rawExchange(tb testing.TB, addr string, lines ...string) (*http.Response, []byte, net.Conn, *bufio.Reader) {
	tb.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := io.WriteString(conn, strings.Join(lines, "\r\n")); err != nil {
		tb.Fatal(err)
	}
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		tb.Fatalf("reading the response: %v", err)
	}
	var body []byte
	if res.StatusCode != http.StatusSwitchingProtocols {
		body, _ = io.ReadAll(res.Body)
	}
	return res, body, conn, br
}

// gatewayAddr is the host:port of a gateway's site.
func gatewayAddr(tb testing.TB, g *Gateway) string {
	u, err := url.Parse(g.URL)
	if err != nil {
		tb.Fatal(err)
	}
	return u.Host
}

// upgradeUpstream is a document service that speaks h2c (upgrade from
// HTTP/1.1 and prior knowledge, as Hypercorn does by default) and
// WebSocket-style upgrades (101, then it echoes bytes). Every other
// request gets 200. It records each request with its protocol.
type upgradeUpstream struct {
	srv  *httptest.Server
	mu   sync.Mutex
	reqs []upstreamRequest
}

type upstreamRequest struct {
	Proto      string
	RequestURI string
	Header     http.Header
}

func newUpgradeUpstream(tb testing.TB) *upgradeUpstream {
	u := &upgradeUpstream{}
	inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.reqs = append(u.reqs, upstreamRequest{r.Proto, r.RequestURI, r.Header.Clone()})
		u.mu.Unlock()
		if strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			conn, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer conn.Close()
			_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
			_ = brw.Flush()
			line, _ := brw.ReadString('\n')
			_, _ = brw.WriteString("echo " + line)
			_ = brw.Flush()
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"proto":"`+r.Proto+`"}`)
	})
	u.srv = httptest.NewServer(h2c.NewHandler(inner, &http2.Server{}))
	tb.Cleanup(u.srv.Close)
	return u
}

func (u *upgradeUpstream) Addr() string { return u.srv.Listener.Addr().String() }

// received returns the requests for requestURI.
func (u *upgradeUpstream) received(requestURI string) []upstreamRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []upstreamRequest
	for _, r := range u.reqs {
		if r.RequestURI == requestURI {
			out = append(out, r)
		}
	}
	return out
}

// h2cUpgrade is an HTTP/1.1 request asking to switch to h2c (RFC 7540
// 3.2), as curl --http2 sends it.
func h2cUpgrade(path, token string) []string {
	return []string{
		"GET " + path + " HTTP/1.1",
		"Host: 127.0.0.1",
		"Authorization: Bearer " + token,
		"Connection: Upgrade, HTTP2-Settings",
		"Upgrade: h2c",
		"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA",
		"", "",
	}
}

// caddyfileWithAuthOptions writes the project's Caddyfile with opts
// (Caddyfile lines) added to its accounts_auth block.
func caddyfileWithAuthOptions(tb testing.TB, opts string) string {
	tb.Helper()
	return caddyfileWithLines(tb, "\taccounts_auth @documents {", opts)
}

// caddyfileWithLines writes the project's Caddyfile with lines added
// after its one line `after` (whole, with its indentation), one tab
// deeper, and returns its path.
func caddyfileWithLines(tb testing.TB, after, lines string) string {
	tb.Helper()
	raw, err := os.ReadFile(filepath.Join(repoRoot, "Caddyfile"))
	if err != nil {
		tb.Fatal(err)
	}
	line := "\n" + after + "\n"
	if strings.Count(string(raw), line) != 1 {
		tb.Fatalf("the project's Caddyfile has no single %q line", strings.TrimSpace(after))
	}
	indent := after[:len(after)-len(strings.TrimLeft(after, "\t"))] + "\t"
	text := strings.Replace(string(raw), line, line+indentLines(lines, indent), 1)
	path := filepath.Join(tb.TempDir(), "Caddyfile")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		tb.Fatal(err)
	}
	return path
}

// TestEdgeNoH2CSmuggling: an h2c upgrade through the gateway would let
// the client speak HTTP/2 straight to the document service (any path,
// any X-User-Id, no token). The upgrade never reaches the service; the
// request goes on as an ordinary HTTP/1.1 one. WebSocket passes, unless
// the operator says "upgrades off".
func TestEdgeNoH2CSmuggling(t *testing.T) {
	t.Parallel()
	up := newUpgradeUpstream(t)

	// The stub does speak h2c: asked directly, it switches protocols.
	res, _, _, _ := rawExchange(t, up.Addr(), h2cUpgrade("/direct", "x")...)
	if res.StatusCode != http.StatusSwitchingProtocols || !strings.EqualFold(res.Header.Get("Upgrade"), "h2c") {
		t.Fatalf("the upstream itself answers an h2c upgrade with %d %v", res.StatusCode, res.Header)
	}

	g := startGateway(t, GatewayOptions{DocService: up.Addr()})
	c := g.Client(t)
	u, _, token := c.NewUser()
	for i, lines := range [][]string{
		h2cUpgrade("/api/documents/h2c-1", token),
		// The upgrade hidden behind WebSocket in a list, or repeated.
		{"GET /api/documents/h2c-2 HTTP/1.1", "Host: 127.0.0.1", "Authorization: Bearer " + token,
			"Connection: Upgrade, HTTP2-Settings", "Upgrade: websocket, h2c", "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA", "", ""},
		{"GET /api/documents/h2c-3 HTTP/1.1", "Host: 127.0.0.1", "Authorization: Bearer " + token,
			"Connection: upgrade", "Upgrade: H2C", "Upgrade: websocket", "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA", "", ""},
	} {
		path := strings.Fields(lines[0])[1]
		res, body, _, _ := rawExchange(t, gatewayAddr(t, g), lines...)
		if res.StatusCode != http.StatusOK || string(body) != `{"proto":"HTTP/1.1"}` {
			t.Fatalf("case %d: %d %v %s, want 200 from the service over HTTP/1.1", i, res.StatusCode, res.Header, body)
		}
		got := up.received(path)
		if len(got) != 1 {
			t.Fatalf("case %d: the service got %d requests", i, len(got))
		}
		h := got[0].Header
		if got[0].Proto != "HTTP/1.1" || h.Get("Upgrade") != "" || h.Get("Http2-Settings") != "" || h.Get("X-User-Id") != u.ID {
			t.Errorf("case %d: the service got %s with %v", i, got[0].Proto, h)
		}
	}

	// WebSocket is legitimate for a service that streams: it passes.
	ws := []string{"GET /api/documents/ws HTTP/1.1", "Host: 127.0.0.1", "Authorization: Bearer " + token,
		"Connection: Upgrade", "Upgrade: websocket", "Sec-WebSocket-Version: 13", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "", ""}
	res, _, conn, br := rawExchange(t, gatewayAddr(t, g), ws...)
	if res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("WebSocket upgrade: %d, want 101", res.StatusCode)
	}
	_, _ = io.WriteString(conn, "ping\n")
	if line, err := br.ReadString('\n'); err != nil || line != "echo ping\n" {
		t.Fatalf("through the WebSocket tunnel: %q, %v", line, err)
	}
	if got := up.received("/api/documents/ws"); len(got) != 1 || got[0].Header.Get("X-User-Id") != u.ID {
		t.Fatalf("the WebSocket upgrade reached the service as %v", got)
	}

	// "upgrades off": no upgrade at all.
	off := startGateway(t, GatewayOptions{DocService: up.Addr(), DatabaseURL: g.DatabaseURL,
		Caddyfile: caddyfileWithAuthOptions(t, "upgrades off")})
	ws[0] = "GET /api/documents/ws-off HTTP/1.1"
	res, body, _, _ := rawExchange(t, gatewayAddr(t, off), ws...)
	if res.StatusCode != http.StatusOK || string(body) != `{"proto":"HTTP/1.1"}` {
		t.Fatalf("WebSocket upgrade with upgrades off: %d %s, want the service's ordinary 200", res.StatusCode, body)
	}
	if got := up.received("/api/documents/ws-off"); len(got) != 1 || got[0].Header.Get("Upgrade") != "" {
		t.Fatalf("with upgrades off the service got %v", got)
	}
}

// TestEdgeConnectionCannotDropIdentity: a client naming X-User-Id in its
// Connection header would make the proxy drop the gateway's X-User-Id as
// hop-by-hop. The service always receives exactly one X-User-Id, the
// gateway's, in HTTP/1.0 and 1.1, whatever the spelling.
func TestEdgeConnectionCannotDropIdentity(t *testing.T) {
	t.Parallel()
	g := sharedGateway(t)
	c := g.Client(t)
	u, _, token := c.NewUser()
	victim, _, _ := c.NewUser()
	for i, conn := range []string{"X-User-Id", "keep-alive, X-User-Id", "x-user-id", "X-USER-ID, close", "X_User_Id", "Upgrade,x-User-Id , keep-alive"} {
		for _, proto := range []string{"HTTP/1.1", "HTTP/1.0"} {
			path := "/api/documents/conn-" + randomHex(6)
			res, body, _, _ := rawExchange(t, gatewayAddr(t, g), "GET "+path+" "+proto, "Host: 127.0.0.1",
				"Authorization: Bearer "+token, "Connection: "+conn, "X-User-Id: "+victim.ID, "", "")
			if res.StatusCode != http.StatusOK {
				t.Fatalf("case %d %s: %d %s", i, proto, res.StatusCode, body)
			}
			rec := oneRequest(t, g.Doc, path, func(r StubRequest) bool { return r.Path == path })
			expectOnlyUserID(t, rec, u.ID)
		}
	}
}

// TestEdgeNoIdentityTrailers: a chunked upload declaring X-User-Id as a
// trailer and sending it after the body. No identity trailer reaches the
// service; other trailers do.
func TestEdgeNoIdentityTrailers(t *testing.T) {
	t.Parallel()
	g := sharedGateway(t)
	c := g.Client(t)
	u, _, token := c.NewUser()
	victim, _, _ := c.NewUser()
	for i, tc := range []struct{ declared, sent string }{
		{"X-User-Id, X-Checksum", "X-User-Id: " + victim.ID},
		{"x-user-id, X-Checksum", "x-user-id: " + victim.ID},
		{"X_User_Id, X-Checksum", "X_User_Id: " + victim.ID},
		{"X-Checksum", "X-User-Id: " + victim.ID}, // not declared
	} {
		path := "/api/documents/trailer-" + randomHex(6)
		res, body, _, _ := rawExchange(t, gatewayAddr(t, g), "POST "+path+" HTTP/1.1", "Host: 127.0.0.1",
			"Authorization: Bearer "+token, "Transfer-Encoding: chunked", "Trailer: "+tc.declared, "",
			"5", "hello", "0", tc.sent, "X-Checksum: abc", "", "")
		if res.StatusCode != http.StatusOK {
			t.Fatalf("case %d: %d %s", i, res.StatusCode, body)
		}
		rec := oneRequest(t, g.Doc, path, func(r StubRequest) bool { return r.Path == path })
		expectOnlyUserID(t, rec, u.ID)
		if string(rec.Body) != "hello" {
			t.Errorf("case %d: body %q", i, rec.Body)
		}
		for name, vs := range rec.Trailer {
			if strings.EqualFold(strings.ReplaceAll(name, "_", "-"), "x-user-id") {
				t.Errorf("case %d: the service got the trailer %s: %q", i, name, vs)
			}
		}
		if got := rec.Trailer.Get("X-Checksum"); got != "abc" {
			t.Errorf("case %d: the service got trailers %v, want X-Checksum: abc among them", i, rec.Trailer)
		}
	}
	if got := g.Doc.ForUser(victim.ID); len(got) != 0 {
		t.Errorf("the service got %d requests in the victim's name", len(got))
	}
}

// TestEdgeCredentials: a second Authorization header is refused (the
// first would be verified, the second forwarded); the gateway's session
// cookies never reach the service, other cookies do, byte for byte; the
// verified Authorization header is forwarded unless strip_authorization
// says otherwise, and one that did not authenticate the request never
// is.
func TestEdgeCredentials(t *testing.T) {
	t.Parallel()
	g := sharedGateway(t)
	c := g.Client(t)
	u, password, token := c.NewUser()
	_, _, other := c.NewUser()

	for _, path := range []string{"/api/documents/dup-" + randomHex(6), "/api/users/me"} {
		c.Run(t, apitest.Scenario{
			URL:            path,
			Request:        func(req *http.Request) { req.Header["Authorization"] = []string{"Bearer " + token, "Bearer " + other} },
			ExpectedStatus: http.StatusBadRequest, ExpectedBody: apitest.Detail("Multiple Authorization headers"), ExpectedHeaders: jsonHeaders,
		})
		if strings.HasPrefix(path, "/api/documents/") {
			if got := g.Doc.WithPathPrefix(path); len(got) != 0 {
				t.Fatalf("a request with two Authorization headers reached the service: %v", got[0].Header)
			}
		}
	}

	login := c.PostForm("/api/auth/login", url.Values{"username": {u.Email}, "password": {password}})
	expectStatus(t, login, http.StatusOK)
	var access, refresh string
	for _, ck := range (&http.Response{Header: login.Header}).Cookies() {
		switch ck.Name {
		case "access_token":
			access = ck.Value
		case "refresh_token":
			refresh = ck.Value
		}
	}
	if access == "" || refresh == "" {
		t.Fatalf("login set cookies %q", login.Header.Values("Set-Cookie"))
	}
	cookies := "theme=dark; access_token=" + access + "; refresh_token=" + refresh + ";lang=fr"

	// Cookie session: the cookie authenticates, an Authorization header
	// that is not Bearer is not what was verified.
	path := "/api/documents/cookie-" + randomHex(6)
	req := c.NewRequest(http.MethodGet, path, nil)
	req.Header.Set("Cookie", cookies)
	req.Header.Set("Authorization", "Basic dXNlcjpwYXNz")
	expectStatus(t, c.Do(req), http.StatusOK)
	rec := oneRequest(t, g.Doc, path, func(r StubRequest) bool { return r.Path == path })
	expectOnlyUserID(t, rec, u.ID)
	if got := rec.Header.Values("Cookie"); !slices.Equal(got, []string{"theme=dark; lang=fr"}) {
		t.Errorf("the service got cookies %q, want only theme and lang", got)
	}
	if got := rec.Header.Values("Authorization"); len(got) != 0 {
		t.Errorf("the service got an Authorization header that was never verified: %q", got)
	}

	// Bearer: forwarded by default, as the old backend did.
	path = "/api/documents/bearer-" + randomHex(6)
	req = c.NewRequest(http.MethodGet, path, nil)
	setToken(req, token)
	req.Header.Set("Cookie", "access_token="+access)
	expectStatus(t, c.Do(req), http.StatusOK)
	rec = oneRequest(t, g.Doc, path, func(r StubRequest) bool { return r.Path == path })
	if got := rec.Header.Values("Authorization"); !slices.Equal(got, []string{"Bearer " + token}) {
		t.Errorf("the service got Authorization %q, want the verified one", got)
	}
	if got := rec.Header.Values("Cookie"); len(got) != 0 {
		t.Errorf("the service got cookies %q, want none", got)
	}

	// strip_authorization keeps the verified header from the service.
	s := startGateway(t, GatewayOptions{DatabaseURL: g.DatabaseURL, Caddyfile: caddyfileWithAuthOptions(t, "strip_authorization")})
	sc := s.Client(t)
	path = "/api/documents/strip-" + randomHex(6)
	expectStatus(t, sc.Get(path, token), http.StatusOK)
	rec = oneRequest(t, s.Doc, path, func(r StubRequest) bool { return r.Path == path })
	expectOnlyUserID(t, rec, u.ID)
	if got := rec.Header.Values("Authorization"); len(got) != 0 {
		t.Errorf("strip_authorization: the service got Authorization %q", got)
	}
}

// TestEdgeEncodedUploadRefused: a 48 KB gzip of 50 MB would pass a 1 MB
// limit judged on the wire; an encoded body is refused with 415 before
// the service sees a byte.
func TestEdgeEncodedUploadRefused(t *testing.T) {
	t.Parallel()
	g := sharedGateway(t)
	c := g.Client(t)
	_, _, token := c.NewUser()
	var zipped bytes.Buffer
	zw := gzip.NewWriter(&zipped)
	chunk := make([]byte, 1<<20)
	for range 50 {
		_, _ = zw.Write(chunk)
	}
	_ = zw.Close()
	for _, chunked := range []bool{false, true} {
		path := "/api/documents/gzip-" + randomHex(6)
		var body io.Reader = bytes.NewReader(zipped.Bytes())
		if chunked {
			body = io.MultiReader(body) // unknown length: sent chunked
		}
		c.Run(t, apitest.Scenario{
			Method: http.MethodPost, URL: path, Body: body,
			Headers:        map[string]string{"Content-Type": "application/pdf", "Content-Encoding": "gzip", "Authorization": "Bearer " + token},
			ExpectedStatus: http.StatusUnsupportedMediaType, ExpectedBody: apitest.Detail("Unsupported Content-Encoding"), ExpectedHeaders: jsonHeaders,
		})
		if got := g.Doc.WithPathPrefix(path); len(got) != 0 {
			t.Fatalf("an encoded upload reached the service (chunked %v)", chunked)
		}
	}
	// identity is no encoding.
	c.Run(t, apitest.Scenario{
		Method: http.MethodPost, URL: "/api/documents/identity-" + randomHex(6), Body: "plain",
		Headers:        map[string]string{"Content-Encoding": "identity", "Authorization": "Bearer " + token},
		ExpectedStatus: http.StatusOK,
	})
}

// securityHeaders are the headers every response of the site carries.
var securityHeaders = map[string]string{
	"X-Content-Type-Options":  "nosniff",
	"Referrer-Policy":         "strict-origin-when-cross-origin",
	"X-Frame-Options":         "DENY",
	"Content-Security-Policy": "frame-ancestors 'none'",
}

// secured returns the headers every response carries exactly, for
// Scenario.ExpectedHeaders: securityHeaders, and HSTS over HTTPS (and
// none over plain HTTP).
func secured(https bool) map[string]string {
	h := maps.Clone(securityHeaders)
	h["Strict-Transport-Security"] = ""
	if https {
		h["Strict-Transport-Security"] = "max-age=31536000"
	}
	return h
}

// TestEdgeSecurityHeaders: every response of the site, the API's, the
// frontend's, the document service's and the errors', carries the
// security headers; HTTPS responses carry HSTS too.
func TestEdgeSecurityHeaders(t *testing.T) {
	t.Parallel()
	g := sharedGateway(t)
	c := g.Client(t)
	_, _, token := c.NewUser()
	bearer := map[string]string{"Authorization": "Bearer " + token}
	c.Table(t, []apitest.Scenario{
		{URL: "/api/health", ExpectedStatus: 200, ExpectedHeaders: secured(false)},
		{Name: "GET /api/users/me with a token", URL: "/api/users/me", Headers: bearer, ExpectedStatus: 200, ExpectedHeaders: secured(false)},
		{URL: "/api/users/me", ExpectedStatus: 401, ExpectedHeaders: secured(false)},
		{URL: "/api/nowhere", ExpectedStatus: 404, ExpectedHeaders: secured(false)},
		{Name: "GET /api/documents/x with a token", URL: "/api/documents/x", Headers: bearer, ExpectedStatus: 200, ExpectedHeaders: secured(false)},
		{URL: "/api/documents/status/500", Headers: bearer, ExpectedStatus: 500, ExpectedHeaders: secured(false)},
		{URL: "/api/documents/x", ExpectedStatus: 401, ExpectedHeaders: secured(false)},
		{URL: "/", ExpectedStatus: 200, ExpectedHeaders: secured(false)},
		{URL: "/some/page", ExpectedStatus: 200, ExpectedHeaders: secured(false)},
		{URL: "/.well-known/jwks.json", ExpectedStatus: 200, ExpectedHeaders: secured(false)},
	})

	// The document service down: Caddy's 502 through handle_errors.
	gone := NewDocStub()
	gone.Close()
	down := startGateway(t, GatewayOptions{DatabaseURL: g.DatabaseURL, DocService: gone.Addr()})
	down.Client(t).Run(t, apitest.Scenario{Name: "document service down", URL: "/api/documents/x", Headers: bearer,
		ExpectedStatus: http.StatusBadGateway, ExpectedHeaders: secured(false)})

	hg := startHTTPSGateway(t, testCaddyfile(t, httpsGlobal, ""))
	hg.Plain(t).Table(t, []apitest.Scenario{
		{Name: "https /api/health", URL: "/api/health", ExpectedStatus: 200, ExpectedHeaders: secured(true)},
		{Name: "https /api/nowhere", URL: "/api/nowhere", ExpectedStatus: 404, ExpectedHeaders: secured(true)},
		{Name: "https /", URL: "/", ExpectedStatus: 200, ExpectedHeaders: secured(true)},
	})
}
