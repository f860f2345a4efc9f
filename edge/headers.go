package edge

import "net/http"

// SecurityHeaders are the response headers every answer of a site
// carries, set before the handlers that follow run, so that a later
// handler (Caddy's own header directive, or an upstream's answer through
// reverse_proxy, which adds its values beside them) can still change or
// add to them.
type SecurityHeaders struct {
	names  []string
	values []string
	// hsts is the Strict-Transport-Security value, sent over HTTPS only
	// ("" for none).
	hsts string
}

// DefaultHSTS is the Strict-Transport-Security value of HTTPS answers:
// one year.
const DefaultHSTS = "max-age=31536000"

// NewSecurityHeaders returns the headers that stop MIME sniffing
// (X-Content-Type-Options: nosniff), referrers beyond the origin to other
// sites (Referrer-Policy: strict-origin-when-cross-origin) and framing by
// any site (X-Frame-Options: DENY, and CSP frame-ancestors 'none'), with
// hsts (such as DefaultHSTS, "" for none) over HTTPS.
func NewSecurityHeaders(hsts string) *SecurityHeaders {
	return &SecurityHeaders{
		names:  []string{"X-Content-Type-Options", "Referrer-Policy", "X-Frame-Options", "Content-Security-Policy"},
		values: []string{"nosniff", "strict-origin-when-cross-origin", "DENY", "frame-ancestors 'none'"},
		hsts:   hsts,
	}
}

// Apply sets the headers in h, the header of an answer that is sent over
// HTTPS when tls is true. It allocates once: the values share one array
// of this answer's own, each a slice of capacity one, so that appending
// to one never touches another and no answer shares them with another.
func (s *SecurityHeaders) Apply(h http.Header, tls bool) {
	n := len(s.values)
	if tls && s.hsts != "" {
		n++
	}
	vals := make([]string, n)
	copy(vals, s.values)
	for i, name := range s.names {
		h[name] = vals[i : i+1 : i+1]
	}
	if n > len(s.values) {
		vals[n-1] = s.hsts
		h["Strict-Transport-Security"] = vals[n-1 : n : n]
	}
}
