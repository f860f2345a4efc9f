package accounts

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math"
	"mime"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"
)

// maxBodyBytes bounds every JSON or form body of the API (API.md: 1 MiB).
const maxBodyBytes = 1 << 20

// Messages of pydantic v2, which FastAPI clients may match on.
const (
	msgMissing      = "Field required"
	msgExtra        = "Extra inputs are not permitted"
	msgString       = "Input should be a valid string"
	msgBool         = "Input should be a valid boolean"
	msgInt          = "Input should be a valid integer"
	msgNumber       = "Input should be a valid number"
	msgObject       = "Input should be a valid dictionary or object to extract fields from"
	msgJSONInvalid  = "JSON decode error"
	valueErrorPrefx = "Value error, "
	// PostgreSQL's text cannot hold NUL, so no stored string may: refused
	// with a 422 rather than failing in the database.
	msgNUL = valueErrorPrefx + "Text must not contain NUL characters"
)

// hasNUL reports whether s holds a NUL character, which no text column
// can store.
func hasNUL(s string) bool { return strings.IndexByte(s, 0) >= 0 }

// readBody reads a request body of at most maxBodyBytes. A larger body is
// a 413 and nothing of it is used.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if r.ContentLength > maxBodyBytes {
		return nil, errBodyTooLarge
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return nil, errBodyTooLarge
	}
	if err != nil {
		return nil, newError(http.StatusBadRequest, "Could not read the request body")
	}
	return body, nil
}

// jsonBody is a JSON object request body read field by field, collecting
// pydantic-style validation errors. Fields that no route asks for are
// refused (no mass assignment).
type jsonBody struct {
	raw  map[string]json.RawMessage
	used map[string]bool
	errs ValidationError
}

// readJSONBody reads r's body as a JSON object. Like FastAPI it accepts a
// missing Content-Type or any JSON one.
func readJSONBody(w http.ResponseWriter, r *http.Request) (*jsonBody, error) {
	body, err := readBody(w, r)
	if err != nil {
		return nil, err
	}
	b := &jsonBody{used: map[string]bool{}}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
			b.errs.add("model_attributes_type", msgObject, "body")
			return nil, &b.errs
		}
	}
	if len(bytes.TrimSpace(body)) == 0 {
		b.errs.add("missing", msgMissing, "body")
		return nil, &b.errs
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	err = dec.Decode(&v)
	if err != nil || dec.More() || !utf8.Valid(body) {
		// loc carries the position of the error, as FastAPI reports it.
		pos := 0
		var se *json.SyntaxError
		switch {
		case errors.As(err, &se):
			pos = max(int(se.Offset)-1, 0)
		case errors.Is(err, io.ErrUnexpectedEOF):
			pos = len(body)
		case err == nil && dec.More():
			pos = int(dec.InputOffset())
			pos += len(body[pos:]) - len(bytes.TrimLeft(body[pos:], " \t\r\n"))
		}
		b.errs.add("json_invalid", msgJSONInvalid, "body", pos)
		return nil, &b.errs
	}
	if _, ok := v.(map[string]any); !ok {
		b.errs.add("model_attributes_type", msgObject, "body")
		return nil, &b.errs
	}
	if err := json.Unmarshal(body, &b.raw); err != nil {
		b.errs.add("model_attributes_type", msgObject, "body")
		return nil, &b.errs
	}
	return b, nil
}

func (b *jsonBody) take(name string) (json.RawMessage, bool) {
	b.used[name] = true
	raw, ok := b.raw[name]
	return raw, ok
}

func isNull(raw json.RawMessage) bool { return string(bytes.TrimSpace(raw)) == "null" }

// String reads a required, non-null string field.
func (b *jsonBody) String(name string) string {
	raw, ok := b.take(name)
	if !ok {
		b.errs.add("missing", msgMissing, "body", name)
		return ""
	}
	var s string
	if isNull(raw) || json.Unmarshal(raw, &s) != nil {
		b.errs.add("string_type", msgString, "body", name)
		return ""
	}
	if hasNUL(s) {
		b.errs.add("value_error", msgNUL, "body", name)
		return ""
	}
	return s
}

