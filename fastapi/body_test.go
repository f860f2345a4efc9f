package fastapi

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// decodeTestBody runs ReadObject on a request and reads two fields.
func decodeTestBody(contentType, body string) (int, string) {
	r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(body))
	if contentType != "" {
		r.Header.Set("Content-Type", contentType)
	}
	w := httptest.NewRecorder()
	err := func() error {
		b, err := ReadObject(w, r)
		if err != nil {
			return err
		}
		b.String("name")
		b.OptionalInt("count")
		b.OptionalBool("flag")
		b.OptionalString("note")
		return b.Finish()
	}()
	if err == nil {
		return http.StatusOK, ""
	}
	status, payload, _ := Status(err)
	out, _ := json.Marshal(payload)
	return status, string(out)
}

func TestReadJSONBody(t *testing.T) {
	tests := []struct {
		name, contentType, body string
		status                  int
		want                    string
	}{
		{"ok", "application/json", `{"name":"x","count":3,"flag":true,"note":null}`, 200, ``},
		{"ok without content type", "", `{"name":"x"}`, 200, ``},
		{"ok with charset", "application/json; charset=utf-8", `{"name":"x","count":3.0}`, 200, ``},
		{"missing", "application/json", `{}`, 422,
			`{"detail":[{"type":"missing","loc":["body","name"],"msg":"Field required"}]}`},
		{"wrong types", "application/json", `{"name":1,"count":"3","flag":"yes","note":5}`, 422,
			`{"detail":[{"type":"string_type","loc":["body","name"],"msg":"Input should be a valid string"},` +
				`{"type":"int_type","loc":["body","count"],"msg":"Input should be a valid integer"},` +
				`{"type":"bool_type","loc":["body","flag"],"msg":"Input should be a valid boolean"},` +
				`{"type":"string_type","loc":["body","note"],"msg":"Input should be a valid string"}]}`},
		{"fraction is not an int", "application/json", `{"name":"x","count":1.5}`, 422,
			`{"detail":[{"type":"int_type","loc":["body","count"],"msg":"Input should be a valid integer"}]}`},
		{"null name", "application/json", `{"name":null}`, 422,
			`{"detail":[{"type":"string_type","loc":["body","name"],"msg":"Input should be a valid string"}]}`},
		{"extra fields", "application/json", `{"name":"x","role":"admin","id":"1"}`, 422,
			`{"detail":[{"type":"extra_forbidden","loc":["body","id"],"msg":"Extra inputs are not permitted"},` +
				`{"type":"extra_forbidden","loc":["body","role"],"msg":"Extra inputs are not permitted"}]}`},
		{"not JSON", "application/json", `{"name":`, 422,
			`{"detail":[{"type":"json_invalid","loc":["body",8],"msg":"JSON decode error"}]}`},
		{"trailing data", "application/json", `{"name":"x"} {}`, 422,
			`{"detail":[{"type":"json_invalid","loc":["body",13],"msg":"JSON decode error"}]}`},
		{"array", "application/json", `["x"]`, 422,
			`{"detail":[{"type":"model_attributes_type","loc":["body"],"msg":"Input should be a valid dictionary or object to extract fields from"}]}`},
		{"empty", "application/json", ``, 422,
			`{"detail":[{"type":"missing","loc":["body"],"msg":"Field required"}]}`},
		{"form content type", "application/x-www-form-urlencoded", `name=x`, 422,
			`{"detail":[{"type":"model_attributes_type","loc":["body"],"msg":"Input should be a valid dictionary or object to extract fields from"}]}`},
		{"too large", "application/json", `{"name":"` + strings.Repeat("x", MaxBodyBytes) + `"}`, 413,
			`{"detail":"Request body too large"}`},
	}
	for _, tt := range tests {
		status, got := decodeTestBody(tt.contentType, tt.body)
		if status != tt.status || got != tt.want {
			t.Errorf("%s: got %d %s\nwant %d %s", tt.name, status, got, tt.status, tt.want)
		}
	}
}
