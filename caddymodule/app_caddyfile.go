package caddymodule

import (
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"

	"github.com/caddyaccounts/gateway/accounts"
	"github.com/caddyaccounts/gateway/settings"
)

func init() {
	httpcaddyfile.RegisterGlobalOption("accounts", parseGlobalOption)
}

// parseGlobalOption parses the accounts global option:
//
//	accounts {
//		database_url     <url>
//		max_conns        <n>
//		private_key      <pem>
//		private_key_file <path>
//		public_key       <pem>
//		public_key_file  <path>
//		verify_key_file  <path>   (repeatable: old keys of a rotation)
//		token_lifetime   <duration>
//		issuer           <iss>
//		audience         <aud>
//		accept_tokens_without_issuer
//		leeway           <duration>
//		argon2           <memory_kib> <iterations> <parallelism>
//		hash_concurrency <n>
//		settings_dir     <path>
//		ai_test_allow    <cidr>...   (repeatable)
//		skip_migrations
//		rate_limit       off | {
//			ip_requests    <n> | off [<window>]
//			login_failures <n> | off [<window>]
//			lockout        <first> [<max>]
//		}
//		sessions {
//			access_cookie_name     <name>
//			refresh_cookie_name    <name>
//			cookie_domain          <domain>
//			trusted_origin         <origin>...
//			access_cookie_lifetime <duration>
//			idle_timeout           <duration>
//			max_lifetime           <duration>
//			refresh_reuse_grace    <duration> | off
//			refresh_token_in_body
//			omit_token_from_body
//		}
//		mail { ... }   (see unmarshalMail)
//		email_verification optional | required
//	}
//
// rate_limit sets the limits of /api/auth/*: ip_requests per client
// address per window (default 60 per 1m); login_failures per account name
// per window (default 10 per 15m), after which that name is locked for
// lockout (default 5m), twice as long on each further lock within a day,
// at most max (default 1h). "off" turns a limit, or with "rate_limit off"
// both, off. An option left out keeps its default.
//
// ai_test_allow names networks (CIDR prefixes or single addresses) that
// the AI provider connection test may connect to although its policy
// refuses them (loopback, link-local, ...), such as 127.0.0.1/32 for a
// model server on the gateway's host.
//
// sessions sets the refresh sessions and browser cookies (see Sessions):
// the cookies' names (default access_token, refresh_token) and Domain
// (default none: host-only), origins trusted for cross-origin cookie
// requests (default none), the access cookie's token lifetime (default
// 15m, also that of refreshed tokens), the sessions' idle timeout
// (default 7d) and maximum lifetime (default 30d), the grace for reusing
// a just-retired refresh token (default 10s; off revokes on any reuse),
// refresh_token_in_body (also return the refresh token in JSON bodies)
// and omit_token_from_body (no access_token in bodies that set cookies).
func parseGlobalOption(d *caddyfile.Dispenser, _ any) (any, error) {
	app := new(App)
	if err := app.UnmarshalCaddyfile(d); err != nil {
		return nil, err
	}
	return httpcaddyfile.App{Name: "accounts", Value: caddyconfig.JSON(app, nil)}, nil
}

