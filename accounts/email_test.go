package accounts

import (
	"context"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/caddyaccounts/gateway/migrations"
)

func TestEmailKey(t *testing.T) {
	for _, tc := range []struct{ email, key string }{
		{"bob@bücher.example", "bob@xn--bcher-kva.example"},
		{"bob@xn--bcher-kva.example", "bob@xn--bcher-kva.example"},
		{"Bob@BÜCHER.Example", "bob@xn--bcher-kva.example"},
		{"BOB@XN--BCHER-KVA.EXAMPLE", "bob@xn--bcher-kva.example"},
		{"z@ｅxample.com", "z@example.com"}, // full-width e
		{"z@ＥＸＡＭＰＬＥ.ＣＯＭ", "z@example.com"}, // all full-width
		{"z@example.com", "z@example.com"}, // ASCII: its lower-case form
		{"First.Last+Tag@Example.COM", "first.last+tag@example.com"},
		{"ｚ@example.com", "z@example.com"},               // NFKC of the local part
		{"\u212a@example.com", "k@example.com"},          // Kelvin sign
		{"Straße@example.com", "strasse@example.com"},    // full case folding
		{"user@пример.рф", "user@xn--e1afmkfd.xn--p1ai"}, // all Cyrillic
		{"user@exаmple.com", "user@xn--exmple-4nf.com"},  // keyed; refused at registration
	} {
		got, err := emailKey(tc.email)
		if err != nil || got != tc.key {
			t.Errorf("emailKey(%q) = %q, %v; want %q", tc.email, got, err, tc.key)
		}
	}
	for _, email := range []string{
		"", "plain", "@example.com", "a@", "a@exa_mple.com", "a@ab--cd.com", "a@xn--a.com",
		"a@b@example.com",      // quoted local parts are not addresses the API takes
		"a\uff20b@example.com", // a full-width @-sign in the local part becomes a second @
		"a@b.co\xff",
	} {
		if got, err := emailKey(email); err == nil {
			t.Errorf("emailKey(%q) = %q, want an error", email, got)
		}
	}
}

func TestCheckEmailDomains(t *testing.T) {
	const prefix = "value is not a valid email address: "
	for email, want := range map[string]string{
		"user@bücher.example":                      "",
		"user@пример.рф":                           "",
		"user@пример.com":                          "", // one script per label
		"user@ｅxample.com":                         "",
		"user@東京タワー.jp":                            "", // Han + Katakana
		"user@サンプルsample.jp":                       "", // Katakana + Latin
		"user@한국어中文.kr":                            "", // Hangul + Han
		"user@中文ㄅ.tw":                              "", // Han + Bopomofo
		"user@ex-ample1.com":                       "",
		"user@exаmple.com":                         prefix + "The part after the @-sign mixes Latin and Cyrillic characters in one label.",
		"user@xn--exmple-4nf.com":                  prefix + "The part after the @-sign mixes Latin and Cyrillic characters in one label.",
		"user@EXАMPLE.com":                         prefix + "The part after the @-sign mixes Latin and Cyrillic characters in one label.",
		"user@αpple.com":                           prefix + "The part after the @-sign mixes Greek and Latin characters in one label.",
		"user@aаα.com":                             prefix + "The part after the @-sign mixes Latin, Cyrillic and Greek characters in one label.",
		"user@한ひ.kr":                               prefix + "The part after the @-sign mixes Hangul and Hiragana characters in one label.",
		"user@ab--cd.com":                          prefix + "The part after the @-sign is not valid IDNA.",
		"user@xn--a.com":                           prefix + "The part after the @-sign is not valid IDNA.",
		"user@" + strings.Repeat("ü", 60) + ".com": prefix + "The part after the @-sign is not valid.",
	} {
		if got := checkEmail(email); got != want {
			t.Errorf("checkEmail(%q) = %q, want %q", email, got, want)
		}
	}
}

// samePairs are two spellings each of one mailbox.
var samePairs = [][2]string{
	{"bob@bücher.example", "bob@xn--bcher-kva.example"},
	{"ann@xn--bcher-kva.example", "ANN@BÜCHER.example"},
	{"z@ｅxample.com", "z@example.com"},
	{"y@example.com", "y@ＥＸＡＭＰＬＥ.com"},
}

