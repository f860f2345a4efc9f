package accounts

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddyaccounts/gateway/fastapi"
)

// chunked makes a request whose body has no declared length.
func chunked(body []byte) *http.Request {
	r := httptest.NewRequest("POST", "/api/documents", io.MultiReader(bytes.NewReader(body)))
	r.ContentLength = -1
	r.TransferEncoding = []string{"chunked"}
	return r
}

func TestLimitBody(t *testing.T) {
	const limit = 1 << 20
	body := bytes.Repeat([]byte("x"), limit)

	// Declared lengths are judged without reading.
	r := httptest.NewRequest("POST", "/", bytes.NewReader(body))
	if got, err := LimitBody(r, limit); err != nil || got != r {
		t.Fatalf("exactly the limit: %v", err)
	}
	r = httptest.NewRequest("POST", "/", strings.NewReader("never read"))
	r.ContentLength = limit + 1
	_, err := LimitBody(r, limit)
	if status, payload, _ := fastapi.Status(err); status != 413 || payload.(map[string]string)["detail"] != "Upload exceeds the maximum size of 1 MB" {
		t.Fatalf("over the limit: %d %v", status, payload)
	}

	// Chunked bodies are spooled, then passed on with their length.
	got, err := LimitBody(chunked(body), limit)
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
	if _, err := LimitBody(chunked(append(body, 'y')), limit); err == nil {
		t.Fatal("chunked body one byte over the limit accepted")
	}

	// No body: nothing to do.
	r = httptest.NewRequest("GET", "/", nil)
	if got, err := LimitBody(r, limit); err != nil || got != r {
		t.Fatalf("no body: %v", err)
	}
}

func TestLimitBodyRefusesEncodedBodies(t *testing.T) {
	for _, enc := range []string{"gzip", "GZIP", "br", "deflate", "identity, gzip", " zstd "} {
		r := httptest.NewRequest("POST", "/", strings.NewReader("compressed"))
		r.Header.Set("Content-Encoding", enc)
		_, err := LimitBody(r, 1<<20)
		if status, payload, _ := fastapi.Status(err); status != 415 || payload.(map[string]string)["detail"] != "Unsupported Content-Encoding" {
			t.Errorf("Content-Encoding %q: %d %v", enc, status, payload)
		}
	}
	for _, enc := range []string{"identity", "Identity", ""} {
		r := httptest.NewRequest("POST", "/", strings.NewReader("plain"))
		r.Header["Content-Encoding"] = []string{enc}
		if got, err := LimitBody(r, 1<<20); err != nil || got != r {
			t.Errorf("Content-Encoding %q: %v", enc, err)
		}
	}
	// Without a body there is nothing to decode.
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set("Content-Encoding", "gzip")
	if _, err := LimitBody(r, 1<<20); err != nil {
		t.Errorf("GET with Content-Encoding: %v", err)
	}
}
