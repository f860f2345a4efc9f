package caddymodule

import (
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddyaccounts/gateway/accounts"
)

func init() {
	caddy.RegisterModule(UploadLimitHandler{})
	httpcaddyfile.RegisterHandlerDirective("accounts_upload_limit", parseUploadLimit)
}

// UploadLimitHandler refuses a request whose body is larger than the
// document service's current upload limit, max_pdf_size_mb of the
// settings file documents.json (GET and PATCH
// /api/settings/documents/limits) in MiB, with 413
// {"detail": "Upload exceeds the maximum size of <max_pdf_size_mb> MB"},
// before any of the body goes further:
//
//   - A declared Content-Length is judged at once, without reading the
//     body; a client that sent "Expect: 100-continue" gets the 413 instead
//     of "100 Continue" and never sends the body (the connection is then
//     closed: see refuseUnread).
//   - A body of unknown length (chunked, or HTTP/2 and HTTP/3 without
//     Content-Length) is first spooled to a temporary file in the system's
//     temp directory ($TMPDIR, else /tmp), as nginx does; the file is
//     unlinked at once and closed when the request is done. A body within
//     the limit then goes on from that file, with its Content-Length set.
//     The temp directory needs room for the concurrent uploads.
//
// A body of exactly the limit passes. The limit is read on every request
// that has a body (one stat(2) of documents.json while the file is
// unchanged), so a change applies to the next request without a reload.
// Requests without a body pass untouched. A corrupt documents.json refuses
// uploads with the settings API's 503.
//
// Put it after accounts_auth, so that only signed-in users can make the
// gateway spool, and before reverse_proxy.
type UploadLimitHandler struct {
	service *accounts.Service
}

// CaddyModule returns the Caddy module information.
func (UploadLimitHandler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.accounts_upload_limit",
		New: func() caddy.Module { return new(UploadLimitHandler) },
	}
}

// Provision gets the account service from the accounts app.
func (h *UploadLimitHandler) Provision(ctx caddy.Context) error {
	app, err := appFrom(ctx)
	if err != nil {
		return err
	}
	h.service = app.Service()
	return nil
}

// ServeHTTP passes the request on to next unless its body is over the
// limit.
func (h *UploadLimitHandler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	limited, err := h.service.Settings().LimitUpload(r)
	if err != nil {
		refuseUnread(h.service, w, r, err)
		return nil
	}
	if limited != r {
		// The spooled file: the proxy closes a body it has sent, not
		// one it never got to send (upstream down).
		defer limited.Body.Close()
	}
	return next.ServeHTTP(w, limited)
}

// expectsContinue reports whether r asks for "100 Continue" before its
// body.
func expectsContinue(r *http.Request) bool {
	return strings.EqualFold(strings.TrimSpace(r.Header.Get("Expect")), "100-continue")
}

// parseUploadLimit parses the accounts_upload_limit directive, which takes
// no arguments:
//
//	accounts_upload_limit [<matcher>]
func parseUploadLimit(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	if err := noArguments(h); err != nil {
		return nil, err
	}
	return new(UploadLimitHandler), nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*UploadLimitHandler)(nil)
	_ caddyhttp.MiddlewareHandler = (*UploadLimitHandler)(nil)
)