// TestRegisterOneMailbox: the second spelling of an address is 409, and
// either spelling logs in to the one account, stored as first given.
func TestRegisterOneMailbox(t *testing.T) {
	e := newTestEnv(t)
	for _, p := range samePairs {
		u := e.register(p[0], "Secret!pw1")
		if u.Email != p[0] {
			t.Errorf("stored %q, want %q as given", u.Email, p[0])
		}
		r := e.do("POST", "/api/auth/register", "", map[string]any{"email": p[1], "password": "Secret!pw1"})
		if r.Status != http.StatusConflict || r.Detail(t) != `"Email already registered"` {
			t.Errorf("register %s after %s: %d %s", p[1], p[0], r.Status, r.Body)
		}
		for _, spelling := range p {
			me := e.do("GET", "/api/users/me", e.login(spelling, "Secret!pw1"), nil).JSON(t).(map[string]any)
			if me["id"] != u.ID || me["email"] != p[0] {
				t.Errorf("login as %s: me %v, want %s %s", spelling, me, u.ID, p[0])
			}
		}
		r = e.do("POST", "/api/auth/login", "", formOf("username", p[1], "password", "Wrong!pw1"))
		if r.Status != http.StatusUnauthorized || r.Detail(t) != `"Incorrect email or password"` {
			t.Errorf("wrong password as %s: %d %s", p[1], r.Status, r.Body)
		}
	}
	var n int
	if err := e.db.QueryRow(context.Background(), "SELECT count(*) FROM users").Scan(&n); err != nil || n != len(samePairs) {
		t.Fatalf("%d users (%v), want %d", n, err, len(samePairs))
	}
}

// TestRegisterRefusesMixedScripts: a look-alike domain is a 422 on
// body.email; a domain in one script is welcome.
func TestRegisterRefusesMixedScripts(t *testing.T) {
	e := newTestEnv(t)
	const want = `[{"type":"value_error","loc":["body","email"],"msg":"value is not a valid email address: The part after the @-sign mixes Latin and Cyrillic characters in one label."}]`
	for _, email := range []string{"user@exаmple.com", "user@xn--exmple-4nf.com"} {
		r := e.do("POST", "/api/auth/register", "", map[string]any{"email": email, "password": "Secret!pw1"})
		if r.Status != http.StatusUnprocessableEntity || r.Detail(t) != want {
			t.Errorf("register %s: %d %s", email, r.Status, r.Body)
		}
	}
	e.register("user@пример.рф", "Secret!pw1")
	e.login("user@xn--e1afmkfd.xn--p1ai", "Secret!pw1")
	e.register("user@bücher.example", "Secret!pw1")
}

// TestCreateAdminOneMailbox: create-admin with another spelling promotes
// the existing account rather than making a second one.
func TestCreateAdminOneMailbox(t *testing.T) {
	e := newTestEnv(t)
	u := e.register("boss@bücher.example", "Secret!pw1")
	a, created, err := e.svc.CreateAdmin(context.Background(), "BOSS@xn--bcher-kva.example", "Admin!pw1")
	if err != nil || created || a.ID != u.ID || a.Role != RoleAdmin || a.Email != "boss@bücher.example" {
		t.Fatalf("CreateAdmin: %+v created %v, %v; want %s promoted", a, created, err, u.ID)
	}
	if _, _, err := e.svc.CreateAdmin(context.Background(), "root@exаmple.com", "Admin!pw1"); err == nil ||
		err.Error() != "value is not a valid email address: The part after the @-sign mixes Latin and Cyrillic characters in one label." {
		t.Fatalf("CreateAdmin with a look-alike domain: %v", err)
	}
}

// TestLoginLockCountsEverySpelling: the spellings of one mailbox, which
// all reach its account, share one failure count.
func TestLoginLockCountsEverySpelling(t *testing.T) {
	e := newLimitEnv(t, lockConfig)
	e.register("lock@bücher.example", "Secret!pw1")
	for i, name := range []string{"lock@bücher.example", "lock@xn--bcher-kva.example", "LOCK@ｂüｃｈｅｒ.example"} {
		if r := e.loginFrom("10.0.0.1", name, "Wrong!pw1"); r.Status != 401 {
			t.Fatalf("failure %d: %d %s", i+1, r.Status, r.Body)
		}
	}
	want429(t, "another spelling while locked", e.loginFrom("10.0.0.2", "lock@XN--BCHER-KVA.example", "Secret!pw1"), lockDetail, 10)
}

