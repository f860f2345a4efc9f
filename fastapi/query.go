package fastapi

import (
	"fmt"
	"math"
	"math/big"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Query holds a request's query parameters as FastAPI reads them,
// validated one by one into pydantic-style 422 entries at
// ["query", name]; Err returns them.
type Query struct {
	raw    string
	values map[string]string
	errs   ValidationError
}

// ReadQuery parses r's query string as Starlette does: pairs split on
// "&", "+" is a space, an invalid %-escape is kept as text, bytes that
// are not UTF-8 become U+FFFD, a name without "=" has the value "", and of
// a repeated name the last value counts (Values gives all of them).
func ReadQuery(r *http.Request) *Query {
	q := &Query{raw: r.URL.RawQuery, values: map[string]string{}}
	for pair := range strings.SplitSeq(q.raw, "&") {
		if pair == "" {
			continue
		}
		name, value, _ := strings.Cut(pair, "=")
		q.values[unquote(name)] = unquote(value)
	}
	return q
}

// unquote decodes one query-string component leniently, like Python's
// urllib.parse.unquote_plus.
func unquote(s string) string {
	if !strings.ContainsAny(s, "%+") {
		return strings.ToValidUTF8(s, "\uFFFD")
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '+':
			b = append(b, ' ')
		case c == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]):
			n, _ := strconv.ParseUint(s[i+1:i+3], 16, 8)
			b = append(b, byte(n))
			i += 2
		default:
			b = append(b, c)
		}
	}
	return strings.ToValidUTF8(string(b), "\uFFFD")
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// Err returns the failures of the parameters read so far, or nil.
func (q *Query) Err() error { return q.errs.Err() }

// Fail records a failing rule of the parameter name.
func (q *Query) Fail(typ, msg, name string) { q.errs.Add(typ, msg, "query", name) }

// String returns the parameter's value and whether it was given.
func (q *Query) String(name string) (string, bool) {
	v, ok := q.values[name]
	return v, ok
}

// Values returns every value of the parameter name, in order (nil when
// it is not given).
func (q *Query) Values(name string) []string {
	var out []string
	for pair := range strings.SplitSeq(q.raw, "&") {
		k, v, _ := strings.Cut(pair, "=")
		if pair != "" && unquote(k) == name {
			out = append(out, unquote(v))
		}
	}
	return out
}

// pydanticInt is the text form of an integer pydantic accepts from a
// string (surrounding whitespace aside): an optional sign, digits with
// single underscores between them, and an optional fraction of zeros.
var pydanticInt = regexp.MustCompile(`^[+-]?[0-9]+(_[0-9]+)*(\.0+)?$`)

// maxIntDigits is the longest integer pydantic parses (Python's limit).
const maxIntDigits = 4300

// Int returns the integer parameter name, def when it is absent. A value
// outside [min, max] is refused; but when max is math.MaxInt64 (no upper
// bound) a larger value is clamped to it instead, since a database could
// not take it and it means "past the end" anyway.
func (q *Query) Int(name string, def, min, max int64) int64 {
	s, ok := q.values[name]
	if !ok {
		return def
	}
	s = strings.TrimSpace(s)
	if !pydanticInt.MatchString(s) {
		q.Fail("int_parsing", "Input should be a valid integer, unable to parse string as an integer", name)
		return def
	}
	s, _, _ = strings.Cut(s, ".")
	s = strings.ReplaceAll(s, "_", "")
	if len(strings.TrimLeft(s, "+-")) > maxIntDigits {
		q.Fail("int_parsing_size", "Unable to parse input string as an integer, exceeded maximum size", name)
		return def
	}
	n, _ := new(big.Int).SetString(s, 10)
	switch {
	case n.Cmp(big.NewInt(min)) < 0:
		q.Fail("greater_than_equal", fmt.Sprintf("Input should be greater than or equal to %d", min), name)
		return def
	case max == math.MaxInt64 && !n.IsInt64():
		return max
	case n.Cmp(big.NewInt(max)) > 0:
		q.Fail("less_than_equal", fmt.Sprintf("Input should be less than or equal to %d", max), name)
		return def
	}
	return n.Int64()
}

// Enum returns the parameter name if it is given and one of allowed;
// another value is refused with msg (pydantic's "Input should be 'a' or
// 'b'").
func (q *Query) Enum(name, msg string, allowed ...string) (string, bool) {
	v, ok := q.values[name]
	if !ok {
		return "", false
	}
	for _, a := range allowed {
		if v == a {
			return v, true
		}
	}
	q.Fail("enum", msg, name)
	return "", false
}

// MsgBoolParsing is pydantic's message for text that is no boolean.
const MsgBoolParsing = "Input should be a valid boolean, unable to interpret input"

// Bool returns the boolean parameter name, if given and valid; see
// ParseBool.
func (q *Query) Bool(name string) (value, ok bool) {
	s, ok := q.values[name]
	if !ok {
		return false, false
	}
	v, valid := ParseBool(s)
	if !valid {
		q.Fail("bool_parsing", MsgBoolParsing, name)
		return false, false
	}
	return v, true
}

// ParseBool reads a boolean as pydantic does from a string: 1, 0, and
// true/false, yes/no, on/off, t/f, y/n in any letter case.
func ParseBool(s string) (value, ok bool) {
	switch strings.ToLower(s) {
	case "1", "true", "t", "yes", "y", "on":
		return true, true
	case "0", "false", "f", "no", "n", "off":
		return false, true
	}
	return false, false
}

// UUID returns the UUID parameter name in canonical form, if given and
// valid (ParseUUID).
func (q *Query) UUID(name string) (string, bool) {
	v, ok := q.values[name]
	if !ok {
		return "", false
	}
	id, reason := ParseUUID(v)
	if reason != "" {
		q.Fail("uuid_parsing", "Input should be a valid UUID, "+reason, name)
		return "", false
	}
	return id, true
}

// MsgDateTime is the message of a date-time parameter that is no RFC 3339
// date-time (pydantic's datetime_parsing, with the reason).
const MsgDateTime = "Input should be a valid datetime, expected an RFC 3339 date-time with a time zone"

// Time returns the RFC 3339 date-time parameter name, if given and valid.
func (q *Query) Time(name string) *time.Time {
	v, ok := q.values[name]
	if !ok {
		return nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		q.Fail("datetime_parsing", MsgDateTime, name)
		return nil
	}
	return &t
}

// Page is the skip and limit of a paged list.
type Page struct {
	Skip, Limit int64
}

// Page reads skip (default 0, no upper bound) and limit (default
// defaultLimit, 1 to maxLimit), as FastAPI's usual paging parameters.
func (q *Query) Page(defaultLimit, maxLimit int64) Page {
	return Page{
		Skip:  q.Int("skip", 0, 0, math.MaxInt64),
		Limit: q.Int("limit", defaultLimit, 1, maxLimit),
	}
}

// WritePage writes one page of a list as a JSON array, with the count
// before paging in X-Total-Count.
func WritePage[T any](w http.ResponseWriter, items []T, total int64) {
	if items == nil {
		items = []T{}
	}
	w.Header().Set("X-Total-Count", strconv.FormatInt(total, 10))
	WriteJSON(w, http.StatusOK, items)
}
