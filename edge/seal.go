package edge

import (
	"fmt"
	"io"
	"net/http"
	"strings"
)

// DefaultUpgrades are the protocols a client may upgrade to through the
// proxy when a Policy names none.
var DefaultUpgrades = []string{"websocket"}

// Policy is what a guarded route forwards of a client's request besides
// the identity the gateway sets.
type Policy struct {
	// Upgrades are the protocols (as in the Upgrade header, any letter
	// case) a client may switch to through the proxy. Empty forwards no
	// upgrade at all. h2c is never forwarded (see Validate).
	Upgrades []string
	// KeepAuthorization forwards the Authorization header when it holds
	// the token that was verified. An Authorization header that was not
	// verified (the access cookie authenticated the request) is never
	// forwarded.
	KeepAuthorization bool
	// Cookies are the names of the gateway's own cookies (the access and
	// refresh cookies): its credentials, never forwarded. Other cookies
	// pass untouched.
	Cookies []string
}

// Validate refuses a policy that would open the upstream to the client:
// an upgrade to h2c.
func (p *Policy) Validate() error {
	for _, proto := range p.Upgrades {
		if strings.EqualFold(proto, "h2c") {
			return fmt.Errorf("upgrades: h2c is never forwarded: after it the client would speak HTTP/2 to the upstream directly, past the gateway")
		}
		if proto == "" || strings.ContainsAny(proto, " \t,") {
			return fmt.Errorf("upgrades: %q is not a protocol name", proto)
		}
	}
	return nil
}

// Seal prepares r, whose user has been verified, to be forwarded: it
// sets X-User-Id to userID and X-User-Groups to groups as the only
// identity headers, and removes whatever the client could use to get
// another identity through or the gateway's dropped (see the package
// doc). viaBearer tells whether the verified token came from the
// Authorization header.
//
// A request without a Connection, Upgrade, Cookie or trailers costs a
// few map lookups and one allocation, for the two headers' values.
func (p *Policy) Seal(r *http.Request, userID, groups string, viaBearer bool) {
	h := r.Header
	StripIdentity(h)
	vals := [2]string{userID, groups}
	h[UserIDHeader] = vals[0:1:1]
	h[UserGroupsHeader] = vals[1:2:2]
	if !viaBearer || !p.KeepAuthorization {
		delete(h, "Authorization")
	}
	if len(p.Cookies) > 0 {
		if _, ok := h["Cookie"]; ok {
			p.stripCookies(h)
		}
	}
	if v, ok := h["Connection"]; ok {
		sealConnection(v)
	}
	if _, ok := h["Upgrade"]; ok && !p.upgradeAllowed(h["Upgrade"]) {
		delete(h, "Upgrade")
	}
	delete(h, "Http2-Settings")
	sealTrailers(r)
}

// upgradeAllowed reports whether a request's Upgrade header names one
// protocol that the policy allows. Caddy forwards the first value whole,
// so a list ("websocket, h2c") or a second value never passes.
func (p *Policy) upgradeAllowed(values []string) bool {
	if len(values) != 1 {
		return false
	}
	proto := strings.TrimSpace(values[0])
	if strings.EqualFold(proto, "h2c") {
		return false
	}
	for _, allowed := range p.Upgrades {
		if strings.EqualFold(proto, allowed) {
			return true
		}
	}
	return false
}

// sealConnection removes every token of a Connection header that names an
// identity header: a proxy drops the headers named there as hop-by-hop,
// and would drop the gateway's X-User-Id. The other tokens stay.
func sealConnection(values []string) {
	for i, v := range values {
		if !hasIdentityToken(v) {
			continue
		}
		var kept []string
		for tok := range strings.SplitSeq(v, ",") {
			if tok = strings.TrimSpace(tok); tok != "" && !IsIdentityHeader(tok) {
				kept = append(kept, tok)
			}
		}
		values[i] = strings.Join(kept, ", ")
	}
}

// hasIdentityToken reports whether a comma-separated list names an
// identity header.
func hasIdentityToken(list string) bool {
	for tok := range strings.SplitSeq(list, ",") {
		if IsIdentityHeader(strings.TrimSpace(tok)) {
			return true
		}
	}
	return false
}

// stripCookies removes the policy's cookies from every Cookie header of
// h, keeping the others byte for byte; a header left empty goes.
func (p *Policy) stripCookies(h http.Header) {
	values := h["Cookie"]
	kept := values[:0]
	for _, v := range values {
		if p.hasOwnCookie(v) {
			v = p.withoutOwnCookies(v)
		}
		if v != "" {
			kept = append(kept, v)
		}
	}
	if len(kept) == 0 {
		delete(h, "Cookie")
		return
	}
	h["Cookie"] = kept
}

// cookieName returns the name of one "name=value" pair of a Cookie
// header, as net/http reads it.
func cookieName(pair string) string {
	name, _, _ := strings.Cut(strings.TrimSpace(pair), "=")
	return strings.TrimSpace(name)
}

func (p *Policy) isOwnCookie(name string) bool {
	for _, own := range p.Cookies {
		if name == own {
			return true
		}
	}
	return false
}

func (p *Policy) hasOwnCookie(header string) bool {
	for pair := range strings.SplitSeq(header, ";") {
		if p.isOwnCookie(cookieName(pair)) {
			return true
		}
	}
	return false
}

func (p *Policy) withoutOwnCookies(header string) string {
	var kept []string
	for pair := range strings.SplitSeq(header, ";") {
		if pair = strings.TrimSpace(pair); pair != "" && !p.isOwnCookie(cookieName(pair)) {
			kept = append(kept, pair)
		}
	}
	return strings.Join(kept, "; ")
}

// sealTrailers removes identity headers from r's trailers. The declared
// ones are removed now (so that the proxy does not announce them); the
// values arrive only when the body has been read to its end, and net/http
// then adds every trailer received, declared or not, to r.Trailer: a body
// that can carry trailers (of unknown length, or with trailers declared)
// is wrapped so that they are removed again at that moment, before any
// reader of the body (the proxy copies r.Trailer at EOF) sees them.
func sealTrailers(r *http.Request) {
	StripIdentity(r.Trailer)
	if r.Body == nil || r.Body == http.NoBody || (r.ContentLength >= 0 && r.Trailer == nil) {
		return
	}
	r.Body = &trailerSealer{ReadCloser: r.Body, r: r}
}

// trailerSealer removes identity trailers from r when its body ends.
type trailerSealer struct {
	io.ReadCloser
	r *http.Request
}

func (b *trailerSealer) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		StripIdentity(b.r.Trailer)
	}
	return n, err
}
