package fastapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// fuzzSecret is a password planted in seed bodies: no error response may
// ever contain it.
const fuzzSecret = "Secret!XYZ"

// checkValidationError checks the entries of a 422 and that its body does
// not echo the planted secret when the input carried it as a value
// (field names are echoed in loc by design, extra_forbidden).
func checkValidationError(t *testing.T, ve *ValidationError, input []byte) {
	t.Helper()
	if len(ve.Fields) == 0 {
		t.Fatal("empty ValidationError returned as an error")
	}
	for _, fe := range ve.Fields {
		if fe.Type == "" || fe.Msg == "" || len(fe.Loc) == 0 || fe.Loc[0] != "body" {
			t.Fatalf("malformed entry %+v", fe)
		}
	}
	_, body, _ := Status(ve)
	out, err := json.Marshal(body)
	if err != nil {
		t.Fatalf("error body does not marshal: %v", err)
	}
	var keys map[string]json.RawMessage
	_ = json.Unmarshal(input, &keys)
	for k := range keys {
		if strings.Contains(k, fuzzSecret) {
			return
		}
	}
	if bytes.Contains(input, []byte(fuzzSecret)) && bytes.Contains(out, []byte(fuzzSecret)) {
		t.Fatalf("error body %s echoes the secret", out)
	}
}

func FuzzReadObject(f *testing.F) {
	for _, s := range []struct{ body, ct string }{
		{`{"email":"a@b.co","password":"` + fuzzSecret + `"}`, "application/json"},
		{`{"email":"a@b.co","password":"` + fuzzSecret + `","extra":"` + fuzzSecret + `"}`, ""},
		{`{"email":1,"password":"` + fuzzSecret + `","n":"` + fuzzSecret + `","x":"` + fuzzSecret + `","b":"` + fuzzSecret + `","full_name":["` + fuzzSecret + `"]}`, "application/json; charset=utf-8"},
		{`{"password":"` + fuzzSecret + `"`, "application/json"},
		{`{"password":"` + fuzzSecret + `"}{}`, "application/json"},
		{`{"password":"` + fuzzSecret + `"}]`, "application/json"},
		{`["` + fuzzSecret + `"]`, "application/vnd.api+json"},
		{`"` + fuzzSecret + `"`, "application/json"},
		{`{"email":null,"full_name":null,"n":null,"x":null,"b":null}`, "application/json"},
		{`{"n":3.0,"x":1e400,"b":true,"full_name":"\u0000\ud800"}`, "application/json"},
		{`{"n":9007199254740993,"x":-0,"b":"true"}`, "application/json"},
		{"{\"email\":\"\xff\"}", "application/json"},
		{`{"email":"a","email":"b"}`, "application/json"},
		{"   ", "application/json"},
		{"", ""},
		{`{}`, "text/plain"},
		{`{}`, "application/json; charset"},
		{"\ufeff{}", "application/json"},
	} {
		f.Add([]byte(s.body), s.ct)
	}

	f.Fuzz(func(t *testing.T, body []byte, contentType string) {
		r := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
		if contentType != "" {
			r.Header["Content-Type"] = []string{contentType}
		}
		w := httptest.NewRecorder()
		err := func() error {
			b, err := ReadObject(w, r)
			if err != nil {
				if b != nil {
					t.Fatalf("ReadObject returned a body with error %v", err)
				}
				return err
			}
			b.String("email")
			b.String("password")
			b.OptionalString("full_name")
			b.OptionalInt("n")
			b.OptionalNumber("x")
			b.OptionalBool("b")
			return b.Finish()
		}()
		if err == nil {
			return
		}
		var ae *Error
		if errors.As(err, &ae) {
			if ae.Status != http.StatusRequestEntityTooLarge {
				t.Fatalf("error %v, want a 422 or 413", err)
			}
			return
		}
		var ve *ValidationError
		if !errors.As(err, &ve) {
			t.Fatalf("error %T %v, want a 422 or 413", err, err)
		}
		checkValidationError(t, ve, body)
	})
}