// UnmarshalCaddyfile sets up the app from Caddyfile tokens.
func (a *App) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the option name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		opt := d.Val()
		var err error
		switch opt {
		case "database_url":
			err = oneString(d, &a.DatabaseURL)
		case "private_key":
			err = oneString(d, &a.PrivateKey)
		case "private_key_file":
			err = oneString(d, &a.PrivateKeyFile)
		case "public_key":
			err = oneString(d, &a.PublicKey)
		case "public_key_file":
			err = oneString(d, &a.PublicKeyFile)
		case "verify_key_file":
			var f string
			err = oneString(d, &f)
			a.VerifyKeyFiles = append(a.VerifyKeyFiles, f)
		case "settings_dir":
			err = oneString(d, &a.SettingsDir)
		case "ai_test_allow":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			for _, arg := range args {
				if _, err := settings.ParseAITestNetwork(arg); err != nil {
					return d.Err(err.Error())
				}
			}
			a.AITestAllow = append(a.AITestAllow, args...)
		case "issuer":
			err = oneString(d, &a.Issuer)
		case "audience":
			err = oneString(d, &a.Audience)
		case "token_lifetime":
			err = oneDuration(d, &a.TokenLifetime, false)
		case "leeway":
			err = oneDuration(d, &a.Leeway, false)
		case "max_conns":
			var n int
			err = oneInt(d, &n)
			a.MaxConns = int32(n)
		case "hash_concurrency":
			err = oneInt(d, &a.HashConcurrency)
		case "argon2":
			args := d.RemainingArgs()
			if len(args) != 3 {
				return d.ArgErr()
			}
			var n [3]uint64
			for i, s := range args {
				if n[i], err = strconv.ParseUint(s, 10, 32); err != nil {
					return d.Errf("argon2: %v", err)
				}
			}
			if n[2] > 255 {
				return d.Errf("argon2: parallelism %d is too large", n[2])
			}
			a.Argon2 = &accounts.Argon2Params{MemoryKiB: uint32(n[0]), Iterations: uint32(n[1]), Parallelism: uint8(n[2])}
		case "skip_migrations":
			if d.NextArg() {
				return d.ArgErr()
			}
			a.SkipMigrations = true
		case "accept_tokens_without_issuer":
			if d.NextArg() {
				return d.ArgErr()
			}
			a.AcceptTokensWithoutIssuer = true
		case "rate_limit":
			err = a.unmarshalRateLimit(d)
		case "sessions":
			err = a.unmarshalSessions(d)
		case "mail":
			err = a.unmarshalMail(d)
		case "email_verification":
			err = oneString(d, &a.EmailVerification)
		default:
			return d.Errf("unknown accounts option %q", opt)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// unmarshalRateLimit parses the rate_limit block of the accounts option.
func (a *App) unmarshalRateLimit(d *caddyfile.Dispenser) error {
	if a.RateLimit == nil {
		a.RateLimit = new(RateLimit)
	}
	rl := a.RateLimit
	if d.NextArg() {
		if d.Val() != "off" || d.NextArg() {
			return d.ArgErr()
		}
		rl.IPRequests, rl.LoginFailures = -1, -1
		if d.NextBlock(d.Nesting()) {
			return d.Err("rate_limit off takes no block")
		}
		return nil
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		args := d.RemainingArgs()
		switch opt {
		case "ip_requests", "login_failures":
			if len(args) < 1 || len(args) > 2 {
				return d.ArgErr()
			}
			n := -1
			if args[0] != "off" {
				var err error
				if n, err = strconv.Atoi(args[0]); err != nil || n < 0 {
					return d.Errf("%s: want a non-negative integer or off, got %q", opt, args[0])
				}
			}
			var window caddy.Duration
			if len(args) == 2 {
				if n < 0 {
					return d.Errf("%s off takes no window", opt)
				}
				var err error
				if window, err = parseDuration(d, args[1], true); err != nil {
					return err
				}
			}
			if opt == "ip_requests" {
				rl.IPRequests, rl.IPWindow = n, window
			} else {
				rl.LoginFailures, rl.LoginWindow = n, window
			}
		case "lockout":
			if len(args) < 1 || len(args) > 2 {
				return d.ArgErr()
			}
			var err error
			if rl.Lockout, err = parseDuration(d, args[0], true); err != nil {
				return err
			}
			if len(args) == 2 {
				if rl.LockoutMax, err = parseDuration(d, args[1], true); err != nil {
					return err
				}
			}
		default:
			return d.Errf("unknown rate_limit option %q", opt)
		}
	}
	return nil
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
			err = oneDuration(d, &s.AccessCookieLifetime, true)
		case "idle_timeout":
			err = oneDuration(d, &s.IdleTimeout, true)
		case "max_lifetime":
			err = oneDuration(d, &s.MaxLifetime, true)
		case "refresh_reuse_grace":
			var v string
			if err = oneString(d, &v); err != nil {
				break
			}
			if v == "off" {
				s.RefreshReuseGrace = -1
				break
			}
			if s.RefreshReuseGrace, err = parseDuration(d, v, true); err != nil {
				return d.Errf("refresh_reuse_grace: want a positive duration or off, got %q", v)
			}
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

func oneString(d *caddyfile.Dispenser, dst *string) error {
	if !d.NextArg() {
		return d.ArgErr()
	}
	*dst = d.Val()
	if d.NextArg() {
		return d.ArgErr()
	}
	return nil
}

func oneInt(d *caddyfile.Dispenser, dst *int) error {
	var s string
	if err := oneString(d, &s); err != nil {
		return err
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return d.Errf("%s: want a non-negative integer, got %q", d.Val(), s)
	}
	*dst = n
	return nil
}

// parseDuration parses s as a Caddy duration ("90s", "1h30m", "7d");
// with positive, zero and negative ones are refused.
func parseDuration(d *caddyfile.Dispenser, s string, positive bool) (caddy.Duration, error) {
	dur, err := caddy.ParseDuration(s)
	if err != nil {
		return 0, d.Errf("bad duration %q: %v", s, err)
	}
	if positive && dur <= 0 {
		return 0, d.Errf("duration %q must be positive", s)
	}
	return caddy.Duration(dur), nil
}

// oneDuration reads an option's one argument as a duration
// (parseDuration).
func oneDuration(d *caddyfile.Dispenser, dst *caddy.Duration, positive bool) error {
	var s string
	if err := oneString(d, &s); err != nil {
		return err
	}
	dur, err := parseDuration(d, s, positive)
	if err != nil {
		return err
	}
	*dst = dur
	return nil
}
