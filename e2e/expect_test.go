package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"testing"
	"time"
)

// Assertions on responses.

// fieldError is one entry of a 422 answer.
type fieldError struct {
	Type string `json:"type"`
	Loc  []any  `json:"loc"`
	Msg  string `json:"msg"`
}

// Decode unmarshals the JSON body into v.
func (r *Response) Decode(tb testing.TB, v any) {
	tb.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		tb.Fatalf("body %q is not the expected JSON: %v", r.Body, err)
	}
}

// JSON decodes the body as a JSON object.
func (r *Response) JSON(tb testing.TB) map[string]any {
	tb.Helper()
	var m map[string]any
	r.Decode(tb, &m)
	return m
}

// ContentType is the media type of the response, without parameters.
func (r *Response) ContentType() string {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return mt
}

// expectStatus fails tb unless r has status want.
func expectStatus(tb testing.TB, r *Response, want int) {
	tb.Helper()
	if r.Status != want {
		tb.Fatalf("status %d, want %d; body: %s", r.Status, want, truncate(r.Body, 2000))
	}
}

// expectDetail checks an error answer: status, application/json, and a
// body that is exactly {"detail": detail}.
func expectDetail(tb testing.TB, r *Response, status int, detail string) {
	tb.Helper()
	expectStatus(tb, r, status)
	if ct := r.ContentType(); ct != "application/json" {
		tb.Errorf("Content-Type %q, want application/json", r.Header.Get("Content-Type"))
	}
	var body map[string]any
	r.Decode(tb, &body)
	if len(body) != 1 || body["detail"] != detail {
		tb.Fatalf("body %s, want {\"detail\": %q}", r.Body, detail)
	}
}

// expectBearerError checks a 401 with the detail and exactly one
// "WWW-Authenticate: Bearer".
func expectBearerError(tb testing.TB, r *Response, detail string) {
	tb.Helper()
	expectDetail(tb, r, http.StatusUnauthorized, detail)
	if got := r.Header.Values("Www-Authenticate"); len(got) != 1 || got[0] != "Bearer" {
		tb.Errorf("WWW-Authenticate %q, want exactly [\"Bearer\"]", got)
	}
}

// expectValidation checks a 422 whose detail is exactly want (entries
// with no other members than type, loc and msg).
func expectValidation(tb testing.TB, r *Response, want ...fieldError) {
	tb.Helper()
	expectStatus(tb, r, http.StatusUnprocessableEntity)
	if ct := r.ContentType(); ct != "application/json" {
		tb.Errorf("Content-Type %q, want application/json", r.Header.Get("Content-Type"))
	}
	var body map[string]json.RawMessage
	r.Decode(tb, &body)
	if len(body) != 1 || body["detail"] == nil {
		tb.Fatalf("body %s: want exactly a detail member", r.Body)
	}
	if got, wantJSON := canonicalJSON(tb, body["detail"]), canonicalJSON(tb, want); got != wantJSON {
		tb.Fatalf("422 detail\n got %s\nwant %s", got, wantJSON)
	}
}

// expectNoEcho fails tb if the body contains secret.
func expectNoEcho(tb testing.TB, r *Response, secret string) {
	tb.Helper()
	if secret != "" && bytes.Contains(r.Body, []byte(secret)) {
		tb.Errorf("the response echoes a secret (%q): %s", secret, truncate(r.Body, 2000))
	}
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

// eventually retries check until it returns "" or timeout passes, then
// fails tb with its last message. For effects that travel through the
// database's notifications, which are asynchronous.
func eventually(tb testing.TB, timeout time.Duration, check func() string) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		msg := check()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("after %v: %s", timeout, msg)
		}
		time.Sleep(25 * time.Millisecond)
	}
}
