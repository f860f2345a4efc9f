package caddymodule

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyaccounts/gateway/accounts"
	"github.com/caddyaccounts/gateway/internal/layout"
	"github.com/caddyaccounts/gateway/ui"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	// The standard modules the project's Caddyfile uses.
	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

func TestGlobalOption(t *testing.T) {
	d := caddyfile.NewTestDispenser(`accounts {
		database_url postgres://u@h/db
		max_conns 12
		private_key_file /keys/private.pem
		public_key_file /keys/public.pem
		verify_key_file /keys/old1.pem
		verify_key_file /keys/old2.pem
		token_lifetime 2h
		issuer example
		audience docs.example
		accept_tokens_without_issuer
		leeway 10s
		argon2 65536 3 2
		hash_concurrency 4
		settings_dir /settings
		ai_test_allow 127.0.0.1/32 ::1
		ai_test_allow 169.254.0.0/16
		skip_migrations
	}`)
	app := new(App)
	if err := app.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(app)
	want := `{"database_url":"postgres://u@h/db","max_conns":12,"private_key_file":"/keys/private.pem",` +
		`"public_key_file":"/keys/public.pem","verify_key_files":["/keys/old1.pem","/keys/old2.pem"],` +
		`"token_lifetime":7200000000000,"issuer":"example","audience":"docs.example","accept_tokens_without_issuer":true,"leeway":10000000000,` +
		`"argon2":{"memory_kib":65536,"iterations":3,"parallelism":2},"hash_concurrency":4,` +
		`"settings_dir":"/settings","ai_test_allow":["127.0.0.1/32","::1","169.254.0.0/16"],"skip_migrations":true}`
	if string(got) != want {
		t.Fatalf("JSON\n%s\nwant\n%s", got, want)
	}
}

func TestGlobalOptionErrors(t *testing.T) {
	for input, want := range map[string]string{
		"accounts extra":                             "wrong argument count",
		"accounts {\n nonsense 1\n}":                 `unknown accounts option "nonsense"`,
		"accounts {\n database_url\n}":               "wrong argument count",
		"accounts {\n database_url a b\n}":           "wrong argument count",
		"accounts {\n audience\n}":                   "wrong argument count",
		"accounts {\n token_lifetime soon\n}":        `bad duration "soon"`,
		"accounts {\n max_conns -1\n}":               "want a non-negative integer",
		"accounts {\n argon2 1 2\n}":                 "wrong argument count",
		"accounts {\n argon2 1 2 300\n}":             "parallelism 300 is too large",
		"accounts {\n skip_migrations yes\n}":        "wrong argument count",
		"accounts {\n hash_concurrency many\n}":      "want a non-negative integer",
		"accounts {\n ai_test_allow\n}":              "wrong argument count",
		"accounts {\n ai_test_allow 127.0.0.1/33\n}": `ai_test_allow: "127.0.0.1/33" is not a CIDR network`,
		"accounts {\n ai_test_allow localhost\n}":    `ai_test_allow: "localhost" is not an IP address or CIDR network`,
	} {
		err := new(App).UnmarshalCaddyfile(caddyfile.NewTestDispenser(input))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: err = %v, want it to mention %q", input, err, want)
		}
	}
}

