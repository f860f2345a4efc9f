package edge

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"net/textproto"
	"reflect"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"golang.org/x/net/http/httpguts"
)

// isIdentityName is the oracle of IsIdentityHeader: the name equals
// "x-user-id" or "x-user-groups" once lowercased and with '_' read as '-'. Header names are
// ASCII tokens (RFC 9110); net/http refuses any other before a handler
// runs, so only ASCII case folding counts.
func isIdentityName(name string) bool {
	for _, r := range name {
		if r >= utf8.RuneSelf {
			return false
		}
	}
	n := strings.ToLower(strings.ReplaceAll(name, "_", "-"))
	return n == "x-user-id" || n == "x-user-groups"
}

func FuzzStripIdentity(f *testing.F) {
	f.Add([]byte("X-User-Id: 1\nx-user-id: 2\nX_USER_ID: 3\nx_User-iD: 4\nAuthorization: Bearer x"))
	f.Add([]byte("X-User-Id: a\nX-User-Id: b\nX-User-Ids: c\nX-User: d\nXX-User-Id: e"))
	f.Add([]byte("X-User-Id : a\n X-User-Id: b\nX-User-Id\x00: c\nX-User-İd: d\nX-User-\u0130d: e"))
	f.Add([]byte("\n\n:\n::\nX-Forwarded-For: 1.2.3.4\nx-uѕer-id: cyrillic"))
	f.Add([]byte(""))

	f.Fuzz(func(t *testing.T, data []byte) {
		h := http.Header{}
		for _, line := range strings.Split(string(data), "\n") {
			name, value, _ := strings.Cut(line, ":")
			h[name] = append(h[name], value)
		}
		before := http.Header{}
		for k, vs := range h {
			before[k] = slices.Clone(vs)
		}
		StripIdentity(h)
		for k, vs := range before {
			got, kept := h[k]
			if isIdentityName(k) {
				if kept {
					t.Fatalf("identity header %q kept", k)
				}
			} else if !kept || !reflect.DeepEqual(got, vs) {
				t.Fatalf("header %q changed: %q -> %q (kept %v)", k, vs, got, kept)
			}
		}
		if len(h) > len(before) {
			t.Fatalf("headers added: %v", h)
		}
	})
}

// hopHeaders are the headers Caddy's reverse_proxy never forwards
// (modules/caddyhttp/reverseproxy).
var hopHeaders = []string{"Alt-Svc", "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// proxied returns the header set Caddy's reverse_proxy sends upstream for
// h: the headers named in Connection and the hop-by-hop ones removed, and
// an upgrade (Connection: Upgrade with an Upgrade header) carried on as
// Caddy does, with the first Upgrade value lower-cased.
func proxied(h http.Header) http.Header {
	out := h.Clone()
	upgrade := ""
	if httpguts.HeaderValuesContainsToken(out["Connection"], "Upgrade") && len(out["Upgrade"]) > 0 {
		upgrade = strings.ToLower(out["Upgrade"][0])
	}
	for _, f := range out["Connection"] {
		for sf := range strings.SplitSeq(f, ",") {
			if sf = textproto.TrimString(sf); sf != "" {
				out.Del(sf)
			}
		}
	}
	for _, hop := range hopHeaders {
		out.Del(hop)
	}
	if upgrade != "" {
		out.Set("Connection", "Upgrade")
		out.Set("Upgrade", upgrade)
	}
	return out
}

// FuzzSealedRequest sends raw HTTP/1.1 requests through Seal and checks
// the header set and trailers the document service would receive
// through Caddy's proxy: exactly one X-User-Id and one X-User-Groups,
// the gateway's; no h2c
// upgrade and no HTTP2-Settings; no identity trailer; none of the
// gateway's cookies; the client's other headers and cookies intact.
func FuzzSealedRequest(f *testing.F) {
	seeds := []string{
		"GET /api/documents HTTP/1.1\nHost: gw\nAuthorization: Bearer t\nConnection: keep-alive, X-User-Id\nX-User-Id: victim\n\n",
		"GET /api/documents HTTP/1.0\nHost: gw\nConnection: X-USER-ID\nX_User_Id: victim\n\n",
		"GET /api/documents HTTP/1.1\nHost: gw\nConnection: Upgrade, HTTP2-Settings\nUpgrade: h2c\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\n\n",
		"GET /api/documents HTTP/1.1\nHost: gw\nConnection: Upgrade\nUpgrade: websocket, h2c\nUpgrade: H2C\n\n",
		"GET /ws HTTP/1.1\nHost: gw\nConnection: Upgrade\nUpgrade: websocket\nSec-WebSocket-Key: k\n\n",
		"POST /api/documents HTTP/1.1\nHost: gw\nTransfer-Encoding: chunked\nTrailer: X-User-Id, X-Sum\n\n3\nabc\n0\nX-User-Id: victim\nx_user_id: victim\nX-Sum: 1\n\n",
		"POST /api/documents HTTP/1.1\nHost: gw\nTransfer-Encoding: chunked\n\n3\nabc\n0\nX-User-Id: victim\n\n",
		"GET /api/documents HTTP/1.1\nHost: gw\nCookie: a=1; access_token=t; refresh_token=r;b=2\nCookie: access_token=u\n\n",
	}
	for _, s := range seeds {
		f.Add([]byte(strings.ReplaceAll(s, "\n", "\r\n")), true)
	}
	f.Fuzz(func(t *testing.T, raw []byte, viaBearer bool) {
		r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw)))
		if err != nil {
			return // net/http's server refuses it before any handler
		}
		if len(r.Header["Authorization"]) > 1 {
			return // Authenticate refuses it with 400
		}
		client := r.Header.Clone()
		testPolicy.Seal(r, "me", "g1,g2", viaBearer)
		if r.Body != nil {
			if _, err := io.Copy(io.Discard, r.Body); err != nil {
				return // a broken body: the proxy fails the request
			}
		}
		sent := proxied(r.Header)
		want := map[string][]string{UserIDHeader: {"me"}, UserGroupsHeader: {"g1,g2"}}
		var ids []string
		for name, vs := range sent {
			if isIdentityName(name) {
				ids = append(ids, name)
				if !reflect.DeepEqual(vs, want[name]) {
					t.Fatalf("identity header %q: %q", name, vs)
				}
			}
		}
		if len(ids) != 2 {
			t.Fatalf("identity headers sent: %q (all: %v)", ids, sent)
		}
		if strings.Contains(strings.ToLower(strings.Join(sent["Upgrade"], ",")), "h2c") || sent.Get("Http2-Settings") != "" {
			t.Fatalf("h2c upgrade sent: %v", sent)
		}
		for name := range r.Trailer {
			if isIdentityName(name) {
				t.Fatalf("identity trailer %q sent", name)
			}
		}
		for _, c := range (&http.Request{Header: sent}).Cookies() {
			if c.Name == "access_token" || c.Name == "refresh_token" {
				t.Fatalf("session cookie %q sent", c.Name)
			}
		}
		// Every other header the client sent, not hop-by-hop and not
		// named in its Connection header, arrives unchanged.
		for name, vs := range proxied(client) {
			switch {
			case isIdentityName(name), name == "Cookie", name == "Authorization", name == "Http2-Settings",
				name == "Connection", name == "Upgrade":
				continue
			}
			if !reflect.DeepEqual(sent[name], vs) {
				t.Fatalf("header %q: sent %q, client sent %q", name, sent[name], vs)
			}
		}
	})
}
