package caddymodule

import (
	"net/http"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddyaccounts/gateway/edge"
)

func init() {
	caddy.RegisterModule(SecurityHeadersHandler{})
	httpcaddyfile.RegisterHandlerDirective("accounts_security_headers", parseSecurityHeaders)
}

// SecurityHeadersHandler sets the security headers of every answer of a
// site (edge.SecurityHeaders): X-Content-Type-Options: nosniff,
// Referrer-Policy: strict-origin-when-cross-origin, X-Frame-Options: DENY,
// Content-Security-Policy: frame-ancestors 'none', and over HTTPS
// Strict-Transport-Security. It does what a header directive with the
// same values does, with one allocation instead of about twenty-five.
type SecurityHeadersHandler struct {
	// HSTSMaxAge is the max-age of Strict-Transport-Security, sent over
	// HTTPS only. Default: one year; negative sends none.
	HSTSMaxAge caddy.Duration `json:"hsts_max_age,omitempty"`

	headers *edge.SecurityHeaders
}

// CaddyModule returns the Caddy module information.
func (SecurityHeadersHandler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.accounts_security_headers",
		New: func() caddy.Module { return new(SecurityHeadersHandler) },
	}
}

// Provision prepares the header values.
func (h *SecurityHeadersHandler) Provision(caddy.Context) error {
	hsts := edge.DefaultHSTS
	switch {
	case h.HSTSMaxAge < 0:
		hsts = ""
	case h.HSTSMaxAge > 0:
		hsts = "max-age=" + strconv.FormatInt(int64(time.Duration(h.HSTSMaxAge)/time.Second), 10)
	}
	h.headers = edge.NewSecurityHeaders(hsts)
	return nil
}

// ServeHTTP sets the headers and passes the request on.
func (h *SecurityHeadersHandler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	h.headers.Apply(w.Header(), r.TLS != nil)
	return next.ServeHTTP(w, r)
}

// parseSecurityHeaders parses the accounts_security_headers directive:
//
//	accounts_security_headers {
//		hsts_max_age <duration> | off
//	}
func parseSecurityHeaders(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	s := new(SecurityHeadersHandler)
	h.Next()
	if h.NextArg() {
		return nil, h.ArgErr()
	}
	for h.NextBlock(0) {
		switch h.Val() {
		case "hsts_max_age":
			var v string
			if err := oneString(h.Dispenser, &v); err != nil {
				return nil, err
			}
			if v == "off" {
				s.HSTSMaxAge = -1
				continue
			}
			d, err := parseDuration(h.Dispenser, v, true)
			if err != nil {
				return nil, err
			}
			s.HSTSMaxAge = d
		default:
			return nil, h.Errf("unknown accounts_security_headers option %q", h.Val())
		}
	}
	return s, nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*SecurityHeadersHandler)(nil)
	_ caddyhttp.MiddlewareHandler = (*SecurityHeadersHandler)(nil)
)
