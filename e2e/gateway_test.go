package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/caddyaccounts/gateway/internal/apitest"
)

// The scenarios of the accounts API through the real gateway: register,
// login, /api/users/me and health. Every answer is checked for its exact
// status, detail and relevant headers (API.md, docs/API.md).

const password = "Gateway!Pass9"

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// Policy messages, each at ["body", "password"] with type value_error.
const (
	msgMinLen  = "Value error, Password must be at least 8 characters long"
	msgMaxLen  = "Value error, Password must be at most 128 characters long"
	msgUpper   = "Value error, Password must contain at least one uppercase letter"
	msgSpecial = "Value error, Password must contain at least one special character"
	msgTest    = `Value error, Password must not contain the word "test"`
)

func pwErr(msg string) fieldError {
	return fieldError{Type: "value_error", Loc: []any{"body", "password"}, Msg: msg}
}

func missing(loc ...any) fieldError {
	return fieldError{Type: "missing", Loc: loc, Msg: "Field required"}
}

func emailErr(reason string) fieldError {
	return fieldError{Type: "value_error", Loc: []any{"body", "email"}, Msg: "value is not a valid email address: " + reason}
}

// formHeaders are those of a form sent to /api/auth/login.
var formHeaders = map[string]string{"Content-Type": "application/x-www-form-urlencoded"}

// register422 is POST /api/auth/register with body (sent as JSON),
// refused with exactly the 422 entries want, and an answer that holds
// none of secrets.
func register422(name string, body any, want []fieldError, secrets ...string) apitest.Scenario {
	return apitest.Scenario{
		Name: name, Method: http.MethodPost, URL: "/api/auth/register", Body: body,
		Headers:        map[string]string{"Content-Type": "application/json"},
		ExpectedStatus: http.StatusUnprocessableEntity, ExpectedBody: apitest.Detail(want), ExpectedHeaders: jsonHeaders,
		NotExpectedContent: noEcho(secrets...),
	}
}

// login422 is POST /api/auth/login with form, refused with exactly the
// 422 entries want, and an answer that holds none of secrets.
func login422(name string, form url.Values, want []fieldError, secrets ...string) apitest.Scenario {
	return apitest.Scenario{
		Name: name, Method: http.MethodPost, URL: "/api/auth/login", Body: form.Encode(),
		Headers:        formHeaders,
		ExpectedStatus: http.StatusUnprocessableEntity, ExpectedBody: apitest.Detail(want), ExpectedHeaders: jsonHeaders,
		NotExpectedContent: noEcho(secrets...),
	}
}

// loginRefused is POST /api/auth/login with form, refused with 401
// "Incorrect email or password" and a Bearer challenge, and an answer
// that holds none of secrets.
func loginRefused(form url.Values, secrets ...string) apitest.Scenario {
	return apitest.Scenario{
		Method: http.MethodPost, URL: "/api/auth/login", Body: form.Encode(),
		Headers:        formHeaders,
		ExpectedStatus: http.StatusUnauthorized, ExpectedBody: apitest.Detail("Incorrect email or password"), ExpectedHeaders: bearerHeaders,
		NotExpectedContent: noEcho(secrets...),
	}
}

// countUsers counts the accounts whose email is email in any case.
func countUsers(t *testing.T, g *Gateway, email string) int {
	t.Helper()
	var n int
	querySQL(t, g.DatabaseURL, "SELECT count(*) FROM users WHERE lower(email) = lower($1)", []any{strings.TrimSpace(email)}, &n)
	return n
}

// expectUserObject checks the members of a user object: exactly the
// contract's, with their types and formats.
func expectUserObject(t *testing.T, body []byte) apiUser {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("user object %s: %v", body, err)
	}
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if want := []string{"created_at", "email", "email_verified", "id", "is_active", "role", "updated_at"}; !slices.Equal(keys, want) {
		t.Errorf("user object members %v, want %v: %s", keys, want, body)
	}
	var u apiUser
	if err := json.Unmarshal(body, &u); err != nil {
		t.Fatalf("user object %s: %v", body, err)
	}
	if !uuidRE.MatchString(u.ID) {
		t.Errorf("id %q is not a UUID", u.ID)
	}
	for _, name := range []string{"is_active", "email_verified"} {
		if _, ok := m[name].(bool); !ok {
			t.Errorf("%s %v is not a boolean", name, m[name])
		}
	}
	for name, v := range map[string]string{"created_at": u.CreatedAt, "updated_at": u.UpdatedAt} {
		ts, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			t.Errorf("%s %q is not RFC 3339: %v", name, v, err)
			continue
		}
		if !strings.HasSuffix(v, "Z") {
			t.Errorf("%s %q is not in UTC (Z)", name, v)
		}
		if d := time.Since(ts); d < -time.Minute || d > 10*time.Minute {
			t.Errorf("%s %q is not about now", name, v)
		}
	}
	return u
}

