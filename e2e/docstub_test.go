package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The stub document service (DocStub): a small server on loopback that
// records what the gateway forwards.

// StubRequest is one request a DocStub received.
type StubRequest struct {
	Method string
	// Path is the decoded path; RequestURI is exactly what was sent.
	Path       string
	RawQuery   string
	RequestURI string
	// Header holds the headers as the stub's Go server read them: names
	// in canonical form where they are valid tokens (X_User_Id arrives
	// as "X_user_id").
	Header http.Header
	// Body holds the first maxStubBody bytes; BodyLen and BodySHA256
	// cover all of it.
	Body       []byte
	BodyLen    int64
	BodySHA256 string
	// Trailer holds the trailers that came after the body.
	Trailer http.Header
	// Done is when the stub finished reading the body.
	Done time.Time
}

// maxStubBody bounds the body bytes a DocStub keeps per request.
const maxStubBody = 1 << 20

// DocStub is a stand-in for the document service (or the Vite dev
// server) on loopback. It records every request and answers 200 JSON
// echoing it (method, path, query, request_uri, headers, body_len,
// body_sha256), except on these paths (under any prefix):
//
//	.../slow?ms=N      sleeps N ms (default 3000) before answering
//	.../stream?id=ID   writes "chunk 1\n", flushes, waits for Release(ID)
//	                   (at most 10 s), then writes "chunk 2\n"
//	.../status/NNN     answers status NNN with {"detail": "stub status NNN"}
type DocStub struct {
	srv     *httptest.Server
	mu      sync.Mutex
	reqs    []StubRequest
	gates   map[string]chan struct{}
	closing chan struct{}
	once    sync.Once
}

// NewDocStub starts a stub on 127.0.0.1.
func NewDocStub() *DocStub {
	s := &DocStub{gates: map[string]chan struct{}{}, closing: make(chan struct{})}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	return s
}

// Addr is the stub's host:port.
func (s *DocStub) Addr() string { return s.srv.Listener.Addr().String() }

// URL is the stub's base URL.
func (s *DocStub) URL() string { return s.srv.URL }

// Close stops the stub: its port is closed afterwards. Waiting handlers
// are released.
func (s *DocStub) Close() {
	s.once.Do(func() {
		close(s.closing)
		s.srv.CloseClientConnections()
		s.srv.Close()
	})
}

// Requests returns every request received so far.
func (s *DocStub) Requests() []StubRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.reqs)
}

// Where returns the requests for which keep is true.
func (s *DocStub) Where(keep func(StubRequest) bool) []StubRequest {
	var out []StubRequest
	for _, r := range s.Requests() {
		if keep(r) {
			out = append(out, r)
		}
	}
	return out
}

// ForUser returns the requests whose X-User-Id names user id.
func (s *DocStub) ForUser(id string) []StubRequest {
	return s.Where(func(r StubRequest) bool { return slices.Contains(r.Header.Values("X-User-Id"), id) })
}

// WithPathPrefix returns the requests whose path starts with prefix.
func (s *DocStub) WithPathPrefix(prefix string) []StubRequest {
	return s.Where(func(r StubRequest) bool { return strings.HasPrefix(r.Path, prefix) })
}

// Release lets the .../stream?id=ID request go on to its second chunk.
func (s *DocStub) Release(id string) { close(s.gate(id)) }

func (s *DocStub) gate(id string) chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch, ok := s.gates[id]
	if !ok {
		ch = make(chan struct{})
		s.gates[id] = ch
	}
	return ch
}

func (s *DocStub) serve(w http.ResponseWriter, r *http.Request) {
	h := sha256.New()
	var kept bytes.Buffer
	n, _ := io.Copy(io.MultiWriter(h, &limitedWriter{w: &kept, n: maxStubBody}), r.Body)
	rec := StubRequest{
		Method:     r.Method,
		Path:       r.URL.Path,
		RawQuery:   r.URL.RawQuery,
		RequestURI: r.RequestURI,
		Header:     r.Header.Clone(),
		Body:       kept.Bytes(),
		BodyLen:    n,
		BodySHA256: hex.EncodeToString(h.Sum(nil)),
		Trailer:    r.Trailer.Clone(),
		Done:       time.Now(),
	}
	s.mu.Lock()
	s.reqs = append(s.reqs, rec)
	s.mu.Unlock()

	last := r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]
	switch {
	case last == "slow":
		ms, err := strconv.Atoi(r.URL.Query().Get("ms"))
		if err != nil {
			ms = 3000
		}
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
		case <-r.Context().Done():
			return
		case <-s.closing:
			return
		}
	case last == "stream":
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, "chunk 1\n")
		http.NewResponseController(w).Flush()
		select {
		case <-s.gate(r.URL.Query().Get("id")):
		case <-time.After(10 * time.Second):
		case <-r.Context().Done():
			return
		case <-s.closing:
			return
		}
		_, _ = io.WriteString(w, "chunk 2\n")
		return
	case strings.Contains(r.URL.Path, "/status/"):
		code, err := strconv.Atoi(last)
		if err == nil && code >= 200 && code <= 599 {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("X-Stub", "yes")
			w.WriteHeader(code)
			_ = json.NewEncoder(w).Encode(map[string]string{"detail": "stub status " + last})
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"method":      rec.Method,
		"path":        rec.Path,
		"query":       rec.RawQuery,
		"request_uri": rec.RequestURI,
		"headers":     rec.Header,
		"body_len":    rec.BodyLen,
		"body_sha256": rec.BodySHA256,
	})
}

// limitedWriter keeps the first n bytes and drops the rest.
type limitedWriter struct {
	w io.Writer
	n int64
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if l.n > 0 {
		k := min(int64(len(p)), l.n)
		_, _ = l.w.Write(p[:k])
		l.n -= k
	}
	return len(p), nil
}
