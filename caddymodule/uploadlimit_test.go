package caddymodule

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/caddyaccounts/gateway/accounts"
	"github.com/caddyaccounts/gateway/settings"
)

func TestUploadLimitDirective(t *testing.T) {
	mh, err := parseUploadLimit(httpcaddyfile.Helper{Dispenser: caddyfile.NewTestDispenser("accounts_upload_limit")})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := mh.(*UploadLimitHandler); !ok {
		t.Fatalf("accounts_upload_limit gave %T", mh)
	}
	for _, bad := range []string{"accounts_upload_limit 25", "accounts_upload_limit {\n max 25\n}"} {
		if _, err := parseUploadLimit(httpcaddyfile.Helper{Dispenser: caddyfile.NewTestDispenser(bad)}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}

	// Written in the wrong order, the directives still run as auth, limit,
	// proxy.
	src := ":8080 {\n\treverse_proxy 127.0.0.1:9\n\taccounts_upload_limit\n\taccounts_auth\n}\n"
	out, _, err := caddyfile.Adapter{ServerType: httpcaddyfile.ServerType{}}.Adapt([]byte(src), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		t.Fatal(err)
	}
	js := string(out)
	auth := strings.Index(js, `"handler":"accounts_auth"`)
	limit := strings.Index(js, `"handler":"accounts_upload_limit"`)
	proxy := strings.Index(js, `"handler":"reverse_proxy"`)
	if auth < 0 || limit < 0 || proxy < 0 || !(auth < limit && limit < proxy) {
		t.Fatalf("handlers at %d (auth), %d (limit), %d (proxy) in %s", auth, limit, proxy, js)
	}
}

// uploadLimitHandler returns a handler on a real accounts service whose
// settings live in the returned directory. The handler reads only the
// settings files: the service's pool points at a closed port and is never
// dialled (a query would fail the request, and the test).
func uploadLimitHandler(t *testing.T) (*UploadLimitHandler, string) {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), "postgres://nobody@127.0.0.1:1/none?connect_timeout=1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	dir := t.TempDir()
	svc, err := accounts.New(pool, nil, accounts.Config{Settings: settings.Config{Dir: dir}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &UploadLimitHandler{service: svc}, dir
}

// setMaxPDFSizeMB writes documents.json as another process would.
func setMaxPDFSizeMB(t *testing.T, dir, content string) {
	t.Helper()
	tmp := filepath.Join(dir, ".documents.json.test")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "documents.json")); err != nil {
		t.Fatal(err)
	}
}

// tripwire is a request body that must never be read.
type tripwire struct{ read bool }

func (tw *tripwire) Read([]byte) (int, error) { tw.read = true; return 0, io.ErrUnexpectedEOF }

// passed is what the next handler saw of a request it got.
type passed struct {
	req  *http.Request
	body []byte
}

// serveUpload runs r through h with a next handler that reads the whole
// body, as the proxy does. It returns the response and what next got
// (nil if it was not called).
func serveUpload(t *testing.T, h *UploadLimitHandler, r *http.Request) (*httptest.ResponseRecorder, *passed) {
	t.Helper()
	var got *passed
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return err
		}
		got = &passed{req: r, body: b}
		w.WriteHeader(http.StatusNoContent)
		return nil
	})
	w := httptest.NewRecorder()
	if err := h.ServeHTTP(w, r, next); err != nil {
		t.Fatalf("ServeHTTP: %v", err)
	}
	return w, got
}

// chunkedRequest is a POST whose body has no declared length.
func chunkedRequest(body []byte) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/api/documents/upload", io.MultiReader(bytes.NewReader(body)))
	r.ContentLength = -1
	r.TransferEncoding = []string{"chunked"}
	return r
}

// errorHeaders are the headers of an error answer.
func errorHeaders() http.Header {
	return http.Header{"Content-Type": {"application/json"}, "Cache-Control": {"no-store"}}
}

