package settings

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/caddyaccounts/gateway/fastapi"
)

// TestSettingsUpdatesSerializeAcrossProcesses: two stores on one
// directory, as two gateway processes would be (each with its own mutex;
// only the flock(2) on the lock file, which is per open file, serializes
// them), make 60 read-modify-write increments at once: none is lost.
func TestSettingsUpdatesSerializeAcrossProcesses(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "shared")
	stores := []*Settings{newTestSettings(t, dir).Settings, newTestSettings(t, dir).Settings}
	var wg sync.WaitGroup
	errs := make(chan error, 60)
	for i := range 60 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := stores[i%2].ai.update(context.Background(), func(cur aiSettings) (aiSettings, bool) {
				cur.MaxTokens++
				// Widen the window in which an unserialized writer would
				// read the same state.
				time.Sleep(time.Millisecond)
				return cur, true
			})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for i, st := range stores {
		a, err := st.ai.load()
		if err != nil || a.MaxTokens != defaultAIMaxTokens+60 {
			t.Fatalf("store %d reads max_tokens %d, %v; want %d", i, a.MaxTokens, err, defaultAIMaxTokens+60)
		}
	}
}

// TestSettingsLockWaitsForTheHolder: a writer waits for another
// process's lock, and gives up with 503 when its request ends first.
func TestSettingsLockWaitsForTheHolder(t *testing.T) {
	dir := t.TempDir()
	st := newTestSettings(t, dir)
	unlock, err := lockFile(context.Background(), filepath.Join(dir, ".documents.json.lock"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = st.documents.update(ctx, func(cur documentsSettings) (documentsSettings, bool) {
		cur.MaxPDFSizeMB = 3
		return cur, true
	})
	if status, body, _ := fastapi.Status(err); status != 503 || body.(map[string]string)["detail"] != "Settings file documents.json could not be saved" {
		t.Fatalf("update while locked: %d %v (%v)", status, body, err)
	}
	done := make(chan error)
	go func() {
		_, err := st.documents.update(context.Background(), func(cur documentsSettings) (documentsSettings, bool) {
			cur.MaxPDFSizeMB = 4
			return cur, true
		})
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	unlock()
	if err := <-done; err != nil {
		t.Fatalf("update after the lock was released: %v", err)
	}
	if d, _ := st.documents.load(); d.MaxPDFSizeMB != 4 {
		t.Fatalf("max_pdf_size_mb = %d, want 4", d.MaxPDFSizeMB)
	}
}
