package settings

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/caddyaccounts/gateway/internal/testcheck"
)

func TestMaskAIKey(t *testing.T) {
	str := func(s string) *string { return &s }
	for key, want := range map[string]string{
		"a":               "****",
		"abcd":            "****",
		"abcdefghijk":     "****", // 11 characters
		"abcdefghijkl":    "****ijkl",
		"sk-proj-xyz9876": "****9876",
		"ééééééééééé1234": "****1234",
	} {
		if got := maskAIKey(str(key)); got == nil || *got != want {
			t.Errorf("mask of %q = %v, want %q", key, got, want)
		}
	}
	if maskAIKey(nil) != nil {
		t.Error("no key has a mask")
	}
}

// TestConcurrentAISettingsPatches: 50 PATCHes at once, each changing a
// field to its own value, while readers read the file and the API. No
// reader sees a torn file or an error, the fields nobody changed keep
// their values, and the final file is one of the written states.
func TestConcurrentAISettingsPatches(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "settings")
	s := newTestSettings(t, dir)
	path := filepath.Join(dir, "ai.json")
	const key = "sk-concurrent-0123456789abcd"
	if r := s.do("PATCH", "/api/settings/ai", map[string]any{"api_key": key, "base_url": "https://llm.example.com/v1", "max_tokens": 77}); r.Code != 200 {
		t.Fatalf("setup: %d %s", r.Code, r.Body)
	}

	var stop atomic.Bool
	var readers sync.WaitGroup
	var reads, readErrs atomic.Int64
	var firstErr atomic.Value
	fail := func(err string) {
		readErrs.Add(1)
		firstErr.CompareAndSwap(nil, err)
	}
	readers.Add(2)
	go func() { // the file, as a feature service reads it
		defer readers.Done()
		for !stop.Load() {
			data, err := os.ReadFile(path)
			var f aiSettings
			if err != nil || json.Unmarshal(data, &f) != nil || f.check() != nil || f.APIKey == nil || *f.APIKey != key {
				fail(fmt.Sprintf("torn or inconsistent file: %v %q", err, data))
			}
			reads.Add(1)
		}
	}()
	go func() { // the API
		defer readers.Done()
		for !stop.Load() {
			r := s.do("GET", "/api/settings/ai", nil)
			if r.Code != 200 || !strings.Contains(r.Body.String(), `"api_key":"****abcd"`) {
				fail(fmt.Sprintf("GET during PATCHes: %d %s", r.Code, r.Body))
			}
		}
	}()

	models := map[string]bool{}
	temps := map[float64]bool{}
	var writers sync.WaitGroup
	statuses := make(chan int, 50)
	for i := range 50 {
		var body map[string]any
		if i%2 == 0 {
			v := float64(i) / 50
			temps[v] = true
			body = map[string]any{"temperature": v}
		} else {
			v := fmt.Sprintf("model-%d", i)
			models[v] = true
			body = map[string]any{"model": v}
		}
		writers.Add(1)
		go func() {
			defer writers.Done()
			statuses <- s.do("PATCH", "/api/settings/ai", body).Code
		}()
	}
	writers.Wait()
	stop.Store(true)
	readers.Wait()
	close(statuses)
	for status := range statuses {
		if status != 200 {
			t.Errorf("a concurrent PATCH got %d", status)
		}
	}
	if n := readErrs.Load(); n > 0 {
		t.Fatalf("%d bad reads of %d; first: %v", n, reads.Load(), firstErr.Load())
	}
	f := testcheck.JSONFile(t, path)
	if !models[f["model"].(string)] || !temps[f["temperature"].(float64)] || f["api_key"] != key ||
		f["base_url"] != "https://llm.example.com/v1" || f["max_tokens"] != float64(77) || f["provider"] != "openai" {
		t.Fatalf("final ai.json is inconsistent: %v", f)
	}
	testcheck.DirHolds(t, dir, ".ai.json.lock", "ai.json")
	testcheck.NoSecretInLogs(t, s.logs, key)
}
