package settings

// FuzzSettingsFiles: whatever a settings file holds (a hand edit, another
// writer), reading it neither panics nor answers 5xx other than the
// corrupt-file 503, and what it accepts round-trips through the product's
// own write path. `go test ./settings/` runs the seeds as tests;
// `go test -run '^$' -fuzz '^FuzzSettingsFiles$' ./settings/` explores
// further and keeps a failing input under testdata/fuzz/FuzzSettingsFiles/.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/caddyaccounts/gateway/fastapi"
)

// fuzzSecret is planted in seed files: no answer may ever show it.
const fuzzSecret = "Secret!XYZ"

// corruptDetail is the client-facing detail of a corrupt settings file.
func corruptDetail(name string) string {
	return "Settings file " + name + " is corrupt; fix or remove it"
}

// expectedMask is the oracle of maskAIKey: null for no key, "****" for a
// key shorter than 12 characters, else "****" and its last 4 characters.
func expectedMask(key *string) any {
	if key == nil {
		return nil
	}
	r := []rune(*key)
	if len(r) < 12 {
		return "****"
	}
	return "****" + string(r[len(r)-4:])
}

// fuzzSettingsFile checks one settings file whose content is data: its
// parse (decode) either accepts it, and then writing the result back and
// reading it again gives the same values, or answers the corrupt-file
// 503; the route GET path answers what the parse said, never a 500; and
// the product's own write path (update) round-trips what was accepted.
// It returns the accepted value.
func fuzzSettingsFile[T any](t *testing.T, h http.Handler, file *settingsFile[T], data []byte,
	path string, render func(T) any) (T, bool) {
	t.Helper()
	v, err := file.decode(data)
	if err != nil {
		var ae *fastapi.Error
		if !errors.As(err, &ae) || ae.Status != http.StatusServiceUnavailable || ae.Detail != corruptDetail(file.name) {
			t.Fatalf("%s: decode error %v, want the corrupt-file 503", file.name, err)
		}
	} else {
		// Round trip: the form update writes (indented, final newline)
		// reads back as the same values.
		out, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			t.Fatalf("%s: accepted values do not marshal: %v", file.name, err)
		}
		out = append(out, '\n')
		v2, err := file.decode(out)
		if err != nil {
			t.Fatalf("%s: accepted %q, but its own form %s is refused: %v", file.name, data, out, err)
		}
		out2, _ := json.MarshalIndent(v2, "", "  ")
		if !bytes.Equal(append(out2, '\n'), out) {
			t.Fatalf("%s: %q read back as\n%s\nthen\n%s", file.name, data, out, out2)
		}
	}

	// The same bytes as the file on disk, through the route. The cache is
	// dropped: two writes of the same size within one mtime tick could
	// otherwise look like one version of the file.
	if err := os.WriteFile(file.path(), data, file.mode); err != nil {
		t.Fatal(err)
	}
	file.cache.Store(nil)
	get := func() *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodGet, path, nil)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	w := get()
	if err != nil {
		want := `{"detail":"` + corruptDetail(file.name) + `"}`
		if w.Code != http.StatusServiceUnavailable || w.Body.String() != want {
			t.Fatalf("GET %s of a corrupt file: %d %s, want 503 %s", path, w.Code, w.Body.Bytes(), want)
		}
		return v, false
	}
	want, _ := json.Marshal(render(v))
	if w.Code != http.StatusOK || !bytes.Equal(w.Body.Bytes(), want) {
		t.Fatalf("GET %s of %q: %d %s, want 200 %s", path, data, w.Code, w.Body.Bytes(), want)
	}

	// Written back by the product's own read-modify-write, then read
	// again from disk: the same values, in the documented form and mode.
	next, err := file.update(context.Background(), func(cur T) (T, bool) { return cur, true })
	if err != nil {
		t.Fatalf("%s: writing back %q: %v", file.name, data, err)
	}
	written, err := os.ReadFile(file.path())
	if err != nil {
		t.Fatal(err)
	}
	canon, _ := json.MarshalIndent(v, "", "  ")
	if !bytes.Equal(written, append(canon, '\n')) {
		t.Fatalf("%s: wrote back %q as %q", file.name, data, written)
	}
	if fi, err := os.Stat(file.path()); err != nil || fi.Mode().Perm() != file.mode {
		t.Fatalf("%s: written with mode %v (%v), want %v", file.name, fi.Mode(), err, file.mode)
	}
	file.cache.Store(nil)
	again, err := file.read()
	if err != nil {
		t.Fatalf("%s: what was written back is refused: %v", file.name, err)
	}
	a, _ := json.Marshal(again)
	b, _ := json.Marshal(next)
	if !bytes.Equal(a, b) || !bytes.Equal(a, mustMarshal(t, v)) {
		t.Fatalf("%s: %q written back and read again as %s, want %s", file.name, data, a, mustMarshal(t, v))
	}
	if w2 := get(); w2.Code != http.StatusOK || !bytes.Equal(w2.Body.Bytes(), want) {
		t.Fatalf("GET %s after the write-back: %d %s, want 200 %s", path, w2.Code, w2.Body.Bytes(), want)
	}
	return v, true
}

func mustMarshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func FuzzSettingsFiles(f *testing.F) {
	st := newTestSettings(f, f.TempDir())
	h := st.handler

	const key = "sk-proj-" + fuzzSecret + "-0123456789"
	for _, s := range []struct{ ai, docs string }{
		{"{}\n", "{}\n"},
		{`{
  "provider": "anthropic",
  "model": "claude-3-5-haiku-latest",
  "base_url": "https://llm.internal.example:8443/v1",
  "api_key": "` + key + `",
  "temperature": 0.2,
  "max_tokens": 4096,
  "updated_at": "2025-01-02T03:04:05.123456789Z"
}
`, `{"max_pdf_size_mb": 100, "updated_at": "2025-01-02T03:04:05Z"}`},
		{`{"provider":null,"model":null,"base_url":null,"api_key":null,"temperature":null,"max_tokens":null,"updated_at":null}`,
			`{"max_pdf_size_mb":null,"updated_at":null}`},
		{`{"base_url":"","api_key":"","unknown":{"nested":[1,2,3]}}`, `{"max_pdf_size_mb":1,"comment":"hand edit"}`},
		{`{"API_KEY":"` + key + `","Provider":"openai","MODEL":"m"}`, `{"MAX_PDF_SIZE_MB":1024}`},
		{`{"api_key":"short"}`, `{"max_pdf_size_mb":1025}`},
		{`{"api_key":"has space ` + fuzzSecret + `"}`, `{"max_pdf_size_mb":0}`},
		{`{"api_key":"` + key + `"} {"api_key":"x"}`, `{"max_pdf_size_mb":25}]`},
		{`{"api_key":"` + key + `"`, `{"max_pdf_size_mb":`},
		{`{"temperature":-0}`, `{"max_pdf_size_mb":25.0}`},
		{`{"temperature":2.0000000000000001,"max_tokens":200000}`, `{"max_pdf_size_mb":1e2}`},
		{`{"temperature":1e400}`, `{"max_pdf_size_mb":9223372036854775808}`},
		{`{"max_tokens":200001}`, `{"max_pdf_size_mb":"25"}`},
		{`{"provider":"OpenAI"}`, `{"max_pdf_size_mb":true}`},
		{`{"model":""}`, `[{"max_pdf_size_mb":25}]`},
		{`{"model":"` + strings.Repeat("é", 200) + `"}`, `null`},
		{`{"model":"` + strings.Repeat("é", 201) + `"}`, ``},
		{`{"model":"a\u0000b\ud800"}`, "  \r\n\t{ \"max_pdf_size_mb\" : 7 }\r\n"},
		{`{"base_url":"ftp://example.com"}`, "\ufeff{}"},
		{`{"base_url":"https://user:` + fuzzSecret + `@example.com/v1"}`, "{\"max_pdf_size_mb\":7}\x00"},
		{`{"base_url":"https://example.com/v1?key=` + fuzzSecret + `"}`, "{\"updated_at\":\"\xff\"}"},
		{`{"base_url":"http://[::1]:8080"}`, `{"updated_at":"2025-01-02"}`},
		{`{"base_url":"http://:80"}`, `{"updated_at":"2025-01-02T03:04:05+14:00"}`},
		{`{"updated_at":"0000-01-01T00:00:00Z"}`, `{"updated_at":"9999-12-31T23:59:59.999999999-23:59"}`},
		{`{"updated_at":"2025-13-01T00:00:00Z"}`, `{"updated_at":1735787045}`},
		{`{"api_key":"****abcd"}`, `{"max_pdf_size_mb":5,"max_pdf_size_mb":2000}`},
		{`{"api_key":["` + key + `"]}`, `{"max_pdf_size_mb":5,"Max_Pdf_Size_Mb":6}`},
		{`{"provider":"openai","provider":"anthropic","api_key":"` + key + `"}`, `{"max_pdf_size_mb":{}}`},
		{`{"provider":"openai"}` + "\n\n\n", `{"max_pdf_size_mb":NaN}`},
	} {
		f.Add([]byte(s.ai), []byte(s.docs))
	}

	f.Fuzz(func(t *testing.T, aiData, docsData []byte) {
		a, ok := fuzzSettingsFile(t, h, st.ai, aiData, "/api/settings/ai", func(a aiSettings) any { return aiResponse(a) })
		if ok {
			// The key is never shown: the independent mask oracle, and
			// the key appears nowhere else in the answer unless another
			// field holds it.
			got := aiResponse(a)
			if !reflect.DeepEqual(anyOf(got.APIKey), expectedMask(a.APIKey)) || got.APIKeySet != (a.APIKey != nil) {
				t.Fatalf("api_key shown as %v (set %v) for %q", anyOf(got.APIKey), got.APIKeySet, aiData)
			}
			if a.APIKey != nil && len(*a.APIKey) >= 5 {
				body := string(mustMarshal(t, got))
				others := a.Provider + "\x00" + a.Model + "\x00" + valueOr(a.BaseURL, "")
				k := string(mustMarshal(t, *a.APIKey))
				if strings.Contains(body, k[1:len(k)-1]) && !strings.Contains(others, *a.APIKey) {
					t.Fatalf("the key is in the answer %s", body)
				}
			}
		}
		d, ok := fuzzSettingsFile(t, h, st.documents, docsData, "/api/settings/documents/limits",
			func(d documentsSettings) any { return documentLimits{MaxPDFSizeMB: d.MaxPDFSizeMB} })
		// The gateway's edge check reads the same file.
		n, err := st.MaxUploadBytes()
		var ae *fastapi.Error
		switch {
		case ok && (err != nil || n != int64(d.MaxPDFSizeMB)<<20):
			t.Fatalf("MaxUploadBytes = %d, %v after %q", n, err, docsData)
		case !ok && (!errors.As(err, &ae) || ae.Status != http.StatusServiceUnavailable):
			t.Fatalf("MaxUploadBytes = %d, %v for the corrupt %q, want a 503", n, err, docsData)
		}
	})
}

// anyOf turns a *string into a comparable any (nil or the string).
func anyOf(p *string) any {
	if p == nil {
		return nil
	}
	return *p
}
