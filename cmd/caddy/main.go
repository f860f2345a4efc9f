// Command caddy is Caddy with its standard modules and the accounts
// modules: what `xcaddy build --with github.com/caddyaccounts/gateway=.`
// produces.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	// Caddy's standard modules.
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	// The accounts app, its HTTP handlers and subcommands.
	_ "github.com/caddyaccounts/gateway/caddymodule"
)

func main() {
	caddycmd.Main()
}
