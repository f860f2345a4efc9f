package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/caddyaccounts/gateway/accounts"
	"github.com/caddyaccounts/gateway/internal/testnet"
	"github.com/caddyaccounts/gateway/migrations"
)

// createUsers migrates the database and inserts n active users (with
// profiles) in one statement, all with one precomputed password hash.
func createUsers(ctx context.Context, dbURL string, n int) ([]accounts.User, error) {
	pool, err := accounts.NewPool(ctx, dbURL, 2)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	if _, err := accounts.Migrate(ctx, pool, migrations.FS); err != nil {
		return nil, fmt.Errorf("migrating: %w", err)
	}
	hasher, err := accounts.NewHasher(accounts.DefaultArgon2Params, 1)
	if err != nil {
		return nil, err
	}
	hash, err := hasher.Hash(ctx, "Bench!pass1")
	if err != nil {
		return nil, err
	}
	rows, err := pool.Query(ctx, `
		WITH u AS (
			INSERT INTO users (email, hashed_password)
			SELECT format('bench-%s@example.com', g), $1 FROM generate_series(1, $2::int) g
			RETURNING id, email, role, is_active, created_at, updated_at
		), p AS (
			INSERT INTO profiles (user_id, full_name) SELECT id, 'Bench ' || email FROM u
		)
		SELECT id::text, email, role::text, is_active, created_at, updated_at FROM u`, hash, n)
	if err != nil {
		return nil, fmt.Errorf("inserting users: %w", err)
	}
	users, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (accounts.User, error) {
		var u accounts.User
		err := row.Scan(&u.ID, &u.Email, &u.Role, &u.IsActive, &u.CreatedAt, &u.UpdatedAt)
		return u, err
	})
	if err != nil {
		return nil, fmt.Errorf("inserting users: %w", err)
	}
	if len(users) != n {
		return nil, fmt.Errorf("inserted %d users, want %d", len(users), n)
	}
	return users, nil
}

// signTokens signs an access token for each user with the key the gateway
// uses, the way the gateway's login does (accounts.TokenIssuer).
func signTokens(privPEM string, users []accounts.User) ([]string, error) {
	priv, err := accounts.ParsePrivateKey(privPEM)
	if err != nil {
		return nil, err
	}
	keys, err := accounts.NewKeySet(priv)
	if err != nil {
		return nil, err
	}
	issuer := accounts.NewTokenIssuer(keys, accounts.DefaultIssuer, accounts.DefaultTokenLifetime, accounts.DefaultLeeway)
	tokens := make([]string, len(users))
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	workers := runtime.GOMAXPROCS(0)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(users); i += workers {
				tok, _, err := issuer.Issue(&users[i])
				if err != nil {
					mu.Lock()
					firstErr = cmp(firstErr, err)
					mu.Unlock()
					return
				}
				tokens[i] = tok
			}
		})
	}
	wg.Wait()
	return tokens, firstErr
}

func cmp(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// stub is the document service: it answers every request with stubBody
// and remembers the X-User-Id of the last request, for the preflight.
type stub struct {
	srv      *http.Server
	addr     string
	lastUser atomic.Value // string
}

func startStub() (*stub, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &stub{addr: l.Addr().String()}
	s.lastUser.Store("")
	length := strconv.Itoa(len(stubBody))
	s.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s.lastUser.Store(strings.Join(r.Header.Values("X-User-Id"), ","))
			h := w.Header()
			h["Content-Type"] = []string{"application/json"}
			h["Content-Length"] = []string{length}
			_, _ = w.Write(stubBody)
		}),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          nil,
	}
	go func() { _ = s.srv.Serve(l) }()
	return s, nil
}

// freePorts returns n distinct free ports on 127.0.0.1.
func freePorts(n int) ([]int, error) {
	ports := make([]int, n)
	for i := range ports {
		var err error
		if ports[i], err = testnet.FreePort(); err != nil {
			return nil, err
		}
	}
	return ports, nil
}

