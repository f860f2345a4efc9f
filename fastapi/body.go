package fastapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math"
	"mime"
	"net/http"
	"slices"
	"strings"
	"unicode/utf8"
)

// MaxBodyBytes bounds every JSON or form body (1 MiB).
const MaxBodyBytes = 1 << 20

// Messages of pydantic v2, which FastAPI clients may match on.
const (
	MsgMissing       = "Field required"
	MsgExtra         = "Extra inputs are not permitted"
	MsgString        = "Input should be a valid string"
	MsgBool          = "Input should be a valid boolean"
	MsgInt           = "Input should be a valid integer"
	MsgNumber        = "Input should be a valid number"
	MsgObject        = "Input should be a valid dictionary or object to extract fields from"
	MsgJSONInvalid   = "JSON decode error"
	ValueErrorPrefix = "Value error, "
	// MsgNUL refuses text with a NUL character, which PostgreSQL's text
	// cannot hold: a 422 rather than a failure in the database.
	MsgNUL = ValueErrorPrefix + "Text must not contain NUL characters"
)

// HasNUL reports whether s holds a NUL character.
func HasNUL(s string) bool { return strings.IndexByte(s, 0) >= 0 }

// ReadBody reads a request body of at most MaxBodyBytes. A larger body is
// a 413 (ErrBodyTooLarge) and nothing of it is used; a body that cannot
// be read (the connection broke) is ErrBodyUnreadable.
func ReadBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if r.ContentLength > MaxBodyBytes {
		return nil, ErrBodyTooLarge
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return nil, ErrBodyTooLarge
	}
	if err != nil {
		return nil, ErrBodyUnreadable
	}
	return body, nil
}

// Object is a JSON object request body read field by field, collecting
// pydantic-style validation errors at ["body", name]. Fields that nobody
// reads are refused by Finish (no mass assignment).
type Object struct {
	raw  map[string]json.RawMessage
	used map[string]bool
	errs ValidationError
}

// ReadObject reads r's body (ReadBody) as a JSON object (DecodeObject).
func ReadObject(w http.ResponseWriter, r *http.Request) (*Object, error) {
	body, err := ReadBody(w, r)
	if err != nil {
		return nil, err
	}
	return DecodeObject(r.Header.Get("Content-Type"), body)
}

// DecodeObject reads body, sent with contentType, as a JSON object. Like
// FastAPI it accepts a missing Content-Type or any JSON one; any other is
// 422 model_attributes_type, as is JSON that is no object; an empty body
// is 422 missing and one that is not JSON 422 json_invalid with the byte
// position in loc.
func DecodeObject(contentType string, body []byte) (*Object, error) {
	b := &Object{used: map[string]bool{}}
	if contentType != "" {
		mt, _, err := mime.ParseMediaType(contentType)
		if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
			b.errs.Add("model_attributes_type", MsgObject, "body")
			return nil, &b.errs
		}
	}
	if len(bytes.TrimSpace(body)) == 0 {
		b.errs.Add("missing", MsgMissing, "body")
		return nil, &b.errs
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	err := dec.Decode(&v)
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
		b.errs.Add("json_invalid", MsgJSONInvalid, "body", pos)
		return nil, &b.errs
	}
	if _, ok := v.(map[string]any); !ok {
		b.errs.Add("model_attributes_type", MsgObject, "body")
		return nil, &b.errs
	}
	if err := json.Unmarshal(body, &b.raw); err != nil {
		b.errs.Add("model_attributes_type", MsgObject, "body")
		return nil, &b.errs
	}
	return b, nil
}

// Has reports whether the body holds the field name (null included).
func (b *Object) Has(name string) bool {
	_, ok := b.raw[name]
	return ok
}

// Failed reports whether a rule of the field name has failed so far.
func (b *Object) Failed(name string) bool {
	for _, fe := range b.errs.Fields {
		if len(fe.Loc) == 2 && fe.Loc[1] == name {
			return true
		}
	}
	return false
}

