package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/caddyaccounts/gateway/accounts"
	"github.com/caddyaccounts/gateway/migrations"
)

// The binary's command line: `caddy accounts genkeys | migrate |
// create-admin | list-apps | ... | remove-member | mail-test`, and Caddy's
// own list-modules and adapt with the project's modules and Caddyfile.

var envLine = regexp.MustCompile(`(?ms)^(JWT_PRIVATE_KEY|JWT_PUBLIC_KEY)="([^"]*)"$`)

// parseKeyEnv reads the .env text of genkeys and checks both keys.
func parseKeyEnv(t *testing.T, text string) {
	t.Helper()
	if !strings.HasPrefix(text, "JWT_PRIVATE_KEY=") || !strings.Contains(text, "\nJWT_PUBLIC_KEY=") {
		t.Fatalf("output is not JWT_PRIVATE_KEY= and JWT_PUBLIC_KEY= lines:\n%s", text)
	}
	vals := map[string]string{}
	for _, m := range envLine.FindAllStringSubmatch(text, -1) {
		vals[m[1]] = m[2]
	}
	priv, err := accounts.ParsePrivateKey(vals["JWT_PRIVATE_KEY"])
	if err != nil {
		t.Fatalf("JWT_PRIVATE_KEY: %v\n%s", err, text)
	}
	pub, err := accounts.ParsePublicKey(vals["JWT_PUBLIC_KEY"])
	if err != nil {
		t.Fatalf("JWT_PUBLIC_KEY: %v\n%s", err, text)
	}
	if !pub.Equal(&priv.PublicKey) {
		t.Error("the public key does not belong to the private key")
	}
	if bits := priv.N.BitLen(); bits != 2048 {
		t.Errorf("%d-bit key, want 2048", bits)
	}
}

