package accounts

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
)

// Error is an application error with FastAPI's shape: {"detail": "..."}.
// Handlers return it; writeError turns it into a response.
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

// newError builds an *Error with the given status and detail.
func newError(status int, detail string) *Error {
	return &Error{Status: status, Detail: detail}
}

// Errors shared by several routes. Their detail texts are part of the
// HTTP contract (API.md) and must not change.
var (
	errNotAuthenticated   = bearerError("Not authenticated")
	errInvalidCredentials = bearerError("Could not validate credentials")
	errForbidden          = newError(http.StatusForbidden, "Not enough permissions")
	errNotFound           = newError(http.StatusNotFound, "Not Found")
	errMethodNotAllowed   = newError(http.StatusMethodNotAllowed, "Method Not Allowed")
	errBodyTooLarge       = newError(http.StatusRequestEntityTooLarge, "Request body too large")
)

func bearerError(detail string) *Error {
	return &Error{
		Status: http.StatusUnauthorized,
		Detail: detail,
		Header: http.Header{"Www-Authenticate": {"Bearer"}},
	}
}

// FieldError is one entry of a 422 validation response, as FastAPI
// (pydantic v2) writes it. The rejected input is never echoed back.
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

// add appends a failing rule for the field at loc.
func (v *ValidationError) add(typ, msg string, loc ...any) {
	v.Fields = append(v.Fields, FieldError{Type: typ, Loc: loc, Msg: msg})
}

// err returns v as an error when it holds entries, or nil.
func (v *ValidationError) err() error {
	if len(v.Fields) == 0 {
		return nil
	}
	return v
}

// writeJSON writes v as a JSON response with the given status. API
// responses are personal: no cache may keep them.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Cache-Control", "no-store")
	writeJSONCached(w, status, v)
}

// writeJSONCached writes v as JSON, leaving Cache-Control to the caller.
func writeJSONCached(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		body = []byte(`{"detail":"Internal Server Error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// errorStatus maps any error to the status and body a client sees.
// Unknown errors become a bare 500 or, for an unreachable database, 503;
// their text never reaches the client.
func errorStatus(err error) (int, any, http.Header) {
	var ae *Error
	if errors.As(err, &ae) {
		return ae.Status, map[string]string{"detail": ae.Detail}, ae.Header
	}
	var ve *ValidationError
	if errors.As(err, &ve) {
		return http.StatusUnprocessableEntity, map[string][]FieldError{"detail": ve.Fields}, nil
	}
	if isUnavailable(err) {
		return http.StatusServiceUnavailable, map[string]string{"detail": "Service temporarily unavailable"}, nil
	}
	return http.StatusInternalServerError, map[string]string{"detail": "Internal Server Error"}, nil
}

// writeErrorResponse writes err in FastAPI's error shape.
func writeErrorResponse(w http.ResponseWriter, err error) {
	status, body, header := errorStatus(err)
	for k, vs := range header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	writeJSON(w, status, body)
}
