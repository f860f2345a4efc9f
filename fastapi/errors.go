// Package fastapi is FastAPI's wire format for plain net/http handlers,
// so that a Go service answers exactly as the FastAPI backend it replaces
// did: errors as {"detail": "..."}, validation failures as 422 lists of
// pydantic v2 entries, JSON bodies read field by field (unknown fields
// refused), query strings parsed as Starlette parses them, UUIDs as
// pydantic reads them, and paging with X-Total-Count.
//
// It parses bytes and values and knows nothing of what a service is
// about. A handler returns an error; WriteError turns it into the
// response:
//
//	func handle(w http.ResponseWriter, r *http.Request) error {
//		body, err := fastapi.ReadObject(w, r)
//		if err != nil {
//			return err // 413, 422 json_invalid, ...
//		}
//		name := body.String("name") // 422 missing / string_type
//		if err := body.Finish(); err != nil {
//			return err // every failing field, and extra_forbidden
//		}
//		fastapi.WriteJSON(w, http.StatusOK, map[string]string{"name": name})
//		return nil
//	}
package fastapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
)

// Error is an application error with FastAPI's shape: {"detail": "..."}.
type Error struct {
	// Status is the HTTP status code.
	Status int
	// Detail is the client-facing message; it never contains a secret.
	Detail string
	// Header holds extra response headers such as WWW-Authenticate.
	Header http.Header
	// Err is the internal cause, for logs only.
	Err error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%d %s: %v", e.Status, e.Detail, e.Err)
	}
	return fmt.Sprintf("%d %s", e.Status, e.Detail)
}

func (e *Error) Unwrap() error { return e.Err }

// NewError returns an *Error with the given status and detail.
func NewError(status int, detail string) *Error {
	return &Error{Status: status, Detail: detail}
}

// BearerError returns a 401 with "WWW-Authenticate: Bearer", as
// FastAPI's OAuth2PasswordBearer answers.
func BearerError(detail string) *Error {
	return &Error{
		Status: http.StatusUnauthorized,
		Detail: detail,
		Header: http.Header{"Www-Authenticate": {"Bearer"}},
	}
}

// Errors of the framework itself, as Starlette words them.
var (
	ErrNotFound         = NewError(http.StatusNotFound, "Not Found")
	ErrMethodNotAllowed = NewError(http.StatusMethodNotAllowed, "Method Not Allowed")
	ErrBodyTooLarge     = NewError(http.StatusRequestEntityTooLarge, "Request body too large")
	ErrBodyUnreadable   = NewError(http.StatusBadRequest, "Could not read the request body")
)

// ErrUnavailable marks a failure to reach a dependency (a database):
// wrapped into an error (fmt.Errorf("...: %w", ErrUnavailable)), it makes
// the answer a 503 that the client may retry.
var ErrUnavailable = errors.New("dependency unavailable")

// FieldError is one entry of a 422 response, as FastAPI (pydantic v2)
// writes it. The rejected input is never echoed back.
type FieldError struct {
	Type string `json:"type"`
	Loc  []any  `json:"loc"`
	Msg  string `json:"msg"`
}

// ValidationError is a 422 response with one entry per failing rule.
type ValidationError struct {
	Fields []FieldError
}

func (v *ValidationError) Error() string {
	if len(v.Fields) == 0 {
		return "validation error"
	}
	return fmt.Sprintf("validation error: %v %s", v.Fields[0].Loc, v.Fields[0].Msg)
}

// Add appends a failing rule for the value at loc (["body", "email"],
// ["query", "limit"], ["path", "id"]).
func (v *ValidationError) Add(typ, msg string, loc ...any) {
	v.Fields = append(v.Fields, FieldError{Type: typ, Loc: loc, Msg: msg})
}

// Err returns v as an error when it holds entries, or nil.
func (v *ValidationError) Err() error {
	if len(v.Fields) == 0 {
		return nil
	}
	return v
}

// Status maps any error to the status, body and extra headers a client
// sees. Errors other than *Error and *ValidationError become a bare 500,
// or a 503 when they wrap ErrUnavailable; their text never reaches the
// client.
func Status(err error) (int, any, http.Header) {
	var ae *Error
	if errors.As(err, &ae) {
		return ae.Status, map[string]string{"detail": ae.Detail}, ae.Header
	}
	var ve *ValidationError
	if errors.As(err, &ve) {
		return http.StatusUnprocessableEntity, map[string][]FieldError{"detail": ve.Fields}, nil
	}
	if errors.Is(err, ErrUnavailable) {
		return http.StatusServiceUnavailable, map[string]string{"detail": "Service temporarily unavailable"}, nil
	}
	return http.StatusInternalServerError, map[string]string{"detail": "Internal Server Error"}, nil
}

// WriteError writes err in FastAPI's error shape (see Status).
func WriteError(w http.ResponseWriter, err error) {
	status, body, header := Status(err)
	for k, vs := range header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	WriteJSON(w, status, body)
}

// WriteJSON writes v as a JSON response with the given status. API
// responses are personal: no cache may keep them (Cache-Control:
// no-store).
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Cache-Control", "no-store")
	WriteJSONCached(w, status, v)
}

// WriteJSONCached writes v as JSON, leaving Cache-Control to the caller.
func WriteJSONCached(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		body = []byte(`{"detail":"Internal Server Error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