func TestCLIGenkeys(t *testing.T) {
	t.Parallel()
	out, errOut, err := runCLI(t, nil, "", "accounts", "genkeys", "--bits", "2048")
	if err != nil {
		t.Fatalf("genkeys: %v\n%s", err, errOut)
	}
	parseKeyEnv(t, out)
	if strings.Contains(errOut, "PRIVATE KEY") {
		t.Errorf("the key appears on standard error: %s", errOut)
	}

	file := filepath.Join(t.TempDir(), "keys.env")
	if _, errOut, err := runCLI(t, nil, "", "accounts", "genkeys", "--bits", "2048", "--out", file); err != nil {
		t.Fatalf("genkeys --out: %v\n%s", err, errOut)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	parseKeyEnv(t, string(b))
	if fi, _ := os.Stat(file); fi.Mode().Perm() != 0o600 {
		t.Errorf("--out file mode %v, want 0600", fi.Mode().Perm())
	}
	if _, _, err := runCLI(t, nil, "", "accounts", "genkeys", "--bits", "2048", "--out", file); err == nil {
		t.Error("genkeys --out overwrote an existing file")
	}
	if out, _, err := runCLI(t, nil, "", "accounts", "genkeys", "--bits", "1024"); err == nil || strings.Contains(out, "KEY") {
		t.Errorf("genkeys --bits 1024: err %v, output %q", err, out)
	}
}

func TestCLIMigrate(t *testing.T) {
	t.Parallel()
	dbURL := newDatabase(t)
	env := map[string]string{"DATABASE_URL": dbURL}
	ms, err := accounts.LoadMigrations(migrations.FS)
	if err != nil || len(ms) == 0 {
		t.Fatalf("migrations: %v (%d)", err, len(ms))
	}
	var want strings.Builder
	for _, m := range ms {
		fmt.Fprintf(&want, "applied %s\n", m.Name)
	}
	out, errOut, err := runCLI(t, env, "", "accounts", "migrate")
	if err != nil {
		t.Fatalf("migrate: %v\n%s", err, errOut)
	}
	if out != want.String() {
		t.Errorf("first migrate printed\n%s\nwant\n%s", out, want.String())
	}
	out, errOut, err = runCLI(t, env, "", "accounts", "migrate")
	if err != nil {
		t.Fatalf("second migrate: %v\n%s", err, errOut)
	}
	if out != "database is up to date\n" {
		t.Errorf("second migrate printed %q", out)
	}
	var tables int
	querySQL(t, dbURL, "SELECT count(*) FROM information_schema.tables WHERE table_name IN ('users', 'profiles')", nil, &tables)
	if tables != 2 {
		t.Errorf("%d of the tables users, profiles exist", tables)
	}
}

var adminLine = regexp.MustCompile(`^(created|promoted) admin (\S+) \(([0-9a-f-]{36})\)\n$`)

func TestCLICreateAdmin(t *testing.T) {
	t.Parallel()
	g := sharedGateway(t)
	c := g.Client(t)
	email := uniqueEmail(t)
	pw := randomPassword()

	out := createAdmin(t, g.DatabaseURL, email, pw)
	m := adminLine.FindStringSubmatch(out)
	if m == nil || m[1] != "created" || m[2] != email {
		t.Fatalf("create-admin printed %q", out)
	}
	if strings.Contains(out, pw) {
		t.Error("create-admin printed the password")
	}
	token := c.Login(email, pw)
	r := c.Get("/api/users/me", token)
	expectStatus(t, r, http.StatusOK)
	me := expectUserObject(t, r.Body)
	if me.Role != "admin" || !me.IsActive || me.ID != m[3] || me.Email != email {
		t.Errorf("me %+v, want the active admin %s", me, m[3])
	}

	// Again, with another password: the same account, the new password.
	pw2 := randomPassword()
	out = createAdmin(t, g.DatabaseURL, strings.ToUpper(email), pw2)
	if m2 := adminLine.FindStringSubmatch(out); m2 == nil || m2[1] != "promoted" || m2[3] != m[3] {
		t.Errorf("second create-admin printed %q", out)
	}
	expectBearerError(t, c.PostForm("/api/auth/login", url.Values{"username": {email}, "password": {pw}}), "Incorrect email or password")
	c.Login(email, pw2)
}

func TestCLICreateAdminPromotesUser(t *testing.T) {
	t.Parallel()
	g := sharedGateway(t)
	c := g.Client(t)
	u, _, token := c.NewUser()
	expectStatus(t, c.Get("/api/users/me", token), http.StatusOK)
	pw := randomPassword()
	out := createAdmin(t, g.DatabaseURL, u.Email, pw)
	if m := adminLine.FindStringSubmatch(out); m == nil || m[1] != "promoted" || m[3] != u.ID {
		t.Fatalf("create-admin printed %q", out)
	}
	// The user's existing token now shows the new role.
	eventually(t, 5*time.Second, func() string {
		r := c.Get("/api/users/me", token)
		if r.Status != http.StatusOK || !strings.Contains(string(r.Body), `"role":"admin"`) {
			return fmt.Sprintf("me after the promotion: %d %s", r.Status, r.Body)
		}
		return ""
	})
}

func TestCLICreateAdminRefusals(t *testing.T) {
	t.Parallel()
	dbURL := newDatabase(t)
	env := map[string]string{"DATABASE_URL": dbURL}
	for _, tc := range []struct {
		name, stdin string
		args        []string
	}{
		{"weak password", "weakpass\n", []string{"--email", "weak@example.com", "--password-stdin"}},
		{"bad email", "Strong!Pass1\n", []string{"--email", "not-an-email", "--password-stdin"}},
		{"no --password-stdin", "Strong!Pass1\n", []string{"--email", "x@example.com"}},
		{"no --email", "Strong!Pass1\n", []string{"--password-stdin"}},
		{"no password", "", []string{"--email", "x@example.com", "--password-stdin"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, err := runCLI(t, env, tc.stdin, append([]string{"accounts", "create-admin"}, tc.args...)...)
			if err == nil {
				t.Fatalf("create-admin succeeded: %s", out)
			}
			if pw := strings.TrimSpace(tc.stdin); pw != "" && strings.Contains(out+errOut, pw) {
				t.Errorf("the password appears in the output: %s %s", out, errOut)
			}
		})
	}
	var n int
	querySQL(t, dbURL, "SELECT count(*) FROM information_schema.tables WHERE table_name = 'users'", nil, &n)
	if n == 1 {
		querySQL(t, dbURL, "SELECT count(*) FROM users", nil, &n)
		if n != 0 {
			t.Errorf("%d accounts were created", n)
		}
	}
}

func TestCLIListModules(t *testing.T) {
	t.Parallel()
	out, errOut, err := runCLI(t, nil, "", "list-modules")
	if err != nil {
		t.Fatalf("list-modules: %v\n%s", err, errOut)
	}
	lines := map[string]bool{}
	for _, l := range strings.Split(out, "\n") {
		lines[strings.TrimSpace(l)] = true
	}
	for _, want := range []string{"accounts", "http.handlers.accounts_api", "http.handlers.accounts_auth", "http.handlers.accounts_security_headers",
		"http.handlers.accounts_strip_identity", "http.handlers.accounts_upload_limit", "http.handlers.reverse_proxy", "http.handlers.file_server"} {
		if !lines[want] {
			t.Errorf("list-modules lacks %s", want)
		}
	}
}

func TestCLIAdaptCaddyfile(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"adapt", "--config", filepath.Join(repoRoot, "Caddyfile")},
		{"adapt", "--config", filepath.Join(repoRoot, "Caddyfile"), "--adapter", "caddyfile"},
	} {
		out, errOut, err := runCLI(t, nil, "", args...)
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, errOut)
		}
		var cfg struct {
			Apps map[string]json.RawMessage `json:"apps"`
		}
		if err := json.Unmarshal([]byte(out), &cfg); err != nil {
			t.Fatalf("%v: output is not JSON: %v\n%s", args, err, out)
		}
		if cfg.Apps["accounts"] == nil || cfg.Apps["http"] == nil {
			t.Errorf("%v: apps %s lack accounts or http", args, out)
		}
		if strings.Contains(errOut, `"level":"warn"`) {
			t.Errorf("%v: warnings:\n%s", args, errOut)
		}
	}
}

