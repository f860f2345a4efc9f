package settings

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyaccounts/gateway/fastapi"
)

// chunked makes a request whose body has no declared length.
func chunked(body []byte) *http.Request {
	r := httptest.NewRequest("POST", "/api/documents", io.MultiReader(bytes.NewReader(body)))
	r.ContentLength = -1
	r.TransferEncoding = []string{"chunked"}
	return r
}

// settingsWithLimit returns settings whose documents.json sets
// max_pdf_size_mb to 1: an upload limit of 1 MiB.
func settingsWithLimit(t *testing.T) *Settings {
	t.Helper()
	dir := t.TempDir()
	if _, err := writeFileAtomic(dir, "documents.json", []byte(`{"max_pdf_size_mb": 1}`), 0o644); err != nil {
		t.Fatal(err)
	}
	return newTestSettings(t, dir).Settings
}

func TestLimitUpload(t *testing.T) {
	const limit = 1 << 20
	s := settingsWithLimit(t)
	body := bytes.Repeat([]byte("x"), limit)

	// Declared lengths are judged without reading.
	r := httptest.NewRequest("POST", "/", bytes.NewReader(body))
	if got, err := s.LimitUpload(r); err != nil || got != r {
		t.Fatalf("exactly the limit: %v", err)
	}
	r = httptest.NewRequest("POST", "/", strings.NewReader("never read"))
	r.ContentLength = limit + 1
	_, err := s.LimitUpload(r)
	if status, payload, _ := fastapi.Status(err); status != 413 || payload.(map[string]string)["detail"] != "Upload exceeds the maximum size of 1 MB" {
		t.Fatalf("over the limit: %d %v", status, payload)
	}

	// Chunked bodies are spooled, then passed on with their length.
	got, err := s.LimitUpload(chunked(body))
	if err != nil {
		t.Fatal(err)
	}
	if got.ContentLength != limit || got.TransferEncoding != nil {
		t.Fatalf("spooled request: length %d, TE %v", got.ContentLength, got.TransferEncoding)
	}
	read, _ := io.ReadAll(got.Body)
	got.Body.Close()
	if !bytes.Equal(read, body) {
		t.Fatal("spooled body differs")
	}
	if _, err := s.LimitUpload(chunked(append(body, 'y'))); err == nil {
		t.Fatal("chunked body one byte over the limit accepted")
	}

	// No body: nothing to do.
	r = httptest.NewRequest("GET", "/", nil)
	if got, err := s.LimitUpload(r); err != nil || got != r {
		t.Fatalf("no body: %v", err)
	}
}

func TestLimitUploadRefusesEncodedBodies(t *testing.T) {
	s := settingsWithLimit(t)
	for _, enc := range []string{"gzip", "GZIP", "br", "deflate", "identity, gzip", " zstd "} {
		r := httptest.NewRequest("POST", "/", strings.NewReader("compressed"))
		r.Header.Set("Content-Encoding", enc)
		_, err := s.LimitUpload(r)
		if status, payload, _ := fastapi.Status(err); status != 415 || payload.(map[string]string)["detail"] != "Unsupported Content-Encoding" {
			t.Errorf("Content-Encoding %q: %d %v", enc, status, payload)
		}
	}
	for _, enc := range []string{"identity", "Identity", ""} {
		r := httptest.NewRequest("POST", "/", strings.NewReader("plain"))
		r.Header["Content-Encoding"] = []string{enc}
		if got, err := s.LimitUpload(r); err != nil || got != r {
			t.Errorf("Content-Encoding %q: %v", enc, err)
		}
	}
	// Without a body there is nothing to decode.
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set("Content-Encoding", "gzip")
	if _, err := s.LimitUpload(r); err != nil {
		t.Errorf("GET with Content-Encoding: %v", err)
	}
}

// TestMaxUploadBytesFollowsTheFile changes documents.json behind the
// settings' back, as another gateway process or an operator would: the
// next call sees each change, without a reload.
func TestMaxUploadBytesFollowsTheFile(t *testing.T) {
	dir := t.TempDir()
	svc := newTestSettings(t, dir)
	path := filepath.Join(dir, "documents.json")
	check := func(what string, want int64, wantErr bool) {
		t.Helper()
		n, err := svc.MaxUploadBytes()
		if n != want || (err != nil) != wantErr {
			t.Fatalf("%s: MaxUploadBytes = %d, %v; want %d (error: %v)", what, n, err, want, wantErr)
		}
	}
	check("no file", 25<<20, false)
	if _, err := writeFileAtomic(dir, "documents.json", []byte(`{"max_pdf_size_mb": 7}`), 0o644); err != nil {
		t.Fatal(err)
	}
	check("replaced by another process", 7<<20, false)
	check("unchanged (cached)", 7<<20, false)
	// An edit in place, same inode: a different size or mtime is enough.
	if err := os.WriteFile(path, []byte(`{"max_pdf_size_mb": 512}`), 0o644); err != nil {
		t.Fatal(err)
	}
	check("edited in place", 512<<20, false)
	future := time.Now().Add(time.Hour)
	if err := os.WriteFile(path, []byte(`{"max_pdf_size_mb": 513}`), 0o644); err != nil {
		t.Fatal(err)
	}
	_ = os.Chtimes(path, future, future)
	check("edited in place, same size", 513<<20, false)
	if err := os.WriteFile(path, []byte(`{"max_pdf_size_mb": "big"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := svc.MaxUploadBytes()
	if status, body, _ := fastapi.Status(err); status != 503 || body.(map[string]string)["detail"] != "Settings file documents.json is corrupt; fix or remove it" {
		t.Fatalf("corrupt file: %d %v", status, body)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	check("removed", 25<<20, false)
}