// caddyEnvNames are the variables the project's Caddyfile and the
// accounts app read; they are removed from the inherited environment so
// that only the benchmark's values count.
var caddyEnvNames = []string{
	"SITE_ADDRESS", "CADDY_ADMIN", "DOC_SERVICE", "DOC_SERVICE_DIAL_TIMEOUT", "DOC_SERVICE_TIMEOUT",
	"DATABASE_URL", "JWT_PRIVATE_KEY", "JWT_PRIVATE_KEY_FILE", "JWT_PUBLIC_KEY", "JWT_PUBLIC_KEY_FILE",
	"JWT_ISSUER", "TOKEN_LIFETIME", "SETTINGS_DIR", "FRONTEND_DIR", "VITE_DEV_SERVER",
	"XDG_DATA_HOME", "XDG_CONFIG_HOME",
}

func startCaddy(o options, t *target, caddyfile string, env map[string]string) error {
	logPath := filepath.Join(o.out, "caddy-"+t.Key+".log")
	log, err := os.Create(logPath)
	if err != nil {
		return err
	}
	cmd := exec.Command(o.bin, "run", "--config", caddyfile, "--adapter", "caddyfile")
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool {
		name, _, _ := strings.Cut(kv, "=")
		return slices.Contains(caddyEnvNames, name)
	})
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdout, cmd.Stderr = log, log
	// The server goes when this process goes, however it ends.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		log.Close()
		return fmt.Errorf("starting %s: %w", t.Name, err)
	}
	t.proc, t.log = cmd, log
	return nil
}

func stopCaddy(t *target) {
	if t.proc == nil || t.proc.Process == nil {
		return
	}
	done := make(chan struct{})
	go func() { _ = t.proc.Wait(); close(done) }()
	_ = t.proc.Process.Signal(os.Interrupt)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = t.proc.Process.Kill()
		<-done
	}
	t.log.Close()
}

