package accounts

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"
)

// Micro-benchmarks of the account system's hot paths: the per-request
// authentication, and the register and login handlers. Token signing and
// verification alone are in tokens_test.go, password hashing alone in
// passwords_test.go. Run them with
//
//	go test -run '^$' -bench . -benchmem ./accounts/

// productionKeyBits is the RSA key size of production tokens (the
// default of `caddy accounts genkeys`; API.md asks for 4096 bits).
const productionKeyBits = 4096

var (
	productionKeyOnce sync.Once
	productionKeyVal  *rsa.PrivateKey
	productionKeyErr  error
)

// productionKey returns a 4096-bit RSA key made once per test binary
// (generating one takes a second or a few).
func productionKey(tb testing.TB) *rsa.PrivateKey {
	tb.Helper()
	productionKeyOnce.Do(func() {
		productionKeyVal, productionKeyErr = rsa.GenerateKey(rand.Reader, productionKeyBits)
	})
	if productionKeyErr != nil {
		tb.Fatal(productionKeyErr)
	}
	return productionKeyVal
}

// newBenchService returns a Service with production settings (a 4096-bit
// signing key, OWASP's argon2id parameters, hash concurrency = CPUs) on
// a fresh migrated database of the package harness, logging nowhere.
// The per-address limit of /api/auth/* stays on, with a limit that a
// benchmark from one address cannot reach: its database query is part
// of every auth request's cost.
func newBenchService(b *testing.B, cfg func(*Config)) (*Service, *pgxpool.Pool) {
	b.Helper()
	env := newTestEnv(b) // only for its database
	keys, err := NewKeySet(productionKey(b))
	if err != nil {
		b.Fatal(err)
	}
	c := Config{Argon2: DefaultArgon2Params, RateLimit: RateLimitConfig{IPRequests: 1 << 30}}
	if cfg != nil {
		cfg(&c)
	}
	svc, err := New(env.db, keys, c, zap.NewNop())
	if err != nil {
		b.Fatal(err)
	}
	return svc, env.db
}

// insertUsers inserts n active users (with profiles) named
// prefix<i>@example.com whose password hash is hash, in one statement.
func insertUsers(tb testing.TB, db *pgxpool.Pool, prefix string, n int, hash string) []*User {
	tb.Helper()
	rows, err := db.Query(context.Background(), `
		WITH u AS (
			INSERT INTO users (email, hashed_password)
			SELECT $1 || g || '@example.com', $2 FROM generate_series(1, $3::int) g
			RETURNING *
		), p AS (INSERT INTO profiles (user_id) SELECT id FROM u)
		SELECT `+userColumns+` FROM u`, prefix, hash, n)
	if err != nil {
		tb.Fatal(err)
	}
	defer rows.Close()
	var users []*User
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			tb.Fatal(err)
		}
		users = append(users, u)
	}
	if err := rows.Err(); err != nil {
		tb.Fatal(err)
	}
	if len(users) != n {
		tb.Fatalf("inserted %d users, want %d", len(users), n)
	}
	return users
}

// startListening runs svc's user-change listener until the benchmark
// ends and waits until it listens, as a started gateway does: without
// it, no user state is cached.
func startListening(tb testing.TB, svc *Service) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		svc.Run(ctx)
	}()
	tb.Cleanup(func() { cancel(); <-done })
	for deadline := time.Now().Add(10 * time.Second); !svc.cache.listening.Load(); {
		if time.Now().After(deadline) {
			tb.Fatal("the user-change listener did not start")
		}
		time.Sleep(time.Millisecond)
	}
}

// authUsers is how many distinct users BenchmarkAuthenticate cycles
// through: each has its own token, so the caches hold that many entries.
const authUsers = 256

