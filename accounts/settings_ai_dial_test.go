package accounts

import (
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestAIDestinationPolicy checks the policy on addresses: the check
// alone, nothing is dialled.
func TestAIDestinationPolicy(t *testing.T) {
	def := aiDestinationPolicy{}
	allow, err := newAIDestinationPolicy([]string{"127.0.0.0/8", "169.254.169.254", "fe80::/10"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		addr    string
		why     string // by default
		allowed bool   // with allow
	}{
		{"127.0.0.1", "a loopback address", true},
		{"127.255.0.9", "a loopback address", true},
		{"::1", "a loopback address", false},
		{"::ffff:127.0.0.1", "a loopback address", true},
		{"64:ff9b::7f00:1", "a loopback address", false}, // NAT64 of 127.0.0.1
		{"169.254.169.254", "a link-local address", true},
		{"169.254.1.1", "a link-local address", false},
		{"::ffff:169.254.169.254", "a link-local address", true},
		{"64:ff9b::a9fe:a9fe", "a link-local address", false}, // NAT64 of 169.254.169.254
		{"fe80::1", "a link-local address", true},
		{"fe80::1%eth0", "a link-local address", true},
		{"fd00:ec2::254", "a cloud metadata address", false},
		{"100.100.100.200", "a cloud metadata address", false},
		{"0.0.0.0", "an unspecified address", false},
		{"0.1.2.3", "an unspecified address", false},
		{"::", "an unspecified address", false},
		{"::ffff:0.0.0.0", "an unspecified address", false},
		{"224.0.0.1", "a multicast address", false},
		{"239.255.255.250", "a multicast address", false},
		{"ff02::1", "a multicast address", false},
		{"::ffff:224.0.0.1", "a multicast address", false},
		{"255.255.255.255", "the broadcast address", false},
		// Private networks and public addresses are allowed.
		{"10.1.2.3", "", true},
		{"172.16.0.1", "", true},
		{"192.168.1.1", "", true},
		{"fd12:3456::1", "", true},
		{"8.8.8.8", "", true},
		{"2001:4860:4860::8888", "", true},
		{"64:ff9b::808:808", "", true}, // NAT64 of 8.8.8.8
		{"::ffff:10.0.0.1", "", true},
		{"100.64.0.1", "", true},
	} {
		a := netip.MustParseAddr(c.addr)
		if got := def.refusal(a); got != c.why {
			t.Errorf("default %s: %q, want %q", c.addr, got, c.why)
		}
		if got := allow.refusal(a); (got == "") != c.allowed {
			t.Errorf("with ai_test_allow %s: %q, want allowed %v", c.addr, got, c.allowed)
		}
	}

	// The dial hook gets "ip:port" after resolution.
	for address, want := range map[string]string{
		"127.0.0.1:443":         "destination not allowed: a loopback address",
		"[::1]:80":              "destination not allowed: a loopback address",
		"[fe80::1%eth0]:80":     "destination not allowed: a link-local address",
		"169.254.169.254:80":    "destination not allowed: a link-local address",
		"not an address":        "destination not allowed: an invalid address",
		"10.0.0.1:8080":         "",
		"[2001:db8::1]:443":     "",
		"192.168.100.200:11434": "",
	} {
		err := def.control("tcp", address, nil)
		if got := fmt.Sprint(err); (want == "" && err != nil) || (want != "" && got != want) {
			t.Errorf("control(%q) = %v, want %q", address, err, want)
		}
	}
}

func TestParseAITestNetwork(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1":      "127.0.0.1/32",
		"127.0.0.1/8":    "127.0.0.0/8",
		"::1":            "::1/128",
		"fd00::/8":       "fd00::/8",
		" 10.0.0.0/8 ":   "10.0.0.0/8",
		"169.254.0.0/16": "169.254.0.0/16",
	} {
		got, err := ParseAITestNetwork(in)
		if err != nil || got.String() != want {
			t.Errorf("%q: %v %v, want %s", in, got, err, want)
		}
	}
	for in, want := range map[string]string{
		"localhost":    `ai_test_allow: "localhost" is not an IP address or CIDR network`,
		"127.0.0.1/33": `ai_test_allow: "127.0.0.1/33" is not a CIDR network`,
		"fe80::1%eth0": `ai_test_allow: "fe80::1%eth0" is not an IP address or CIDR network`,
		"":             `ai_test_allow: "" is not an IP address or CIDR network`,
	} {
		if _, err := ParseAITestNetwork(in); err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("%q: %v, want %s", in, err, want)
		}
	}
	if _, err := New(newTestEnv(t).db, nil, Config{Argon2: fastArgon2, AITestAllow: []string{"127.0.0.1/33"}}, nil); err == nil ||
		!strings.Contains(err.Error(), `ai_test_allow: "127.0.0.1/33"`) {
		t.Errorf("New with a bad ai_test_allow: %v", err)
	}
}