func TestDirectives(t *testing.T) {
	h := httpcaddyfile.Helper{Dispenser: caddyfile.NewTestDispenser("accounts_auth {\n require_role admin\n}")}
	mh, err := parseAuthHandler(h)
	if err != nil || mh.(*AuthHandler).RequireRole != "admin" {
		t.Fatalf("accounts_auth: %v %+v", err, mh)
	}
	for _, bad := range []string{"accounts_auth admin", "accounts_auth {\n roles admin\n}", "accounts_auth {\n require_role\n}"} {
		if _, err := parseAuthHandler(httpcaddyfile.Helper{Dispenser: caddyfile.NewTestDispenser(bad)}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if err := (&AuthHandler{RequireRole: "root"}).Validate(); err == nil {
		t.Error("require_role root accepted")
	}
	if _, err := parseAPIHandler(httpcaddyfile.Helper{Dispenser: caddyfile.NewTestDispenser("accounts_api")}); err != nil {
		t.Errorf("accounts_api: %v", err)
	}
	if _, err := parseAPIHandler(httpcaddyfile.Helper{Dispenser: caddyfile.NewTestDispenser("accounts_api x")}); err == nil {
		t.Error("accounts_api with an argument accepted")
	}
}

// TestProjectCaddyfileAdapts adapts the project's Caddyfile and checks the
// shape the deployment relies on.
func TestProjectCaddyfileAdapts(t *testing.T) {
	src, err := os.ReadFile("../Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	adapter := caddyfile.Adapter{ServerType: httpcaddyfile.ServerType{}}
	out, warnings, err := adapter.Adapt(src, map[string]any{"filename": "Caddyfile"})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range warnings {
		t.Errorf("warning: %s", w.Message)
	}
	js := string(out)
	for _, want := range []string{
		`"accounts":{`,
		`"routes":[{"handle":[{"handler":"accounts_strip_identity"},{"handler":"accounts_security_headers"}]}`,
		`"path":["/api/documents","/api/documents/*"]`,
		`{"handler":"accounts_auth","require_app":"documents"}`,
		`{"handler":"accounts_upload_limit"}`,
		`"path":["/api/*","/.well-known/jwks.json"]`,
		`{"handler":"accounts_api"}`,
		`"try_files":["{http.request.uri.path}","/index.html"]`,
		`"path":["/accounts","/accounts/*"]`,
		`{"handler":"accounts_ui"}`,
	} {
		if !strings.Contains(js, want) {
			t.Errorf("adapted config lacks %s", want)
		}
	}
	// The site's routes, in order: the document requests pass the token
	// check and the upload limit, skip the handle block of everything
	// else (whose matcher is the exact complement of theirs), and reach
	// the proxy; no nested block is built per document request.
	var cfg struct {
		Apps struct {
			HTTP struct {
				Servers map[string]struct {
					Routes []struct {
						Match  []map[string]json.RawMessage `json:"match"`
						Handle []struct {
							Handler string `json:"handler"`
						} `json:"handle"`
					} `json:"routes"`
				} `json:"servers"`
			} `json:"http"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	const docs = `{"path":["/api/documents","/api/documents/*"]}`
	want := []string{
		"- accounts_strip_identity,accounts_security_headers",
		docs + " accounts_auth,accounts_upload_limit",
		`{"not":[` + docs + `]} subroute`,
		docs + " reverse_proxy",
	}
	var got []string
	for _, srv := range cfg.Apps.HTTP.Servers {
		for _, r := range srv.Routes {
			match := "-"
			if len(r.Match) > 0 {
				b, _ := json.Marshal(r.Match[0])
				match = string(b)
			}
			var hs []string
			for _, h := range r.Handle {
				hs = append(hs, h.Handler)
			}
			got = append(got, match+" "+strings.Join(hs, ","))
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("the site's routes are\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

// TestUIDirective: accounts_ui takes no arguments and, written with
// encode in one route, runs inside it (after encode, before file_server),
// and serves the embedded pages with the strict CSP.
func TestUIDirective(t *testing.T) {
	for _, bad := range []string{"accounts_ui x", "accounts_ui {\n dir x\n}"} {
		if _, err := parseUIHandler(httpcaddyfile.Helper{Dispenser: caddyfile.NewTestDispenser(bad)}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	src := ":8080 {\n\tfile_server\n\taccounts_ui\n\tencode gzip\n}\n"
	out, _, err := caddyfile.Adapter{ServerType: httpcaddyfile.ServerType{}}.Adapt([]byte(src), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		t.Fatal(err)
	}
	js := string(out)
	enc, page, fs := strings.Index(js, `"handler":"encode"`), strings.Index(js, `"handler":"accounts_ui"`), strings.Index(js, `"handler":"file_server"`)
	if enc < 0 || page < enc || fs < page {
		t.Errorf("want encode, accounts_ui, file_server in this order: %s", js)
	}

	h := new(UIHandler)
	if err := h.Provision(caddy.Context{}); err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	if err := h.ServeHTTP(w, httptest.NewRequest("GET", "/accounts/profile", nil), nil); err != nil {
		t.Fatal(err)
	}
	if w.Code != 200 || w.Header().Get("Content-Security-Policy") != ui.CSP || !strings.Contains(w.Body.String(), "/app.js") {
		t.Errorf("GET /accounts/profile: %d %v", w.Code, w.Header())
	}
}

// TestStripIdentityDirective: accounts_strip_identity takes no arguments,
// runs before every other handler wherever it is written, and removes
// every spelling of X-User-Id before calling the next handler.
func TestStripIdentityDirective(t *testing.T) {
	for _, bad := range []string{"accounts_strip_identity x", "accounts_strip_identity {\n all\n}"} {
		if _, err := parseStripIdentity(httpcaddyfile.Helper{Dispenser: caddyfile.NewTestDispenser(bad)}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}

	src := ":8080 {\n\trequest_header -X-Other\n\treverse_proxy 127.0.0.1:9\n\taccounts_auth\n\taccounts_strip_identity\n}\n"
	out, _, err := caddyfile.Adapter{ServerType: httpcaddyfile.ServerType{}}.Adapt([]byte(src), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		t.Fatal(err)
	}
	js := string(out)
	strip := strings.Index(js, `"handler":"accounts_strip_identity"`)
	for _, later := range []string{`"handler":"headers"`, `"handler":"accounts_auth"`, `"handler":"reverse_proxy"`} {
		if i := strings.Index(js, later); strip < 0 || i < strip {
			t.Errorf("accounts_strip_identity (at %d) does not come before %s (at %d) in %s", strip, later, i, js)
		}
	}

	r := httptest.NewRequest("GET", "/api/documents/x", nil)
	for _, name := range []string{"X-User-Id", "x-user-id", "X_User_Id", "X-User_Id", "x_USER-id"} {
		r.Header[name] = []string{"forged"}
	}
	r.Header.Set("X-User-Ids", "kept")
	called := false
	next := caddyhttp.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) error {
		called = true
		if len(r.Header) != 1 || r.Header.Get("X-User-Ids") != "kept" {
			t.Errorf("headers after the strip: %v, want only X-User-Ids", r.Header)
		}
		return nil
	})
	if err := (StripIdentityHandler{}).ServeHTTP(httptest.NewRecorder(), r, next); err != nil || !called {
		t.Errorf("ServeHTTP: %v, next called %v", err, called)
	}
}

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
		RefreshReuseGrace: 5 * time.Second, RefreshTokenInBody: true, OmitTokenFromBody: true,
	}
	if !reflect.DeepEqual(cfg, wantCfg) {
		t.Fatalf("service config %+v\nwant %+v", cfg, wantCfg)
	}

	off := new(App)
	if err := off.UnmarshalCaddyfile(caddyfile.NewTestDispenser("accounts {\n sessions {\n refresh_reuse_grace off\n }\n}")); err != nil {
		t.Fatal(err)
	}
	if off.serviceConfig().Sessions.RefreshReuseGrace >= 0 {
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
		"sessions {\n max_lifetime 0s\n}":             "must be positive",
		"sessions {\n access_cookie_lifetime -1m\n}":  "must be positive",
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

// TestLayoutListsEveryOption holds the README's table of Caddyfile
// directives and options against the parsers: every keyword a parser of
// this package accepts is listed once, with the file that parses it.
func TestLayoutListsEveryOption(t *testing.T) {
	table, err := layout.Table("../README.md", "Where each Caddyfile directive and option is parsed")
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]string{} // keyword -> file
	paths, _ := filepath.Glob("*.go")
	fset := token.NewFileSet()
	for _, path := range paths {
		if strings.HasSuffix(path, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		add := func(lit ast.Expr) {
			if bl, ok := lit.(*ast.BasicLit); ok && bl.Kind == token.STRING {
				s, _ := strconv.Unquote(bl.Value)
				found[s] = "caddymodule/" + path
			}
		}
		for _, d := range f.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok {
				continue
			}
			name := fd.Name.Name
			parses := strings.HasPrefix(name, "parse") || strings.HasPrefix(name, "unmarshal") || name == "UnmarshalCaddyfile"
			ast.Inspect(fd, func(n ast.Node) bool {
				switch n := n.(type) {
				case *ast.CaseClause:
					if parses {
						for _, e := range n.List {
							add(e)
						}
					}
				case *ast.CallExpr:
					if sel, ok := n.Fun.(*ast.SelectorExpr); ok && len(n.Args) > 0 &&
						(sel.Sel.Name == "RegisterHandlerDirective" || sel.Sel.Name == "RegisterGlobalOption") {
						add(n.Args[0])
					}
				}
				return true
			})
		}
	}
	if len(found) < 30 {
		t.Fatalf("found only %d keywords in the parsers", len(found))
	}
	for kw, file := range found {
		if got, ok := table[kw]; !ok {
			t.Errorf("README: %q (parsed in %s) is not in the table", kw, file)
		} else if got != file {
			t.Errorf("README: %q is parsed in %s, the table says %s", kw, file, got)
		}
	}
	for kw := range table {
		if _, ok := found[kw]; !ok {
			t.Errorf("README: %q is in the table but no parser accepts it", kw)
		}
	}
}

func TestSecurityHeadersDirective(t *testing.T) {
	for _, bad := range []string{"accounts_security_headers x", "accounts_security_headers {\n frame none\n}",
		"accounts_security_headers {\n hsts_max_age\n}", "accounts_security_headers {\n hsts_max_age 0s\n}"} {
		if _, err := parseSecurityHeaders(httpcaddyfile.Helper{Dispenser: caddyfile.NewTestDispenser(bad)}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	for input, want := range map[string]string{
		"accounts_security_headers":                          "max-age=31536000",
		"accounts_security_headers {\n hsts_max_age 2h\n}":   "max-age=7200",
		"accounts_security_headers {\n hsts_max_age off\n}":  "",
		"accounts_security_headers {\n hsts_max_age 730d\n}": "max-age=63072000",
	} {
		mh, err := parseSecurityHeaders(httpcaddyfile.Helper{Dispenser: caddyfile.NewTestDispenser(input)})
		if err != nil {
			t.Fatalf("%q: %v", input, err)
		}
		h := mh.(*SecurityHeadersHandler)
		if err := h.Provision(caddy.Context{}); err != nil {
			t.Fatal(err)
		}
		w := httptest.NewRecorder()
		r := httptest.NewRequest("GET", "https://example.com/", nil) // r.TLS is set
		next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil })
		if err := h.ServeHTTP(w, r, next); err != nil {
			t.Fatal(err)
		}
		if got := w.Header().Get("Strict-Transport-Security"); got != want {
			t.Errorf("%q: HSTS %q, want %q", input, got, want)
		}
		if got := w.Header().Get("X-Frame-Options"); got != "DENY" {
			t.Errorf("%q: X-Frame-Options %q", input, got)
		}
	}
}
