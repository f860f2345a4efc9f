package caddymodule

import (
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddyaccounts/gateway/edge"
)

func init() {
	caddy.RegisterModule(StripIdentityHandler{})
	httpcaddyfile.RegisterHandlerDirective("accounts_strip_identity", parseStripIdentity)
}

// StripIdentityHandler removes every client-sent header that could pass
// for X-User-Id (edge.StripIdentity: any letter case, and
// spellings with "_" for "-") and passes the request on. Put it first in a
// site, so that no route, whatever it proxies to, ever forwards a user id
// the client made up; only accounts_auth sets X-User-Id afterwards.
//
// It does what `request_header -X-User-Id` does for one spelling, for all
// of them at once, without allocating.
type StripIdentityHandler struct{}

// CaddyModule returns the Caddy module information.
func (StripIdentityHandler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.accounts_strip_identity",
		New: func() caddy.Module { return new(StripIdentityHandler) },
	}
}

// ServeHTTP removes the identity headers and passes the request on.
func (StripIdentityHandler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	edge.StripIdentity(r.Header)
	return next.ServeHTTP(w, r)
}

// parseStripIdentity parses the accounts_strip_identity directive, which
// takes no arguments:
//
//	accounts_strip_identity
func parseStripIdentity(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	if err := noArguments(h); err != nil {
		return nil, err
	}
	return new(StripIdentityHandler), nil
}

// Interface guard
var _ caddyhttp.MiddlewareHandler = (*StripIdentityHandler)(nil)