// TestCLIGrantLetsThrough: with the documents app closed, a grant made by
// `caddy accounts grant` lets the user through require_app on a running
// gateway within propagationLimit of the command's exit (the change is
// committed before it exits; the gateway learns of it by the database's
// notification), a revoke refuses the user as fast, and so does a grant
// to a group made with create-group and add-member. An unknown user is a
// one-line error and exit status 1.
func TestCLIGrantLetsThrough(t *testing.T) {
	t.Parallel()
	g := startGateway(t, GatewayOptions{})
	c := g.Client(t)
	admin := c.NewAdmin(g.DatabaseURL)
	user, _, token := c.NewUser()
	env := map[string]string{"DATABASE_URL": g.DatabaseURL}
	cli := func(want string, args ...string) time.Time {
		t.Helper()
		out, errOut, err := runCLI(t, env, "", append([]string{"accounts"}, args...)...)
		done := time.Now()
		if err != nil {
			t.Fatalf("caddy accounts %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out, errOut)
		}
		if out != want {
			t.Fatalf("caddy accounts %s printed %q, want %q", strings.Join(args, " "), out, want)
		}
		return done
	}
	documents := func() *Response { return c.Get("/api/documents/d-"+randomHex(6), token) }
	through, refused := statusIs(http.StatusOK, documents), statusIs(http.StatusForbidden, documents)

	req := c.NewRequest(http.MethodPut, "/api/admin/apps/documents", strings.NewReader(`{"name": "Documents", "open_to_all": false}`))
	req.Header.Set("Content-Type", "application/json")
	setToken(req, admin)
	expectStatus(t, c.Do(req), http.StatusOK)
	propagation(t, "documents closed", time.Now(), refused)

	u := "user " + user.Email + " (" + user.ID + ")"
	since := cli("granted app documents to "+u+"\n", "grant", "--app", "documents", "--user", strings.ToUpper(user.Email))
	propagation(t, "granted by the command line", since, through)
	since = cli("revoked app documents from "+u+"\n", "revoke", "--app", "documents", "--user", user.ID)
	propagation(t, "revoked by the command line", since, refused)

	out, errOut, err := runCLI(t, env, "", "accounts", "create-group", "--name", "Readers")
	var group string
	if _, scanErr := fmt.Sscanf(out, "created group \"Readers\" (%36s)\n", &group); err != nil || scanErr != nil {
		t.Fatalf("create-group: %v %v\nstdout: %s\nstderr: %s", err, scanErr, out, errOut)
	}
	grp := `group "Readers" (` + group + `)`
	cli("added "+u+" to "+grp+"\n", "add-member", "--group", "readers", "--user", user.Email)
	propagation(t, "a member of a group without the app", time.Now(), refused)
	since = cli("granted app documents to "+grp+"\n", "grant", "--app", "documents", "--group", "Readers")
	propagation(t, "granted to the group by the command line", since, through)
	cli("app documents already granted to "+grp+"\n", "grant", "--app", "documents", "--group", group)

	out, errOut, err = runCLI(t, env, "", "accounts", "grant", "--app", "documents", "--user", "nobody@example.com")
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("grant to an unknown user: %v, want exit status 1\nstdout: %s\nstderr: %s", err, out, errOut)
	}
	if want := "Error: no user \"nobody@example.com\"\n"; out != "" || errOut != want {
		t.Errorf("grant to an unknown user: stdout %q, stderr %q, want only %q", out, errOut, want)
	}
}

