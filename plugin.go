// Package gateway is what `xcaddy build --with github.com/caddyaccounts/gateway`
// imports: it registers the accounts app, its HTTP handlers, Caddyfile
// directives and subcommands with Caddy. The code lives in caddymodule
// (the Caddy glue) and accounts (the domain).
package gateway

import (
	// The accounts Caddy modules.
	_ "github.com/caddyaccounts/gateway/caddymodule"
)
