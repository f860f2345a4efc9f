package accounts

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/jackc/pgx/v5"
	"golang.org/x/crypto/bcrypt"

	"github.com/caddyaccounts/gateway/internal/pgtest"
	"github.com/caddyaccounts/gateway/migrations"
)

// oldBackendSchema is the schema the FastAPI backend's Alembic migrations
// plausibly made (SQLAlchemy models: UUID ids filled in Python, an enum
// role type, a unique email index, a profiles table with its own id).
const oldBackendSchema = `
CREATE TABLE alembic_version (
    version_num VARCHAR(32) NOT NULL,
    CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);
INSERT INTO alembic_version (version_num) VALUES ('a1b2c3d4e5f6');
CREATE TYPE userrole AS ENUM ('user', 'admin');
CREATE TABLE users (
    id UUID NOT NULL,
    email VARCHAR(255) NOT NULL,
    hashed_password VARCHAR(255) NOT NULL,
    role userrole NOT NULL,
    is_active BOOLEAN,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now(),
    updated_at TIMESTAMP WITH TIME ZONE,
    PRIMARY KEY (id)
);
CREATE UNIQUE INDEX ix_users_email ON users (email);
CREATE TABLE profiles (
    id UUID NOT NULL,
    user_id UUID NOT NULL,
    full_name VARCHAR(200),
    phone VARCHAR(32),
    job_title VARCHAR(200),
    department VARCHAR(200),
    bio TEXT,
    avatar_url VARCHAR(2048),
    updated_at TIMESTAMP WITH TIME ZONE,
    PRIMARY KEY (id),
    UNIQUE (user_id),
    FOREIGN KEY(user_id) REFERENCES users (id) ON DELETE CASCADE
);
`

type oldUser struct {
	id, email, password, role string
	active                    bool
}

var oldUsers = []oldUser{
	{"6f1c2d3e-4a5b-4c6d-8e7f-901a2b3c4d5e", "Admin@Old.example", "Adm1n!old", "admin", true},
	{"7a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d", "alice@old.example", "Al1ce!old", "user", true},
	{"8b3c4d5e-6f7a-4b8c-9d0e-1f2a3b4c5d6e", "bob@old.example", "B0b!older", "user", false},
}

// newOldBackendDB makes a database as the old backend left it.
func newOldBackendDB(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	url := pgtest.Shared(t).NewDB(t, "", nil)
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, oldBackendSchema); err != nil {
		t.Fatal(err)
	}
	hashes := make([]string, len(oldUsers))
	var wg sync.WaitGroup
	for i, u := range oldUsers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h, err := bcrypt.GenerateFromPassword([]byte(u.password), 12)
			if err != nil {
				panic(err)
			}
			hashes[i] = string(h)
		}()
	}
	wg.Wait()
	for i, u := range oldUsers {
		if _, err := conn.Exec(ctx,
			`INSERT INTO users (id, email, hashed_password, role, is_active, created_at, updated_at)
			 VALUES ($1, $2, $3, $4, $5, now() - interval '1 day' * $6, NULL)`,
			u.id, u.email, hashes[i], u.role, u.active, len(oldUsers)-i); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx,
			`INSERT INTO profiles (id, user_id, full_name, phone, bio) VALUES (gen_random_uuid(), $1, $2, '+1 555 0100', 'old bio')`,
			u.id, "Name of "+u.email); err != nil {
			t.Fatal(err)
		}
	}
	return url
}

// dumpTable returns every row of a query as text, for before/after
// comparisons.
func dumpTable(t *testing.T, url, query string) string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, query)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintln(&b, vals...)
	}
	if rows.Err() != nil {
		t.Fatal(rows.Err())
	}
	return b.String()
}

