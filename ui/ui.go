// Package ui is the built-in web UI of the accounts: plain HTML, CSS and
// small ES modules, embedded in the binary and served under /accounts/
// by Handler (the Caddy handler accounts_ui wraps it). No build step and
// no third-party asset: what is in static/ is what the browser gets.
//
// The pages are clients of the gateway's own JSON API with the httpOnly
// cookie session, so they can do nothing the API would refuse. They build
// their DOM with createElement and textContent only; nothing a user
// typed is ever inserted as HTML.
//
// Every file under static/ is served at /accounts/static/<version>/<name>,
// where version is a hash of all of them, with a year's caching: a new
// release has new URLs. Every other path under /accounts gets index.html
// (no-cache), whose script reads location.pathname and renders the page.
// Every answer carries CSP, a strict Content-Security-Policy: no inline
// script or style, nothing from another origin, no framing.
package ui

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"sync"
	"time"
)

// CSP is the Content-Security-Policy of every answer of the handler.
const CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"

// Prefix is the path under which the UI is served.
const Prefix = "/accounts"

// staticMarker in index.html is replaced by the versioned path of the
// static files.
const staticMarker = "{{static}}"

//go:embed index.html static
var files embed.FS

// file is one answer of the handler, prepared once.
type file struct {
	body        []byte
	contentType string
	etag        string
}

// Handler serves the UI. Its zero value is not usable; use New.
type Handler struct {
	index  file
	static map[string]file // by path below Prefix/static/<version>/
	// staticPath is Prefix + "/static/" + version + "/".
	staticPath string
}

var loadOnce = sync.OnceValues(load)

// New returns the handler of the embedded files (read and hashed once
// per process).
func New() (*Handler, error) { return loadOnce() }

func load() (*Handler, error) {
	h := &Handler{static: map[string]file{}}
	all := sha256.New()
	err := fs.WalkDir(files, "static", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := files.ReadFile(name)
		if err != nil {
			return err
		}
		ct := contentType(name)
		if ct == "" {
			return fmt.Errorf("ui: no content type for %s", name)
		}
		rel := strings.TrimPrefix(name, "static/")
		fmt.Fprintf(all, "%s\x00%d\x00", rel, len(body))
		all.Write(body)
		h.static[rel] = file{body: body, contentType: ct, etag: etag(body)}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("ui: reading the embedded files: %w", err)
	}
	version := hex.EncodeToString(all.Sum(nil))[:16]
	h.staticPath = Prefix + "/static/" + version + "/"
	index, err := files.ReadFile("index.html")
	if err != nil {
		return nil, fmt.Errorf("ui: %w", err)
	}
	if !bytes.Contains(index, []byte(staticMarker)) {
		return nil, fmt.Errorf("ui: index.html lacks %s", staticMarker)
	}
	index = bytes.ReplaceAll(index, []byte(staticMarker), []byte(strings.TrimSuffix(h.staticPath, "/")))
	h.index = file{body: index, contentType: "text/html; charset=utf-8", etag: etag(index)}
	return h, nil
}

// StaticPath returns the path of the static files of this build,
// "/accounts/static/<version>/".
func (h *Handler) StaticPath() string { return h.staticPath }

// ServeHTTP answers GET and HEAD: a static file of this build with a
// year's caching, 404 for any other path under /accounts/static/, and
// index.html for every other path. Other methods get 405.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	hdr.Set("Content-Security-Policy", CSP)
	hdr.Set("X-Content-Type-Options", "nosniff")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		hdr.Set("Allow", "GET, HEAD")
		http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
		return
	}
	p := r.URL.Path
	if rel, ok := strings.CutPrefix(p, h.staticPath); ok {
		if f, ok := h.static[rel]; ok && rel == path.Clean(rel) {
			hdr.Set("Cache-Control", "public, max-age=31536000, immutable")
			serve(w, r, f)
			return
		}
	}
	if p == Prefix+"/static" || strings.HasPrefix(p, Prefix+"/static/") {
		hdr.Set("Cache-Control", "no-cache")
		http.Error(w, "Not Found", http.StatusNotFound)
		return
	}
	hdr.Set("Cache-Control", "no-cache")
	serve(w, r, h.index)
}

// serve writes f, or 304 when the request's If-None-Match names it.
func serve(w http.ResponseWriter, r *http.Request, f file) {
	hdr := w.Header()
	hdr.Set("Content-Type", f.contentType)
	hdr.Set("ETag", f.etag)
	// http.ServeContent answers If-None-Match, HEAD and ranges; the zero
	// modification time sends no Last-Modified.
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(f.body))
}

// etag is a strong entity tag of body: a hash of its content.
func etag(body []byte) string {
	sum := sha256.Sum256(body)
	return `"` + hex.EncodeToString(sum[:12]) + `"`
}

// contentType is the type of an embedded file, by its extension.
func contentType(name string) string {
	switch path.Ext(name) {
	case ".js":
		return "text/javascript; charset=utf-8"
	case ".css":
		return "text/css; charset=utf-8"
	case ".svg":
		return "image/svg+xml"
	case ".html":
		return "text/html; charset=utf-8"
	}
	return ""
}