// sameUser compares what identifies an account and cannot change by
// itself (updated_at may move on a login, say).
func sameUser(a, b apiUser) bool {
	return a.ID == b.ID && a.Email == b.Email && a.Role == b.Role && a.IsActive == b.IsActive && a.CreatedAt == b.CreatedAt
}

// ---------------------------------------------------------------------
// Register

func TestRegisterReturnsUser(t *testing.T) {
	t.Parallel()
	g := sharedGateway(t)
	c := g.Client(t)
	email := "Mixed.Case." + uniqueEmail(t)
	pw := randomPassword()

	r := c.PostJSON("/api/auth/register", "", map[string]string{
		"email": "  " + email + "\t", "password": pw, "full_name": "Ada Lovelace",
	})
	expectStatus(t, r, http.StatusCreated)
	if ct := r.ContentType(); ct != "application/json" {
		t.Errorf("Content-Type %q", r.Header.Get("Content-Type"))
	}
	u := expectUserObject(t, r.Body)
	if u.Email != email {
		t.Errorf("email %q, want %q (trimmed, case kept)", u.Email, email)
	}
	if u.Role != "user" || !u.IsActive {
		t.Errorf("role %q is_active %v, want user true", u.Role, u.IsActive)
	}
	expectNoEcho(t, r, pw)
	if bytes.Contains(r.Body, []byte("hashed_password")) || bytes.Contains(r.Body, []byte("argon2")) {
		t.Errorf("the user object shows the password hash: %s", r.Body)
	}

	// Stored trimmed and as given, with a profile row.
	var stored string
	var fullName *string
	querySQL(t, g.DatabaseURL, "SELECT u.email, p.full_name FROM users u JOIN profiles p ON p.user_id = u.id WHERE u.id = $1",
		[]any{u.ID}, &stored, &fullName)
	if stored != email {
		t.Errorf("stored email %q, want %q", stored, email)
	}
	if fullName == nil || *fullName != "Ada Lovelace" {
		t.Errorf("profile full_name %v, want Ada Lovelace", fullName)
	}

	// /api/users/me shows the same object.
	token := c.Login(email, pw)
	me := c.Get("/api/users/me", token)
	expectStatus(t, me, http.StatusOK)
	if got := expectUserObject(t, me.Body); !sameUser(got, u) {
		t.Errorf("/api/users/me %+v, want the registered user %+v", got, u)
	}
}

func TestRegisterDuplicateEmailAnyCase(t *testing.T) {
	t.Parallel()
	g := sharedGateway(t)
	c := g.Client(t)
	email := uniqueEmail(t)
	c.Register(email, password)
	for _, dup := range []string{email, strings.ToUpper(email), "  " + strings.ToUpper(email[:1]) + email[1:] + " "} {
		r := c.PostJSON("/api/auth/register", "", map[string]string{"email": dup, "password": "Other!Pass1"})
		expectDetail(t, r, http.StatusConflict, "Email already registered")
	}
	if n := countUsers(t, g, email); n != 1 {
		t.Errorf("%d accounts with %s, want 1", n, email)
	}
}