// TestAITransport: no proxy from the environment, and the policy on
// every dial.
func TestAITransport(t *testing.T) {
	tr := newAITransport(aiDestinationPolicy{})
	if tr.Proxy != nil || tr.DialContext == nil || tr.DialTLSContext != nil || tr.DialTLS != nil || tr.Dial != nil { //nolint:staticcheck // Dial and DialTLS must stay unset too
		t.Fatal("the test transport may use a proxy or dial without the policy")
	}
	_, err := tr.DialContext(context.Background(), "tcp", "127.0.0.1:9")
	if msg := failureMessage(err, "127.0.0.1", "127.0.0.1:9"); msg != "Destination not allowed: 127.0.0.1 is a loopback address" {
		t.Fatalf("dial 127.0.0.1: %v (%s)", err, msg)
	}
}

// TestFailureMessage: no resolved address, resolver or certificate name
// is shown, only the host the admin sent.
func TestFailureMessage(t *testing.T) {
	wrap := func(err error) error {
		return &url.Error{Op: "Post", URL: "http://llm.internal:8080/v1/chat/completions", Err: err}
	}
	cert := &x509.Certificate{DNSNames: []string{"secret-name.corp.internal"}}
	for _, c := range []struct {
		err  error
		want string
	}{
		{wrap(&net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "llm.internal", Server: "10.0.0.2:53", IsNotFound: true}}),
			"Connection failed: could not resolve llm.internal"},
		{wrap(&net.OpError{Op: "dial", Net: "tcp", Addr: &net.TCPAddr{IP: net.ParseIP("10.9.8.7"), Port: 8080}, Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}),
			"Connection failed: dial llm.internal:8080: connection refused"},
		{wrap(&net.OpError{Op: "read", Net: "tcp", Source: &net.TCPAddr{IP: net.ParseIP("10.0.0.1"), Port: 5555}, Addr: &net.TCPAddr{IP: net.ParseIP("10.9.8.7"), Port: 8080}, Err: os.NewSyscallError("read", syscall.ECONNRESET)}),
			"Connection failed: read llm.internal:8080: connection reset by peer"},
		{wrap(&net.OpError{Op: "dial", Net: "tcp", Addr: &net.TCPAddr{IP: net.ParseIP("10.9.8.7"), Port: 8080}, Err: &destinationError{why: "a loopback address"}}),
			"Destination not allowed: llm.internal resolves to a loopback address"},
		{wrap(x509.HostnameError{Certificate: cert, Host: "llm.internal"}),
			"Connection failed: TLS certificate is not valid for llm.internal"},
		{wrap(x509.UnknownAuthorityError{Cert: cert}),
			"Connection failed: TLS certificate signed by an unknown authority"},
		{wrap(fmt.Errorf("net/http: HTTP/1.x transport connection broken: %w", fmt.Errorf("malformed HTTP response %q", "-ERR unknown command 'POST'"))),
			"Connection failed: the server did not answer HTTP"},
		{wrap(fmt.Errorf("EOF")), "Connection failed: EOF"},
	} {
		if got := failureMessage(c.err, "llm.internal", "llm.internal:8080"); got != c.want {
			t.Errorf("%v:\n got %q\nwant %q", c.err, got, c.want)
		}
	}
	err := wrap(&net.OpError{Op: "dial", Err: &destinationError{why: "a loopback address"}})
	if got := failureMessage(err, "::1", "[::1]:80"); got != "Destination not allowed: ::1 is a loopback address" {
		t.Errorf("IP literal: %q", got)
	}
}

