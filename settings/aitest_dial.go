package settings

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// The destinations of the connection test: the policy of the package
// doc, checked by the dialer on every connection attempt.

var (
	// nat64Prefix is the well-known NAT64 prefix (RFC 6052): its last 32
	// bits are an IPv4 address.
	nat64Prefix = netip.MustParsePrefix("64:ff9b::/96")
	// thisNetwork is 0.0.0.0/8: Linux connects 0.0.0.0 to the host itself.
	thisNetwork = netip.MustParsePrefix("0.0.0.0/8")
	// cloudMetadata are metadata services outside the link-local ranges.
	cloudMetadata = []netip.Addr{
		netip.MustParseAddr("fd00:ec2::254"),   // AWS, IPv6
		netip.MustParseAddr("100.100.100.200"), // Alibaba Cloud
	}
	broadcast = netip.AddrFrom4([4]byte{255, 255, 255, 255})
)

// aiDestinationPolicy decides which addresses the connection test may
// connect to.
type aiDestinationPolicy struct {
	// allow are networks allowed whatever the rules say.
	allow []netip.Prefix
}

// refusal returns why addr is not an allowed destination ("a loopback
// address"), or "" when it is.
func (p aiDestinationPolicy) refusal(addr netip.Addr) string {
	addr = addr.WithZone("")
	plain := addr.Unmap()
	for _, n := range p.allow {
		if n.Contains(addr) || n.Contains(plain) {
			return ""
		}
	}
	if why := refusedKind(plain); why != "" {
		return why
	}
	if nat64Prefix.Contains(plain) {
		b := plain.As16()
		return refusedKind(netip.AddrFrom4([4]byte(b[12:])))
	}
	return ""
}

// refusedKind is the refused category of addr, or "".
func refusedKind(addr netip.Addr) string {
	switch {
	case !addr.IsValid():
		return "an invalid address"
	case addr.IsLoopback():
		return "a loopback address"
	case addr.IsUnspecified() || (addr.Is4() && thisNetwork.Contains(addr)):
		return "an unspecified address"
	case addr == broadcast:
		return "the broadcast address"
	case addr.IsMulticast():
		return "a multicast address"
	case addr.IsLinkLocalUnicast():
		return "a link-local address"
	}
	for _, m := range cloudMetadata {
		if addr == m {
			return "a cloud metadata address"
		}
	}
	return ""
}

// destinationError is a dial refused by aiDestinationPolicy. It does not
// name the address: the message shows the host the admin sent.
type destinationError struct {
	// why is the refused category, "a loopback address".
	why string
}

func (e *destinationError) Error() string { return "destination not allowed: " + e.why }

// control is the net.Dialer Control hook: it runs on every connection
// attempt, with the resolved address, before the connect.
func (p aiDestinationPolicy) control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return &destinationError{why: "an invalid address"}
	}
	if why := p.refusal(ap.Addr()); why != "" {
		return &destinationError{why: why}
	}
	return nil
}

// newAITransport returns the transport of the connection test: no proxy,
// every connection checked by policy.
func newAITransport(policy aiDestinationPolicy) *http.Transport {
	var t *http.Transport
	if dt, ok := http.DefaultTransport.(*http.Transport); ok {
		t = dt.Clone()
	} else {
		t = &http.Transport{ForceAttemptHTTP2: true, TLSHandshakeTimeout: 10 * time.Second}
	}
	t.Proxy = nil
	dialer := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second, Control: policy.control}
	t.DialContext = dialer.DialContext
	t.DialTLSContext = nil
	return t
}

// ParseAITestNetwork parses one network of Config.AITestAllow: a CIDR
// prefix ("127.0.0.0/8", "fd00::/8") or a single address ("127.0.0.1").
func ParseAITestNetwork(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("ai_test_allow: %q is not a CIDR network: %w", s, err)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("ai_test_allow: %q is not an IP address or CIDR network", s)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// newAIDestinationPolicy parses the networks of Config.AITestAllow.
func newAIDestinationPolicy(allow []string) (aiDestinationPolicy, error) {
	var p aiDestinationPolicy
	for _, s := range allow {
		n, err := ParseAITestNetwork(s)
		if err != nil {
			return p, err
		}
		p.allow = append(p.allow, n)
	}
	return p, nil
}

// failureMessage describes why the test got no answer, in words that
// name only what the admin sent (host and hostPort, from the URL): never a
// resolved address, a resolver's address, a name from a certificate or
// what a server that does not speak HTTP said.
func failureMessage(err error, host, hostPort string) string {
	var de *destinationError
	if errors.As(err, &de) {
		if _, perr := netip.ParseAddr(host); perr == nil {
			return "Destination not allowed: " + host + " is " + de.why
		}
		return "Destination not allowed: " + host + " resolves to " + de.why
	}
	return "Connection failed: " + truncateRunes(connectionFailure(err, host, hostPort), maxAITestMessageLen)
}

// connectionFailure is the reason of failureMessage's "Connection failed".
func connectionFailure(err error, host, hostPort string) string {
	var dnsErr *net.DNSError
	var oe *net.OpError
	var hostErr x509.HostnameError
	var authErr x509.UnknownAuthorityError
	var certErr x509.CertificateInvalidError
	switch {
	case errors.As(err, &dnsErr):
		// "lookup h on 10.0.0.2:53: ..." names the resolver.
		return "could not resolve " + host
	case errors.As(err, &oe):
		// "dial tcp 10.0.0.5:8080: connect: connection refused" names the
		// resolved address: keep the operation and the reason only.
		reason := "network error"
		var errno syscall.Errno
		switch {
		case errors.As(oe.Err, &errno):
			reason = errno.Error()
		case oe.Timeout():
			reason = "timed out"
		}
		return oe.Op + " " + hostPort + ": " + reason
	case errors.As(err, &hostErr):
		return "TLS certificate is not valid for " + host
	case errors.As(err, &authErr):
		return "TLS certificate signed by an unknown authority"
	case errors.As(err, &certErr):
		if certErr.Reason == x509.Expired {
			return "TLS certificate has expired or is not yet valid"
		}
		return "TLS certificate is not valid"
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		// Without the method and URL that url.Error adds.
		err = ue.Err
	}
	msg := err.Error()
	if strings.Contains(msg, "malformed HTTP") {
		// It quotes what the server sent.
		return "the server did not answer HTTP"
	}
	return msg
}