// TestCLIMailTest: `caddy accounts mail-test --to ADDRESS` sends the test
// message through the SMTP server of the environment (or of the config's
// accounts mail block) with the gateway's TLS policy and credentials and
// prints one line on the session; a refused login, a stopped server or
// no SMTP_URL are a one-line error with exit status 1. No database is
// needed, and the password is never printed.
func TestCLIMailTest(t *testing.T) {
	t.Parallel()
	sink := startMailSink(t)
	env := sink.env()
	mailTest := func(env map[string]string, args ...string) (string, string, int) {
		t.Helper()
		out, errOut, err := runCLI(t, env, "", append([]string{"accounts", "mail-test"}, args...)...)
		code := 0
		if exit := (*exec.ExitError)(nil); errors.As(err, &exit) {
			code = exit.ExitCode()
		} else if err != nil {
			t.Fatalf("mail-test: %v", err)
		}
		if strings.Contains(out+errOut, sink.password) {
			t.Errorf("the SMTP password is in the output: %s %s", out, errOut)
		}
		return out, errOut, code
	}

	out, errOut, code := mailTest(env, "--to", "ops@example.com")
	want := fmt.Sprintf("connected to %s; TLS: yes (TLS 1.3, STARTTLS); authenticated: yes, as %q; accepted for ops@example.com: \"2.0.0 OK: queued\"\n",
		sink.Addr(), mailSMTPUser)
	if code != 0 || out != want || errOut != "" {
		t.Fatalf("mail-test: exit %d, stdout %q, stderr %q; want 0 and %q", code, out, errOut, want)
	}
	got := sink.waitTo(t, "ops@example.com", 1, 5*time.Second)[0]
	checkMailEnvelope(t, got, "ops@example.com", "Test message from Accounts E2E")

	// The settings of the config's accounts mail block, no environment
	// but the certificate.
	config := filepath.Join(t.TempDir(), "Caddyfile")
	if err := os.WriteFile(config, []byte(fmt.Sprintf("{\n\taccounts {\n\t\tmail {\n\t\t\tsmtp_url %q\n\t\t\tfrom %q\n\t\t\tsend_timeout 5s\n\t\t}\n\t}\n}\n",
		sink.URL(), "Config Test <"+mailFromAddr+">")), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, code = mailTest(map[string]string{"SSL_CERT_FILE": sink.certFile}, "--to", "config@example.com", "--config", config)
	if code != 0 || !strings.HasPrefix(out, "connected to ") || !strings.HasSuffix(out, "accepted for config@example.com: \"2.0.0 OK: queued\"\n") {
		t.Fatalf("mail-test --config: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	checkMailEnvelope(t, sink.waitTo(t, "config@example.com", 1, 5*time.Second)[0], "config@example.com", "Test message from Config Test")

	wrong := sink.env("SMTP_URL", sink.URLWith(mailSMTPUser, "not-"+sink.password))
	out, errOut, code = mailTest(wrong, "--to", "ops@example.com")
	if code != 1 || out != "" || errOut != fmt.Sprintf("Error: smtp://%s@%s: no SMTP session: mail: connect: SMTP AUTH failed: 535 \"5.7.8 Authentication failed\"\n",
		mailSMTPUser, sink.Addr()) {
		t.Errorf("mail-test with a wrong password: exit %d, stdout %q, stderr %q", code, out, errOut)
	}

	out, errOut, code = mailTest(map[string]string{"MAIL_FROM": env["MAIL_FROM"]}, "--to", "ops@example.com")
	if code != 1 || out != "" || errOut != "Error: no SMTP server: set SMTP_URL or smtp_url\n" {
		t.Errorf("mail-test without SMTP_URL: exit %d, stdout %q, stderr %q", code, out, errOut)
	}

	sink.Stop()
	out, errOut, code = mailTest(env, "--to", "ops@example.com")
	prefix := fmt.Sprintf("Error: smtp://%s@%s: no SMTP session: ", mailSMTPUser, sink.Addr())
	if code != 1 || out != "" || !strings.HasPrefix(errOut, prefix) || !strings.HasSuffix(errOut, "connection refused\n") || strings.Count(errOut, "\n") != 1 {
		t.Errorf("mail-test with the server stopped: exit %d, stdout %q, stderr %q; want %q... connection refused", code, out, errOut, prefix)
	}
	if n := len(sink.Messages()); n != 2 {
		t.Errorf("the sink got %d messages, want 2", n)
	}
}