func TestRegisterPasswordPolicy(t *testing.T) {
	t.Parallel()
	g := sharedGateway(t)
	c := g.Client(t)
	for _, tc := range []struct {
		name, password string
		want           []fieldError
	}{
		{"too short", "Ab!1234", []fieldError{pwErr(msgMinLen)}},
		{"too long", "Ab!" + strings.Repeat("x", 126), []fieldError{pwErr(msgMaxLen)}},
		{"no uppercase", "lower!case9", []fieldError{pwErr(msgUpper)}},
		{"no special character", "NoSpecial123", []fieldError{pwErr(msgSpecial)}},
		{"contains test in any case", "My!TeSt-Pass1", []fieldError{pwErr(msgTest)}},
		{"three rules", "xtESTx", []fieldError{pwErr(msgMinLen), pwErr(msgSpecial), pwErr(msgTest)}},
		{"every rule", "atestb", []fieldError{pwErr(msgMinLen), pwErr(msgUpper), pwErr(msgSpecial), pwErr(msgTest)}},
		{"empty", "", []fieldError{pwErr(msgMinLen), pwErr(msgUpper), pwErr(msgSpecial)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			email := uniqueEmail(t)
			c.Run(t, register422(tc.name, map[string]string{"email": email, "password": tc.password}, tc.want, tc.password))
			if n := countUsers(t, g, email); n != 0 {
				t.Errorf("the account was created")
			}
		})
	}
	t.Run("boundaries accepted", func(t *testing.T) {
		for _, pw := range []string{"Abcdef!1", "Ab!" + strings.Repeat("x", 125), "Ünïcödé!"} {
			c.Register(uniqueEmail(t), pw)
		}
	})
}

func TestRegisterInvalidEmail(t *testing.T) {
	t.Parallel()
	g := sharedGateway(t)
	c := g.Client(t)
	for _, tc := range []struct{ email, reason string }{
		{"plainaddress", "An email address must have an @-sign."},
		{"two@@example.com", "The email address is not valid. It must have exactly one @-sign."},
		{"@example.com", "There must be something before the @-sign."},
		{"someone@", "There must be something after the @-sign."},
		{"someone@localhost", "The part after the @-sign is not valid. It should have a period."},
	} {
		t.Run(tc.email, func(t *testing.T) {
			c.Run(t, register422(tc.email, map[string]string{"email": tc.email, "password": password}, []fieldError{emailErr(tc.reason)}, password))
			if n := countUsers(t, g, tc.email); n != 0 {
				t.Errorf("the account was created")
			}
		})
	}
	notString := []fieldError{{Type: "string_type", Loc: []any{"body", "email"}, Msg: "Input should be a valid string"}}
	c.Table(t, []apitest.Scenario{
		register422("not a string", map[string]any{"email": 123, "password": password}, notString),
		register422("null", map[string]any{"email": nil, "password": password}, notString),
		register422("with a bad password", map[string]string{"email": "nope", "password": "short"},
			[]fieldError{emailErr("An email address must have an @-sign."), pwErr(msgMinLen), pwErr(msgUpper), pwErr(msgSpecial)}, "short"),
	})
}

func TestRegisterMissingFields(t *testing.T) {
	t.Parallel()
	g := sharedGateway(t)
	c := g.Client(t)
	email := uniqueEmail(t)
	c.Table(t, []apitest.Scenario{
		register422("empty object", map[string]any{}, []fieldError{missing("body", "email"), missing("body", "password")}, password),
		register422("no password", map[string]any{"email": email}, []fieldError{missing("body", "password")}, password),
		register422("no email", map[string]any{"password": password}, []fieldError{missing("body", "email")}, password),
		register422("no body", "", []fieldError{missing("body")}, password),
	})
	if n := countUsers(t, g, email); n != 0 {
		t.Errorf("an account was created")
	}
}

func TestRegisterUnknownFieldsRefused(t *testing.T) {
	t.Parallel()
	g := sharedGateway(t)
	c := g.Client(t)
	extra := func(name string) fieldError {
		return fieldError{Type: "extra_forbidden", Loc: []any{"body", name}, Msg: "Extra inputs are not permitted"}
	}
	email := uniqueEmail(t)
	c.Run(t, register422("role", map[string]any{"email": email, "password": password, "role": "admin"},
		[]fieldError{extra("role")}, password))
	c.Run(t, register422("id, is_active and role", map[string]any{
		"email": email, "password": password, "role": "admin", "is_active": true,
		"id": "00000000-0000-4000-8000-000000000000",
	}, []fieldError{extra("id"), extra("is_active"), extra("role")}))

	if n := countUsers(t, g, email); n != 0 {
		t.Fatalf("the account was created (%d rows)", n)
	}
	c.Run(t, loginRefused(url.Values{"username": {email}, "password": {password}}))

	// The same account without the extras is an ordinary user.
	u := c.Register(email, password)
	if u.Role != "user" || u.ID == "00000000-0000-4000-8000-000000000000" {
		t.Errorf("registered %+v", u)
	}
}

