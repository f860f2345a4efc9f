package caddymodule

import (
	"fmt"
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddyaccounts/gateway/accounts"
	"github.com/caddyaccounts/gateway/edge"
)

func init() {
	caddy.RegisterModule(APIHandler{})
	caddy.RegisterModule(AuthHandler{})
	caddy.RegisterModule(StripIdentityHandler{})
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

// withClientIP passes on the client IP that Caddy determined, honouring
// the server's trusted_proxies, to the accounts package.
func withClientIP(r *http.Request) *http.Request {
	ip, _ := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string)
	if ip == "" {
		return r
	}
	return r.WithContext(accounts.WithClientIP(r.Context(), ip))
}

// AuthHandler lets a request through only with a valid access token of
// an active user, sealed for the upstream (package edge): X-User-Id set
// to the user's UUID as the only identity header, whatever the client
// tried (its own spellings, Connection tokens, trailers, an h2c upgrade,
// the gateway's session cookies, a second Authorization header, which is
// refused with 400). It fills the placeholders {http.auth.user.id},
// {http.auth.user.email} and {http.auth.user.role}. Refusals are the
// API's JSON 400, 401 and 403.
type AuthHandler struct {
	// Only let through users with this role ("admin"); empty lets every
	// active user through.
	RequireRole string `json:"require_role,omitempty"`
	// Upgrades are the protocols a client may switch the connection to
	// through the proxy (the Upgrade header, any letter case). Default:
	// websocket. h2c is never allowed: after it the client would speak
	// HTTP/2 to the upstream directly. Any other upgrade is removed and
	// the request goes on as an ordinary one.
	Upgrades []string `json:"upgrades,omitempty"`
	// UpgradesOff forwards no upgrade at all.
	UpgradesOff bool `json:"upgrades_off,omitempty"`
	// StripAuthorization removes the verified Authorization header from
	// the request instead of forwarding it (the old backend forwarded it,
	// so that is the default). An Authorization header that was not what
	// authenticated the request is never forwarded, and neither are the
	// gateway's session cookies.
	StripAuthorization bool `json:"strip_authorization,omitempty"`

	service *accounts.Service
	app     *App
	policy  edge.Policy
}

// CaddyModule returns the Caddy module information.
func (AuthHandler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.accounts_auth",
		New: func() caddy.Module { return new(AuthHandler) },
	}
}

// Provision gets the account service from the accounts app.
func (h *AuthHandler) Provision(ctx caddy.Context) error {
	app, err := appFrom(ctx)
	if err != nil {
		return err
	}
	h.service = app.Service()
	h.app = app
	h.policy = edge.Policy{
		Upgrades:          h.Upgrades,
		KeepAuthorization: !h.StripAuthorization,
		Cookies:           h.service.SessionCookieNames(),
	}
	switch {
	case h.UpgradesOff:
		h.policy.Upgrades = nil
	case len(h.Upgrades) == 0:
		h.policy.Upgrades = edge.DefaultUpgrades
	}
	return nil
}

// Validate checks the configured role and upgrades.
func (h *AuthHandler) Validate() error {
	switch h.RequireRole {
	case "", accounts.RoleUser, accounts.RoleAdmin:
	default:
		return fmt.Errorf("accounts_auth: unknown role %q (want %q or %q)", h.RequireRole, accounts.RoleUser, accounts.RoleAdmin)
	}
	if h.UpgradesOff && len(h.Upgrades) > 0 {
		return fmt.Errorf("accounts_auth: upgrades_off and upgrades %q are exclusive", h.Upgrades)
	}
	p := edge.Policy{Upgrades: h.Upgrades}
	if err := p.Validate(); err != nil {
		return fmt.Errorf("accounts_auth: %w", err)
	}
	return nil
}

// ServeHTTP authenticates the request and passes it on to next.
func (h *AuthHandler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	p, err := h.authenticate(r)
	if err != nil {
		refuseUnread(h.service, w, r, err)
		return nil
	}
	h.policy.Seal(r, p.User.ID, !p.ViaCookie)
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	repl.Map(userPlaceholders(p.User))
	return next.ServeHTTP(w, r)
}

// userPlaceholders answers {http.auth.user.id}, {http.auth.user.email}
// and {http.auth.user.role} (Caddy's names, also read by its access log)
// only when one is asked for: three repl.Set calls would box three
// strings on every request.
func userPlaceholders(u *accounts.User) caddy.ReplacerFunc {
	return func(key string) (any, bool) {
		switch key {
		case "http.auth.user.id":
			return u.ID, true
		case "http.auth.user.email":
			return u.Email, true
		case "http.auth.user.role":
			return u.Role, true
		}
		return nil, false
	}
}

// authenticate checks the request's token and the user's role. The
// database is used only here, not while next serves the request.
func (h *AuthHandler) authenticate(r *http.Request) (*accounts.Principal, error) {
	h.app.enter()
	defer h.app.leave()
	return h.service.Authorize(r, h.RequireRole)
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

// Interface guards
var (
	_ caddy.Provisioner           = (*APIHandler)(nil)
	_ caddyhttp.MiddlewareHandler = (*APIHandler)(nil)
	_ caddy.Provisioner           = (*AuthHandler)(nil)
	_ caddy.Validator             = (*AuthHandler)(nil)
	_ caddyhttp.MiddlewareHandler = (*AuthHandler)(nil)
	_ caddyhttp.MiddlewareHandler = (*StripIdentityHandler)(nil)
)
