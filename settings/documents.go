package settings

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/caddyaccounts/gateway/fastapi"
)

// Default and bound of max_pdf_size_mb (API.md).
const (
	defaultMaxPDFSizeMB = 25
	maxMaxPDFSizeMB     = 1024
)

// documentsSettings is documents.json (see the package doc).
type documentsSettings struct {
	MaxPDFSizeMB int        `json:"max_pdf_size_mb"`
	UpdatedAt    *time.Time `json:"updated_at"`
}

func defaultDocumentsSettings() documentsSettings {
	return documentsSettings{MaxPDFSizeMB: defaultMaxPDFSizeMB}
}

func (d *documentsSettings) check() error {
	if d.MaxPDFSizeMB < 1 || d.MaxPDFSizeMB > maxMaxPDFSizeMB {
		return errors.New(`field "max_pdf_size_mb": not within 1..1024`)
	}
	return nil
}

// documentLimits is the body of the /api/settings/documents/limits routes.
type documentLimits struct {
	MaxPDFSizeMB int `json:"max_pdf_size_mb"`
}

// GetDocumentLimits serves GET /api/settings/documents/limits.
func (s *Settings) GetDocumentLimits(w http.ResponseWriter, r *http.Request, actorID string) error {
	d, err := s.documents.load()
	if err != nil {
		return err
	}
	fastapi.WriteJSON(w, http.StatusOK, documentLimits{MaxPDFSizeMB: d.MaxPDFSizeMB})
	return nil
}

// PatchDocumentLimits serves PATCH /api/settings/documents/limits:
// {"max_pdf_size_mb": 1..1024}, required.
func (s *Settings) PatchDocumentLimits(w http.ResponseWriter, r *http.Request, actorID string) error {
	body, err := fastapi.ReadObject(w, r)
	if err != nil {
		return err
	}
	size, present := body.OptionalInt("max_pdf_size_mb")
	switch {
	case !present:
		body.Add("missing", fastapi.MsgMissing, "max_pdf_size_mb")
	case size == nil:
	case *size < 1:
		body.Add("greater_than_equal", "Input should be greater than or equal to 1", "max_pdf_size_mb")
	case *size > maxMaxPDFSizeMB:
		body.Add("less_than_equal", fmt.Sprintf("Input should be less than or equal to %d", maxMaxPDFSizeMB), "max_pdf_size_mb")
	}
	if err := body.Finish(); err != nil {
		return err
	}
	var changed []string
	d, err := s.documents.update(r.Context(), func(cur documentsSettings) (documentsSettings, bool) {
		if cur.MaxPDFSizeMB == int(*size) {
			return cur, false
		}
		changed = []string{"max_pdf_size_mb"}
		now := time.Now().UTC()
		return documentsSettings{MaxPDFSizeMB: int(*size), UpdatedAt: &now}, true
	})
	if err != nil {
		return err
	}
	s.changed(r, actorID, documentsSettingsName, changed)
	fastapi.WriteJSON(w, http.StatusOK, documentLimits{MaxPDFSizeMB: d.MaxPDFSizeMB})
	return nil
}

// MaxUploadBytes returns the current upload limit of the document service:
// max_pdf_size_mb of documents.json × 1 MiB. It is cheap enough for every
// request (one stat(2) while the file is unchanged), and a change by PATCH
// or by another process applies to the next call. A corrupt or unreadable
// documents.json gives the settings routes' 503 (*fastapi.Error).
func (s *Settings) MaxUploadBytes() (int64, error) {
	d, err := s.documents.load()
	if err != nil {
		return 0, err
	}
	return int64(d.MaxPDFSizeMB) << 20, nil
}

// LimitUpload passes on r, or the request that replaces it, when its body
// is within MaxUploadBytes, and refuses it otherwise (413, 415, or the
// 503 of a corrupt documents.json), before any of the body goes further
// (see the package doc). A request without a body passes untouched and
// does not read the limit. A spooled body is a file the caller closes
// when the returned request is not r.
func (s *Settings) LimitUpload(r *http.Request) (*http.Request, error) {
	if !hasBody(r) {
		return r, nil
	}
	limit, err := s.MaxUploadBytes()
	if err != nil {
		return nil, err
	}
	return limitBody(r, limit)
}

// hasBody reports whether r has a body to check. A body of unknown length
// is read ahead by one byte: one that ends at once (HTTP/3 clients send a
// GET that way) is marked empty, with ContentLength 0, and is not spooled.
func hasBody(r *http.Request) bool {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return false
	}
	if r.ContentLength > 0 {
		return true
	}
	var b [1]byte
	n, err := io.ReadFull(r.Body, b[:])
	switch {
	case n == 1:
		r.Body = peekedBody{io.MultiReader(bytes.NewReader(b[:]), r.Body), r.Body}
		return true
	case err == io.EOF:
		r.ContentLength = 0
		return false
	default:
		// The read failed: limitBody gets the same error and answers 400.
		r.Body = peekedBody{failedRead{err}, r.Body}
		return true
	}
}

// peekedBody is a request body whose start was read ahead: Reader gives
// it again, then the rest; Closer is the original body.
type peekedBody struct {
	io.Reader
	io.Closer
}

// failedRead is a reader that gives err.
type failedRead struct{ err error }

func (f failedRead) Read([]byte) (int, error) { return 0, f.err }

// uploadTooLarge is the 413 of an upload over the limit.
func uploadTooLarge(limit int64) *fastapi.Error {
	return fastapi.NewError(http.StatusRequestEntityTooLarge,
		fmt.Sprintf("Upload exceeds the maximum size of %d MB", limit>>20))
}

// errEncodedBody refuses a compressed upload: its size on the wire says
// nothing of its size once decoded.
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

// limitBody refuses r, whose body hasBody found, when the body is over
// limit bytes or encoded; a body of unknown length is spooled to an
// unlinked temporary file, which the returned request reads.
func limitBody(r *http.Request, limit int64) (*http.Request, error) {
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
		return nil, fastapi.ErrBodyUnreadable
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
