package caddymodule

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddyaccounts/gateway/accounts"
)

func TestSessionsOption(t *testing.T) {
	app := new(App)
	err := app.UnmarshalCaddyfile(caddyfile.NewTestDispenser(`accounts {
		database_url postgres://u@h/db
		sessions {
			access_cookie_name     __Host-at
			refresh_cookie_name    rt
			cookie_domain          example.com
			trusted_origin         https://app.example.com https://admin.example.com
			trusted_origin         https://other.example.com
			access_cookie_lifetime 5m
			idle_timeout           3d
			max_lifetime           14d
			refresh_reuse_grace    5s
			refresh_token_in_body
			omit_token_from_body
		}
		issuer example
	}`))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(app.Sessions)
	want := `{"access_cookie_name":"__Host-at","refresh_cookie_name":"rt","cookie_domain":"example.com",` +
		`"trusted_origins":["https://app.example.com","https://admin.example.com","https://other.example.com"],` +
		`"access_cookie_lifetime":300000000000,"idle_timeout":259200000000000,"max_lifetime":1209600000000000,` +
		`"refresh_reuse_grace":5000000000,"refresh_token_in_body":true,"omit_token_from_body":true}`
	if string(got) != want {
		t.Fatalf("JSON\n%s\nwant\n%s", got, want)
	}
	if app.Issuer != "example" {
		t.Fatal("the option after the sessions block was lost")
	}
	cfg := app.serviceConfig().Sessions
	wantCfg := accounts.SessionConfig{
		AccessCookieName: "__Host-at", RefreshCookieName: "rt", CookieDomain: "example.com",
		TrustedOrigins:       []string{"https://app.example.com", "https://admin.example.com", "https://other.example.com"},
		AccessCookieLifetime: 5 * time.Minute, IdleTimeout: 72 * time.Hour, MaxLifetime: 14 * 24 * time.Hour,
		ReuseGrace: 5 * time.Second, RefreshTokenInBody: true, OmitTokenFromBody: true,
	}
	if !reflect.DeepEqual(cfg, wantCfg) {
		t.Fatalf("service config %+v\nwant %+v", cfg, wantCfg)
	}

	off := new(App)
	if err := off.UnmarshalCaddyfile(caddyfile.NewTestDispenser("accounts {\n sessions {\n refresh_reuse_grace off\n }\n}")); err != nil {
		t.Fatal(err)
	}
	if off.serviceConfig().Sessions.ReuseGrace >= 0 {
		t.Fatalf("refresh_reuse_grace off = %v, want negative", off.Sessions.RefreshReuseGrace)
	}
	if def := new(App).serviceConfig().Sessions; !reflect.DeepEqual(def, accounts.SessionConfig{}) {
		t.Fatalf("no sessions block: %+v, want the zero config (defaults)", def)
	}
}

func TestSessionsOptionErrors(t *testing.T) {
	for input, want := range map[string]string{
		"sessions extra {\n}":                         "wrong argument count",
		"sessions {\n nonsense 1\n}":                  `unknown sessions option "nonsense"`,
		"sessions {\n access_cookie_name\n}":          "wrong argument count",
		"sessions {\n cookie_domain a b\n}":           "wrong argument count",
		"sessions {\n trusted_origin\n}":              "wrong argument count",
		"sessions {\n idle_timeout soon\n}":           `bad duration "soon"`,
		"sessions {\n max_lifetime 0s\n}":             "want a positive duration",
		"sessions {\n access_cookie_lifetime -1m\n}":  "want a positive duration",
		"sessions {\n refresh_reuse_grace never\n}":   "want a positive duration or off",
		"sessions {\n refresh_reuse_grace 0\n}":       "want a positive duration or off",
		"sessions {\n refresh_token_in_body yes\n}":   "wrong argument count",
		"sessions {\n omit_token_from_body please\n}": "wrong argument count",
	} {
		err := new(App).UnmarshalCaddyfile(caddyfile.NewTestDispenser("accounts {\n" + input + "\n}"))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: err = %v, want it to mention %q", input, err, want)
		}
	}
}
