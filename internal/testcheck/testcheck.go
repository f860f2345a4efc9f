// Package testcheck holds assertions that the tests of several packages
// make: on files a package wrote, and on what it logged.
package testcheck

import (
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest/observer"
)

// JSONFile reads the file path as a JSON object, failing the test if it
// is none.
func JSONFile(t testing.TB, path string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("%s is not a JSON object: %v\n%s", path, err, data)
	}
	return m
}

// DirHolds fails the test unless dir holds exactly the named entries.
func DirHolds(t testing.TB, dir string, names ...string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	sort.Strings(got)
	sort.Strings(names)
	if !reflect.DeepEqual(got, names) {
		t.Fatalf("%s holds %v, want %v", dir, got, names)
	}
}

// NoSecretInLogs fails the test if a line of logs, its message or a
// field, holds one of the secrets.
func NoSecretInLogs(t testing.TB, logs *observer.ObservedLogs, secrets ...string) {
	t.Helper()
	for _, line := range logs.All() {
		text := line.Message + " " + fmt.Sprint(line.ContextMap())
		for _, s := range secrets {
			if strings.Contains(text, s) {
				t.Fatalf("a secret is in the log: %s", text)
			}
		}
	}
}

// Eventually retries check until it returns "" or timeout passes, then
// fails tb with check's last message. For effects that travel
// asynchronously: the database's notifications, a mail queue.
func Eventually(tb testing.TB, timeout time.Duration, check func() string) {
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
		time.Sleep(20 * time.Millisecond)
	}
}
