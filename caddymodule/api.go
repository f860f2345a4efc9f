package caddymodule

import (
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	caddy.RegisterModule(APIHandler{})
	httpcaddyfile.RegisterHandlerDirective("accounts_api", parseAPIHandler)
}

// APIHandler serves the accounts JSON API: /api/auth/*, /api/users/*,
// /api/health and the other account routes. It answers every request it
// gets (404 in JSON for paths it does not know), so route only /api/* to
// it.
type APIHandler struct {
	handler http.Handler
	app     *App
}

// CaddyModule returns the Caddy module information.
func (APIHandler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.accounts_api",
		New: func() caddy.Module { return new(APIHandler) },
	}
}

// Provision gets the account service from the accounts app.
func (h *APIHandler) Provision(ctx caddy.Context) error {
	app, err := appFrom(ctx)
	if err != nil {
		return err
	}
	h.handler = app.Service().Handler()
	h.app = app
	return nil
}

// ServeHTTP serves the request; it never calls next.
func (h *APIHandler) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	h.app.enter()
	defer h.app.leave()
	h.handler.ServeHTTP(w, withClientIP(r))
	return nil
}

// parseAPIHandler parses the accounts_api directive, which takes no
// arguments:
//
//	accounts_api
func parseAPIHandler(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	if err := noArguments(h); err != nil {
		return nil, err
	}
	return new(APIHandler), nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*APIHandler)(nil)
	_ caddyhttp.MiddlewareHandler = (*APIHandler)(nil)
)
