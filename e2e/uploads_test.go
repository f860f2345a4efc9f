package e2e

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyaccounts/gateway/internal/apitest"
)

// The upload limit at the edge (accounts_upload_limit between
// accounts_auth and reverse_proxy): a body over max_pdf_size_mb MiB of
// documents.json gets 413 before the document service sees a byte of it.
// The shared gateway keeps the default limit, 25 MB; the tests that change
// the limit start a gateway of their own.

const defaultUploadLimit = 25 << 20

// randomBytes returns n random bytes.
func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// uploadTarget returns a path under /api/documents that no other request
// of the run uses.
func uploadTarget(what string) string {
	return "/api/documents/upload-" + what + "-" + randomHex(6)
}

// sendUpload POSTs data to target as a PDF, with a Content-Length, or
// chunked (no declared length).
func sendUpload(c *Client, token, target string, data []byte, chunked bool) *Response {
	c.t.Helper()
	var body io.Reader = bytes.NewReader(data)
	if chunked {
		body = io.MultiReader(body) // unknown length: sent chunked
	}
	req := c.NewRequest(http.MethodPost, target, body)
	req.Header.Set("Content-Type", "application/pdf")
	setToken(req, token)
	return c.Do(req)
}

// expectUploadTooLarge checks the gateway's 413 for a limit of mb MB,
// headers included, and that the document service never saw target.
func expectUploadTooLarge(t *testing.T, r *Response, doc *DocStub, target string, mb int) {
	t.Helper()
	expectGatewayError(t, r, http.StatusRequestEntityTooLarge, fmt.Sprintf("Upload exceeds the maximum size of %d MB", mb))
	if got := doc.WithPathPrefix(target); len(got) != 0 {
		t.Errorf("the refused upload reached the document service (%d requests, %d bytes)", len(got), got[0].BodyLen)
	}
}

// expectGatewayError checks an error the gateway's upload limit answers
// itself: the status, a body of exactly {"detail": detail}, and exactly
// the headers of such an error: application/json, no-store, the body's
// length, and no challenge.
func expectGatewayError(t *testing.T, r *Response, status int, detail string) {
	t.Helper()
	apitest.Scenario{
		ExpectedStatus: status, ExpectedBody: apitest.Detail(detail),
		ExpectedHeaders: map[string]string{
			"Content-Type":     "application/json",
			"Cache-Control":    "no-store",
			"Content-Length":   strconv.Itoa(len(r.Body)),
			"WWW-Authenticate": "",
		},
	}.Check(t, r)
}

// expectProxiedIntact checks that the upload reached the document service
// once, whole, with its length declared, and answered 200.
func expectProxiedIntact(t *testing.T, r *Response, doc *DocStub, target string, data []byte) {
	t.Helper()
	expectStatus(t, r, http.StatusOK)
	rec := oneRequest(t, doc, target, func(r StubRequest) bool { return r.Path == target })
	sum := sha256.Sum256(data)
	if rec.BodyLen != int64(len(data)) || rec.BodySHA256 != hex.EncodeToString(sum[:]) {
		t.Errorf("the service got %d bytes (sha256 %s), want %d (%x)", rec.BodyLen, rec.BodySHA256, len(data), sum)
	}
	if cl := rec.Header.Get("Content-Length"); cl != strconv.Itoa(len(data)) {
		t.Errorf("the service got Content-Length %q, want %d", cl, len(data))
	}
	if ct := rec.Header.Get("Content-Type"); ct != "application/pdf" {
		t.Errorf("the service got Content-Type %q", ct)
	}
}

// expectLimitMB checks GET /api/settings/documents/limits.
func expectLimitMB(t *testing.T, c *Client, token string, mb int) {
	t.Helper()
	r := c.Get("/api/settings/documents/limits", token)
	expectStatus(t, r, http.StatusOK)
	if want := fmt.Sprintf(`{"max_pdf_size_mb":%d}`, mb); string(r.Body) != want {
		t.Fatalf("limits %s, want %s", r.Body, want)
	}
}

// setUploadLimit PATCHes max_pdf_size_mb as the admin.
func setUploadLimit(t *testing.T, c *Client, adminToken string, mb int) {
	t.Helper()
	req := c.NewRequest(http.MethodPatch, "/api/settings/documents/limits", strings.NewReader(fmt.Sprintf(`{"max_pdf_size_mb": %d}`, mb)))
	req.Header.Set("Content-Type", "application/json")
	setToken(req, adminToken)
	r := c.Do(req)
	expectStatus(t, r, http.StatusOK)
	if want := fmt.Sprintf(`{"max_pdf_size_mb":%d}`, mb); string(r.Body) != want {
		t.Fatalf("PATCH limits answered %s, want %s", r.Body, want)
	}
}

