package caddymodule

import (
	"fmt"
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddyaccounts/gateway/ui"
)

func init() {
	caddy.RegisterModule(UIHandler{})
	httpcaddyfile.RegisterHandlerDirective("accounts_ui", parseUIHandler)
}

// UIHandler serves the built-in web UI (package ui) under /accounts/:
// the embedded static files, and index.html for every other path, each
// with a strict Content-Security-Policy. It answers every request it
// gets, so route only /accounts and /accounts/* to it.
type UIHandler struct {
	handler *ui.Handler
}

// CaddyModule returns the Caddy module information.
func (UIHandler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.accounts_ui",
		New: func() caddy.Module { return new(UIHandler) },
	}
}

// Provision loads the embedded files.
func (h *UIHandler) Provision(caddy.Context) error {
	u, err := ui.New()
	if err != nil {
		return fmt.Errorf("accounts_ui: %w", err)
	}
	h.handler = u
	return nil
}

// ServeHTTP serves the request; it never calls next.
func (h *UIHandler) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	h.handler.ServeHTTP(w, r)
	return nil
}

// parseUIHandler parses the accounts_ui directive, which takes no
// arguments:
//
//	accounts_ui
func parseUIHandler(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	if err := noArguments(h); err != nil {
		return nil, err
	}
	return new(UIHandler), nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*UIHandler)(nil)
	_ caddyhttp.MiddlewareHandler = (*UIHandler)(nil)
)
