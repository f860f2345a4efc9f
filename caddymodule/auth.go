package caddymodule

import (
	"fmt"
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddyaccounts/gateway/accounts"
	"github.com/caddyaccounts/gateway/edge"
)

func init() {
	caddy.RegisterModule(AuthHandler{})
	httpcaddyfile.RegisterHandlerDirective("accounts_auth", parseAuthHandler)
}

// AuthHandler lets a request through only with a valid access token of
// an active user (who may use the required app, if any), sealed for the
// upstream (package edge): X-User-Id set to the user's UUID and
// X-User-Groups to the ids of the user's groups as the only identity
// headers, whatever the client
// tried (its own spellings, Connection tokens, trailers, an h2c upgrade,
// the gateway's session cookies, a second Authorization header, which is
// refused with 400). It fills the placeholders {http.auth.user.id},
// {http.auth.user.email} and {http.auth.user.role}. Refusals are the
// API's JSON 400, 401 and 403.
type AuthHandler struct {
	// Only let through users with this role ("admin"); empty lets every
	// active user through.
	RequireRole string `json:"require_role,omitempty"`
	// Only let through users who may use this app (its key, such as
	// "documents"): admins, and users it is open to or granted to,
	// directly or through a group. Empty checks no app.
	RequireApp string `json:"require_app,omitempty"`
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
	if h.RequireApp != "" {
		h.service.RequireApp(h.RequireApp)
	}
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
	if h.RequireApp != "" && !accounts.IsAppKey(h.RequireApp) {
		return fmt.Errorf("accounts_auth: require_app %q is not an app key (lower-case letters, digits, _ and -, starting with a letter)", h.RequireApp)
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
	h.policy.Seal(r, p.User.ID, p.User.GroupsHeader(), !p.ViaCookie)
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

// authenticate checks the request's token and the user's role and app. The
// database is used only here, not while next serves the request.
func (h *AuthHandler) authenticate(r *http.Request) (*accounts.Principal, error) {
	h.app.enter()
	defer h.app.leave()
	return h.service.Authorize(r, accounts.Need{Role: h.RequireRole, App: h.RequireApp})
}

// parseAuthHandler parses the accounts_auth directive:
//
//	accounts_auth [<matcher>] {
//		require_role <role>
//		require_app  <key>
//		upgrades <protocol>... | off
//		strip_authorization
//	}
func parseAuthHandler(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	a := new(AuthHandler)
	h.Next()
	if h.NextArg() {
		return nil, h.ArgErr()
	}
	for h.NextBlock(0) {
		switch h.Val() {
		case "require_role":
			if err := oneString(h.Dispenser, &a.RequireRole); err != nil {
				return nil, err
			}
		case "require_app":
			if err := oneString(h.Dispenser, &a.RequireApp); err != nil {
				return nil, err
			}
		case "upgrades":
			args := h.RemainingArgs()
			switch {
			case len(args) == 0:
				return nil, h.ArgErr()
			case len(args) == 1 && args[0] == "off":
				a.UpgradesOff = true
			default:
				a.Upgrades = args
			}
		case "strip_authorization":
			if h.NextArg() {
				return nil, h.ArgErr()
			}
			a.StripAuthorization = true
		default:
			return nil, h.Errf("unknown accounts_auth option %q", h.Val())
		}
	}
	return a, nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*AuthHandler)(nil)
	_ caddy.Validator             = (*AuthHandler)(nil)
	_ caddyhttp.MiddlewareHandler = (*AuthHandler)(nil)
)