func TestRegisterBodyNotJSON(t *testing.T) {
	t.Parallel()
	g := sharedGateway(t)
	c := g.Client(t)
	jsonInvalid := func(pos int) fieldError {
		return fieldError{Type: "json_invalid", Loc: []any{"body", pos}, Msg: "JSON decode error"}
	}
	notObject := fieldError{Type: "model_attributes_type", Loc: []any{"body"}, Msg: "Input should be a valid dictionary or object to extract fields from"}

	// Positions as FastAPI reports them (Python's JSONDecodeError.pos).
	truncated := `{"email": "a@b.co", "password": "Secret!Pass9"`
	plain := register422("text/plain", `{"email":"x@example.com","password":"Secret!Pass9"}`, []fieldError{notObject}, "Secret!Pass9")
	plain.Headers = map[string]string{"Content-Type": "text/plain"}
	c.Table(t, []apitest.Scenario{
		register422("bad", "{bad", []fieldError{jsonInvalid(1)}),
		register422("truncated", truncated, []fieldError{jsonInvalid(len(truncated))}, "Secret!Pass9"),
		register422("array", "[]", []fieldError{notObject}),
		plain,
	})

	// A bad literal: FastAPI puts the literal's start (0) in loc, the
	// gateway the offending byte; the contract fixes only the type.
	r := c.PostJSON("/api/auth/register", "", "not json")
	expectStatus(t, r, http.StatusUnprocessableEntity)
	var got struct{ Detail []fieldError }
	r.Decode(t, &got)
	if len(got.Detail) != 1 || got.Detail[0].Type != "json_invalid" || got.Detail[0].Msg != "JSON decode error" ||
		len(got.Detail[0].Loc) != 2 || got.Detail[0].Loc[0] != "body" {
		t.Errorf("not json: %s", r.Body)
	}
}

func TestRegisterBodyTooLarge(t *testing.T) {
	t.Parallel()
	g := sharedGateway(t)
	c := g.Client(t)
	email := uniqueEmail(t)
	big := fmt.Sprintf(`{"email": %q, "password": %q, "full_name": "%s"}`, email, password, strings.Repeat("x", 1<<20))

	tooLarge := func(name string, body any) apitest.Scenario {
		return apitest.Scenario{
			Name: name, Method: http.MethodPost, URL: "/api/auth/register", Body: body,
			Headers:        map[string]string{"Content-Type": "application/json"},
			ExpectedStatus: http.StatusRequestEntityTooLarge, ExpectedBody: apitest.Detail("Request body too large"), ExpectedHeaders: jsonHeaders,
		}
	}
	// A reader of unknown length makes the client send it chunked.
	chunked := tooLarge("chunked", io.MultiReader(strings.NewReader(big)))
	chunked.Request = func(req *http.Request) {
		if req.ContentLength != 0 {
			t.Errorf("ContentLength %d, want unknown", req.ContentLength)
		}
	}
	c.Table(t, []apitest.Scenario{tooLarge("Content-Length", big), chunked})
	if n := countUsers(t, g, email); n != 0 {
		t.Errorf("the account was created")
	}
}

// ---------------------------------------------------------------------
// Login

func TestLoginReturnsToken(t *testing.T) {
	t.Parallel()
	g := sharedGateway(t)
	c := g.Client(t)
	email := uniqueEmail(t)
	pw := randomPassword()
	c.Register(email, pw)

	for _, form := range []url.Values{
		{"username": {email}, "password": {pw}},
		{"username": {email}, "password": {pw}, "grant_type": {"password"}, "scope": {""}},
		{"username": {email}, "password": {pw}, "grant_type": {"password"}, "scope": {"read write"}},
	} {
		r := c.PostForm("/api/auth/login", form)
		expectStatus(t, r, http.StatusOK)
		if ct := r.ContentType(); ct != "application/json" {
			t.Errorf("Content-Type %q", r.Header.Get("Content-Type"))
		}
		m := r.JSON(t)
		if len(m) != 3 {
			t.Errorf("body members %v, want access_token, token_type, expires_in", m)
		}
		if tok, _ := m["access_token"].(string); strings.Count(tok, ".") != 2 {
			t.Errorf("access_token %v is not a JWT", m["access_token"])
		}
		if m["token_type"] != "bearer" {
			t.Errorf("token_type %v, want bearer", m["token_type"])
		}
		if m["expires_in"] != float64(28800) {
			t.Errorf("expires_in %v, want 28800", m["expires_in"])
		}
		expectNoEcho(t, r, pw)
	}
}