// Valid reports whether no rule has failed so far.
func (b *Object) Valid() bool { return len(b.errs.Fields) == 0 }

func (b *Object) take(name string) (json.RawMessage, bool) {
	b.used[name] = true
	raw, ok := b.raw[name]
	return raw, ok
}

// IsNull reports whether a raw JSON value is null.
func IsNull(raw json.RawMessage) bool { return string(bytes.TrimSpace(raw)) == "null" }

// String reads a required, non-null string field.
func (b *Object) String(name string) string {
	raw, ok := b.take(name)
	if !ok {
		b.errs.Add("missing", MsgMissing, "body", name)
		return ""
	}
	var s string
	if IsNull(raw) || json.Unmarshal(raw, &s) != nil {
		b.errs.Add("string_type", MsgString, "body", name)
		return ""
	}
	if HasNUL(s) {
		b.errs.Add("value_error", MsgNUL, "body", name)
		return ""
	}
	return s
}

// OptionalString reads a string field that may be absent or null. It
// returns whether the field was present; value is nil for null.
func (b *Object) OptionalString(name string) (value *string, present bool) {
	raw, ok := b.take(name)
	if !ok {
		return nil, false
	}
	if IsNull(raw) {
		return nil, true
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		b.errs.Add("string_type", MsgString, "body", name)
		return nil, true
	}
	if HasNUL(s) {
		b.errs.Add("value_error", MsgNUL, "body", name)
		return nil, true
	}
	return &s, true
}

// OptionalRaw reads a field that may be absent as raw JSON, for the
// caller to interpret; it is no longer an unknown field.
func (b *Object) OptionalRaw(name string) (value json.RawMessage, present bool) {
	return b.take(name)
}

// OptionalBool reads a boolean field that may be absent; null is refused.
func (b *Object) OptionalBool(name string) (value *bool, present bool) {
	raw, ok := b.take(name)
	if !ok {
		return nil, false
	}
	var v bool
	if IsNull(raw) || json.Unmarshal(raw, &v) != nil {
		b.errs.Add("bool_type", MsgBool, "body", name)
		return nil, true
	}
	return &v, true
}

// OptionalInt reads an integer field that may be absent; null is refused.
// A number with a zero fraction (3.0) counts as an integer, as in pydantic.
func (b *Object) OptionalInt(name string) (value *int64, present bool) {
	raw, ok := b.take(name)
	if !ok {
		return nil, false
	}
	var f float64
	if IsNull(raw) || json.Unmarshal(raw, &f) != nil || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
		b.errs.Add("int_type", MsgInt, "body", name)
		return nil, true
	}
	v := int64(f)
	return &v, true
}

// OptionalNumber reads a number field that may be absent; null is refused.
func (b *Object) OptionalNumber(name string) (value *float64, present bool) {
	raw, ok := b.take(name)
	if !ok {
		return nil, false
	}
	var f float64
	if IsNull(raw) || json.Unmarshal(raw, &f) != nil {
		b.errs.Add("float_type", MsgNumber, "body", name)
		return nil, true
	}
	return &f, true
}

// Fail records a rule broken by a field's value: 422 value_error with
// "Value error, msg".
func (b *Object) Fail(name, msg string) {
	b.errs.Add("value_error", ValueErrorPrefix+msg, "body", name)
}

// Add records a failing rule of the field name with pydantic's type and
// message.
func (b *Object) Add(typ, msg, name string) {
	b.errs.Add(typ, msg, "body", name)
}

// Finish refuses the fields nobody read (extra_forbidden, in name order)
// and returns the collected validation errors, or nil.
func (b *Object) Finish() error {
	var extra []string
	for name := range b.raw {
		if !b.used[name] {
			extra = append(extra, name)
		}
	}
	slices.Sort(extra)
	for _, name := range extra {
		b.errs.Add("extra_forbidden", MsgExtra, "body", name)
	}
	return b.errs.Err()
}
