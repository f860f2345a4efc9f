package edge

import (
	"bufio"
	"io"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestStripIdentity(t *testing.T) {
	h := http.Header{}
	for _, name := range []string{"X-User-Id", "x-user-id", "X-USER-ID", "X_User_Id", "x_user_id", "X-User_Id"} {
		h[name] = []string{"attacker"}
	}
	h.Set("X-User-Ids", "keep")
	h.Set("X-User", "keep")
	h.Set("Authorization", "keep")
	StripIdentity(h)
	if len(h) != 3 || h.Get("X-User-Ids") != "keep" || h.Get("X-User") != "keep" || h.Get("Authorization") != "keep" {
		t.Fatalf("after stripping: %v", h)
	}
}

// readRequest parses a raw HTTP/1.1 request as net/http's server does.
func readRequest(t *testing.T, raw string) *http.Request {
	t.Helper()
	r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(strings.ReplaceAll(raw, "\n", "\r\n"))))
	if err != nil {
		t.Fatalf("parsing request: %v", err)
	}
	return r
}

var testPolicy = Policy{Upgrades: DefaultUpgrades, KeepAuthorization: true, Cookies: []string{"access_token", "refresh_token"}}

func TestSealHeaders(t *testing.T) {
	tests := []struct {
		name   string
		policy Policy
		bearer bool
		groups string
		in     http.Header
		want   http.Header
	}{{
		name:   "groups header set, client spellings of it removed",
		policy: testPolicy, bearer: true,
		in:     http.Header{"X-User-Groups": {"admins"}, "X_user_groups": {"x"}},
		want:   http.Header{"X-User-Id": {"me"}, "X-User-Groups": {"g1,g2"}},
		groups: "g1,g2",
	}, {
		name:   "identity spellings replaced by the verified one",
		policy: testPolicy, bearer: true,
		in:   http.Header{"X-User-Id": {"victim"}, "X_user_id": {"victim"}, "Authorization": {"Bearer t"}},
		want: http.Header{"X-User-Id": {"me"}, "X-User-Groups": {""}, "Authorization": {"Bearer t"}},
	}, {
		name:   "Connection tokens naming the identity go, the others stay",
		policy: testPolicy, bearer: true,
		in:   http.Header{"Connection": {"keep-alive, X-User-Id", "x_USER_id", "close"}},
		want: http.Header{"X-User-Id": {"me"}, "X-User-Groups": {""}, "Connection": {"keep-alive", "", "close"}},
	}, {
		name:   "h2c upgrade and its settings removed",
		policy: testPolicy, bearer: true,
		in:   http.Header{"Connection": {"Upgrade, HTTP2-Settings"}, "Upgrade": {"h2c"}, "Http2-Settings": {"AAMAAABkAAQCAAAAAAIAAAAA"}},
		want: http.Header{"X-User-Id": {"me"}, "X-User-Groups": {""}, "Connection": {"Upgrade, HTTP2-Settings"}},
	}, {
		name:   "h2c hidden in a list or a second value removed",
		policy: testPolicy, bearer: true,
		in:   http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket, h2c"}},
		want: http.Header{"X-User-Id": {"me"}, "X-User-Groups": {""}, "Connection": {"Upgrade"}},
	}, {
		name:   "second Upgrade value removed",
		policy: testPolicy, bearer: true,
		in:   http.Header{"Upgrade": {"websocket", "h2c"}},
		want: http.Header{"X-User-Id": {"me"}, "X-User-Groups": {""}},
	}, {
		name:   "WebSocket passes by default",
		policy: testPolicy, bearer: true,
		in:   http.Header{"Connection": {"Upgrade"}, "Upgrade": {"WebSocket"}, "Sec-Websocket-Key": {"k"}},
		want: http.Header{"X-User-Id": {"me"}, "X-User-Groups": {""}, "Connection": {"Upgrade"}, "Upgrade": {"WebSocket"}, "Sec-Websocket-Key": {"k"}},
	}, {
		name:   "no upgrade at all when the policy has none",
		policy: Policy{KeepAuthorization: true}, bearer: true,
		in:   http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}},
		want: http.Header{"X-User-Id": {"me"}, "X-User-Groups": {""}, "Connection": {"Upgrade"}},
	}, {
		name:   "session cookies removed, other cookies kept byte for byte",
		policy: testPolicy, bearer: false,
		in:   http.Header{"Cookie": {"theme=dark; access_token=a.b.c;lang=fr", "refresh_token=r", "x=1;  access_token=again"}},
		want: http.Header{"X-User-Id": {"me"}, "X-User-Groups": {""}, "Cookie": {"theme=dark; lang=fr", "x=1"}},
	}, {
		name:   "only session cookies: no Cookie header left",
		policy: testPolicy, bearer: false,
		in:   http.Header{"Cookie": {"access_token=a; refresh_token=b"}},
		want: http.Header{"X-User-Id": {"me"}, "X-User-Groups": {""}},
	}, {
		name:   "an Authorization header that was not verified is not forwarded",
		policy: testPolicy, bearer: false,
		in:   http.Header{"Authorization": {"Basic dXNlcjpwdw=="}, "Cookie": {"access_token=a"}},
		want: http.Header{"X-User-Id": {"me"}, "X-User-Groups": {""}},
	}, {
		name:   "strip_authorization",
		policy: Policy{}, bearer: true,
		in:   http.Header{"Authorization": {"Bearer t"}},
		want: http.Header{"X-User-Id": {"me"}, "X-User-Groups": {""}},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, _ := http.NewRequest("GET", "http://gw/api/documents", nil)
			r.Header = tt.in
			tt.policy.Seal(r, "me", tt.groups, tt.bearer)
			if !reflect.DeepEqual(r.Header, tt.want) {
				t.Errorf("got  %v\nwant %v", r.Header, tt.want)
			}
		})
	}
}