func TestLoginWrongPasswordOrUnknownEmail(t *testing.T) {
	t.Parallel()
	g := sharedGateway(t)
	c := g.Client(t)
	email := uniqueEmail(t)
	c.Register(email, password)

	wrong := c.Run(t, loginRefused(url.Values{"username": {email}, "password": {"Wrong!Pass1"}}, "Wrong!Pass1"))
	unknown := c.Run(t, loginRefused(url.Values{"username": {"nobody." + email}, "password": {password}}))
	if !bytes.Equal(wrong.Body, unknown.Body) {
		t.Errorf("unknown email %s differs from wrong password %s", unknown.Body, wrong.Body)
	}
}

func TestLoginMissingFields(t *testing.T) {
	t.Parallel()
	g := sharedGateway(t)
	c := g.Client(t)
	email := uniqueEmail(t)
	both := []fieldError{missing("body", "username"), missing("body", "password")}
	c.Table(t, []apitest.Scenario{
		login422("no password", url.Values{"username": {email}}, []fieldError{missing("body", "password")}, password),
		login422("no username", url.Values{"password": {password}}, []fieldError{missing("body", "username")}, password),
		login422("empty form", url.Values{}, both, password),
		login422("empty values", url.Values{"username": {""}, "password": {""}}, both, password),
		login422("other grant_type", url.Values{"username": {email}, "password": {password}, "grant_type": {"client_credentials"}},
			[]fieldError{{Type: "string_pattern_mismatch", Loc: []any{"body", "grant_type"}, Msg: "String should match pattern '^password$'"}}, password),
		{Name: "JSON body", Method: http.MethodPost, URL: "/api/auth/login", Body: map[string]string{"username": email, "password": password},
			ExpectedStatus: http.StatusUnprocessableEntity, ExpectedBody: apitest.Detail(both), ExpectedHeaders: jsonHeaders,
			NotExpectedContent: noEcho(password)},
	})
}

func TestLoginInactiveUser(t *testing.T) {
	t.Parallel()
	g := sharedGateway(t)
	c := g.Client(t)
	email := uniqueEmail(t)
	pw := randomPassword()
	u := c.Register(email, pw)
	if n := g.Exec(t, "UPDATE users SET is_active = false WHERE id = $1", u.ID); n != 1 {
		t.Fatalf("deactivated %d rows", n)
	}
	c.Run(t, apitest.Scenario{
		Method: http.MethodPost, URL: "/api/auth/login", Body: url.Values{"username": {email}, "password": {pw}}.Encode(), Headers: formHeaders,
		ExpectedStatus: http.StatusForbidden, ExpectedBody: apitest.Detail("Inactive user"), ExpectedHeaders: jsonHeaders,
		NotExpectedContent: noEcho(pw),
	})
	// Without the password, an inactive account looks like any other.
	c.Run(t, loginRefused(url.Values{"username": {email}, "password": {"Wrong!Pass1"}}))
}

func TestLoginEmailAnyCase(t *testing.T) {
	t.Parallel()
	g := sharedGateway(t)
	c := g.Client(t)
	email := "Case.Mixed." + uniqueEmail(t)
	u := c.Register(email, password)
	for _, typed := range []string{strings.ToLower(email), strings.ToUpper(email), " " + email + " "} {
		token := c.Login(typed, password)
		me := c.Get("/api/users/me", token)
		expectStatus(t, me, http.StatusOK)
		if got := expectUserObject(t, me.Body); got.ID != u.ID || got.Email != email {
			t.Errorf("login as %q gave %+v, want %s %s", typed, got, u.ID, email)
		}
	}
}

// ---------------------------------------------------------------------
// /api/users/me

func TestMe(t *testing.T) {
	t.Parallel()
	g := sharedGateway(t)
	c := g.Client(t)
	u, _, token := c.NewUser()
	r := c.Get("/api/users/me", token)
	expectStatus(t, r, http.StatusOK)
	got := expectUserObject(t, r.Body)
	if !sameUser(got, u) {
		t.Errorf("me %+v, want %+v", got, u)
	}
	// The scheme is case-insensitive, as FastAPI reads it.
	req := c.NewRequest(http.MethodGet, "/api/users/me", nil)
	req.Header.Set("Authorization", "bearer "+token)
	expectStatus(t, c.Do(req), http.StatusOK)
}

