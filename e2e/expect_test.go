package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/caddyaccounts/gateway/internal/apitest"
	"github.com/caddyaccounts/gateway/internal/testcheck"
)

// Assertions on responses: the vocabulary is internal/apitest's
// Scenario (Client.Run, Client.Table); the expect* helpers below are
// scenarios' checks applied to an answer already got.

var (
	// jsonHeaders are the headers every JSON answer of the gateway
	// carries exactly.
	jsonHeaders = map[string]string{"Content-Type": "application/json"}
	// bearerHeaders are those of a 401: JSON, and exactly one Bearer
	// challenge.
	bearerHeaders = map[string]string{"Content-Type": "application/json", "WWW-Authenticate": "Bearer"}
)

// fieldError is one entry of a 422 answer.
type fieldError struct {
	Type string `json:"type"`
	Loc  []any  `json:"loc"`
	Msg  string `json:"msg"`
}

// noEcho lists the secrets an answer must not hold, for
// Scenario.NotExpectedContent ("" is no secret: every body holds it).
func noEcho(secrets ...string) []string {
	return slices.DeleteFunc(slices.Clone(secrets), func(s string) bool { return s == "" })
}

// expectStatus fails tb unless r has status want.
func expectStatus(tb testing.TB, r *Response, want int) {
	tb.Helper()
	apitest.Scenario{ExpectedStatus: want}.Check(tb, r)
}

// expectDetail checks an error answer: status, Content-Type exactly
// application/json, and a body that is exactly {"detail": detail}.
func expectDetail(tb testing.TB, r *Response, status int, detail string) {
	tb.Helper()
	apitest.Scenario{ExpectedStatus: status, ExpectedBody: apitest.Detail(detail), ExpectedHeaders: jsonHeaders}.Check(tb, r)
}

// expectBearerError checks a 401 with the detail and exactly one
// "WWW-Authenticate: Bearer".
func expectBearerError(tb testing.TB, r *Response, detail string) {
	tb.Helper()
	apitest.Scenario{ExpectedStatus: http.StatusUnauthorized, ExpectedBody: apitest.Detail(detail), ExpectedHeaders: bearerHeaders}.Check(tb, r)
}

// expectValidation checks a 422 whose detail is exactly want (entries
// with no other members than type, loc and msg).
func expectValidation(tb testing.TB, r *Response, want ...fieldError) {
	tb.Helper()
	apitest.Scenario{ExpectedStatus: http.StatusUnprocessableEntity, ExpectedBody: apitest.Detail(want), ExpectedHeaders: jsonHeaders}.Check(tb, r)
}

// expectNoEcho fails tb if the body contains secret, whatever the status.
func expectNoEcho(tb testing.TB, r *Response, secret string) {
	tb.Helper()
	apitest.Scenario{ExpectedStatus: r.Status, NotExpectedContent: noEcho(secret)}.Check(tb, r)
}

// canonicalJSON re-encodes v (a value, or JSON text as json.RawMessage or
// []byte) with sorted object members.
func canonicalJSON(tb testing.TB, v any) string {
	tb.Helper()
	var raw []byte
	switch x := v.(type) {
	case json.RawMessage:
		raw = x
	case []byte:
		raw = x
	default:
		var err error
		if raw, err = json.Marshal(v); err != nil {
			tb.Fatal(err)
		}
	}
	var generic any
	if err := json.Unmarshal(raw, &generic); err != nil {
		tb.Fatalf("%s is not JSON: %v", raw, err)
	}
	out, err := json.Marshal(generic)
	if err != nil {
		tb.Fatal(err)
	}
	return string(out)
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + fmt.Sprintf("... (%d bytes)", len(b))
	}
	return string(b)
}

// eventually is testcheck.Eventually: effects that travel through the
// database's notifications are asynchronous.
func eventually(tb testing.TB, timeout time.Duration, check func() string) {
	tb.Helper()
	testcheck.Eventually(tb, timeout, check)
}
