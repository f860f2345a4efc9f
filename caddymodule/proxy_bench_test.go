package caddymodule

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
	"github.com/jackc/pgx/v5"

	"github.com/caddyaccounts/gateway/accounts"
	"github.com/caddyaccounts/gateway/internal/pgtest"
)

// proxyBenchUsers is how many distinct users BenchmarkProxy's gateway
// requests cycle through, each with its own token.
const proxyBenchUsers = 256

// BenchmarkProxy compares, in one process and over real loopback HTTP,
// Caddy's reverse_proxy alone with the project's own Caddyfile in front of
// the same proxy, both forwarding GET /api/documents/x to a stub document
// service:
//
//   - plain: `http://127.0.0.1:P { reverse_proxy STUB }`;
//   - gateway: ../Caddyfile as shipped (X-User-Id stripping, the
//     documents route, accounts_auth with RS256 tokens of many users,
//     accounts_upload_limit), only with rate limits off;
//     PROXY_BENCH_CADDYFILE names another file of the same shape to
//     weigh a variant of it.
//
// Client, stub and server share the process, so ns/op is the whole
// round trip; what matters is the difference between the two, above all
// in allocs/op and B/op, which noise does not move: everything the
// gateway adds per request beyond plain Caddy. bench/load measures the
// same comparison with separate processes and wrk.
func BenchmarkProxy(b *testing.B) {
	stub := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"documents":[],"user_id":"`+r.Header.Get("X-User-Id")+`","note":"stub document service"}`)
	}))
	b.Cleanup(stub.Close)
	stubAddr := strings.TrimPrefix(stub.URL, "http://")

	dbURL := pgtest.Shared(b).NewDB(b, "", nil) // the gateway migrates it
	privPEM, _, err := accounts.GenerateKeyPair(2048)
	if err != nil {
		b.Fatal(err)
	}
	keyFile := filepath.Join(b.TempDir(), "jwt.pem")
	if err := os.WriteFile(keyFile, []byte(privPEM), 0o600); err != nil {
		b.Fatal(err)
	}

	plainAddr, gatewayAddr := freeAddr(b), freeAddr(b)
	plain := loadCaddyfile(b, fmt.Sprintf("{\n\tadmin off\n}\nhttp://%s {\n\treverse_proxy %s\n}\n", plainAddr, stubAddr), nil)
	projectFile, err := os.ReadFile(cmp.Or(os.Getenv("PROXY_BENCH_CADDYFILE"), "../Caddyfile"))
	if err != nil {
		b.Fatal(err)
	}
	for name, value := range map[string]string{
		"CADDY_ADMIN":          "off",
		"SITE_ADDRESS":         "http://" + gatewayAddr,
		"DOC_SERVICE":          stubAddr,
		"DATABASE_URL":         dbURL,
		"JWT_PRIVATE_KEY_FILE": keyFile,
	} {
		b.Setenv(name, value)
	}
	gateway := loadCaddyfile(b, string(projectFile), map[string]any{"rate_limit": map[string]any{"ip_requests": -1}})
	b.Cleanup(func() { _ = caddy.Stop() })

	// The gateway's first load migrates the database; then the users can
	// be made and their tokens signed with the gateway's key.
	if err := caddy.Load(gateway, true); err != nil {
		b.Fatal(err)
	}
	tokens := proxyBenchTokens(b, dbURL, privPEM)

	for _, target := range []struct {
		name   string
		config []byte
		addr   string
	}{
		{"plain", plain, plainAddr},
		{"gateway", gateway, gatewayAddr},
	} {
		b.Run(target.name, func(b *testing.B) {
			if err := caddy.Load(target.config, true); err != nil {
				b.Fatal(err)
			}
			url := "http://" + target.addr + "/api/documents/x"
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			defer client.CloseIdleConnections()
			get := func(token string) error {
				req, err := http.NewRequest("GET", url, nil)
				if err != nil {
					return err
				}
				req.Header.Set("Authorization", "Bearer "+token)
				req.Header.Set("X-User-Id", "forged")
				resp, err := client.Do(req)
				if err != nil {
					return err
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil {
					return err
				}
				// Plain Caddy passes the forged header on; the gateway
				// must not.
				if resp.StatusCode != http.StatusOK || (target.name == "gateway" && strings.Contains(string(body), "forged")) {
					return fmt.Errorf("%s: %d %s", target.name, resp.StatusCode, body)
				}
				return nil
			}
			for _, tok := range tokens { // warm the caches and the connections
				if err := get(tok); err != nil {
					b.Fatal(err)
				}
			}
			var seq atomic.Uint64
			b.SetParallelism(8)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := get(tokens[seq.Add(1)%uint64(len(tokens))]); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// loadCaddyfile adapts a Caddyfile to Caddy's JSON, adding
// accountsOptions (if any) to the accounts app's and logging only errors.
func loadCaddyfile(tb testing.TB, text string, accountsOptions map[string]any) []byte {
	tb.Helper()
	adapter := caddyconfig.GetAdapter("caddyfile")
	cfgJSON, _, err := adapter.Adapt([]byte(text), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		tb.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(cfgJSON, &cfg); err != nil {
		tb.Fatal(err)
	}
	if accountsOptions != nil {
		app := cfg["apps"].(map[string]any)["accounts"].(map[string]any)
		for k, v := range accountsOptions {
			app[k] = v
		}
	}
	cfg["logging"] = map[string]any{"logs": map[string]any{"default": map[string]any{"level": "ERROR"}}}
	out, err := json.Marshal(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// freeAddr returns a loopback address with a port free right now.
func freeAddr(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// proxyBenchTokens inserts proxyBenchUsers active users and signs an
// access token for each, as login does.
func proxyBenchTokens(tb testing.TB, dbURL, privPEM string) []string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `
		INSERT INTO users (email, hashed_password)
		SELECT format('proxy-bench-%s@example.com', g), 'not a hash' FROM generate_series(1, $1::int) g
		RETURNING id::text, email, role::text, is_active`, proxyBenchUsers)
	if err != nil {
		tb.Fatal(err)
	}
	users, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (accounts.User, error) {
		var u accounts.User
		err := row.Scan(&u.ID, &u.Email, &u.Role, &u.IsActive)
		return u, err
	})
	if err != nil {
		tb.Fatal(err)
	}
	priv, err := accounts.ParsePrivateKey(privPEM)
	if err != nil {
		tb.Fatal(err)
	}
	keys, err := accounts.NewKeySet(priv)
	if err != nil {
		tb.Fatal(err)
	}
	issuer := accounts.NewTokenIssuer(keys, accounts.DefaultIssuer, accounts.DefaultTokenLifetime, accounts.DefaultLeeway)
	tokens := make([]string, len(users))
	for i := range users {
		if tokens[i], _, err = issuer.Issue(&users[i]); err != nil {
			tb.Fatal(err)
		}
	}
	return tokens
}