func TestMeWithoutCredentials(t *testing.T) {
	t.Parallel()
	g := sharedGateway(t)
	c := g.Client(t)
	scenarios := []apitest.Scenario{{Name: "no Authorization", URL: "/api/users/me",
		ExpectedStatus: http.StatusUnauthorized, ExpectedBody: apitest.Detail("Not authenticated"), ExpectedHeaders: bearerHeaders}}
	for _, auth := range []string{"Basic dXNlcjpwYXNz", "Bearer", "Token abc.def.ghi", "bearer"} {
		scenarios = append(scenarios, apitest.Scenario{Name: auth, URL: "/api/users/me", Headers: map[string]string{"Authorization": auth},
			ExpectedStatus: http.StatusUnauthorized, ExpectedBody: apitest.Detail("Not authenticated"), ExpectedHeaders: bearerHeaders})
	}
	c.Table(t, scenarios)
}

func TestMeBadToken(t *testing.T) {
	t.Parallel()
	g := sharedGateway(t)
	c := g.Client(t)
	var scenarios []apitest.Scenario
	for _, token := range []string{"garbage", "a.b.c", "eyJhbGciOiJSUzI1NiJ9.e30.AAAA", strings.Repeat("x", 5000)} {
		scenarios = append(scenarios, apitest.Scenario{Name: token[:min(len(token), 20)], URL: "/api/users/me", Headers: map[string]string{"Authorization": "Bearer " + token},
			ExpectedStatus: http.StatusUnauthorized, ExpectedBody: apitest.Detail("Could not validate credentials"), ExpectedHeaders: bearerHeaders})
	}
	c.Table(t, scenarios)
}

// expectTokenRefused waits for a change made in the database to reach the
// gateway (by a database notification), then checks that the API and the
// document route both refuse token with the same 401.
func expectTokenRefused(t *testing.T, c *Client, token, whose string) {
	t.Helper()
	eventually(t, 5*time.Second, func() string {
		r := c.Get("/api/users/me", token)
		if r.Status != http.StatusUnauthorized {
			return fmt.Sprintf("%s token still gets %d %s", whose, r.Status, r.Body)
		}
		return ""
	})
	expectBearerError(t, c.Get("/api/users/me", token), "Could not validate credentials")
	expectBearerError(t, c.Get("/api/documents", token), "Could not validate credentials")
}

func TestMeDeletedUser(t *testing.T) {
	t.Parallel()
	g := sharedGateway(t)
	c := g.Client(t)
	u, _, token := c.NewUser()
	expectStatus(t, c.Get("/api/users/me", token), http.StatusOK) // the user is now cached
	if n := g.Exec(t, "DELETE FROM users WHERE id = $1", u.ID); n != 1 {
		t.Fatalf("deleted %d rows", n)
	}
	expectTokenRefused(t, c, token, "a deleted user's")
}

func TestMeDeactivatedUser(t *testing.T) {
	t.Parallel()
	g := sharedGateway(t)
	c := g.Client(t)
	u, _, token := c.NewUser()
	expectStatus(t, c.Get("/api/users/me", token), http.StatusOK)
	if n := g.Exec(t, "UPDATE users SET is_active = false WHERE id = $1", u.ID); n != 1 {
		t.Fatalf("deactivated %d rows", n)
	}
	expectTokenRefused(t, c, token, "a deactivated user's")

	// Reactivated by hand in the database, the same token works again
	// (the API's deactivation ends the tokens for good:
	// TestReactivationRevivesNoToken).
	g.Exec(t, "UPDATE users SET is_active = true WHERE id = $1", u.ID)
	eventually(t, 5*time.Second, func() string {
		if r := c.Get("/api/users/me", token); r.Status != http.StatusOK {
			return fmt.Sprintf("a reactivated user's token gets %d %s", r.Status, r.Body)
		}
		return ""
	})
}