func TestAIOrigin(t *testing.T) {
	s := func(v string) *string { return &v }
	for _, c := range []struct {
		cfg  aiSettings
		want string
	}{
		{aiSettings{Provider: ProviderOpenAI}, "https://api.openai.com"},
		{aiSettings{Provider: ProviderAnthropic}, "https://api.anthropic.com"},
		{aiSettings{Provider: ProviderOpenAI, BaseURL: s("https://API.OpenAI.com:443/v1/")}, "https://api.openai.com"},
		{aiSettings{Provider: ProviderOpenAI, BaseURL: s("http://llm:80/x")}, "http://llm"},
		{aiSettings{Provider: ProviderOpenAI, BaseURL: s("http://llm:8080")}, "http://llm:8080"},
		{aiSettings{Provider: ProviderOpenAI, BaseURL: s("https://llm:80")}, "https://llm:80"},
		{aiSettings{Provider: ProviderOpenAI, BaseURL: s("http://[FD00::1]:11434/v1")}, "http://[fd00::1]:11434"},
		{aiSettings{Provider: ProviderAnthropic, BaseURL: s("http://127.0.0.1:8080/proxy")}, "http://127.0.0.1:8080"},
	} {
		if got := aiOrigin(c.cfg); got != c.want {
			t.Errorf("%s %v: %q, want %q", c.cfg.Provider, valueOr(c.cfg.BaseURL, "null"), got, c.want)
		}
	}
}

// TestAIConnectionTestDestinationRefused: by default the test does not
// connect to loopback, whatever name or form the address has; the stub
// there accepts no connection at all.
func TestAIConnectionTestDestinationRefused(t *testing.T) {
	stub := newProviderStub(t, answerJSON(200, `{}`))
	dir := filepath.Join(t.TempDir(), "settings")
	e, _, token := aiTestEnvWith(t, newTestEnv(t, func(c *Config) { c.SettingsDir = dir }), dir,
		map[string]any{"model": "gpt-test", "base_url": stub.srv.URL + "/v1", "api_key": openAIKey})
	port := stub.srv.Listener.Addr().(*net.TCPAddr).Port

	r := testAIRoute(t, e, token, nil, openAIKey)
	jsonEqual(t, "stored settings", r.Body,
		`{"ok":false,"status_code":null,"model":"gpt-test","message":"Destination not allowed: 127.0.0.1 is a loopback address"}`, "latency_ms")
	for host, message := range map[string]string{
		"localhost":          "Destination not allowed: localhost resolves to a loopback address",
		"LocalHost":          "Destination not allowed: LocalHost resolves to a loopback address",
		"[::1]":              "Destination not allowed: ::1 is a loopback address",
		"[::ffff:127.0.0.1]": "Destination not allowed: ::ffff:127.0.0.1 is a loopback address",
		"0.0.0.0":            "Destination not allowed: 0.0.0.0 is an unspecified address",
	} {
		base := fmt.Sprintf("http://%s:%d/v1", host, port)
		r := testAIRoute(t, e, token, map[string]any{"base_url": base, "api_key": "sk-other-key-0123456789"}, openAIKey, "sk-other-key-0123456789")
		jsonEqual(t, base, r.Body, fmt.Sprintf(`{"ok":false,"status_code":null,"model":"gpt-test","message":%q}`, message), "latency_ms")
	}
	if n := stub.conns.Load(); n != 0 || len(stub.got()) != 0 {
		t.Fatalf("the stub on loopback got %d connections", n)
	}
	assertNoSecretInLogs(t, e, openAIKey, "sk-other-key-0123456789")
}

