package e2e

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// One mailbox, one account: the spellings of one address (IDNA, full
// width, letter case) are one account for registration and login; a
// look-alike domain is refused; the migration reports old rows that are
// one mailbox.

func TestEmailSpellingsAreOneAccount(t *testing.T) {
	t.Parallel()
	g := sharedGateway(t)
	c := g.Client(t)
	for _, p := range [][2]string{
		{"bob.%s@bücher.example", "bob.%s@xn--bcher-kva.example"},
		{"z.%s@ｅxample.com", "z.%s@example.com"}, // full-width e, then ASCII
	} {
		local := randomHex(4)
		first, second := fmt.Sprintf(p[0], local), fmt.Sprintf(p[1], local)
		pw := randomPassword()
		u := c.Register(first, pw)
		if u.Email != first {
			t.Errorf("stored %q, want %q as given", u.Email, first)
		}
		r := c.PostJSON("/api/auth/register", "", map[string]string{"email": second, "password": randomPassword()})
		expectDetail(t, r, http.StatusConflict, "Email already registered")
		for _, spelling := range []string{first, second, strings.ToUpper(second)} {
			var me apiUser
			r := c.Get("/api/users/me", c.Login(spelling, pw))
			expectStatus(t, r, http.StatusOK)
			r.Decode(t, &me)
			if me.ID != u.ID || me.Email != first {
				t.Errorf("login as %s: %+v, want %s %s", spelling, me, u.ID, first)
			}
		}
		expectBearerError(t, c.PostForm("/api/auth/login", url.Values{"username": {second}, "password": {"Wrong!pw1"}}),
			"Incorrect email or password")
	}
}

func TestEmailLookAlikeDomainRefused(t *testing.T) {
	t.Parallel()
	g := sharedGateway(t)
	c := g.Client(t)
	local := "user." + randomHex(4)
	for _, domain := range []string{"exаmple.com", "xn--exmple-4nf.com"} { // Cyrillic а
		r := c.PostJSON("/api/auth/register", "", map[string]string{"email": local + "@" + domain, "password": randomPassword()})
		expectValidation(t, r, fieldError{Type: "value_error", Loc: []any{"body", "email"},
			Msg: "value is not a valid email address: The part after the @-sign mixes Latin and Cyrillic characters in one label."})
	}
	pw := randomPassword()
	c.Register(local+"@пример.рф", pw)
	c.Login(local+"@xn--e1afmkfd.xn--p1ai", pw)
}

// TestCLIMigrateReportsEmailConflicts: rows that an older gateway or the
// old backend left as two accounts of one mailbox are reported by
// `caddy accounts migrate` and at start, by user id, and both still log
// in with their own address.
func TestCLIMigrateReportsEmailConflicts(t *testing.T) {
	t.Parallel()
	dbURL := newDatabase(t)
	env := map[string]string{"DATABASE_URL": dbURL}
	if _, errOut, err := runCLI(t, env, "", "accounts", "migrate"); err != nil {
		t.Fatalf("migrate: %v\n%s", err, errOut)
	}
	// As an older gateway inserted them: no email_key.
	local := "pair." + randomHex(4)
	pw := randomPassword()
	insert := func(email, age string) string {
		var id string
		querySQL(t, dbURL, `INSERT INTO users (email, hashed_password, created_at)
			VALUES ($1, 'x', now() - $2::interval) RETURNING id::text`, []any{email, age}, &id)
		return id
	}
	older := insert(local+"@bücher.example", "2 days")
	newer := insert(local+"@xn--bcher-kva.example", "1 day")

	out, errOut, err := runCLI(t, env, "", "accounts", "migrate")
	if err != nil {
		t.Fatalf("migrate: %v\n%s", err, errOut)
	}
	want := "database is up to date\n" +
		"1 account(s) without an email key: each logs in only with its exact address, and nothing was merged or deleted " +
		"(README, \"Migrating from the FastAPI backend\"):\n" +
		"  user " + newer + ": the email address is the same mailbox as that of the older user " + older + "\n"
	if out != want {
		t.Fatalf("migrate printed\n%s\nwant\n%s", out, want)
	}

	// The gateway warns of it at start, naming ids, not addresses.
	g := startGateway(t, GatewayOptions{DatabaseURL: dbURL})
	found := false
	for _, line := range strings.Split(g.Logs(), "\n") {
		if strings.Contains(line, "account without an email key") {
			found = strings.Contains(line, `"user_id":"`+newer+`"`) && strings.Contains(line, `"older_user_id":"`+older+`"`) &&
				strings.Contains(line, `"reason":"same_mailbox"`)
			if !found {
				t.Errorf("warning: %s", line)
			}
		}
	}
	if !found {
		t.Errorf("no warning of the conflict at start:\n%s", g.LogTail(40))
	}
	if strings.Contains(g.Logs(), local) {
		t.Error("the gateway's log names the address")
	}

	// Both log in with their own address. create-admin, which finds each
	// by its exact address too, gives them a password.
	c := g.Client(t)
	for _, email := range []string{local + "@bücher.example", local + "@xn--bcher-kva.example"} {
		createAdmin(t, dbURL, email, pw)
	}
	for email, id := range map[string]string{local + "@bücher.example": older, local + "@xn--bcher-kva.example": newer} {
		var me apiUser
		r := c.Get("/api/users/me", c.Login(email, pw))
		expectStatus(t, r, http.StatusOK)
		r.Decode(t, &me)
		if me.ID != id {
			t.Errorf("login as %s: user %s, want %s", email, me.ID, id)
		}
	}
}
