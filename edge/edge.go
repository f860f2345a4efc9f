// Package edge decides what an upstream behind the gateway receives of a
// client's request. It holds the gateway's one promise to the services
// it guards: the service sees exactly the verified user, and nothing the
// client made up.
//
// The gateway alone sets the identity headers (X-User-Id, X-User-Groups).
// A client can
// try to get its own identity through, or the gateway's dropped, in
// several ways, and each has its answer here:
//
//   - sending the header itself, in any letter case or with "_" for "-"
//     (which some servers read as the same name): every such header is
//     removed (StripIdentity), on every route;
//   - naming the header in Connection, which makes a proxy drop it as
//     hop-by-hop after the gateway set it: such tokens are removed;
//   - sending it as a trailer of a chunked or HTTP/2 body, which a proxy
//     forwards after the body: identity trailers are removed, both the
//     declared ones and those that arrive at the end of the body;
//   - upgrading the connection to h2c, after which the client speaks
//     HTTP/2 straight to the upstream with any path and any header:
//     Upgrade is only forwarded for the protocols a Policy allows
//     (WebSocket by default), never h2c, and HTTP2-Settings never;
//   - slipping in credentials of its choice beside the verified ones: the
//     gateway's own session cookies are never forwarded, and Authorization
//     only when it is what was verified (and the Policy keeps it).
//
// Everything here works on plain net/http requests; the Caddy handlers
// call it.
package edge

import "net/http"

// The identity headers: they tell upstream services who the user is, and
// only the gateway sets them. UserGroupsHeader holds the ids of the
// user's groups, sorted, comma-separated (empty for none).
const (
	UserIDHeader     = "X-User-Id"
	UserGroupsHeader = "X-User-Groups"
)

// identityHeaders are the lower-case names of the identity headers.
var identityHeaders = [...]string{"x-user-id", "x-user-groups"}

// IsIdentityHeader reports whether a server could read name as one of the
// gateway's identity headers: the same name in any ASCII letter case, or
// with "_" for "-".
func IsIdentityHeader(name string) bool {
	for _, want := range identityHeaders {
		if sameHeaderName(name, want) {
			return true
		}
	}
	return false
}

// sameHeaderName reports whether name equals want (lower case, with "-")
// once lower-cased and with "_" read as "-".
func sameHeaderName(name, want string) bool {
	if len(name) != len(want) {
		return false
	}
	for i := 0; i < len(want); i++ {
		c := name[i]
		if c == '_' {
			c = '-'
		}
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != want[i] {
			return false
		}
	}
	return true
}

// StripIdentity removes every header of h that could pass for an
// identity header (IsIdentityHeader). It allocates nothing.
func StripIdentity(h http.Header) {
	for name := range h {
		if IsIdentityHeader(name) {
			delete(h, name)
		}
	}
}