// TestTakeOverOldBackendDatabase points the gateway at a database made by
// the FastAPI backend: the schema is adopted without losing a row, every
// old user logs in with their old password, and tokens signed by the old
// backend's key stay valid.
func TestTakeOverOldBackendDatabase(t *testing.T) {
	ctx := context.Background()
	url := newOldBackendDB(t)
	const usersQ = "SELECT id, email, hashed_password, role::text, is_active, created_at FROM users ORDER BY id"
	const profilesQ = "SELECT user_id, full_name, phone, job_title, department, bio, avatar_url FROM profiles ORDER BY user_id"
	usersBefore, profilesBefore := dumpTable(t, url, usersQ), dumpTable(t, url, profilesQ)

	pool, err := NewPool(ctx, url, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	// Two instances starting at once: the advisory lock serialises them.
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		wg.Add(1)
		go func() { defer wg.Done(); _, errs[i] = Migrate(ctx, pool, migrations.FS) }()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatalf("migrating the old database: %v", err)
		}
	}
	if got := dumpTable(t, url, usersQ); got != usersBefore {
		t.Fatalf("users changed by the migration:\nbefore\n%s\nafter\n%s", usersBefore, got)
	}
	// The accounts that existed before email verification count as
	// verified; new ones start unverified.
	if got := dumpTable(t, url, "SELECT count(*) FILTER (WHERE email_verified), count(*) FROM users"); got != fmt.Sprintf("%d %d\n", len(oldUsers), len(oldUsers)) {
		t.Fatalf("verified users after the migration: %q, want all %d", got, len(oldUsers))
	}
	var verified bool
	if err := pool.QueryRow(ctx, "INSERT INTO users (email, hashed_password) VALUES ('new@old.example', 'x') RETURNING email_verified").Scan(&verified); err != nil || verified {
		t.Fatalf("a new user's email_verified %v (%v), want false", verified, err)
	}
	if _, err := pool.Exec(ctx, "DELETE FROM users WHERE email = 'new@old.example'"); err != nil {
		t.Fatal(err)
	}
	if got := dumpTable(t, url, profilesQ); got != profilesBefore {
		t.Fatalf("profiles changed by the migration:\nbefore\n%s\nafter\n%s", profilesBefore, got)
	}
	if got := dumpTable(t, url, "SELECT version_num FROM alembic_version"); got != "a1b2c3d4e5f6\n" {
		t.Fatalf("alembic_version = %q, want it untouched", got)
	}

	keys, _ := NewKeySet(testKey(t, 0))
	svc, err := New(pool, keys, Config{Argon2: fastArgon2, AcceptTokensWithoutIssuer: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	e := &testEnv{t: t, svc: svc, db: pool}
	e.srv = newServer(t, svc)

	for _, u := range oldUsers {
		r := e.do("POST", "/api/auth/login", "", formOf("username", strings.ToUpper(u.email), "password", u.password))
		if !u.active {
			if r.Status != http.StatusForbidden || r.Detail(t) != `"Inactive user"` {
				t.Errorf("%s (inactive): %d %s", u.email, r.Status, r.Body)
			}
			continue
		}
		if r.Status != http.StatusOK {
			t.Fatalf("%s: old password refused: %d %s", u.email, r.Status, r.Body)
		}
		token := r.JSON(t).(map[string]any)["access_token"].(string)
		me := e.do("GET", "/api/users/me", token, nil).JSON(t).(map[string]any)
		if me["id"] != u.id || me["role"] != u.role || me["email"] != u.email {
			t.Errorf("me = %v, want %s %s", me, u.id, u.role)
		}
		var hash string
		_ = pool.QueryRow(ctx, "SELECT hashed_password FROM users WHERE id = $1", u.id).Scan(&hash)
		if !strings.HasPrefix(hash, "$argon2id$") {
			t.Errorf("%s: hash not upgraded after login", u.email)
		}
	}

	// New accounts work beside the old ones, and an old email in another
	// case is taken.
	e.register("new@old.example", "Secret!pw1")
	if r := e.do("POST", "/api/auth/register", "", map[string]any{"email": "ALICE@old.example", "password": "Secret!pw1"}); r.Status != 409 {
		t.Errorf("old email in another case: %d %s", r.Status, r.Body)
	}

	// A token as the old backend signed it: same key, no kid, no iss.
	old := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{
		"sub": oldUsers[1].id, "email": oldUsers[1].email, "role": "user",
		"exp": time.Now().Add(7 * time.Hour).Unix(), "iat": time.Now().Add(-time.Hour).Unix(),
	})
	oldToken, err := old.SignedString(testKey(t, 0))
	if err != nil {
		t.Fatal(err)
	}
	if r := e.do("GET", "/api/users/me", oldToken, nil); r.Status != 200 {
		t.Fatalf("old backend's token refused: %d %s", r.Status, r.Body)
	}
	strict, _ := New(pool, keys, Config{Argon2: fastArgon2}, nil)
	if _, err := strict.Tokens().Verify(oldToken); err == nil {
		t.Fatal("a token without iss accepted while accept_tokens_without_issuer is off")
	}
}
