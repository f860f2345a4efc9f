package accounts

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyaccounts/gateway/internal/smtptest"
	"github.com/caddyaccounts/gateway/internal/testcheck"
	"github.com/caddyaccounts/gateway/mail"
)

// testPublicURL is the public origin of the mail tests' services.
const testPublicURL = "https://app.example.com"

// newMailEnv returns a testEnv whose service mails through an SMTP
// server on loopback, with its outbox sender running, and the server.
// Retries are quick.
func newMailEnv(t *testing.T, cfg ...func(*Config)) (*testEnv, *smtptest.Server) {
	t.Helper()
	srv := smtptest.Start(t, smtptest.Options{})
	env := newTestEnv(t, append([]func(*Config){func(c *Config) {
		c.Mail = testMailConfig(t, srv)
	}}, cfg...)...)
	runService(t, env.svc)
	return env, srv
}

// testMailConfig is a MailConfig that sends through srv, with quick
// retries.
func testMailConfig(t testing.TB, srv *smtptest.Server) MailConfig {
	t.Helper()
	mailer, err := mail.New(mail.Config{URL: srv.URL(), From: "Accounts <no-reply@example.com>", SendTimeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return MailConfig{Mailer: mailer, PublicURL: testPublicURL, RetryMin: 50 * time.Millisecond, RetryMax: 200 * time.Millisecond,
		Poll: 50 * time.Millisecond, Lease: 5 * time.Second}
}

var linkRE = regexp.MustCompile(`https://app\.example\.com/accounts/(verify-email|reset-password)#token=([A-Za-z0-9_-]{43})\b`)

// mailTo waits for the n-th message (1-based) and checks that it goes to
// addr; it returns it parsed.
func mailTo(t *testing.T, srv *smtptest.Server, n int, addr string) *smtptest.Parsed {
	t.Helper()
	msgs, err := srv.Wait(n, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	m := msgs[n-1]
	if !slices.Equal(m.To, []string{addr}) {
		t.Fatalf("message %d goes to %v, want %s", n, m.To, addr)
	}
	p, err := m.Parse()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// linkOf returns the page and token of the one link in p, checking that
// the text and HTML parts carry the same.
func linkOf(t *testing.T, p *smtptest.Parsed) (page, token string) {
	t.Helper()
	m := linkRE.FindAllStringSubmatch(p.Text, -1)
	if len(m) != 1 {
		t.Fatalf("want one link in the text part, found %d:\n%s", len(m), p.Text)
	}
	if !strings.Contains(p.HTML, m[0][0]) {
		t.Fatalf("the HTML part lacks the link %s:\n%s", m[0][0], p.HTML)
	}
	return m[0][1], m[0][2]
}

// linkTo waits for a mail to addr holding a link to page
// ("verify-email" or "reset-password") and returns the token of the
// newest such mail's link. It serves tests that send mail to several
// addresses, where the n-th message of mailTo is not known in advance.
func linkTo(t *testing.T, srv *smtptest.Server, addr, page string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		msgs := srv.Messages()
		for i := len(msgs) - 1; i >= 0; i-- {
			if !slices.Equal(msgs[i].To, []string{addr}) {
				continue
			}
			p, err := msgs[i].Parse()
			if err != nil {
				t.Fatal(err)
			}
			if m := linkRE.FindStringSubmatch(p.Text); m != nil && m[1] == page {
				return m[2]
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no mail to %s with a %s link among %d messages", addr, page, len(msgs))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// noMoreMail checks that srv got no more than n messages in a while.
func noMoreMail(t *testing.T, srv *smtptest.Server, n int) {
	t.Helper()
	time.Sleep(300 * time.Millisecond)
	if got := len(srv.Messages()); got != n {
		t.Fatalf("%d messages, want %d", got, n)
	}
}

func TestVerifyEmail(t *testing.T) {
	t.Parallel()
	env, srv := newMailEnv(t)
	u := env.register("Verify.Me@Example.com", "Secret!pw1")
	if u.EmailVerified {
		t.Fatal("a new account is verified")
	}
	p := mailTo(t, srv, 1, u.Email)
	page, token := linkOf(t, p)
	if page != "verify-email" || p.Subject == "" {
		t.Fatalf("page %q subject %q", page, p.Subject)
	}
	// Only a hash of the token is stored.
	var hashed, plain int
	sum := sha256.Sum256([]byte(token))
	if err := env.db.QueryRow(context.Background(), `SELECT
		count(*) FILTER (WHERE token_hash = $1), count(*) FILTER (WHERE strpos(t::text, $2) > 0)
		FROM email_tokens t`, sum[:], token).Scan(&hashed, &plain); err != nil || hashed != 1 || plain != 0 {
		t.Fatalf("email_tokens: %d rows with the hash, %d with the token (%v)", hashed, plain, err)
	}

	r := env.do("POST", "/api/auth/verify-email", "", map[string]any{"token": token})
	if r.Status != http.StatusOK {
		t.Fatalf("verify: %d %s", r.Status, r.Body)
	}
	var got User
	if err := json.Unmarshal(r.Body, &got); err != nil || got.ID != u.ID || !got.EmailVerified {
		t.Fatalf("verify answered %s (%v)", r.Body, err)
	}
	// Single use.
	r = env.do("POST", "/api/auth/verify-email", "", map[string]any{"token": token})
	if r.Status != http.StatusBadRequest || r.Detail(t) != strconv.Quote("Invalid or expired token") {
		t.Fatalf("second use: %d %s", r.Status, r.Body)
	}
	// A verified account gets no more verification mail.
	r = env.do("POST", "/api/auth/verify-email/resend", "", map[string]any{"email": u.Email})
	if r.Status != http.StatusAccepted || r.Detail(t) != strconv.Quote(detailResendQueued) {
		t.Fatalf("resend: %d %s", r.Status, r.Body)
	}
	noMoreMail(t, srv, 1)
	var audited int
	if err := env.db.QueryRow(context.Background(), "SELECT count(*) FROM audit_events WHERE event = 'email.verified' AND target_id = $1", u.ID).Scan(&audited); err != nil || audited != 1 {
		t.Fatalf("%d email.verified events (%v)", audited, err)
	}
}

func TestPasswordReset(t *testing.T) {
	t.Parallel()
	env, srv := newMailEnv(t, func(c *Config) { c.Sessions.RefreshTokenInBody = true })
	u := env.register("reset.me@example.com", "Secret!pw1")
	mailTo(t, srv, 1, u.Email) // the verification mail
	_, verifyToken := linkOf(t, mailTo(t, srv, 1, u.Email))
	r := env.do("POST", "/api/auth/login", "", formOf("username", u.Email, "password", "Secret!pw1"))
	var login sessionTokenResponse
	if r.Status != http.StatusOK || json.Unmarshal(r.Body, &login) != nil {
		t.Fatalf("login: %d %s", r.Status, r.Body)
	}

	// The typed spelling does not matter; the mail goes to the account's
	// own address.
	r = env.do("POST", "/api/auth/password-reset", "", map[string]any{"email": " RESET.ME@example.com "})
	if r.Status != http.StatusAccepted || r.Detail(t) != strconv.Quote(detailResetQueued) {
		t.Fatalf("reset request: %d %s", r.Status, r.Body)
	}
	p := mailTo(t, srv, 2, u.Email)
	page, token := linkOf(t, p)
	if page != "reset-password" {
		t.Fatalf("page %q", page)
	}

	// A weak password is refused, and the token still works.
	r = env.do("POST", "/api/auth/password-reset/confirm", "", map[string]any{"token": token, "new_password": "short"})
	if r.Status != http.StatusUnprocessableEntity {
		t.Fatalf("weak password: %d %s", r.Status, r.Body)
	}
	r = env.do("POST", "/api/auth/password-reset/confirm", "", map[string]any{"token": verifyToken, "new_password": "New!pass1x"})
	if r.Status != http.StatusBadRequest || r.Detail(t) != strconv.Quote("Invalid or expired token") {
		t.Fatalf("a verification token for a reset: %d %s", r.Status, r.Body)
	}
	r = env.do("POST", "/api/auth/password-reset/confirm", "", map[string]any{"token": token, "new_password": "New!pass1x"})
	if r.Status != http.StatusOK || r.Detail(t) != strconv.Quote(detailResetDone) {
		t.Fatalf("confirm: %d %s", r.Status, r.Body)
	}

	// Everything the user had is gone: the access token, the refresh
	// token, the other link tokens.
	if r := env.do("GET", "/api/users/me", login.AccessToken, nil); r.Status != http.StatusUnauthorized {
		t.Fatalf("old access token after the reset: %d %s", r.Status, r.Body)
	}
	if r := env.do("POST", "/api/auth/refresh", "", map[string]any{"refresh_token": login.RefreshToken}); r.Status != http.StatusUnauthorized {
		t.Fatalf("old refresh token after the reset: %d %s", r.Status, r.Body)
	}
	for _, tok := range []string{token, verifyToken} {
		if r := env.do("POST", "/api/auth/verify-email", "", map[string]any{"token": tok}); r.Status != http.StatusBadRequest {
			t.Fatalf("a link token after the reset: %d %s", r.Status, r.Body)
		}
	}
	// The new password works, the old one not; the email counts as
	// verified; a mail says the password changed.
	if r := env.do("POST", "/api/auth/login", "", formOf("username", u.Email, "password", "Secret!pw1")); r.Status != http.StatusUnauthorized {
		t.Fatalf("old password: %d", r.Status)
	}
	tok := env.login(u.Email, "New!pass1x")
	r = env.do("GET", "/api/users/me", tok, nil)
	var me User
	if r.Status != http.StatusOK || json.Unmarshal(r.Body, &me) != nil || !me.EmailVerified {
		t.Fatalf("me after the reset: %d %s", r.Status, r.Body)
	}
	changed := mailTo(t, srv, 3, u.Email)
	if linkRE.MatchString(changed.Text) {
		t.Fatalf("the password-changed mail holds a link:\n%s", changed.Text)
	}
	noMoreMail(t, srv, 3)
	var events int
	if err := env.db.QueryRow(context.Background(), "SELECT count(*) FROM audit_events WHERE event = 'password.reset' AND target_id = $1 AND (details->>'sessions_revoked')::int = 1", u.ID).Scan(&events); err != nil || events != 1 {
		t.Fatalf("%d password.reset events (%v)", events, err)
	}
}

// TestLinkTokenRules: a token stops working when it expires, when a newer
// one supersedes it, when the user's address changes; a malformed one is
// refused like an unknown one; of concurrent uses, one wins.
func TestLinkTokenRules(t *testing.T) {
	t.Parallel()
	env, srv := newMailEnv(t, func(c *Config) { c.RateLimit.IPRequests = -1 })
	ctx := context.Background()
	u := env.register("rules@example.com", "Secret!pw1")
	n := 1
	mailTo(t, srv, n, u.Email)
	reset := func() string {
		t.Helper()
		env.exec("DELETE FROM rate_limits WHERE key LIKE 'mail:%'")
		if r := env.do("POST", "/api/auth/password-reset", "", map[string]any{"email": u.Email}); r.Status != http.StatusAccepted {
			t.Fatalf("reset request: %d %s", r.Status, r.Body)
		}
		n++
		_, token := linkOf(t, mailTo(t, srv, n, u.Email))
		return token
	}
	confirm := func(token string) *response {
		return env.do("POST", "/api/auth/password-reset/confirm", "", map[string]any{"token": token, "new_password": "New!pass1x"})
	}
	invalid := func(what string, r *response) {
		t.Helper()
		if r.Status != http.StatusBadRequest || r.Detail(t) != strconv.Quote("Invalid or expired token") {
			t.Fatalf("%s: %d %s", what, r.Status, r.Body)
		}
	}

	expired := reset()
	env.exec("UPDATE email_tokens SET expires_at = now() - interval '1 second' WHERE user_id = $1", u.ID)
	invalid("expired", confirm(expired))

	first := reset()
	second := reset()
	invalid("superseded", confirm(first))

	env.exec("UPDATE users SET email = 'moved@example.com', email_key = 'moved@example.com' WHERE id = $1", u.ID)
	invalid("sent to the old address", confirm(second))
	env.exec("UPDATE users SET email = 'rules@example.com', email_key = 'rules@example.com' WHERE id = $1", u.ID)

	for _, bad := range []string{"", "x", strings.Repeat("A", 43), strings.Repeat("A", 44), second + "=", "../" + second[3:]} {
		invalid(fmt.Sprintf("token %q", bad), confirm(bad))
	}
	for _, body := range []string{`{"token": 5, "new_password": "New!pass1x"}`, `{"new_password": "New!pass1x"}`, `{"token": "x"}`, `[]`} {
		if r := env.do("POST", "/api/auth/password-reset/confirm", "", body); r.Status != http.StatusUnprocessableEntity {
			t.Fatalf("body %s: %d %s", body, r.Status, r.Body)
		}
	}

	// Ten concurrent uses of one token: exactly one resets.
	token := reset()
	var wg sync.WaitGroup
	statuses := make([]int, 10)
	for i := range statuses {
		wg.Go(func() { statuses[i] = confirm(token).Status })
	}
	wg.Wait()
	slices.Sort(statuses)
	if want := append(slices.Repeat([]int{http.StatusOK}, 1), slices.Repeat([]int{http.StatusBadRequest}, 9)...); !slices.Equal(statuses, want) {
		t.Fatalf("concurrent uses: %v, want one 200 and nine 400", statuses)
	}
	var live int
	if err := env.db.QueryRow(ctx, "SELECT count(*) FROM email_tokens WHERE user_id = $1 AND used_at IS NULL", u.ID).Scan(&live); err != nil || live != 0 {
		t.Fatalf("%d live tokens after the reset (%v)", live, err)
	}
}

// TestMailRequestsRevealNothing: resend and reset answer the same status
// and body, in about the same time, for an account, an unknown address
// and an inactive account; only the account gets mail.
func TestMailRequestsRevealNothing(t *testing.T) {
	t.Parallel()
	env, srv := newMailEnv(t, func(c *Config) { c.RateLimit.IPRequests = -1 })
	const samples = 40
	var known, inactive []string
	for i := range samples {
		known = append(known, fmt.Sprintf("known%d@example.com", i))
		inactive = append(inactive, fmt.Sprintf("inactive%d@example.com", i))
	}
	env.exec(`INSERT INTO users (email, email_key, hashed_password, email_verified, is_active)
		SELECT a, a, 'x', false, true FROM unnest($1::text[]) a
		UNION ALL SELECT a, a, 'x', false, false FROM unnest($2::text[]) a`, known, inactive)

	for _, route := range []struct{ path, detail string }{
		{"/api/auth/password-reset", detailResetQueued},
		{"/api/auth/verify-email/resend", detailResendQueued},
	} {
		sent := len(srv.Messages())
		times := map[string][]time.Duration{}
		for i := range samples {
			for kind, addr := range map[string]string{"known": known[i], "unknown": fmt.Sprintf("nobody%d@example.com", i), "inactive": inactive[i]} {
				start := time.Now()
				r := env.do("POST", route.path, "", map[string]any{"email": addr})
				times[kind] = append(times[kind], time.Since(start))
				if r.Status != http.StatusAccepted || string(r.Body) != `{"detail":"`+route.detail+`"}` {
					t.Fatalf("%s %s (%s): %d %s", route.path, addr, kind, r.Status, r.Body)
				}
			}
		}
		// Only the active accounts got mail.
		msgs, err := srv.Wait(sent+samples, 20*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		noMoreMail(t, srv, sent+samples)
		for _, m := range msgs[sent:] {
			if !strings.HasPrefix(m.To[0], "known") {
				t.Fatalf("%s: a mail to %v", route.path, m.To)
			}
		}
		// The times: each median within the others' interquartile range
		// widened by a millisecond (the machine is shared).
		q := func(ds []time.Duration, f float64) time.Duration {
			s := slices.Clone(ds)
			slices.Sort(s)
			return s[int(f*float64(len(s)-1))]
		}
		for a, ta := range times {
			for b, tb := range times {
				if m := q(ta, 0.5); m < q(tb, 0.25)-time.Millisecond || m > q(tb, 0.75)+time.Millisecond {
					t.Errorf("%s: the median time for %s (%v) is outside the interquartile range for %s (%v–%v)",
						route.path, a, m, b, q(tb, 0.25), q(tb, 0.75))
				}
			}
		}
	}
}

// outboxSettled waits until no mail is pending, and checks that every
// row of the outbox ended as sent or, for no recipient, dropped.
func outboxSettled(t *testing.T, env *testEnv, sent, dropped int) {
	t.Helper()
	testcheck.Eventually(t, 5*time.Second, func() string {
		var pending, gotSent, gotDropped, other int
		if err := env.db.QueryRow(context.Background(), `SELECT count(*) FILTER (WHERE state = 'pending'),
			count(*) FILTER (WHERE state = 'sent'), count(*) FILTER (WHERE state = 'dropped'),
			count(*) FILTER (WHERE state NOT IN ('pending', 'sent', 'dropped')) FROM mail_outbox`).Scan(&pending, &gotSent, &gotDropped, &other); err != nil {
			return err.Error()
		}
		if pending != 0 || gotSent != sent || gotDropped != dropped || other != 0 {
			return fmt.Sprintf("outbox: %d pending, %d sent, %d dropped, %d other; want %d sent, %d dropped", pending, gotSent, gotDropped, other, sent, dropped)
		}
		return ""
	})
}

// TestMailRequestsDoNotWaitForTheServer: a request that sends mail only
// queues it; while the SMTP server holds a message mid-send, resend and
// reset answer at once.
func TestMailRequestsDoNotWaitForTheServer(t *testing.T) {
	t.Parallel()
	env, srv := newMailEnv(t)
	hold := srv.HoldNext()
	u := env.register("held@example.com", "Secret!pw1")
	select {
	case <-hold.Reached():
	case <-time.After(5 * time.Second):
		t.Fatal("the verification mail did not reach the server")
	}
	for _, path := range []string{"/api/auth/password-reset", "/api/auth/verify-email/resend"} {
		start := time.Now()
		r := env.do("POST", path, "", map[string]any{"email": u.Email})
		if took := time.Since(start); r.Status != http.StatusAccepted || took > time.Second {
			t.Fatalf("%s while the server holds a mail: %d in %v", path, r.Status, took)
		}
	}
	hold.Release()
	// The held verification, the reset, and a second verification (the
	// account is still unverified), once each.
	mailTo(t, srv, 3, u.Email)
	noMoreMail(t, srv, 3)
	outboxSettled(t, env, 3, 0)
}

// TestMailPerAddressLimit: one mail per address and purpose per window,
// whatever the client address; the answer does not change.
func TestMailPerAddressLimit(t *testing.T) {
	t.Parallel()
	env, srv := newMailEnv(t, func(c *Config) { c.RateLimit.IPRequests = -1 })
	u := env.register("limited@example.com", "Secret!pw1")
	mailTo(t, srv, 1, u.Email)
	for range 3 {
		r := env.do("POST", "/api/auth/password-reset", "", map[string]any{"email": "LIMITED@example.com"})
		if r.Status != http.StatusAccepted || r.Detail(t) != strconv.Quote(detailResetQueued) {
			t.Fatalf("%d %s", r.Status, r.Body)
		}
	}
	mailTo(t, srv, 2, u.Email)
	noMoreMail(t, srv, 2)
	outboxSettled(t, env, 2, 0)
}

// TestMailLinksComeFromPublicURL: a forged Host or X-Forwarded-Host
// changes nothing in a mail.
func TestMailLinksComeFromPublicURL(t *testing.T) {
	t.Parallel()
	env, srv := newMailEnv(t)
	u := env.register("host@example.com", "Secret!pw1")
	mailTo(t, srv, 1, u.Email)
	r := send(t, env.srv.Client(), env.srv.URL, "POST", "/api/auth/password-reset", map[string]any{"email": u.Email},
		"X-Forwarded-Host", "evil.example", "X-Forwarded-Proto", "http", "Forwarded", "host=evil.example")
	if r.Status != http.StatusAccepted {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	p := mailTo(t, srv, 2, u.Email)
	linkOf(t, p)
	if strings.Contains(p.Text+p.HTML, "evil") {
		t.Fatalf("the mail names the forged host:\n%s", p.Text)
	}
}

// TestRequiredVerification: with verification required, an unverified
// account's right password gets 403 Email not verified (a wrong one
// still 401); once verified, or marked so by an admin, it logs in.
func TestRequiredVerification(t *testing.T) {
	t.Parallel()
	env, srv := newMailEnv(t, func(c *Config) { c.Mail.RequireVerification = true })
	_, adminToken := env.admin("boss@example.com")
	u := env.register("unverified@example.com", "Secret!pw1")
	mailTo(t, srv, 1, u.Email)
	login := func(pw string) *response {
		return env.do("POST", "/api/auth/login", "", formOf("username", u.Email, "password", pw))
	}
	if r := login("Secret!pw1"); r.Status != http.StatusForbidden || r.Detail(t) != strconv.Quote("Email not verified") {
		t.Fatalf("unverified login: %d %s", r.Status, r.Body)
	}
	if r := login("Wrong!pw1"); r.Status != http.StatusUnauthorized {
		t.Fatalf("wrong password: %d %s", r.Status, r.Body)
	}
	r := env.do("PATCH", "/api/admin/users/"+u.ID, adminToken, map[string]any{"email_verified": "yes"})
	if r.Status != http.StatusOK || !strings.Contains(string(r.Body), `"email_verified":true`) {
		t.Fatalf("admin marks verified: %d %s", r.Status, r.Body)
	}
	if r := login("Secret!pw1"); r.Status != http.StatusOK {
		t.Fatalf("verified login: %d %s", r.Status, r.Body)
	}
	if r := env.do("PATCH", "/api/admin/users/"+u.ID, adminToken, map[string]any{"email_verified": "maybe"}); r.Status != http.StatusUnprocessableEntity {
		t.Fatalf("email_verified maybe: %d %s", r.Status, r.Body)
	}
}

// TestAdminSendsResetLink: an admin mails a user a reset link; an unknown
// user is 404, a malformed id 422.
func TestAdminSendsResetLink(t *testing.T) {
	t.Parallel()
	env, srv := newMailEnv(t)
	admin, adminToken := env.admin("root@example.com")
	u := env.register("forgetful@example.com", "Secret!pw1")
	mailTo(t, srv, 1, u.Email)
	r := env.do("POST", "/api/admin/users/"+u.ID+"/password-reset", adminToken, nil)
	if r.Status != http.StatusAccepted || r.Detail(t) != strconv.Quote(detailResetSent) {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	if page, _ := linkOf(t, mailTo(t, srv, 2, u.Email)); page != "reset-password" {
		t.Fatalf("page %q", page)
	}
	if r := env.do("POST", "/api/admin/users/0b5a3c1e-8c1f-4b7e-9a43-3f6c1d2e4f50/password-reset", adminToken, nil); r.Status != http.StatusNotFound || r.Detail(t) != strconv.Quote("User not found") {
		t.Fatalf("unknown user: %d %s", r.Status, r.Body)
	}
	if r := env.do("POST", "/api/admin/users/nope/password-reset", adminToken, nil); r.Status != http.StatusUnprocessableEntity {
		t.Fatalf("bad id: %d %s", r.Status, r.Body)
	}
	var actor string
	if err := env.db.QueryRow(context.Background(), "SELECT actor_id::text FROM audit_events WHERE event = 'password.reset_sent' AND target_id = $1", u.ID).Scan(&actor); err != nil || actor != admin.ID {
		t.Fatalf("audit actor %q (%v)", actor, err)
	}

	// Without mail, the admin hears it.
	plain := newTestEnv(t)
	_, tok := plain.admin("root@example.com")
	other := plain.register("x@example.com", "Secret!pw1")
	if r := plain.do("POST", "/api/admin/users/"+other.ID+"/password-reset", tok, nil); r.Status != http.StatusConflict || r.Detail(t) != strconv.Quote("Mail is not configured") {
		t.Fatalf("no mail: %d %s", r.Status, r.Body)
	}
	if r := plain.do("POST", "/api/auth/password-reset", "", map[string]any{"email": other.Email}); r.Status != http.StatusAccepted {
		t.Fatalf("no mail, reset request: %d %s", r.Status, r.Body)
	}
}

// mailStatusOf reads GET /api/admin/mail.
func mailStatusOf(t *testing.T, env *testEnv, token string) mailStatus {
	t.Helper()
	r := env.do("GET", "/api/admin/mail", token, nil)
	var st mailStatus
	if r.Status != http.StatusOK || json.Unmarshal(r.Body, &st) != nil {
		t.Fatalf("mail status: %d %s", r.Status, r.Body)
	}
	return st
}

// TestOutboxRetriesUntilTheServerIsBack: while the SMTP server is down
// the mail waits (pending, with the reason); once it is back, the mail
// is delivered, once.
func TestOutboxRetriesUntilTheServerIsBack(t *testing.T) {
	t.Parallel()
	env, srv := newMailEnv(t)
	_, adminToken := env.admin("ops@example.com")
	srv.Stop()
	u := env.register("patient@example.com", "Secret!pw1")
	testcheck.Eventually(t, 5*time.Second, func() string {
		st := mailStatusOf(t, env, adminToken)
		var lastError *string
		_ = env.db.QueryRow(context.Background(), "SELECT last_error FROM mail_outbox WHERE user_id = $1", u.ID).Scan(&lastError)
		if st.Pending != 1 || st.OldestPendingAt == nil || lastError == nil {
			return fmt.Sprintf("status %+v, last error %v", st, lastError)
		}
		return ""
	})
	time.Sleep(500 * time.Millisecond) // a few more failed attempts
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	mailTo(t, srv, 1, u.Email)
	noMoreMail(t, srv, 1)
	if st := mailStatusOf(t, env, adminToken); st.Pending != 0 || st.SentLastHour != 1 || st.FailedLastDay != 0 || !st.Enabled {
		t.Fatalf("status after delivery: %+v", st)
	}
}

// TestOutboxFailures: a permanent refusal fails the mail at once; a
// server down for longer than GiveUpAfter makes the mail give up. Both
// are recorded with their reason, in the status and the audit log.
func TestOutboxFailures(t *testing.T) {
	t.Parallel()
	env, srv := newMailEnv(t, func(c *Config) { c.Mail.GiveUpAfter = 500 * time.Millisecond })
	_, adminToken := env.admin("ops@example.com")
	srv.FailNext(smtptest.Rcpt, 1, 550)
	u := env.register("bounce@example.com", "Secret!pw1")
	testcheck.Eventually(t, 5*time.Second, func() string {
		if st := mailStatusOf(t, env, adminToken); st.FailedLastDay != 1 || st.LastFailure == nil || !strings.Contains(st.LastFailure.Reason, "550") ||
			st.LastFailure.Kind != "verify_email" || st.LastFailure.UserID == nil || *st.LastFailure.UserID != u.ID {
			return fmt.Sprintf("status %+v", st)
		}
		return ""
	})
	srv.Stop()
	v := env.register("gone@example.com", "Secret!pw1")
	testcheck.Eventually(t, 5*time.Second, func() string {
		if st := mailStatusOf(t, env, adminToken); st.FailedLastDay != 2 || st.Pending != 0 || !strings.HasPrefix(st.LastFailure.Reason, "gave up after ") {
			return fmt.Sprintf("status %+v", st)
		}
		return ""
	})
	var events int
	if err := env.db.QueryRow(context.Background(), "SELECT count(*) FROM audit_events WHERE event = 'mail.failed' AND target_id IN ($1, $2)", u.ID, v.ID).Scan(&events); err != nil || events != 2 {
		t.Fatalf("%d mail.failed events (%v)", events, err)
	}
}

// TestOutboxSharedByInstances: two instances on one database each send
// what is due; every mail goes out exactly once.
func TestOutboxSharedByInstances(t *testing.T) {
	t.Parallel()
	env, srv := newMailEnv(t, func(c *Config) { c.RateLimit.IPRequests = -1 })
	other, err := New(env.db, env.svc.tokens.keys, Config{Argon2: fastArgon2, Mail: testMailConfig(t, srv)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	runService(t, other)
	const n = 30
	for i := range n {
		addr := fmt.Sprintf("many%d@example.com", i)
		if err := env.svc.queueMail(context.Background(), env.db, mailPasswordChanged, "", addr); err != nil {
			t.Fatal(err)
		}
		env.exec(`INSERT INTO users (email, email_key, hashed_password) VALUES ($1, $1, 'x')`, addr)
	}
	env.svc.wakeSender()
	other.wakeSender()
	msgs, err := srv.Wait(n, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	noMoreMail(t, srv, n)
	seen := map[string]bool{}
	for _, m := range msgs {
		if seen[m.To[0]] {
			t.Fatalf("%s got two mails", m.To[0])
		}
		seen[m.To[0]] = true
	}
}
