// What the HTTP handlers of this package share: their order among
// Caddy's directives, the accounts app, the client's address, and the
// refusal of a request whose body is still unread.

package caddymodule

import (
	"fmt"
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddyaccounts/gateway/accounts"
)

// The order of the directives in a route, among Caddy's own (Caddy only
// orders plugins relative to its standard directives; two plugins placed
// before the same one keep the order of these calls):
//
//   - accounts_strip_identity first of all: nothing may see the client's
//     X-User-Id; then accounts_security_headers, so that every answer
//     carries them and Caddy's header directive, later, can change them;
//   - accounts_auth right after forward_auth, that is right before
//     request_header; accounts_upload_limit after it (before
//     request_header too), so that only signed-in users can make the
//     gateway spool, and both before reverse_proxy;
//   - accounts_api, then accounts_ui, before reverse_proxy (both answer
//     every request they get, like file_server).
func init() {
	httpcaddyfile.RegisterDirectiveOrder("accounts_strip_identity", httpcaddyfile.Before, "tracing")
	httpcaddyfile.RegisterDirectiveOrder("accounts_security_headers", httpcaddyfile.Before, "tracing")
	httpcaddyfile.RegisterDirectiveOrder("accounts_auth", httpcaddyfile.After, "forward_auth")
	httpcaddyfile.RegisterDirectiveOrder("accounts_upload_limit", httpcaddyfile.Before, "request_header")
	httpcaddyfile.RegisterDirectiveOrder("accounts_api", httpcaddyfile.Before, "reverse_proxy")
	httpcaddyfile.RegisterDirectiveOrder("accounts_ui", httpcaddyfile.Before, "reverse_proxy")
}

// appFrom returns the accounts app of the running config, provisioning
// it from the environment if the config has no accounts block.
func appFrom(ctx caddy.Context) (*App, error) {
	app, err := ctx.App("accounts")
	if err != nil {
		return nil, fmt.Errorf("loading accounts app: %w", err)
	}
	return app.(*App), nil
}

// withClientIP passes on the client IP that Caddy determined, honouring
// the server's trusted_proxies, to the accounts package.
func withClientIP(r *http.Request) *http.Request {
	ip, _ := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string)
	if ip == "" {
		return r
	}
	return r.WithContext(accounts.WithClientIP(r.Context(), ip))
}

// refuseUnread answers err to a request whose body has not been read,
// or not all of it: accounts_auth's 401/403 and accounts_upload_limit's
// 413.
//
// A client that sent "Expect: 100-continue" with a declared length is
// waiting for "100 Continue" and has not sent its body; on HTTP/1.1 the
// connection is closed after the answer ("Connection: close"), so that
// neither side waits for that body. net/http would otherwise try to drain
// it before answering: Caddy's read idle timeout wraps the request body,
// which hides the unanswered expectation from net/http, and both sides
// would stall until the client gives up waiting (curl and Go after 1 s,
// then sending the body anyway) or the idle timeout ends the drain.
//
// Otherwise the client is sending its body, and net/http reads what is
// left of it, up to 256 KiB, then closes the connection if more remains,
// lingering long enough for the client to read the answer (closing at
// once could reset the connection under the answer).
func refuseUnread(svc *accounts.Service, w http.ResponseWriter, r *http.Request, err error) {
	if r.ProtoMajor == 1 && r.ContentLength > 0 && expectsContinue(r) {
		w.Header().Set("Connection", "close")
	}
	svc.WriteError(w, r, err)
}

// noArguments consumes a directive that takes no arguments and no block.
func noArguments(h httpcaddyfile.Helper) error {
	h.Next()
	if h.NextArg() || h.NextBlock(0) {
		return h.ArgErr()
	}
	return nil
}
