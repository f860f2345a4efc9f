package caddymodule

import (
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddyaccounts/gateway/accounts"
)

// Sessions holds the options of refresh sessions and of the browser
// cookies (see accounts.SessionConfig). Zero values mean the defaults.
//
// Login sets an access-token cookie (Path=/, HttpOnly, Secure,
// SameSite=Lax) and a refresh-token cookie (Path=/api/auth, HttpOnly,
// Secure, SameSite=Strict) besides its JSON body; POST /api/auth/refresh
// exchanges the refresh token for new ones (rotation with reuse
// detection); cookie-authenticated unsafe requests must be same-origin.
type Sessions struct {
	// Name of the access-token cookie. Default: access_token.
	AccessCookieName string `json:"access_cookie_name,omitempty"`
	// Name of the refresh-token cookie. Default: refresh_token.
	RefreshCookieName string `json:"refresh_cookie_name,omitempty"`
	// Domain attribute of both cookies. Default: none (host-only
	// cookies, the safest).
	CookieDomain string `json:"cookie_domain,omitempty"`
	// Origins (https://app.example.com) whose cross-origin requests are
	// accepted with cookies, for a frontend on another origin sharing
	// the cookies through cookie_domain. Default: none.
	TrustedOrigins []string `json:"trusted_origins,omitempty"`
	// Lifetime of the access token in the cookie and of every access
	// token issued by /api/auth/refresh. The login's JSON body keeps
	// token_lifetime. Default: 15m.
	AccessCookieLifetime caddy.Duration `json:"access_cookie_lifetime,omitempty"`
	// A session with no login or refresh for this long ends. Default: 7d.
	IdleTimeout caddy.Duration `json:"idle_timeout,omitempty"`
	// A session ends this long after its login, however active.
	// Default: 30d.
	MaxLifetime caddy.Duration `json:"max_lifetime,omitempty"`
	// How long a just-retired refresh token may still be exchanged, for
	// tabs racing with the same token; after it, reusing a retired token
	// revokes the whole session. Negative turns the grace off.
	// Default: 10s.
	RefreshReuseGrace caddy.Duration `json:"refresh_reuse_grace,omitempty"`
	// Also put refresh_token in the JSON body of the login and of a
	// cookie refresh (a refresh with a body token always returns one).
	// Default: false (the login body keeps its documented shape).
	RefreshTokenInBody bool `json:"refresh_token_in_body,omitempty"`
	// Leave access_token out of the JSON body of the login and of a
	// cookie refresh when the response sets the cookies: for
	// deployments whose only clients are browsers. Bearer clients then
	// cannot log in. Default: false.
	OmitTokenFromBody bool `json:"omit_token_from_body,omitempty"`
}

func (s *Sessions) config() accounts.SessionConfig {
	return accounts.SessionConfig{
		AccessCookieName:     s.AccessCookieName,
		RefreshCookieName:    s.RefreshCookieName,
		CookieDomain:         s.CookieDomain,
		TrustedOrigins:       s.TrustedOrigins,
		AccessCookieLifetime: time.Duration(s.AccessCookieLifetime),
		IdleTimeout:          time.Duration(s.IdleTimeout),
		MaxLifetime:          time.Duration(s.MaxLifetime),
		ReuseGrace:           time.Duration(s.RefreshReuseGrace),
		RefreshTokenInBody:   s.RefreshTokenInBody,
		OmitTokenFromBody:    s.OmitTokenFromBody,
	}
}

// unmarshalSessions parses the sessions block of the accounts option:
//
//	sessions {
//		access_cookie_name     <name>
//		refresh_cookie_name    <name>
//		cookie_domain          <domain>
//		trusted_origin         <origin>...   (repeatable)
//		access_cookie_lifetime <duration>
//		idle_timeout           <duration>
//		max_lifetime           <duration>
//		refresh_reuse_grace    <duration> | off
//		refresh_token_in_body
//		omit_token_from_body
//	}
func (a *App) unmarshalSessions(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	if a.Sessions == nil {
		a.Sessions = new(Sessions)
	}
	s := a.Sessions
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		var err error
		switch opt {
		case "access_cookie_name":
			err = oneString(d, &s.AccessCookieName)
		case "refresh_cookie_name":
			err = oneString(d, &s.RefreshCookieName)
		case "cookie_domain":
			err = oneString(d, &s.CookieDomain)
		case "trusted_origin":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			s.TrustedOrigins = append(s.TrustedOrigins, args...)
		case "access_cookie_lifetime":
			err = positiveDuration(d, &s.AccessCookieLifetime)
		case "idle_timeout":
			err = positiveDuration(d, &s.IdleTimeout)
		case "max_lifetime":
			err = positiveDuration(d, &s.MaxLifetime)
		case "refresh_reuse_grace":
			var v string
			if err = oneString(d, &v); err != nil {
				break
			}
			if v == "off" {
				s.RefreshReuseGrace = -1
				break
			}
			dur, perr := caddy.ParseDuration(v)
			if perr != nil || dur <= 0 {
				return d.Errf("refresh_reuse_grace: want a positive duration or off, got %q", v)
			}
			s.RefreshReuseGrace = caddy.Duration(dur)
		case "refresh_token_in_body", "omit_token_from_body":
			if d.NextArg() {
				return d.ArgErr()
			}
			if opt == "refresh_token_in_body" {
				s.RefreshTokenInBody = true
			} else {
				s.OmitTokenFromBody = true
			}
		default:
			return d.Errf("unknown sessions option %q", opt)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// positiveDuration reads one duration argument greater than zero.
func positiveDuration(d *caddyfile.Dispenser, dst *caddy.Duration) error {
	if err := oneDuration(d, dst); err != nil {
		return err
	}
	if *dst <= 0 {
		return d.Errf("%s: want a positive duration", d.Val())
	}
	return nil
}