// waitReady polls url until it answers status, for at most a minute.
func waitReady(ctx context.Context, t *target, url string, status int) error {
	deadline := time.Now().Add(time.Minute)
	client := &http.Client{Timeout: 2 * time.Second}
	var last string
	for time.Now().Before(deadline) {
		if t.proc.ProcessState != nil || !alive(t.proc.Process.Pid) {
			return fmt.Errorf("%s exited; see %s:\n%s", t.Name, t.log.Name(), tail(t.log.Name()))
		}
		resp, err := client.Get(url)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == status {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s not ready after a minute (%s); see %s:\n%s", t.Name, last, t.log.Name(), tail(t.log.Name()))
}

func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

// preflight checks that the targets do what is measured: plain caddy
// proxies, and every target with the token check refuses a request
// without a token, and with one replaces a forged X-User-Id by the
// token's user.
func preflight(ctx context.Context, baseline *target, gateways []*target, s *stub, u accounts.User, token string) error {
	if code, err := getStatus(ctx, baseline.URL+docPath, nil); err != nil || code != http.StatusOK {
		return fmt.Errorf("preflight: plain caddy answered %d, %v", code, err)
	}
	for _, g := range gateways {
		if err := expectGuarded(ctx, g, map[string]string{"Authorization": "Bearer " + token, "X-User-Id": "forged"}); err != nil {
			return err
		}
		if got := s.lastUser.Load().(string); got != u.ID {
			return fmt.Errorf("preflight: behind %s the document service saw X-User-Id %q, want %q", g.Name, got, u.ID)
		}
	}
	return nil
}

// expectGuarded checks that t answers GET docPath with 401 without a
// token, and with 200 with header (which carries one).
func expectGuarded(ctx context.Context, t *target, header map[string]string) error {
	if code, err := getStatus(ctx, t.URL+docPath, nil); err != nil || code != http.StatusUnauthorized {
		return fmt.Errorf("preflight: %s answered %d, %v to GET %s without a token; want 401", t.Name, code, err, docPath)
	}
	if code, err := getStatus(ctx, t.URL+docPath, header); err != nil || code != http.StatusOK {
		return fmt.Errorf("preflight: %s answered %d, %v to GET %s with a valid token; want 200 (see %s)", t.Name, code, err, docPath, t.logHint())
	}
	return nil
}

// getStatus sends GET url with header and returns the answer's status.
func getStatus(ctx context.Context, url string, header map[string]string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// externalPassword is the password of the users registered on external
// targets: it meets API.md's password policy.
const externalPassword = "Bench!pass1"

// externalTokens registers n users on an external target and logs each
// in, through API.md's routes, four at a time, and returns their access
// tokens. A 429 (a rate limit) is waited out as its Retry-After says, up
// to ten times a request.
func externalTokens(ctx context.Context, t *target, n int) ([]string, error) {
	client := &http.Client{Timeout: 30 * time.Second}
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	post := func(path, contentType, body string, want int) ([]byte, error) {
		for attempt := 1; ; attempt++ {
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.URL+path, strings.NewReader(body))
			if err != nil {
				return nil, err
			}
			req.Header.Set("Content-Type", contentType)
			resp, err := client.Do(req)
			if err != nil {
				return nil, err
			}
			b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
			if err != nil {
				return nil, err
			}
			if resp.StatusCode == http.StatusTooManyRequests && attempt <= 10 {
				wait, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
				select {
				case <-time.After(time.Duration(min(max(wait, 1), 60)) * time.Second):
					continue
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			}
			if resp.StatusCode != want {
				return nil, fmt.Errorf("POST %s: %d %s; want %d", path, resp.StatusCode, bytes.TrimSpace(b), want)
			}
			return b, nil
		}
	}
	tokens := make([]string, n)
	err := inParallel(ctx, n, 4, func(i int) error {
		email := fmt.Sprintf("bench-%s-%d@example.com", run, i)
		reg, err := json.Marshal(map[string]string{"email": email, "password": externalPassword})
		if err != nil {
			return err
		}
		if _, err := post("/api/auth/register", "application/json", string(reg), http.StatusCreated); err != nil {
			return err
		}
		form := url.Values{"username": {email}, "password": {externalPassword}}.Encode()
		b, err := post("/api/auth/login", "application/x-www-form-urlencoded", form, http.StatusOK)
		if err != nil {
			return err
		}
		var body struct {
			AccessToken string `json:"access_token"`
		}
		if err := json.Unmarshal(b, &body); err != nil {
			return fmt.Errorf("login of %s: %w", email, err)
		}
		if body.AccessToken == "" {
			return fmt.Errorf("login of %s: no access_token in %s", email, b)
		}
		tokens[i] = body.AccessToken
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", t.Name, err)
	}
	return tokens, nil
}

// prime sends one request per token to the gateway, so that every token's
// RSA verification and user lookup happen before any measurement.
func prime(ctx context.Context, t *target, tokens []string) error {
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	err := inParallel(ctx, len(tokens), 4, func(i int) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.URL+docPath, nil)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+tokens[i])
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("token %d: status %d", i, resp.StatusCode)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("priming %s: %w", t.Name, err)
	}
	return nil
}

// inParallel calls f(i) for every i in [0, n) from the given number of
// goroutines. After the first error (or the end of ctx) no new call
// starts; that error is returned.
func inParallel(ctx context.Context, n, workers int, f func(i int) error) error {
	var next atomic.Int64
	var failed atomic.Bool
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil || failed.Load() {
					return
				}
				if err := f(i); err != nil {
					mu.Lock()
					firstErr = cmp(firstErr, err)
					mu.Unlock()
					failed.Store(true)
					return
				}
			}
		})
	}
	wg.Wait()
	return cmp(firstErr, ctx.Err())
}
