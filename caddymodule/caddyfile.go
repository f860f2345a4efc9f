package caddymodule

import (
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddyaccounts/gateway/accounts"
)

func init() {
	httpcaddyfile.RegisterGlobalOption("accounts", parseGlobalOption)
	httpcaddyfile.RegisterHandlerDirective("accounts_api", parseAPIHandler)
	httpcaddyfile.RegisterDirectiveOrder("accounts_api", httpcaddyfile.Before, "reverse_proxy")
	httpcaddyfile.RegisterHandlerDirective("accounts_auth", parseAuthHandler)
	httpcaddyfile.RegisterDirectiveOrder("accounts_auth", httpcaddyfile.After, "forward_auth")
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
//		accept_tokens_without_issuer
//		leeway           <duration>
//		argon2           <memory_kib> <iterations> <parallelism>
//		hash_concurrency <n>
//		settings_dir     <path>
//		skip_migrations
//	}
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
		case "issuer":
			err = oneString(d, &a.Issuer)
		case "token_lifetime":
			err = oneDuration(d, &a.TokenLifetime)
		case "leeway":
			err = oneDuration(d, &a.Leeway)
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
		default:
			return d.Errf("unknown accounts option %q", opt)
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

func oneDuration(d *caddyfile.Dispenser, dst *caddy.Duration) error {
	var s string
	if err := oneString(d, &s); err != nil {
		return err
	}
	dur, err := caddy.ParseDuration(s)
	if err != nil {
		return d.Errf("bad duration %q: %v", s, err)
	}
	*dst = caddy.Duration(dur)
	return nil
}

// parseAPIHandler parses the accounts_api directive, which takes no
// arguments:
//
//	accounts_api
func parseAPIHandler(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	h.Next()
	if h.NextArg() || h.NextBlock(0) {
		return nil, h.ArgErr()
	}
	return new(APIHandler), nil
}

// parseAuthHandler parses the accounts_auth directive:
//
//	accounts_auth [<matcher>] {
//		require_role <role>
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
		default:
			return nil, h.Errf("unknown accounts_auth option %q", h.Val())
		}
	}
	return a, nil
}
