package ui

import (
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func get(t *testing.T, h http.Handler, method, path string, hdr map[string]string) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(method, path, nil)
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if got := w.Header().Get("Content-Security-Policy"); got != CSP {
		t.Errorf("%s %s: Content-Security-Policy %q, want %q", method, path, got, CSP)
	}
	return w
}

// TestHandler: index.html for every page path (no-cache), the static
// files of this build with a year's caching and their ETag, 404 for
// another build's files, 405 for other methods, and the CSP everywhere.
func TestHandler(t *testing.T) {
	h, err := New()
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^/accounts/static/[0-9a-f]{16}/$`).MatchString(h.StaticPath()) {
		t.Fatalf("StaticPath %q", h.StaticPath())
	}
	for _, p := range []string{"/accounts", "/accounts/", "/accounts/profile", "/accounts/admin/users/x", "/accounts/verify-email"} {
		w := get(t, h, "GET", p, nil)
		if w.Code != 200 || w.Header().Get("Content-Type") != "text/html; charset=utf-8" || w.Header().Get("Cache-Control") != "no-cache" {
			t.Errorf("GET %s: %d %v", p, w.Code, w.Header())
		}
		body := w.Body.String()
		if !strings.Contains(body, `<script type="module" src="`+h.StaticPath()+`app.js"></script>`) || strings.Contains(body, staticMarker) {
			t.Errorf("GET %s: index.html does not load %sapp.js:\n%s", p, h.StaticPath(), body)
		}
	}
	w := get(t, h, "GET", h.StaticPath()+"app.js", nil)
	etag := w.Header().Get("ETag")
	if w.Code != 200 || w.Header().Get("Content-Type") != "text/javascript; charset=utf-8" ||
		w.Header().Get("Cache-Control") != "public, max-age=31536000, immutable" || !regexp.MustCompile(`^"[0-9a-f]{24}"$`).MatchString(etag) {
		t.Errorf("app.js: %d %v", w.Code, w.Header())
	}
	if w := get(t, h, "GET", h.StaticPath()+"app.js", map[string]string{"If-None-Match": etag}); w.Code != http.StatusNotModified {
		t.Errorf("app.js with If-None-Match: %d, want 304", w.Code)
	}
	if w := get(t, h, "GET", h.StaticPath()+"pages/profile.js", nil); w.Code != 200 {
		t.Errorf("pages/profile.js: %d", w.Code)
	}
	if w := get(t, h, "HEAD", h.StaticPath()+"app.css", nil); w.Code != 200 || w.Header().Get("Content-Type") != "text/css; charset=utf-8" || w.Body.Len() != 0 {
		t.Errorf("HEAD app.css: %d %v %d bytes", w.Code, w.Header(), w.Body.Len())
	}
	for _, p := range []string{"/accounts/static/0123456789abcdef/app.js", h.StaticPath() + "nope.js", h.StaticPath() + "pages/../app.js", "/accounts/static", "/accounts/static/"} {
		if w := get(t, h, "GET", p, nil); w.Code != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", p, w.Code)
		}
	}
	w = get(t, h, "POST", "/accounts/sign-in", nil)
	if w.Code != http.StatusMethodNotAllowed || w.Header().Get("Allow") != "GET, HEAD" {
		t.Errorf("POST: %d %v", w.Code, w.Header())
	}
}

// TestNoHTMLInsertion holds the rule of the pages: the DOM is built with
// createElement and textContent, never from HTML strings, and nothing
// is inline (the CSP would refuse it anyway).
func TestNoHTMLInsertion(t *testing.T) {
	banned := regexp.MustCompile(`innerHTML|outerHTML|insertAdjacentHTML|document\.write|createContextualFragment|DOMParser|\beval\(|new Function|setAttribute\("on|style=|<style|javascript:`)
	n := 0
	err := fs.WalkDir(files, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := files.ReadFile(name)
		if err != nil {
			return err
		}
		n++
		if m := banned.FindString(string(b)); m != "" {
			t.Errorf("%s uses %s", name, m)
		}
		if strings.HasSuffix(name, ".html") && regexp.MustCompile(`<script(?:[^>]*)>[^<]`).Match(b) {
			t.Errorf("%s has an inline script", name)
		}
		return nil
	})
	if err != nil || n < 10 {
		t.Fatalf("walked %d files: %v", n, err)
	}
}
