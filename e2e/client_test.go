package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyaccounts/gateway/internal/apitest"
)

// The client of a gateway (Client), which records every /api/* exchange
// for the OpenAPI check of the run, and the test data (uniqueEmail,
// randomPassword).

// Client speaks HTTP to a gateway from a loopback address of its own
// (127.1.x.y, where the system allows it), following no redirects.
type Client struct {
	t    testing.TB
	Base string
	// SourceIP is the client's address, "" for the system's choice.
	SourceIP string
	HTTP     *http.Client
}

var (
	sourceOnce sync.Once
	sourceOK   bool
	sourceNext atomic.Uint32
)

// nextSourceIP returns a loopback address no other client of this run
// uses, or nil where only 127.0.0.1 can be bound.
func nextSourceIP() net.IP {
	sourceOnce.Do(func() {
		l, err := net.Listen("tcp", "127.1.0.1:0")
		if err == nil {
			l.Close()
			sourceOK = true
		}
	})
	if !sourceOK {
		return nil
	}
	n := sourceNext.Add(1) - 1
	return net.IPv4(127, 1+byte(n/(250*250)), byte(n/250%250), byte(n%250)+1).To4()
}

func newClient(tb testing.TB, base string) *Client {
	ip := nextSourceIP()
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	c := &Client{t: tb, Base: base}
	if ip != nil {
		dialer.LocalAddr = &net.TCPAddr{IP: ip}
		c.SourceIP = ip.String()
	}
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         dialer.DialContext,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     30 * time.Second,
	}
	c.HTTP = &http.Client{
		Transport:     tr,
		Timeout:       60 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	tb.Cleanup(tr.CloseIdleConnections)
	return c
}

// Response is what a request got back, body read whole: apitest's, so
// that scenarios and the Client's own requests give the same thing.
type Response = apitest.Response

// NewRequest makes a request for path (relative to the gateway).
func (c *Client) NewRequest(method, path string, body io.Reader) *http.Request {
	c.t.Helper()
	req, err := http.NewRequest(method, c.Base+path, body)
	if err != nil {
		c.t.Fatal(err)
	}
	return req
}