// TestMeIgnoresClientUserID: the API never takes the user from a header.
func TestMeIgnoresClientUserID(t *testing.T) {
	t.Parallel()
	g := sharedGateway(t)
	c := g.Client(t)
	a, _, tokenA := c.NewUser()
	b, _, _ := c.NewUser()

	req := c.NewRequest(http.MethodGet, "/api/users/me", nil)
	setToken(req, tokenA)
	spoofIdentity(req.Header, b.ID)
	r := c.Do(req)
	expectStatus(t, r, http.StatusOK)
	if got := expectUserObject(t, r.Body); got.ID != a.ID {
		t.Errorf("me with a forged X-User-Id is %s, want %s", got.ID, a.ID)
	}

	req = c.NewRequest(http.MethodGet, "/api/users/me", nil)
	spoofIdentity(req.Header, b.ID)
	expectBearerError(t, c.Do(req), "Not authenticated")
}

// ---------------------------------------------------------------------
// Health and the API's own 404

func TestHealth(t *testing.T) {
	t.Parallel()
	g := sharedGateway(t)
	g.Client(t).Run(t, apitest.Scenario{URL: "/api/health",
		ExpectedStatus: http.StatusOK, ExpectedBody: `{"status":"ok"}`, ExpectedHeaders: jsonHeaders})
}

func TestUnknownAPIPath(t *testing.T) {
	t.Parallel()
	g := sharedGateway(t)
	c := g.Client(t)
	c.Run(t, apitest.Scenario{URL: "/api/no/such/route",
		ExpectedStatus: http.StatusNotFound, ExpectedBody: apitest.Detail("Not Found"), ExpectedHeaders: jsonHeaders})
	r := c.Run(t, apitest.Scenario{URL: "/api/auth/register",
		ExpectedStatus: http.StatusMethodNotAllowed, ExpectedBody: apitest.Detail("Method Not Allowed"), ExpectedHeaders: jsonHeaders})
	if allow := r.Header.Get("Allow"); !strings.Contains(allow, "POST") {
		t.Errorf("Allow %q, want POST in it", allow)
	}
}

// TestReactivationRevivesNoToken: an admin deactivates a user through the
// API, then reactivates them. Every token and refresh token issued before
// the deactivation stays refused, on the API and on the document
// service's route; the user signs in again as usual.
func TestReactivationRevivesNoToken(t *testing.T) {
	t.Parallel()
	g := sharedGateway(t)
	c := g.Client(t)
	admin := c.Register(uniqueEmail(t), password)
	g.Exec(t, "UPDATE users SET role = 'admin' WHERE id = $1", admin.ID)
	adminToken := c.Login(admin.Email, password)

	u := c.Register(uniqueEmail(t), password)
	login := c.PostForm("/api/auth/login", url.Values{"username": {u.Email}, "password": {password}})
	expectStatus(t, login, http.StatusOK)
	var body tokenBody
	login.Decode(t, &body)
	access, refresh := body.AccessToken, refreshCookieOf(t, login)
	second := c.Login(u.Email, password)
	for _, tok := range []string{access, second} {
		expectStatus(t, c.Get("/api/users/me", tok), http.StatusOK)
		expectStatus(t, c.Get("/api/documents/before", tok), http.StatusOK)
	}

	r := patchUser(c, adminToken, u.ID, `{"is_active": false}`)
	expectStatus(t, r, http.StatusOK)
	expectBearerError(t, c.Get("/api/users/me", access), "Could not validate credentials")
	r = patchUser(c, adminToken, u.ID, `{"is_active": true}`)
	expectStatus(t, r, http.StatusOK)
	if got := expectUserObject(t, r.Body); !got.IsActive {
		t.Fatalf("reactivation answered %s", r.Body)
	}

	marker := "/api/documents/revived-" + randomHex(6)
	for _, tok := range []string{access, second} {
		expectBearerError(t, c.Get("/api/users/me", tok), "Could not validate credentials")
		expectBearerError(t, c.Get(marker, tok), "Could not validate credentials")
	}
	if got := g.Doc.WithPathPrefix(marker); len(got) != 0 {
		t.Errorf("%d requests with a revived token reached the document service", len(got))
	}
	expectBearerError(t, c.PostJSON("/api/auth/refresh", "", map[string]string{"refresh_token": refresh}), "Invalid refresh token")

	fresh := c.Login(u.Email, password)
	expectStatus(t, c.Get("/api/users/me", fresh), http.StatusOK)
	expectStatus(t, c.Get("/api/documents/after", fresh), http.StatusOK)
}