// rawConn is an HTTP/1.1 connection to the gateway spoken by hand, for
// what net/http's client does not show: interim 100 responses.
type rawConn struct {
	t    *testing.T
	conn net.Conn
	br   *bufio.Reader
}

func dialRaw(t *testing.T, g *Gateway) *rawConn {
	t.Helper()
	u, err := url.Parse(g.URL)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	// Nothing here may wait on the gateway for long.
	if err := conn.SetDeadline(time.Now().Add(20 * time.Second)); err != nil {
		t.Fatal(err)
	}
	return &rawConn{t: t, conn: conn, br: bufio.NewReader(conn)}
}

// sendHead writes the head of a POST with Expect: 100-continue and the
// given Content-Length, and no body.
func (rc *rawConn) sendHead(host, target, token string, length int64) {
	rc.t.Helper()
	head := "POST " + target + " HTTP/1.1\r\n" +
		"Host: " + host + "\r\n" +
		"Authorization: Bearer " + token + "\r\n" +
		"Content-Type: application/pdf\r\n" +
		"Content-Length: " + strconv.FormatInt(length, 10) + "\r\n" +
		"Expect: 100-continue\r\n\r\n"
	if _, err := io.WriteString(rc.conn, head); err != nil {
		rc.t.Fatal(err)
	}
}

