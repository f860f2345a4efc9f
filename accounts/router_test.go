package accounts

import (
	"go/ast"
	"go/parser"
	"go/token"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/caddyaccounts/gateway/internal/layout"
)

func TestRoutingErrors(t *testing.T) {
	e := newTestEnv(t)
	if r := e.do("GET", "/api/nothing-here", "", nil); r.Status != 404 || r.Detail(t) != `"Not Found"` {
		t.Errorf("unknown path: %d %s", r.Status, r.Body)
	}
	r := e.do("GET", "/api/auth/login", "", nil)
	if r.Status != 405 || r.Detail(t) != `"Method Not Allowed"` || r.Header.Get("Allow") != "POST" {
		t.Errorf("wrong method: %d %s %v", r.Status, r.Body, r.Header)
	}
	if r := e.do("GET", "/api/health", "", nil); r.Status != 200 || string(r.Body) != `{"status":"ok"}` {
		t.Errorf("health: %d %s", r.Status, r.Body)
	}
}

// TestDatabaseOutage closes the pool under the service: requests get 503
// with a JSON detail, never a 500.
func TestDatabaseOutage(t *testing.T) {
	e := newTestEnv(t)
	_, token := e.user("down@example.com")
	e.db.Close()
	for _, c := range []struct{ method, path, token string }{
		{"GET", "/api/health", ""},
		{"GET", "/api/users/me", token},
	} {
		r := e.do(c.method, c.path, c.token, nil)
		if r.Status != http.StatusServiceUnavailable {
			t.Errorf("%s %s with the database gone: %d %s, want 503", c.method, c.path, r.Status, r.Body)
		}
	}
	r := e.do("POST", "/api/auth/login", "", url.Values{"username": {"down@example.com"}, "password": {"Secret!pw1"}})
	if r.Status != 503 || r.Detail(t) != `"Service temporarily unavailable"` {
		t.Errorf("login with the database gone: %d %s", r.Status, r.Body)
	}
}

// TestLayoutListsEveryRoute holds the README's route table against the
// route table of router.go: every route is listed once, with the file
// that declares its handler.
func TestLayoutListsEveryRoute(t *testing.T) {
	table, err := layout.Table("../README.md", "Where each route is served")
	if err != nil {
		t.Fatal(err)
	}
	routes := map[string]string{} // route -> handler name
	fset := token.NewFileSet()
	file, err := parser.ParseFile(fset, "router.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	ast.Inspect(file, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok || len(call.Args) != 2 {
			return true
		}
		if fn, ok := call.Fun.(*ast.Ident); !ok || (fn.Name != "handle" && fn.Name != "authed") {
			return true
		}
		lit, ok := call.Args[0].(*ast.BasicLit)
		if !ok {
			return true
		}
		route, _ := strconv.Unquote(lit.Value)
		// The handler is the selector that ends last among the
		// arguments: s.handleMe, s.withPrincipal(RoleAdmin,
		// s.handleListUsers), byID(s.settings.GetAI).
		var handler string
		var end token.Pos
		ast.Inspect(call.Args[1], func(n ast.Node) bool {
			if sel, ok := n.(*ast.SelectorExpr); ok && sel.Sel.End() > end {
				handler, end = sel.Sel.Name, sel.Sel.End()
			}
			return true
		})
		routes[route] = handler
		return true
	})
	if len(routes) < 20 {
		t.Fatalf("found only %d routes in router.go", len(routes))
	}
	for route, handler := range routes {
		path, ok := table[route]
		if !ok {
			t.Errorf("README: route %q (%s) is not in the table", route, handler)
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join("..", path), nil, 0)
		if err != nil {
			t.Errorf("README: route %q: %v", route, err)
			continue
		}
		found := false
		for _, d := range f.Decls {
			if fd, ok := d.(*ast.FuncDecl); ok && fd.Name.Name == handler {
				found = true
			}
		}
		if !found {
			t.Errorf("README: route %q is served by %s, which %s does not declare", route, handler, path)
		}
	}
	for route := range table {
		if _, ok := routes[route]; !ok {
			t.Errorf("README: route %q is not in router.go", route)
		}
	}
}