// TestLegacyLongPasswordNotLockedOut: an account of the old backend whose
// real password is longer than 72 bytes (stored as bcrypt of its first
// 72 bytes, as passlib did) signs in with any password sharing those 72
// bytes, as before; such a login does not replace the hash, so the real
// password keeps working.
func TestLegacyLongPasswordNotLockedOut(t *testing.T) {
	t.Parallel()
	g := sharedGateway(t)
	c := g.Client(t)
	real := strings.Repeat("Long!pässwörd-", 6) // 96 bytes
	hash, err := bcrypt.GenerateFromPassword([]byte(real[:72]), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	email := uniqueEmail(t)
	var id string
	querySQL(t, g.DatabaseURL, `INSERT INTO users (email, hashed_password, role, is_active) VALUES ($1, $2, 'user', true) RETURNING id::text`,
		[]any{email, string(hash)}, &id)
	// The last bcrypt hash of the shared database goes with the test.
	t.Cleanup(func() { g.Exec(t, "DELETE FROM users WHERE id = $1", id) })

	for i, typed := range []string{real[:72] + " and another tail", real, real} {
		r := c.PostForm("/api/auth/login", url.Values{"username": {email}, "password": {typed}})
		expectStatus(t, r, http.StatusOK)
		var stored string
		querySQL(t, g.DatabaseURL, "SELECT hashed_password FROM users WHERE id = $1", []any{id}, &stored)
		if stored != string(hash) {
			t.Fatalf("login %d replaced the bcrypt hash", i)
		}
	}
	r := c.PostForm("/api/auth/login", url.Values{"username": {email}, "password": {real[:71]}})
	expectBearerError(t, r, "Incorrect email or password")
}

// TestLoginTimingWithLegacyHashes: on the real binary, after taking over
// the old backend's database, an unknown email, a wrong password on an
// argon2id account and a wrong password on a not-yet-upgraded bcrypt
// account are not told apart by time. 40 failed logins of each kind,
// interleaved in a new random order every round after a warm-up round:
// each kind's interquartile range overlaps the unknown email's. (The argon2id cost is lowered so that the run
// stays short; bcrypt at cost 10 then costs ten times more than argon2id,
// as cost 12 does beside the default parameters.)
func TestLoginTimingWithLegacyHashes(t *testing.T) {
	t.Parallel()
	g := startGateway(t, GatewayOptions{Caddyfile: testCaddyfile(t, "", "argon2 4096 1 1\nrate_limit off")})
	c := g.Client(t)
	argon := c.Register(uniqueEmail(t), "Argon!pass1")
	hash, err := bcrypt.GenerateFromPassword([]byte("Legacy!pass1"), 10)
	if err != nil {
		t.Fatal(err)
	}
	legacy := uniqueEmail(t)
	g.Exec(t, `INSERT INTO users (email, hashed_password, role, is_active) VALUES ($1, $2, 'user', true)`, legacy, string(hash))

	kinds := []struct {
		name, email string
		took        []time.Duration
	}{
		{name: "unknown email", email: uniqueEmail(t)},
		{name: "wrong password, argon2id", email: argon.Email},
		{name: "wrong password, bcrypt", email: legacy},
	}
	const samples = 40
	for round := -1; round < samples; round++ {
		for _, i := range rand.Perm(len(kinds)) {
			start := time.Now()
			r := c.PostForm("/api/auth/login", url.Values{"username": {kinds[i].email}, "password": {"Wrong!pass9"}})
			took := time.Since(start)
			expectBearerError(t, r, "Incorrect email or password")
			if round >= 0 {
				kinds[i].took = append(kinds[i].took, took)
			}
		}
	}
	quartiles := func(d []time.Duration) (q1, med, q3 time.Duration) {
		s := slices.Clone(d)
		slices.Sort(s)
		return s[len(s)/4], s[len(s)/2], s[3*len(s)/4]
	}
	rq1, rmed, rq3 := quartiles(kinds[0].took)
	for _, k := range kinds {
		q1, med, q3 := quartiles(k.took)
		t.Logf("%-26s median %6.1f ms, IQR %6.1f – %6.1f ms", k.name,
			float64(med.Microseconds())/1000, float64(q1.Microseconds())/1000, float64(q3.Microseconds())/1000)
		if q1 > rq3 || rq1 > q3 {
			t.Errorf("%s: median %v, IQR %v–%v; unknown email: median %v, IQR %v–%v: the distributions do not overlap",
				k.name, med, q1, q3, rmed, rq1, rq3)
		}
	}
}