// next reads the next response, interim ones included, body whole.
// "Connection: close" is in its header if the gateway sent it.
func (rc *rawConn) next() *Response {
	rc.t.Helper()
	res, err := http.ReadResponse(rc.br, nil)
	if err != nil {
		rc.t.Fatalf("reading the response: %v", err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		rc.t.Fatalf("reading the response body: %v", err)
	}
	h := res.Header.Clone()
	if res.Close { // net/http moves "Connection: close" out of the header
		h.Set("Connection", "close")
	}
	return &Response{Status: res.StatusCode, Header: h, Body: b}
}

// expectDefaultLimit checks the default limit of the shared gateway (25
// MB) for a new user's uploads, sent with a Content-Length or chunked:
// exactly the limit passes, intact, with its length declared; one byte
// more never reaches the service, not even in part. It returns what the
// caller needs for cases of its own: the gateway, the client, the user's
// token and the data (the limit and one byte).
func expectDefaultLimit(t *testing.T, chunked bool) (*Gateway, *Client, string, []byte) {
	t.Helper()
	g := sharedGateway(t)
	c := g.Client(t)
	_, _, token := c.NewUser()
	expectLimitMB(t, c, token, 25)
	data := randomBytes(t, defaultUploadLimit+1)
	kind := map[bool]string{false: "cl", true: "chunked"}[chunked]

	target := uploadTarget(kind + "-at-limit")
	expectProxiedIntact(t, sendUpload(c, token, target, data[:defaultUploadLimit], chunked), g.Doc, target, data[:defaultUploadLimit])

	target = uploadTarget(kind + "-over-limit")
	expectUploadTooLarge(t, sendUpload(c, token, target, data, chunked), g.Doc, target, 25)
	return g, c, token, data
}

func TestUploadLimitContentLength(t *testing.T) {
	t.Parallel()
	g, c, _, data := expectDefaultLimit(t, false)

	// The limit comes after authentication: no token, no 413.
	target := uploadTarget("cl-anonymous")
	r := sendUpload(c, "", target, data, false)
	expectBearerError(t, r, "Not authenticated")
	if got := g.Doc.WithPathPrefix(target); len(got) != 0 {
		t.Errorf("the anonymous upload reached the document service")
	}
}

func TestUploadLimitChunked(t *testing.T) {
	t.Parallel()
	g, c, token, data := expectDefaultLimit(t, true)

	// Nor does a much larger one; the gateway stops reading at the limit.
	target := uploadTarget("chunked-far-over-limit")
	expectUploadTooLarge(t, sendUpload(c, token, target, bytes.Repeat(data[:1<<20], 40), true), g.Doc, target, 25)
}

// TestUploadLimitExpectContinue: a client that asks before sending its
// body (Expect: 100-continue) gets the 413 instead of "100 Continue", and
// one within the limit gets "100 Continue" and goes through.
func TestUploadLimitExpectContinue(t *testing.T) {
	t.Parallel()
	g := sharedGateway(t)
	c := g.Client(t)
	_, _, token := c.NewUser()
	host := strings.TrimPrefix(g.URL, "http://")

	for _, length := range []int64{defaultUploadLimit + 1, 1 << 40} {
		rc := dialRaw(t, g)
		target := uploadTarget("expect-over-limit")
		rc.sendHead(host, target, token, length)
		r := rc.next() // the body was never sent
		expectUploadTooLarge(t, r, g.Doc, target, 25)
		// The unsent body must not be read as the next request.
		if conn := r.Header.Get("Connection"); conn != "close" {
			t.Errorf("declared %d: Connection %q, want close", length, conn)
		}
	}

	// accounts_auth refuses the same way: a bad token gets its 401 at once,
	// and the body is never asked for.
	{
		rc := dialRaw(t, g)
		target := uploadTarget("expect-bad-token")
		start := time.Now()
		rc.sendHead(host, target, "not-a-token", 1000)
		r := rc.next()
		expectBearerError(t, r, "Could not validate credentials")
		if conn := r.Header.Get("Connection"); conn != "close" {
			t.Errorf("bad token: Connection %q, want close", conn)
		}
		if d := time.Since(start); d > 900*time.Millisecond {
			t.Errorf("bad token: the 401 took %v; the gateway waited for a body it never asked for", d)
		}
		if got := g.Doc.WithPathPrefix(target); len(got) != 0 {
			t.Errorf("bad token: the document service saw %d requests", len(got))
		}
	}

	rc := dialRaw(t, g)
	target := uploadTarget("expect-within-limit")
	data := randomBytes(t, 100000)
	rc.sendHead(host, target, token, int64(len(data)))
	if r := rc.next(); r.Status != http.StatusContinue {
		t.Fatalf("first answer %d %s, want 100 Continue", r.Status, r.Body)
	}
	if _, err := rc.conn.Write(data); err != nil {
		t.Fatal(err)
	}
	// The proxy passes on the service's own "100 Continue" too.
	r := rc.next()
	for r.Status == http.StatusContinue {
		r = rc.next()
	}
	expectProxiedIntact(t, r, g.Doc, target, data)
}

// TestUploadLimitFollowsSettings: the limit is the current
// max_pdf_size_mb; the request right after a PATCH (or another process's
// edit of documents.json) obeys the new value, without a reload.
func TestUploadLimitFollowsSettings(t *testing.T) {
	t.Parallel()
	g := startGateway(t, GatewayOptions{})
	c := g.Client(t)
	admin := c.NewAdmin(g.DatabaseURL)
	_, _, token := c.NewUser()
	const mib = 1 << 20
	data := randomBytes(t, 2*mib+1)

	upload := func(name string, n int, chunked bool) (*Response, string) {
		target := uploadTarget(name)
		return sendUpload(c, token, target, data[:n], chunked), target
	}
	for _, chunked := range []bool{false, true} {
		kind := map[bool]string{false: "cl", true: "chunked"}[chunked]

		setUploadLimit(t, c, admin, 1)
		r, target := upload(kind+"-1mb-over", mib+1, chunked)
		expectUploadTooLarge(t, r, g.Doc, target, 1)
		r, target = upload(kind+"-1mb-at", mib, chunked)
		expectProxiedIntact(t, r, g.Doc, target, data[:mib])
		expectLimitMB(t, c, token, 1)

		setUploadLimit(t, c, admin, 2)
		r, target = upload(kind+"-2mb-under", mib+1, chunked)
		expectProxiedIntact(t, r, g.Doc, target, data[:mib+1])
		r, target = upload(kind+"-2mb-over", 2*mib+1, chunked)
		expectUploadTooLarge(t, r, g.Doc, target, 2)
	}
	// Requests without a body are not limited.
	expectStatus(t, c.Get("/api/documents", token), http.StatusOK)

	// Another process's edit counts too; a broken file refuses uploads
	// (not reads) until it is fixed or removed, which restores 25 MB.
	file := filepath.Join(g.Dir, "settings", "documents.json")
	if err := os.WriteFile(file, []byte(`{"max_pdf_size_mb": 0}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r, target := upload("corrupt-settings", 10, false)
	expectGatewayError(t, r, http.StatusServiceUnavailable, "Settings file documents.json is corrupt; fix or remove it")
	if got := g.Doc.WithPathPrefix(target); len(got) != 0 {
		t.Errorf("an upload reached the document service while the limit was unknown")
	}
	expectStatus(t, c.Get("/api/documents", token), http.StatusOK)
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	r, target = upload("settings-removed", 2*mib+1, true)
	expectProxiedIntact(t, r, g.Doc, target, data)
}
