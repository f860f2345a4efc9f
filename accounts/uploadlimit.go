package accounts

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/caddyaccounts/gateway/fastapi"
)

// uploadTooLarge is the 413 of an upload over the limit.
func uploadTooLarge(limit int64) *fastapi.Error {
	return fastapi.NewError(http.StatusRequestEntityTooLarge,
		fmt.Sprintf("Upload exceeds the maximum size of %d MB", limit>>20))
}

// errEncodedBody refuses a compressed upload: its size on the wire says
// nothing of its size once decoded (a 48 KB gzip can hold 50 MB).
var errEncodedBody = fastapi.NewError(http.StatusUnsupportedMediaType, "Unsupported Content-Encoding")

// encoded reports whether h declares a Content-Encoding other than
// identity.
func encoded(h http.Header) bool {
	for _, v := range h["Content-Encoding"] {
		for enc := range strings.SplitSeq(v, ",") {
			if enc = strings.TrimSpace(enc); enc != "" && !strings.EqualFold(enc, "identity") {
				return true
			}
		}
	}
	return false
}

// LimitBody refuses a request whose body is over limit bytes before any
// of it goes further. A declared Content-Length is checked at once. A body
// of unknown length (chunked) is first spooled to a temporary file, as
// nginx does, so that an oversized one is refused before the upstream
// sees a byte; the returned request then reads the file, with its length
// set. Memory use is constant whatever the size. An encoded body
// (Content-Encoding other than identity) is refused with 415, since the
// limit could not be judged on it.
func LimitBody(r *http.Request, limit int64) (*http.Request, error) {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return r, nil
	}
	if encoded(r.Header) {
		return nil, errEncodedBody
	}
	if r.ContentLength > 0 {
		if r.ContentLength > limit {
			return nil, uploadTooLarge(limit)
		}
		return r, nil
	}
	f, err := os.CreateTemp("", "accounts-upload-*")
	if err != nil {
		return nil, fmt.Errorf("spooling upload: %w", err)
	}
	// The file has no name once removed; it lives until closed.
	_ = os.Remove(f.Name())
	n, err := io.Copy(f, io.LimitReader(r.Body, limit+1))
	if err != nil {
		f.Close()
		return nil, fastapi.NewError(http.StatusBadRequest, "Could not read the request body")
	}
	if n > limit {
		f.Close()
		return nil, uploadTooLarge(limit)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, fmt.Errorf("spooling upload: %w", err)
	}
	r2 := r.Clone(r.Context())
	r2.Body = f
	r2.ContentLength = n
	r2.TransferEncoding = nil
	r2.Header.Del("Transfer-Encoding")
	return r2, nil
}