// OptionalString reads a string field that may be absent or null. It
// returns whether the field was present; value is nil for null.
func (b *jsonBody) OptionalString(name string) (value *string, present bool) {
	raw, ok := b.take(name)
	if !ok {
		return nil, false
	}
	if isNull(raw) {
		return nil, true
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		b.errs.add("string_type", msgString, "body", name)
		return nil, true
	}
	if hasNUL(s) {
		b.errs.add("value_error", msgNUL, "body", name)
		return nil, true
	}
	return &s, true
}

// OptionalBool reads a boolean field that may be absent; null is refused.
func (b *jsonBody) OptionalBool(name string) (value *bool, present bool) {
	raw, ok := b.take(name)
	if !ok {
		return nil, false
	}
	var v bool
	if isNull(raw) || json.Unmarshal(raw, &v) != nil {
		b.errs.add("bool_type", msgBool, "body", name)
		return nil, true
	}
	return &v, true
}

// OptionalInt reads an integer field that may be absent; null is refused.
// A number with a zero fraction (3.0) counts as an integer, as in pydantic.
func (b *jsonBody) OptionalInt(name string) (value *int64, present bool) {
	raw, ok := b.take(name)
	if !ok {
		return nil, false
	}
	var f float64
	if isNull(raw) || json.Unmarshal(raw, &f) != nil || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
		b.errs.add("int_type", msgInt, "body", name)
		return nil, true
	}
	v := int64(f)
	return &v, true
}

// OptionalNumber reads a number field that may be absent; null is refused.
func (b *jsonBody) OptionalNumber(name string) (value *float64, present bool) {
	raw, ok := b.take(name)
	if !ok {
		return nil, false
	}
	var f float64
	if isNull(raw) || json.Unmarshal(raw, &f) != nil {
		b.errs.add("float_type", msgNumber, "body", name)
		return nil, true
	}
	return &f, true
}

// Fail records a rule broken by a field's value.
func (b *jsonBody) Fail(name, msg string) {
	b.errs.add("value_error", valueErrorPrefx+msg, "body", name)
}

// Finish refuses the fields nobody asked for and returns the collected
// validation errors, or nil.
func (b *jsonBody) Finish() error {
	var extra []string
	for name := range b.raw {
		if !b.used[name] {
			extra = append(extra, name)
		}
	}
	sort.Strings(extra)
	for _, name := range extra {
		b.errs.add("extra_forbidden", msgExtra, "body", name)
	}
	return b.errs.err()
}

// maxEmailLen is the longest address SMTP can carry (RFC 5321).
const maxEmailLen = 254

var (
	emailLocalPart = regexp.MustCompile("^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
	emailTLD       = regexp.MustCompile(`^[\p{L}]{2,63}$|^xn--[a-z0-9-]{1,59}$`)
)

// checkEmail validates an address as pydantic's EmailStr would and
// returns the reason it is invalid, or "".
func checkEmail(email string) string {
	const prefix = "value is not a valid email address: "
	if email == "" {
		return prefix + "The email address is empty."
	}
	if len(email) > maxEmailLen {
		return prefix + "The email address is too long."
	}
	at := strings.Count(email, "@")
	if at == 0 {
		return prefix + "An email address must have an @-sign."
	}
	if at > 1 {
		return prefix + "The email address is not valid. It must have exactly one @-sign."
	}
	local, domain, _ := strings.Cut(email, "@")
	if local == "" {
		return prefix + "There must be something before the @-sign."
	}
	if len(local) > 64 || !emailLocalPart.MatchString(local) {
		return prefix + "The part before the @-sign is not valid."
	}
	if domain == "" {
		return prefix + "There must be something after the @-sign."
	}
	labels := strings.Split(strings.ToLower(domain), ".")
	if len(labels) < 2 {
		return prefix + "The part after the @-sign is not valid. It should have a period."
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 || strings.HasPrefix(l, "-") || strings.HasSuffix(l, "-") {
			return prefix + "The part after the @-sign is not valid."
		}
		for _, r := range l {
			if r != '-' && !unicode.IsLetter(r) && !unicode.IsDigit(r) {
				return prefix + "The part after the @-sign contains invalid characters."
			}
		}
	}
	if !emailTLD.MatchString(labels[len(labels)-1]) {
		return prefix + "The part after the @-sign is not valid."
	}
	if msg := checkEmailDomain(domain); msg != "" {
		return prefix + msg
	}
	return ""
}

var uuidPattern = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// isUUID reports whether s is a UUID in its canonical text form.
func isUUID(s string) bool { return uuidPattern.MatchString(s) }