func TestSealTrailers(t *testing.T) {
	r := readRequest(t, "POST /api/documents/upload HTTP/1.1\nHost: gw\nTransfer-Encoding: chunked\n"+
		"Trailer: X-User-Id, X_User_Id, X-Checksum\n\n"+
		"5\nhello\n0\nX-User-Id: victim\nX_User_Id: victim\nX-Checksum: abc\nx-user-id: again\n\n")
	testPolicy.Seal(r, "me", "", true)
	if want := (http.Header{"X-Checksum": nil}); !reflect.DeepEqual(r.Trailer, want) {
		t.Fatalf("declared trailers after Seal: %v, want %v", r.Trailer, want)
	}
	body, err := io.ReadAll(r.Body)
	if err != nil || string(body) != "hello" {
		t.Fatalf("body %q, %v", body, err)
	}
	if want := (http.Header{"X-Checksum": {"abc"}}); !reflect.DeepEqual(r.Trailer, want) {
		t.Fatalf("trailers at the end of the body: %v, want %v", r.Trailer, want)
	}

	// Trailers that were never declared arrive too.
	r = readRequest(t, "POST /api/documents/upload HTTP/1.1\nHost: gw\nTransfer-Encoding: chunked\n\n"+
		"5\nhello\n0\nX-User-Id: victim\nX-Other: 1\n\n")
	testPolicy.Seal(r, "me", "", true)
	if _, err := io.ReadAll(r.Body); err != nil {
		t.Fatal(err)
	}
	if want := (http.Header{"X-Other": {"1"}}); !reflect.DeepEqual(r.Trailer, want) {
		t.Fatalf("undeclared trailers: %v, want %v", r.Trailer, want)
	}

	// A body of known length cannot carry trailers: it is not wrapped.
	r = readRequest(t, "POST /api/documents/upload HTTP/1.1\nHost: gw\nContent-Length: 5\n\nhello")
	body0 := r.Body
	testPolicy.Seal(r, "me", "", true)
	if r.Body != body0 {
		t.Fatal("a body with a Content-Length was wrapped")
	}
}

func TestPolicyValidate(t *testing.T) {
	for _, tt := range []struct {
		upgrades []string
		ok       bool
	}{
		{nil, true},
		{[]string{"websocket"}, true},
		{[]string{"websocket", "tls/1.3"}, true},
		{[]string{"h2c"}, false},
		{[]string{"websocket", "H2C"}, false},
		{[]string{"websocket, h2c"}, false},
		{[]string{""}, false},
	} {
		p := Policy{Upgrades: tt.upgrades}
		if err := p.Validate(); (err == nil) != tt.ok {
			t.Errorf("Validate(%q) = %v, want ok=%v", tt.upgrades, err, tt.ok)
		}
	}
}

// BenchmarkSeal measures the cost Seal adds to a proxied request: a
// typical API client's headers, and a browser's with cookies.
func BenchmarkSeal(b *testing.B) {
	for _, tc := range []struct {
		name   string
		header http.Header
	}{
		{"bearer", http.Header{"Authorization": {"Bearer x.y.z"}, "Accept": {"*/*"}, "User-Agent": {"wrk"}}},
		{"browser", http.Header{"Cookie": {"theme=dark; access_token=x.y.z"}, "Connection": {"keep-alive"},
			"Accept": {"*/*"}, "User-Agent": {"Mozilla/5.0"}, "Accept-Language": {"en"}}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			r, _ := http.NewRequest("GET", "http://gw/api/documents", nil)
			b.ReportAllocs()
			for b.Loop() {
				r.Header = tc.header.Clone()
				testPolicy.Seal(r, "3f1c2a4e-0000-4000-8000-000000000001", "", tc.name == "bearer")
			}
		})
	}
}

func TestSecurityHeaders(t *testing.T) {
	s := NewSecurityHeaders(DefaultHSTS)
	want := http.Header{
		"X-Content-Type-Options":  {"nosniff"},
		"Referrer-Policy":         {"strict-origin-when-cross-origin"},
		"X-Frame-Options":         {"DENY"},
		"Content-Security-Policy": {"frame-ancestors 'none'"},
	}
	plain := http.Header{}
	s.Apply(plain, false)
	if !reflect.DeepEqual(plain, want) {
		t.Fatalf("over HTTP: %v", plain)
	}
	tls := http.Header{}
	s.Apply(tls, true)
	want["Strict-Transport-Security"] = []string{"max-age=31536000"}
	if !reflect.DeepEqual(tls, want) {
		t.Fatalf("over HTTPS: %v", tls)
	}
	// An upstream's values are added beside them (reverse_proxy), and a
	// change to one answer's values touches no other answer.
	tls.Add("X-Frame-Options", "SAMEORIGIN")
	tls["Referrer-Policy"][0] = "no-referrer"
	if got := tls.Values("X-Frame-Options"); !slices.Equal(got, []string{"DENY", "SAMEORIGIN"}) {
		t.Fatalf("X-Frame-Options after Add: %q", got)
	}
	if got := tls.Get("Content-Security-Policy"); got != "frame-ancestors 'none'" {
		t.Fatalf("the Add changed another header: %q", got)
	}
	again := http.Header{}
	s.Apply(again, true)
	if got := again.Get("Referrer-Policy"); got != "strict-origin-when-cross-origin" {
		t.Fatalf("a change to one answer reached the next: %q", got)
	}
	none := http.Header{}
	NewSecurityHeaders("").Apply(none, true)
	if _, ok := none["Strict-Transport-Security"]; ok {
		t.Fatal("HSTS sent although turned off")
	}
}