// TestAIConnectionTestStoredKeyOrigin: the stored key goes only to the
// stored base URL's origin; another one needs its key in the body.
func TestAIConnectionTestStoredKeyOrigin(t *testing.T) {
	const otherKey = "sk-other-provider-key-42424242"
	stored := newProviderStub(t, answerJSON(200, `{}`))
	other := newProviderStub(t, answerJSON(200, `{}`))
	e, _, token := aiTestEnv(t, map[string]any{"model": "gpt-test", "base_url": stored.srv.URL + "/v1", "api_key": openAIKey})
	refused := `[{"type":"value_error","loc":["body","api_key"],"msg":"Value error, ` + msgStoredKeyOrigin + `"}]`
	ok := `{"ok":true,"status_code":200,"model":"gpt-test","message":"Connection OK"}`
	for _, c := range []struct {
		name string
		body any
		want string // the result, or the 422 detail
	}{
		{"the stored settings", nil, ok},
		{"another path of the stored origin", map[string]any{"base_url": stored.srv.URL + "/other/"}, ok},
		{"the stored origin, upper case", map[string]any{"base_url": strings.ToUpper(stored.srv.URL) + "/v1"}, ok},
		{"the mask to the stored origin", map[string]any{"api_key": "****Jkl0"}, ok},
		{"another origin", map[string]any{"base_url": other.srv.URL}, refused},
		{"another origin with the mask", map[string]any{"base_url": other.srv.URL, "api_key": "****Jkl0"}, refused},
		{"another origin with a stale mask", map[string]any{"base_url": other.srv.URL, "api_key": "****"}, refused},
		{"the same address by another name", map[string]any{"base_url": strings.Replace(stored.srv.URL, "127.0.0.1", "localhost", 1)}, refused},
		{"the provider's default URL", map[string]any{"base_url": nil}, refused},
		{"another provider's default URL", map[string]any{"provider": "anthropic", "base_url": ""}, refused},
		{"another origin with its own key", map[string]any{"base_url": other.srv.URL, "api_key": otherKey}, ok},
	} {
		r := testAIRoute(t, e, token, c.body, openAIKey, otherKey)
		if strings.HasPrefix(c.want, "[") {
			if r.Status != 422 || r.Detail(t) != c.want {
				t.Errorf("%s: %d %s", c.name, r.Status, r.Body)
			}
			continue
		}
		if r.Status != 200 {
			t.Errorf("%s: %d %s", c.name, r.Status, r.Body)
			continue
		}
		jsonEqual(t, c.name, r.Body, c.want, "latency_ms")
	}
	if reqs := stored.got(); len(reqs) != 4 {
		t.Errorf("the stored origin got %d requests, want 4", len(reqs))
	}
	for _, req := range stored.got() {
		if req.Header.Get("Authorization") != "Bearer "+openAIKey {
			t.Errorf("the stored origin got %q", req.Header.Get("Authorization"))
		}
	}
	reqs := other.got()
	if n := other.conns.Load(); n != 1 || len(reqs) != 1 || reqs[0].Header.Get("Authorization") != "Bearer "+otherKey {
		t.Fatalf("the other origin got %d connections, requests %+v", n, reqs)
	}
	assertNoSecretInLogs(t, e, openAIKey, otherKey)
}

// TestAIConnectionTestAudit: every test is audited, refused ones too,
// without the key.
func TestAIConnectionTestAudit(t *testing.T) {
	stub := newProviderStub(t, answerJSON(401, `{"error":{"message":"bad key `+openAIKey+`"}}`))
	e, _, token := aiTestEnv(t, map[string]any{"base_url": stub.srv.URL + "/v1", "api_key": openAIKey})
	origin := stub.srv.URL
	refusing := "http://" + refusingAddr(t)
	const bodyKey = "sk-body-key-0987654321"
	for _, body := range []any{
		nil,
		map[string]any{"base_url": "https://llm.example.com/v1"},
		map[string]any{"base_url": refusing, "api_key": bodyKey},
		map[string]any{"api_key": nil},
	} {
		testAIRoute(t, e, token, body, openAIKey, bodyKey)
	}
	// A 422 of the body's fields is no test.
	testAIRoute(t, e, token, map[string]any{"temperature": 5})

	rows, err := e.db.Query(context.Background(),
		`SELECT a.details::text, u.email FROM audit_events a JOIN users u ON u.id = a.actor_id
		 WHERE a.event = $1 ORDER BY a.id`, EventSettingsAITest)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var details, email string
		if err := rows.Scan(&details, &email); err != nil {
			t.Fatal(err)
		}
		if email != "root@example.com" {
			t.Errorf("actor %s", email)
		}
		for _, k := range []string{openAIKey, bodyKey, openAIKey[4:12]} {
			if strings.Contains(details, k) {
				t.Fatalf("the key is in the audit log: %s", details)
			}
		}
		got = append(got, details)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	want := []string{
		`{"key": "stored", "origin": "` + origin + `", "outcome": "provider_error", "provider": "openai", "status_code": 401}`,
		`{"key": "stored", "origin": "https://llm.example.com", "outcome": "stored_key_origin_refused", "provider": "openai", "status_code": null}`,
		`{"key": "body", "origin": "` + refusing + `", "outcome": "connection_failed", "provider": "openai", "status_code": null}`,
		`{"key": "none", "origin": "` + origin + `", "outcome": "no_key", "provider": "openai", "status_code": null}`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("audit details:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	assertNoSecretInLogs(t, e, openAIKey, bodyKey)
}