// BenchmarkAuthenticate measures Service.Authenticate, the check every
// authenticated request pays (the accounts_auth handler and the
// authenticated API routes), cycling through authUsers users, each with
// a 4096-bit RS256 token:
//
//   - cached: the token's claims and the user are cached (the steady
//     state of a running gateway): a SHA-256 and two map lookups.
//   - cached-parallel: the same from GOMAXPROCS goroutines.
//   - verify: the token is not cached (first request with it): RSA
//     verification; the user is cached.
//   - cold: neither the token nor the user is cached (first request after
//     a user changed, or while not listening for changes): RSA
//     verification and one database query.
func BenchmarkAuthenticate(b *testing.B) {
	svc, db := newBenchService(b, nil)
	startListening(b, svc)
	users := insertUsers(b, db, "auth", authUsers, "unused")
	reqs := make([]*http.Request, len(users))
	keys := make([][32]byte, len(users))
	var wg sync.WaitGroup
	for i, u := range users {
		wg.Add(1)
		go func() { // signing 256 tokens with a 4096-bit key: use every CPU
			defer wg.Done()
			tok, _, err := svc.tokens.Issue(u)
			if err != nil {
				panic(err)
			}
			r := httptest.NewRequest("GET", "/api/users/me", nil)
			r.Header.Set("Authorization", "Bearer "+tok)
			reqs[i], keys[i] = r, tokenKey(tok)
		}()
	}
	wg.Wait()
	authenticate := func(b *testing.B, r *http.Request) {
		if _, err := svc.Authenticate(r); err != nil {
			b.Fatal(err)
		}
	}
	for _, r := range reqs { // fill both caches
		authenticate(b, r)
	}

	b.Run("cached", func(b *testing.B) {
		i := 0
		for b.Loop() {
			authenticate(b, reqs[i%len(reqs)])
			i++
		}
	})
	b.Run("cached-parallel", func(b *testing.B) {
		var next atomic.Uint64
		b.RunParallel(func(pb *testing.PB) {
			i := int(next.Add(1)) * 37
			for pb.Next() {
				if _, err := svc.Authenticate(reqs[i%len(reqs)]); err != nil {
					b.Error(err)
					return
				}
				i++
			}
		})
	})
	b.Run("verify", func(b *testing.B) {
		i := 0
		for b.Loop() {
			n := i % len(reqs)
			svc.cache.tokens.delete(keys[n])
			authenticate(b, reqs[n])
			i++
		}
	})
	b.Run("cold", func(b *testing.B) {
		i := 0
		for b.Loop() {
			n := i % len(reqs)
			svc.cache.tokens.delete(keys[n])
			svc.cache.invalidate(users[n].ID)
			authenticate(b, reqs[n])
			i++
		}
	})
}

// serveBench serves one request through h in-process and returns the
// status.
func serveBench(h http.Handler, r *http.Request) (int, string) {
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w.Code, w.Body.String()
}

// BenchmarkRegisterHandler measures POST /api/auth/register through
// Service.Handler(), in-process (httptest), with production argon2id
// parameters: the per-address limit query, validation, one argon2id
// hash, the user and profile insert, the audit row.
func BenchmarkRegisterHandler(b *testing.B) {
	svc, _ := newBenchService(b, nil)
	h := svc.Handler()
	n := 0
	for b.Loop() {
		n++
		body := fmt.Sprintf(`{"email":"reg%d@example.com","password":"Secret!pw1","full_name":"Bench"}`, n)
		r := httptest.NewRequest("POST", "/api/auth/register", strings.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		if status, body := serveBench(h, r); status != http.StatusCreated {
			b.Fatalf("register: %d %s", status, body)
		}
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "registrations/s")
}

// loginUsers is how many accounts BenchmarkLoginHandler logs in to, in
// turn.
const loginUsers = 64

// BenchmarkLoginHandler measures POST /api/auth/login through
// Service.Handler(), in-process (httptest), with production settings:
// the per-address and per-account limit queries, the user lookup, one
// argon2id verification (OWASP parameters), the session insert, two
// 4096-bit RS256 signatures (the body's token and the access cookie's)
// and the audit row. serial is one login at a time (its logins/s is
// 1/latency); parallel runs 8 × GOMAXPROCS concurrent logins, which the
// hash semaphore (Config.HashConcurrency, default GOMAXPROCS) queues:
// its logins/s is the throughput of the machine.
func BenchmarkLoginHandler(b *testing.B) {
	svc, db := newBenchService(b, nil)
	hash, err := svc.hasher.Hash(context.Background(), "Secret!pw1")
	if err != nil {
		b.Fatal(err)
	}
	users := insertUsers(b, db, "login", loginUsers, hash)
	h := svc.Handler()
	login := func(i int) (int, string) {
		form := url.Values{"username": {users[i%len(users)].Email}, "password": {"Secret!pw1"}}
		r := httptest.NewRequest("POST", "/api/auth/login", strings.NewReader(form.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		return serveBench(h, r)
	}

	b.Run("serial", func(b *testing.B) {
		n := 0
		for b.Loop() {
			if status, body := login(n); status != http.StatusOK {
				b.Fatalf("login: %d %s", status, body)
			}
			n++
		}
		b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "logins/s")
	})
	b.Run("parallel", func(b *testing.B) {
		var next atomic.Int64
		b.SetParallelism(8)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if status, body := login(int(next.Add(1))); status != http.StatusOK {
					b.Errorf("login: %d %s", status, body)
					return
				}
			}
		})
		b.ReportMetric(float64(next.Load())/b.Elapsed().Seconds(), "logins/s")
	})
}