// closingErrorHeaders are those of an error answer that closes an HTTP/1
// connection.
func closingErrorHeaders() http.Header {
	h := errorHeaders()
	h.Set("Connection", "close")
	return h
}

// expectRefused checks an error answer that leaves the connection to
// net/http, byte for byte, headers included.
func expectRefused(t *testing.T, w *httptest.ResponseRecorder, got *passed, status int, detail string) {
	t.Helper()
	expectRefusedHeaders(t, w, got, status, detail, errorHeaders())
}

func expectRefusedHeaders(t *testing.T, w *httptest.ResponseRecorder, got *passed, status int, detail string, want http.Header) {
	t.Helper()
	if got != nil {
		t.Errorf("the request was passed on (%d body bytes)", len(got.body))
	}
	if w.Code != status {
		t.Fatalf("status %d, want %d; body %s", w.Code, status, w.Body)
	}
	if want := `{"detail":"` + detail + `"}`; w.Body.String() != want {
		t.Errorf("body %s, want %s", w.Body, want)
	}
	if !reflect.DeepEqual(w.Header(), want) {
		t.Errorf("headers %v, want %v", w.Header(), want)
	}
}

func TestUploadLimitHandler(t *testing.T) {
	h, dir := uploadLimitHandler(t)
	setMaxPDFSizeMB(t, dir, `{"max_pdf_size_mb": 1}`)
	const limit = 1 << 20
	const tooLarge = "Upload exceeds the maximum size of 1 MB"
	atLimit := bytes.Repeat([]byte("%PDF"), limit/4)

	t.Run("no body", func(t *testing.T) {
		r := httptest.NewRequest(http.MethodGet, "/api/documents", nil)
		w, got := serveUpload(t, h, r)
		if w.Code != http.StatusNoContent || got == nil || got.req != r {
			t.Fatalf("status %d; passed on untouched: %v", w.Code, got != nil && got.req == r)
		}
	})

	t.Run("Content-Length at the limit", func(t *testing.T) {
		r := httptest.NewRequest(http.MethodPost, "/api/documents/upload", bytes.NewReader(atLimit))
		w, got := serveUpload(t, h, r)
		if w.Code != http.StatusNoContent || got == nil || got.req != r || !bytes.Equal(got.body, atLimit) {
			t.Fatalf("status %d; passed on untouched and intact: %v", w.Code, got != nil && got.req == r && bytes.Equal(got.body, atLimit))
		}
	})

	t.Run("Content-Length over the limit", func(t *testing.T) {
		for _, tc := range []struct {
			name   string
			proto  int
			expect string
			want   http.Header
		}{
			{"HTTP/1.1", 1, "", errorHeaders()},
			// The client has not sent the body: the connection closes.
			{"HTTP/1.1 Expect", 1, "100-continue", closingErrorHeaders()},
			{"HTTP/1.1 Expect, any case", 1, "100-Continue", closingErrorHeaders()},
			// HTTP/2 ends the stream, not the connection.
			{"HTTP/2 Expect", 2, "100-continue", errorHeaders()},
		} {
			t.Run(tc.name, func(t *testing.T) {
				body := new(tripwire)
				r := httptest.NewRequest(http.MethodPost, "/api/documents/upload", body)
				r.ContentLength = limit + 1
				if tc.proto == 2 {
					r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/2.0", 2, 0
				}
				if tc.expect != "" {
					r.Header.Set("Expect", tc.expect)
				}
				w, got := serveUpload(t, h, r)
				expectRefusedHeaders(t, w, got, http.StatusRequestEntityTooLarge, tooLarge, tc.want)
				if body.read {
					t.Error("the body was read: a declared length must be judged without reading")
				}
			})
		}
	})

	t.Run("chunked at the limit", func(t *testing.T) {
		w, got := serveUpload(t, h, chunkedRequest(atLimit))
		if w.Code != http.StatusNoContent || got == nil {
			t.Fatalf("status %d, passed on: %v", w.Code, got != nil)
		}
		if got.req.ContentLength != limit || got.req.TransferEncoding != nil || !bytes.Equal(got.body, atLimit) {
			t.Errorf("passed on with length %d, TE %v, intact body: %v", got.req.ContentLength, got.req.TransferEncoding, bytes.Equal(got.body, atLimit))
		}
		// The spooled file is closed once the request is done.
		if _, err := got.req.Body.Read(make([]byte, 1)); !errors.Is(err, os.ErrClosed) {
			t.Errorf("the spooled body after the request: %v, want it closed", err)
		}
	})

	t.Run("chunked over the limit", func(t *testing.T) {
		// Reading it sent "100 Continue": the client is sending.
		r := chunkedRequest(append(atLimit, 'x'))
		r.Header.Set("Expect", "100-continue")
		w, got := serveUpload(t, h, r)
		expectRefused(t, w, got, http.StatusRequestEntityTooLarge, tooLarge)
	})

	t.Run("unknown length, empty", func(t *testing.T) {
		// As HTTP/3 delivers a GET: no Content-Length, a body that ends at once.
		r := httptest.NewRequest(http.MethodGet, "/api/documents", io.MultiReader())
		r.ContentLength = -1
		w, got := serveUpload(t, h, r)
		if w.Code != http.StatusNoContent || got == nil || got.req != r || got.req.ContentLength != 0 {
			t.Fatalf("status %d; passed on unspooled with length 0: %v", w.Code, got != nil && got.req == r && got.req.ContentLength == 0)
		}
	})

	t.Run("chunked, read fails", func(t *testing.T) {
		r := chunkedRequest(nil)
		r.Body = io.NopCloser(new(tripwire))
		w, got := serveUpload(t, h, r)
		expectRefused(t, w, got, http.StatusBadRequest, "Could not read the request body")
	})

	t.Run("limit changed", func(t *testing.T) {
		setMaxPDFSizeMB(t, dir, `{"max_pdf_size_mb": 2}`)
		over := append(atLimit, 'x')
		r := httptest.NewRequest(http.MethodPost, "/api/documents/upload", bytes.NewReader(over))
		if w, got := serveUpload(t, h, r); w.Code != http.StatusNoContent || got == nil || !bytes.Equal(got.body, over) {
			t.Fatalf("1 MiB + 1 under a 2 MB limit: status %d", w.Code)
		}
		r = httptest.NewRequest(http.MethodPost, "/api/documents/upload", new(tripwire))
		r.ContentLength = 2<<20 + 1
		w, got := serveUpload(t, h, r)
		expectRefused(t, w, got, http.StatusRequestEntityTooLarge, "Upload exceeds the maximum size of 2 MB")
	})

	t.Run("corrupt settings", func(t *testing.T) {
		setMaxPDFSizeMB(t, dir, `{"max_pdf_size_mb": 0}`)
		t.Cleanup(func() { setMaxPDFSizeMB(t, dir, `{"max_pdf_size_mb": 1}`) })
		r := httptest.NewRequest(http.MethodPost, "/api/documents/upload", strings.NewReader("%PDF"))
		w, got := serveUpload(t, h, r)
		expectRefused(t, w, got, http.StatusServiceUnavailable, "Settings file documents.json is corrupt; fix or remove it")
		r = httptest.NewRequest(http.MethodPost, "/api/documents/upload", new(tripwire))
		r.ContentLength = 10
		r.Header.Set("Expect", "100-continue")
		w, got = serveUpload(t, h, r)
		expectRefusedHeaders(t, w, got, http.StatusServiceUnavailable, "Settings file documents.json is corrupt; fix or remove it", closingErrorHeaders())
		// Requests without a body do not depend on the settings.
		w, got = serveUpload(t, h, httptest.NewRequest(http.MethodGet, "/api/documents", nil))
		if w.Code != http.StatusNoContent || got == nil {
			t.Fatalf("GET with corrupt settings: status %d", w.Code)
		}
	})
}
