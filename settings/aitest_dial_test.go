package settings

import (
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
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
	if _, err := New(Config{AITestAllow: []string{"127.0.0.1/33"}}, nil, nil); err == nil ||
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
