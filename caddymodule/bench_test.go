package caddymodule

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddyaccounts/gateway/accounts"
	"github.com/caddyaccounts/gateway/edge"
	"github.com/caddyaccounts/gateway/internal/pgtest"
)

// The PostgreSQL cluster of BenchmarkAuthHandler is made on first use and
// closed when the tests end.
func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// benchUsers is how many distinct users BenchmarkAuthHandler cycles
// through, each with its own token.
const benchUsers = 64

// discardWriter is a ResponseWriter that keeps nothing.
type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *discardWriter) WriteHeader(int)             {}

// BenchmarkAuthHandler measures the accounts_auth middleware per request:
// a real accounts app provisioned by Caddy (caddy.ProvisionContext) on a
// fresh database, started (it listens for user changes, so user state is
// cached), and an AuthHandler provisioned from it. Requests are prepared
// as Caddy's server prepares them (caddyhttp.PrepareRequest); next does
// nothing.
//
//   - valid: a valid token (caches warm, the steady state) with a forged
//     X-User-Id: strip the header, authenticate, set X-User-Id and the
//     placeholders, call next. Caddy gives every request a replacer of
//     its own, to which the handler adds the placeholders, so every
//     measured request is a fresh one, made in untimed batches.
//   - valid-parallel: the same from GOMAXPROCS goroutines, for
//     contention: each goroutine reuses its requests, so their
//     replacers grow, and B/op counts that too; read its ns/op.
//   - no-token: the 401 answer in JSON.
//
// The RSA verification of a token's first request is measured by
// BenchmarkAuthenticate/verify in accounts (with a 4096-bit key); these
// requests never verify, so the app uses a 2048-bit key, quicker to make.
func BenchmarkAuthHandler(b *testing.B) {
	dbURL := pgtest.Shared(b).NewDB(b, "", nil) // the app migrates it
	privPEM, _, err := accounts.GenerateKeyPair(2048)
	if err != nil {
		b.Fatal(err)
	}
	appJSON, err := json.Marshal(map[string]any{
		"database_url": dbURL,
		"private_key":  privPEM,
		"settings_dir": b.TempDir(),
		// Registering the users is not measured: cheap hashes.
		"argon2":     accounts.Argon2Params{MemoryKiB: 64, Iterations: 1, Parallelism: 1},
		"rate_limit": map[string]any{"ip_requests": -1},
	})
	if err != nil {
		b.Fatal(err)
	}
	cfg := &caddy.Config{
		Logging: &caddy.Logging{Logs: map[string]*caddy.CustomLog{"default": {BaseLog: caddy.BaseLog{Level: "ERROR"}}}},
		AppsRaw: caddy.ModuleMap{"accounts": appJSON},
	}
	ctx, err := caddy.ProvisionContext(cfg)
	if err != nil {
		b.Fatal(err)
	}
	appVal, err := ctx.App("accounts")
	if err != nil {
		b.Fatal(err)
	}
	app := appVal.(*App)
	b.Cleanup(func() { _ = app.Cleanup() }) // lets go of the database pool
	if err := app.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = app.Stop() })

	h := &AuthHandler{}
	if err := h.Provision(ctx); err != nil {
		b.Fatal(err)
	}
	if err := h.Validate(); err != nil {
		b.Fatal(err)
	}
	svc := app.Service()
	api := svc.Handler()

	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error { return nil })
	newRequest := func(token string) *http.Request {
		r := httptest.NewRequest("GET", "/api/documents/x", nil)
		if token != "" {
			r.Header.Set("Authorization", "Bearer "+token)
		}
		r.Header.Set("X-User-Id", "forged")
		w := &discardWriter{h: http.Header{}}
		return caddyhttp.PrepareRequest(r, caddy.NewReplacer(), w, nil)
	}
	reqs := make([]*http.Request, benchUsers)
	for i := range reqs {
		body := fmt.Sprintf(`{"email":"bench%d@example.com","password":"Secret!pw1"}`, i)
		r := httptest.NewRequest("POST", "/api/auth/register", strings.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		api.ServeHTTP(w, r)
		if w.Code != http.StatusCreated {
			b.Fatalf("register: %d %s", w.Code, w.Body)
		}
		var u accounts.User
		if err := json.Unmarshal(w.Body.Bytes(), &u); err != nil {
			b.Fatal(err)
		}
		tok, _, err := svc.Tokens().Issue(&u)
		if err != nil {
			b.Fatal(err)
		}
		reqs[i] = newRequest(tok)
	}
	w := &discardWriter{h: http.Header{}}
	serve := func(r *http.Request) error {
		if err := h.ServeHTTP(w, r, next); err != nil {
			return err
		}
		if got := r.Header.Get(edge.UserIDHeader); got == "" || got == "forged" {
			return fmt.Errorf("X-User-Id = %q after the handler", got)
		}
		return nil
	}
	for _, r := range reqs { // warm the caches
		if err := serve(r); err != nil {
			b.Fatal(err)
		}
		r.Header.Set("X-User-Id", "forged")
	}

	b.Run("valid", func(b *testing.B) {
		const batchSize = 1024
		batch := make([]*http.Request, batchSize)
		for i := range b.N {
			j := i % batchSize
			if j == 0 {
				b.StopTimer()
				for k := range batch {
					batch[k] = newRequest(strings.TrimPrefix(reqs[(i+k)%len(reqs)].Header.Get("Authorization"), "Bearer "))
				}
				b.StartTimer()
			}
			if err := h.ServeHTTP(w, batch[j], next); err != nil {
				b.Fatal(err)
			}
		}
		// A refused request would look the same to the loop.
		if got := batch[(b.N-1)%batchSize].Header.Get(edge.UserIDHeader); got == "forged" {
			b.Fatal("the last request was refused")
		}
	})
	b.Run("valid-parallel", func(b *testing.B) {
		var seq atomic.Uint64
		b.RunParallel(func(pb *testing.PB) {
			// Requests are not safe for concurrent use: each goroutine
			// has its own.
			g := int(seq.Add(1))
			own := make([]*http.Request, len(reqs))
			for i, r := range reqs {
				own[i] = newRequest(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
			}
			w := &discardWriter{h: http.Header{}}
			i := g * 17
			for pb.Next() {
				r := own[i%len(own)]
				r.Header.Set("X-User-Id", "forged")
				if err := h.ServeHTTP(w, r, next); err != nil {
					b.Error(err)
					return
				}
				i++
			}
		})
	})
	b.Run("no-token", func(b *testing.B) {
		r := newRequest("")
		for b.Loop() {
			w := &discardWriter{h: http.Header{}}
			if err := h.ServeHTTP(w, r, next); err != nil {
				b.Fatal(err)
			}
		}
	})
}