// Do sends req and reads the whole response.
func (c *Client) Do(req *http.Request) *Response {
	c.t.Helper()
	r, err := c.send(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	return r
}

// send is the Client as an apitest.Sender: it sends req with c.HTTP and
// records the exchange for the OpenAPI check of the run.
func (c *Client) send(req *http.Request) (*Response, error) {
	r, err := apitest.Client(c.HTTP)(req)
	if err == nil {
		record(c.t, req, r)
	}
	return r, err
}

// Run sends the scenario to the gateway (its URL relative to c.Base) and
// checks the answer; see apitest.Scenario. The exchange is recorded like
// any other of c.
func (c *Client) Run(tb testing.TB, s apitest.Scenario) *Response {
	tb.Helper()
	return s.Run(tb, c.Base, c.send)
}

// Table runs each scenario as a subtest of t named after it (Run).
func (c *Client) Table(t *testing.T, scenarios []apitest.Scenario) {
	t.Helper()
	apitest.Table(t, c.Base, c.send, scenarios)
}

// Exchange is one response to a request of a Client, recorded for the
// OpenAPI check of the run (openapi_test.go).
type Exchange struct {
	// Test is the name of the test whose Client sent the request.
	Test string
	// Method and URI (path and query, as sent) of the request.
	Method, URI string
	// Status, Header and Body of the response.
	Status int
	Header http.Header
	Body   []byte
}

// recorded holds the exchanges of every Client of the run whose path is
// under /api/ or is /.well-known/jwks.json, in the order they ended,
// while recording is on (TestMain: flag -e2e.openapi).
var recorded struct {
	on        atomic.Bool
	mu        sync.Mutex
	exchanges []Exchange
}

// record keeps the exchange of req, if recording is on and its path is
// one of the API's.
func record(tb testing.TB, req *http.Request, r *Response) {
	if !recorded.on.Load() {
		return
	}
	if p := req.URL.Path; !strings.HasPrefix(p, "/api/") && p != "/api" && p != "/.well-known/jwks.json" {
		return
	}
	ex := Exchange{
		Test:   tb.Name(),
		Method: req.Method,
		URI:    req.URL.RequestURI(),
		Status: r.Status,
		Header: r.Header.Clone(),
		Body:   bytes.Clone(r.Body),
	}
	recorded.mu.Lock()
	recorded.exchanges = append(recorded.exchanges, ex)
	recorded.mu.Unlock()
}

// recordedExchanges returns the exchanges recorded so far.
func recordedExchanges() []Exchange {
	recorded.mu.Lock()
	defer recorded.mu.Unlock()
	return slices.Clone(recorded.exchanges)
}

// Get sends GET path, with the token if not "".
func (c *Client) Get(path, token string) *Response {
	c.t.Helper()
	req := c.NewRequest(http.MethodGet, path, nil)
	setToken(req, token)
	return c.Do(req)
}

// PostJSON sends body as JSON: a string or []byte as is, anything else
// marshalled.
func (c *Client) PostJSON(path, token string, body any) *Response {
	c.t.Helper()
	return c.SendJSON(http.MethodPost, path, token, body)
}

// SendJSON sends body as JSON, like PostJSON, with any method; a nil or
// "" body sends none (and no Content-Type).
func (c *Client) SendJSON(method, path, token string, body any) *Response {
	c.t.Helper()
	var raw []byte
	switch b := body.(type) {
	case string:
		raw = []byte(b)
	case []byte:
		raw = b
	case nil:
	default:
		var err error
		if raw, err = json.Marshal(b); err != nil {
			c.t.Fatal(err)
		}
	}
	var rd io.Reader
	if len(raw) > 0 {
		rd = bytes.NewReader(raw)
	}
	req := c.NewRequest(method, path, rd)
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	setToken(req, token)
	return c.Do(req)
}

// PostForm sends form as application/x-www-form-urlencoded.
func (c *Client) PostForm(path string, form url.Values) *Response {
	c.t.Helper()
	req := c.NewRequest(http.MethodPost, path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return c.Do(req)
}

func setToken(req *http.Request, token string) {
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
}

// apiUser is the user object of the API.
type apiUser struct {
	ID       string `json:"id"`
	Email    string `json:"email"`
	Role     string `json:"role"`
	IsActive bool   `json:"is_active"`
	// EmailVerified: the user followed a mailed link (or an admin said so).
	EmailVerified bool   `json:"email_verified"`
	CreatedAt     string `json:"created_at"`
	UpdatedAt     string `json:"updated_at"`
}

// tokenBody is the body of a successful login.
type tokenBody struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
}

// Register creates an account through the API; it must succeed.
func (c *Client) Register(email, password string) apiUser {
	c.t.Helper()
	r := c.PostJSON("/api/auth/register", "", map[string]string{"email": email, "password": password})
	if r.Status != http.StatusCreated {
		c.t.Fatalf("register %s: %d %s", email, r.Status, r.Body)
	}
	var u apiUser
	r.Decode(c.t, &u)
	return u
}

// Login returns an access token for the account; it must succeed.
func (c *Client) Login(email, password string) string {
	c.t.Helper()
	r := c.PostForm("/api/auth/login", url.Values{"username": {email}, "password": {password}})
	if r.Status != http.StatusOK {
		c.t.Fatalf("login %s: %d %s", email, r.Status, r.Body)
	}
	var tb tokenBody
	r.Decode(c.t, &tb)
	if tb.AccessToken == "" {
		c.t.Fatalf("login %s: no access_token in %s", email, r.Body)
	}
	return tb.AccessToken
}

// NewUser registers a fresh account (unique email, random password) and
// logs it in.
func (c *Client) NewUser() (u apiUser, password, token string) {
	c.t.Helper()
	password = randomPassword()
	u = c.Register(uniqueEmail(c.t), password)
	return u, password, c.Login(u.Email, password)
}

// NewAdmin creates an admin account with `caddy accounts create-admin`
// on the gateway's database dbURL and logs it in; it returns the token.
func (c *Client) NewAdmin(dbURL string) string {
	c.t.Helper()
	email, password := uniqueEmail(c.t), randomPassword()
	createAdmin(c.t, dbURL, email, password)
	return c.Login(email, password)
}

// ---------------------------------------------------------------------
// Test data

var emailSeq atomic.Uint64

var notEmailChars = regexp.MustCompile(`[^a-z0-9]+`)

// uniqueEmail returns an address no other test of this run uses, named
// after the test.
func uniqueEmail(tb testing.TB) string {
	name := strings.Trim(notEmailChars.ReplaceAllString(strings.ToLower(tb.Name()), "."), ".")
	if len(name) > 40 {
		name = name[len(name)-40:]
		name = strings.Trim(name, ".")
	}
	return fmt.Sprintf("%s.%d.%s@example.com", name, emailSeq.Add(1), randomHex(3))
}

// randomPassword returns a password that meets the policy and appears
// nowhere else (so a search for it in logs or bodies means a leak).
func randomPassword() string { return "Pw!" + randomHex(10) + "Z" }

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}