// TestMigrateReportsEmailKeyConflicts: rows of the old backend that are
// one mailbox are found by the migration: the oldest gets the key, the
// others keep no key and are reported, and nothing is merged, changed or
// lost. Each still logs in with its own address; resolved, the next
// migration keys them.
func TestMigrateReportsEmailKeyConflicts(t *testing.T) {
	ctx := context.Background()
	url := newOldBackendDB(t)
	const (
		bobU   = "11111111-1111-4111-8111-111111111111" // bob@bücher.example, oldest
		bobA   = "22222222-2222-4222-8222-222222222222" // BOB@xn--bcher-kva.example
		zFull  = "33333333-3333-4333-8333-333333333333" // z@ｅxample.com, older
		zASCII = "44444444-4444-4444-8444-444444444444" // z@example.com
		bad    = "55555555-5555-4555-8555-555555555555" // an address IDNA refuses
		bobB   = "66666666-6666-4666-8666-666666666666" // bob@ｂücher.example, newest
		many5b = "77777777-7777-4777-8777-777777777777" // many5@ＥＸＡＭＰＬＥ.com
	)
	// The old backend's index is on email as is; the gateway's on
	// lower(email). No two rows here differ only in letter case (which
	// that index refuses), so that the collisions are the key's own.
	h, err := bcrypt.GenerateFromPassword([]byte("Old!pass1"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	hash := string(h)
	pool, err := NewPool(ctx, url, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	insert := func(id, email, age string) {
		if _, err := pool.Exec(ctx,
			`INSERT INTO users (id, email, hashed_password, role, is_active, created_at)
			 VALUES ($1, $2, $3, 'user', true, now() - $4::interval)`, id, email, hash, age); err != nil {
			t.Fatal(err)
		}
	}
	insert(bobU, "bob@bücher.example", "10 days")
	insert(bobA, "BOB@xn--bcher-kva.example", "9 days")
	insert(zASCII, "z@example.com", "7 days")
	insert(zFull, "z@ｅxample.com", "8 days")
	insert(bad, "c@ab--cd.example", "6 days")
	insert(bobB, "bob@ｂücher.example", "5 days")
	// More rows than one backfill batch, so that the batches' boundary is
	// crossed: the pair below lies on both sides of it.
	if _, err := pool.Exec(ctx,
		`INSERT INTO users (id, email, hashed_password, role, is_active, created_at)
		 SELECT gen_random_uuid(), 'many' || n || '@example.com', $1, 'user', true, now() - interval '4 days' + n * interval '1 second'
		 FROM generate_series(1, $2::int) AS n`, hash, emailKeyBatch+10); err != nil {
		t.Fatal(err)
	}
	insert(many5b, "many5@ＥＸＡＭＰＬＥ.com", "1 day")
	const usersQ = "SELECT id, email, hashed_password, role::text, is_active, created_at FROM users ORDER BY id"
	before := dumpTable(t, url, usersQ)

	for range 2 { // a second run changes nothing
		if _, err := Migrate(ctx, pool, migrations.FS); err != nil {
			t.Fatal(err)
		}
	}
	if after := dumpTable(t, url, usersQ); after != before {
		t.Fatalf("the migration changed users:\nbefore\n%s\nafter\n%s", before, after)
	}
	keyOf := func(id string) string {
		var key *string
		if err := pool.QueryRow(ctx, "SELECT email_key FROM users WHERE id = $1", id).Scan(&key); err != nil {
			t.Fatal(err)
		}
		if key == nil {
			return "NULL"
		}
		return *key
	}
	for id, want := range map[string]string{
		bobU: "bob@xn--bcher-kva.example", bobA: "NULL", bobB: "NULL",
		zFull: "z@example.com", zASCII: "NULL", bad: "NULL",
		oldUsers[0].id: "admin@old.example", many5b: "NULL",
	} {
		if got := keyOf(id); got != want {
			t.Errorf("email_key of %s = %s, want %s", id, got, want)
		}
	}
	var unkeyed int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM users WHERE email_key IS NULL").Scan(&unkeyed); err != nil || unkeyed != 5 {
		t.Fatalf("%d rows without a key (%v), want 5", unkeyed, err)
	}
	var many5 string
	if err := pool.QueryRow(ctx, "SELECT id::text FROM users WHERE email = 'many5@example.com'").Scan(&many5); err != nil {
		t.Fatal(err)
	}

	conflicts, err := EmailKeyConflicts(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	want := []EmailKeyConflict{
		{UserID: bobA, HolderID: bobU, Normalisable: true},
		{UserID: zASCII, HolderID: zFull, Normalisable: true},
		{UserID: bad},
		{UserID: bobB, HolderID: bobU, Normalisable: true},
		{UserID: many5b, HolderID: many5, Normalisable: true},
	}
	if !reflect.DeepEqual(conflicts, want) {
		t.Fatalf("conflicts\n%+v\nwant\n%+v", conflicts, want)
	}
	if got := fmt.Sprint(conflicts[0], "\n", conflicts[2]); got != "user "+bobA+": the email address is the same mailbox as that of the older user "+bobU+
		"\nuser "+bad+": the email address cannot be normalised (not a valid IDNA address)" {
		t.Errorf("report lines: %q", got)
	}

	// Every account logs in with its own address; another spelling
	// reaches the one holding the key.
	keys, _ := NewKeySet(testKey(t, 0))
	svc, err := New(pool, keys, Config{Argon2: fastArgon2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	e := &testEnv{t: t, svc: svc, db: pool, srv: newServer(t, svc)}
	for email, id := range map[string]string{
		"bob@bücher.example": bobU, "BOB@bücher.EXAMPLE": bobU, "BOB@ＢÜＣＨＥＲ.example": bobU,
		"BOB@xn--bcher-kva.example": bobA, "bob@xn--bcher-kva.EXAMPLE": bobA, "bob@ｂücher.example": bobB,
		"z@ｅxample.com": zFull, "z@example.com": zASCII, "Z@EXAMPLE.COM": zASCII,
		"c@ab--cd.example": bad, "C@AB--CD.example": bad,
		"many5@example.com": many5, "many5@ＥＸＡＭＰＬＥ.com": many5b,
	} {
		me := e.do("GET", "/api/users/me", e.login(email, "Old!pass1"), nil).JSON(t).(map[string]any)
		if me["id"] != id {
			t.Errorf("login as %s: user %v, want %s", email, me["id"], id)
		}
	}
	// A third spelling cannot register.
	if r := e.do("POST", "/api/auth/register", "", map[string]any{"email": "bob@ｂüｃｈｅｒ.example", "password": "Secret!pw1"}); r.Status != http.StatusConflict {
		t.Errorf("a third spelling: %d %s", r.Status, r.Body)
	}

	// The operator resolves the conflicts: gives one account another
	// address, and removes the other (after moving what it owned).
	if _, err := pool.Exec(ctx, "UPDATE users SET email = 'bob.alt@example.com' WHERE id = $1", bobA); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "DELETE FROM users WHERE id = $1", bobB); err != nil {
		t.Fatal(err)
	}
	if _, err := Migrate(ctx, pool, migrations.FS); err != nil {
		t.Fatal(err)
	}
	if got := keyOf(bobA); got != "bob.alt@example.com" {
		t.Errorf("after the fix, key %s", got)
	}
	conflicts, err = EmailKeyConflicts(ctx, pool)
	if err != nil || len(conflicts) != 3 {
		t.Fatalf("after the fix: %+v, %v; want the three others", conflicts, err)
	}
}

func TestCheckEmail(t *testing.T) {
	valid := []string{"a@b.co", "First.Last+tag@example.com", "x@sub.domain.example", "o'brien@example.ie", "user@bücher.de", "u@xn--bcher-kva.de"}
	for _, e := range valid {
		if msg := checkEmail(e); msg != "" {
			t.Errorf("checkEmail(%q) = %q, want valid", e, msg)
		}
	}
	invalid := map[string]string{
		"":                                      "value is not a valid email address: The email address is empty.",
		"plain":                                 "value is not a valid email address: An email address must have an @-sign.",
		"a@b@c.co":                              "value is not a valid email address: The email address is not valid. It must have exactly one @-sign.",
		"@b.co":                                 "value is not a valid email address: There must be something before the @-sign.",
		"a@":                                    "value is not a valid email address: There must be something after the @-sign.",
		"a@localhost":                           "value is not a valid email address: The part after the @-sign is not valid. It should have a period.",
		"a..b@c.co":                             "value is not a valid email address: The part before the @-sign is not valid.",
		".a@c.co":                               "value is not a valid email address: The part before the @-sign is not valid.",
		"a b@c.co":                              "value is not a valid email address: The part before the @-sign is not valid.",
		"a@-c.co":                               "value is not a valid email address: The part after the @-sign is not valid.",
		"a@c..co":                               "value is not a valid email address: The part after the @-sign is not valid.",
		"a@c.c":                                 "value is not a valid email address: The part after the @-sign is not valid.",
		"a@c.123":                               "value is not a valid email address: The part after the @-sign is not valid.",
		"a@c_d.co":                              "value is not a valid email address: The part after the @-sign contains invalid characters.",
		strings.Repeat("a", 65) + "@c.co":       "value is not a valid email address: The part before the @-sign is not valid.",
		"a@" + strings.Repeat("b", 250) + ".co": "value is not a valid email address: The email address is too long.",
	}
	for e, want := range invalid {
		if got := checkEmail(e); got != want {
			t.Errorf("checkEmail(%q) = %q, want %q", e, got, want)
		}
	}
}
