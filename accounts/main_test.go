package accounts

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddyaccounts/gateway/internal/apitest"
	"github.com/caddyaccounts/gateway/internal/pgtest"
	"github.com/caddyaccounts/gateway/migrations"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// testEnv is a Service on a fresh, migrated database, served over real
// HTTP on loopback.
type testEnv struct {
	t    testing.TB
	svc  *Service
	db   *pgxpool.Pool
	srv  *httptest.Server
	logs *observer.ObservedLogs
}

// newTestEnv makes a testEnv; cfg may adjust the service's Config.
func newTestEnv(t testing.TB, cfg ...func(*Config)) *testEnv {
	t.Helper()
	dbURL := pgtest.Shared(t).NewDB(t, "accounts-migrated", func(ctx context.Context, url string) error {
		pool, err := NewPool(ctx, url, 1)
		if err != nil {
			return err
		}
		defer pool.Close()
		_, err = Migrate(ctx, pool, migrations.FS)
		return err
	})
	pool, err := NewPool(context.Background(), dbURL, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	keys, err := NewKeySet(testKey(t, 0))
	if err != nil {
		t.Fatal(err)
	}
	c := Config{Argon2: fastArgon2}
	for _, f := range cfg {
		f(&c)
	}
	core, logs := observer.New(zap.DebugLevel)
	svc, err := New(pool, keys, c, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	return &testEnv{t: t, svc: svc, db: pool, srv: newServer(t, svc), logs: logs}
}

// runService runs svc's background work (change listener, outbox
// sender) until the test ends.
func runService(t testing.TB, svc *Service) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		svc.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// newServer serves svc's API on loopback until the test ends.
func newServer(t testing.TB, svc *Service) *httptest.Server {
	srv := httptest.NewServer(svc.Handler())
	t.Cleanup(srv.Close)
	return srv
}

// formOf makes a form from name, value pairs.
func formOf(kv ...string) url.Values {
	v := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Add(kv[i], kv[i+1])
	}
	return v
}

// response is what a test request got back.
type response struct {
	Status int
	Header http.Header
	Body   []byte
}

// JSON decodes the body into a generic value.
func (r *response) JSON(t testing.TB) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(r.Body, &v); err != nil {
		t.Fatalf("body %q is not JSON: %v", r.Body, err)
	}
	return v
}

// Detail returns the "detail" of an error body as compact JSON text.
func (r *response) Detail(t testing.TB) string {
	t.Helper()
	var v struct {
		Detail json.RawMessage `json:"detail"`
	}
	if err := json.Unmarshal(r.Body, &v); err != nil {
		t.Fatalf("body %q is not JSON: %v", r.Body, err)
	}
	var buf bytes.Buffer
	_ = json.Compact(&buf, v.Detail)
	return buf.String()
}

// table runs HTTP scenarios against the test server, each as a subtest
// (the project's one vocabulary for them: internal/apitest).
func (e *testEnv) table(t *testing.T, scenarios []apitest.Scenario) {
	t.Helper()
	apitest.Table(t, e.srv.URL, apitest.Client(e.srv.Client()), scenarios)
}

// do sends a request. body may be nil, a string (sent as is), url.Values
// (sent as a form) or any other value (sent as JSON).
func (e *testEnv) do(method, path, token string, body any) *response {
	e.t.Helper()
	var auth []string
	if token != "" {
		auth = []string{"Authorization", "Bearer " + token}
	}
	return send(e.t, e.srv.Client(), e.srv.URL, method, path, body, auth...)
}

// send makes a request to base+path with client. body is as for
// testEnv.do; header holds name, value pairs.
func send(t testing.TB, client *http.Client, base, method, path string, body any, header ...string) *response {
	t.Helper()
	var rd io.Reader
	contentType := ""
	switch b := body.(type) {
	case nil:
	case string:
		rd, contentType = strings.NewReader(b), "application/json"
	case url.Values:
		rd, contentType = strings.NewReader(b.Encode()), "application/x-www-form-urlencoded"
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd, contentType = bytes.NewReader(j), "application/json"
	}
	req, err := http.NewRequest(method, base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return &response{Status: res.StatusCode, Header: res.Header, Body: b}
}

// register creates a user through the API and returns it.
func (e *testEnv) register(email, password string) *User {
	e.t.Helper()
	r := e.do("POST", "/api/auth/register", "", map[string]any{"email": email, "password": password})
	if r.Status != http.StatusCreated {
		e.t.Fatalf("register %s: %d %s", email, r.Status, r.Body)
	}
	u := &User{}
	if err := json.Unmarshal(r.Body, u); err != nil {
		e.t.Fatal(err)
	}
	return u
}

// login returns an access token for the account.
func (e *testEnv) login(email, password string) string {
	e.t.Helper()
	r := e.do("POST", "/api/auth/login", "", url.Values{"username": {email}, "password": {password}})
	if r.Status != http.StatusOK {
		e.t.Fatalf("login %s: %d %s", email, r.Status, r.Body)
	}
	var tr tokenResponse
	if err := json.Unmarshal(r.Body, &tr); err != nil {
		e.t.Fatal(err)
	}
	return tr.AccessToken
}

// user registers an account and returns it with a token.
func (e *testEnv) user(email string) (*User, string) {
	e.t.Helper()
	u := e.register(email, "Secret!pw1")
	return u, e.login(email, "Secret!pw1")
}

// admin creates an admin account and returns it with a token.
func (e *testEnv) admin(email string) (*User, string) {
	e.t.Helper()
	u, _, err := e.svc.CreateAdmin(context.Background(), email, "Admin!pw1")
	if err != nil {
		e.t.Fatal(err)
	}
	return u, e.login(email, "Admin!pw1")
}

// exec runs SQL on the test database.
func (e *testEnv) exec(sql string, args ...any) {
	e.t.Helper()
	if _, err := e.db.Exec(context.Background(), sql, args...); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
}

// tokenResponse is the body of a successful login.
type tokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
}
