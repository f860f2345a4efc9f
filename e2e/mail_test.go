package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/caddyaccounts/gateway/internal/smtptest"
	"github.com/caddyaccounts/gateway/internal/testnet"
)

// Mail, end to end: gateways (the real binary, the project's Caddyfile)
// send their mail through an SMTP sink on loopback (internal/smtptest)
// that offers STARTTLS and requires AUTH; a gateway trusts the sink's
// certificate through SSL_CERT_FILE. The tests read the mails the sink
// accepted and follow their links as the frontend does: verification,
// password reset, required verification, forged Host headers, and the
// outbox losing nothing when an instance dies mid-send or the SMTP
// server is down for a while.

const (
	// mailPublicURL is the PUBLIC_URL of the mail tests' gateways: the
	// only origin their mails may link to.
	mailPublicURL = "https://accounts.e2e.example"
	// mailSite is the site name mails use (PUBLIC_URL's host).
	mailSite = "accounts.e2e.example"
	// mailFromAddr is the sender of MAIL_FROM.
	mailFromAddr = "no-reply@e2e.example"
	// mailSMTPUser is the user the gateways authenticate as.
	mailSMTPUser = "gateway"
	// fastMailOptions make the outbox quick enough to test: a send is cut
	// after 2s (so an instance's lease is 3s), a failed one is retried
	// after 200ms up to 1s, and each instance looks for due mail every
	// 200ms.
	fastMailOptions = `mail {
	send_timeout 2s
	retry 200ms 1s
	poll 200ms
}`
	// mailSettle is how long a test waits after the last expected mail
	// for one that must not come (a duplicate): longer than a lease of
	// fastMailOptions (3s) and a poll, after which a row that was sent
	// but not recorded as sent would be sent again.
	mailSettle = 4 * time.Second
)

// mailSink is an SMTP sink (STARTTLS, AUTH) for gateway processes.
type mailSink struct {
	*smtptest.Server
	// password is the SMTP password; certFile holds the sink's
	// certificate for SSL_CERT_FILE.
	password, certFile string
}

// startMailSink starts a sink for t, stopped when t ends.
func startMailSink(t *testing.T) *mailSink {
	t.Helper()
	pw := "smtp-" + randomHex(8)
	s := smtptest.Start(t, smtptest.Options{Mode: smtptest.StartTLS, Username: mailSMTPUser, Password: pw})
	file := filepath.Join(t.TempDir(), "smtp-ca.pem")
	if err := os.WriteFile(file, s.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	return &mailSink{Server: s, password: pw, certFile: file}
}

// env is the environment of a gateway that mails through the sink, with
// name, value pairs of extra added.
func (m *mailSink) env(extra ...string) map[string]string {
	env := map[string]string{
		"SMTP_URL":      m.URL(),
		"MAIL_FROM":     "Accounts E2E <" + mailFromAddr + ">",
		"PUBLIC_URL":    mailPublicURL,
		"SSL_CERT_FILE": m.certFile,
	}
	for i := 0; i+1 < len(extra); i += 2 {
		env[extra[i]] = extra[i+1]
	}
	return env
}

// gotMail is a message the sink accepted, and its parts.
type gotMail struct {
	Msg smtptest.Message
	*smtptest.Parsed
}

// to returns the messages accepted for the envelope recipient address,
// in order.
func (m *mailSink) to(t *testing.T, address string) []gotMail {
	t.Helper()
	var out []gotMail
	for _, msg := range m.Messages() {
		if !slices.Contains(msg.To, address) {
			continue
		}
		p, err := msg.Parse()
		if err != nil {
			t.Fatalf("a mail to %s: %v\n%s", address, err, msg.Raw)
		}
		out = append(out, gotMail{Msg: msg, Parsed: p})
	}
	return out
}

// waitTo waits until the sink has accepted n messages for address and
// returns them.
func (m *mailSink) waitTo(t *testing.T, address string, n int, timeout time.Duration) []gotMail {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := m.to(t, address)
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d mail(s) to %s after %v, want %d", len(got), address, timeout, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// linkPattern finds the links of a text body.
var linkPattern = regexp.MustCompile(`https?://[^\s"<>]+`)

// linkToken checks that the mail's text holds exactly one link, to
// page under PUBLIC_URL with a token in its fragment, that the HTML
// part has the same link, and returns the token.
func linkToken(t *testing.T, m gotMail, page string) string {
	t.Helper()
	links := linkPattern.FindAllString(m.Text, -1)
	prefix := mailPublicURL + page + "#token="
	if len(links) != 1 || !strings.HasPrefix(links[0], prefix) {
		t.Fatalf("links %q in the mail %q, want one %s<token>\n%s", links, m.Subject, prefix, m.Text)
	}
	token := strings.TrimPrefix(links[0], prefix)
	if !regexp.MustCompile(`^[A-Za-z0-9_-]{43}$`).MatchString(token) {
		t.Fatalf("token %q: want 43 base64url characters (256 bits)", token)
	}
	if !strings.Contains(m.HTML, `href="`+links[0]+`"`) {
		t.Errorf("the HTML part lacks the link %s:\n%s", links[0], m.HTML)
	}
	return token
}

// checkMailEnvelope checks how a mail to address travelled and whom it
// names: over TLS, authenticated, from MAIL_FROM to the account's
// address only, with subject.
func checkMailEnvelope(t *testing.T, m gotMail, address, subject string) {
	t.Helper()
	if !m.Msg.TLS || m.Msg.AuthUser != mailSMTPUser {
		t.Errorf("mail %q: TLS %v, authenticated as %q; want TLS and %q", m.Subject, m.Msg.TLS, m.Msg.AuthUser, mailSMTPUser)
	}
	if m.Msg.From != mailFromAddr || !slices.Equal(m.Msg.To, []string{address}) {
		t.Errorf("envelope from %q to %q, want %q to %q", m.Msg.From, m.Msg.To, mailFromAddr, address)
	}
	if m.From.Address != mailFromAddr || len(m.Parsed.To) != 1 || m.Parsed.To[0].Address != address {
		t.Errorf("headers From %v To %v", m.From, m.Parsed.To)
	}
	if m.Subject != subject {
		t.Errorf("subject %q, want %q", m.Subject, subject)
	}
}

// decodeMailUser checks a user object (expectUserObject) and returns it.
func decodeMailUser(t *testing.T, r *Response) apiUser {
	t.Helper()
	return expectUserObject(t, r.Body)
}

// caddyfileWithAccountsOptions writes the project's Caddyfile with opts
// (Caddyfile lines) added to its accounts global option.
func caddyfileWithAccountsOptions(tb testing.TB, opts string) string {
	tb.Helper()
	return caddyfileWithLines(tb, "\taccounts {", opts)
}

// TestMailVerifyAndReset: register, read the verification mail, follow
// its link, and the account is verified; reset the password with the
// mailed link, and every session the user had is refused, the new
// password works and a "password changed" mail arrives. The reset is
// requested with a forged Host, X-Forwarded-Host and Forwarded (the site
// answers any host, so the request does reach the API): the link still
// uses PUBLIC_URL only, and nothing of the forged names is in the mail.
func TestMailVerifyAndReset(t *testing.T) {
	t.Parallel()
	sink := startMailSink(t)
	port, err := testnet.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	g := startGateway(t, GatewayOptions{Port: port, Env: sink.env("SITE_ADDRESS", ":"+strconv.Itoa(port))})
	c := g.Client(t)
	email, pw := uniqueEmail(t), randomPassword()

	r := c.PostJSON("/api/auth/register", "", map[string]string{"email": email, "password": pw})
	expectStatus(t, r, http.StatusCreated)
	u := decodeMailUser(t, r)
	if u.EmailVerified {
		t.Fatalf("a new account is verified: %s", r.Body)
	}
	verify := sink.waitTo(t, email, 1, 15*time.Second)[0]
	checkMailEnvelope(t, verify, email, "Confirm your email address for "+mailSite)
	token := linkToken(t, verify, "/accounts/verify-email")
	wire := string(sink.ClientBytes())
	if strings.Contains(wire, sink.password) || strings.Contains(wire, "AUTH") {
		t.Error("the SMTP credentials crossed the wire in clear")
	}

	r = c.PostJSON("/api/auth/verify-email", "", map[string]string{"token": token})
	expectStatus(t, r, http.StatusOK)
	if v := decodeMailUser(t, r); v.ID != u.ID || !v.EmailVerified {
		t.Fatalf("verify-email answered %s, want the user %s verified", r.Body, u.ID)
	}
	expectDetail(t, c.PostJSON("/api/auth/verify-email", "", map[string]string{"token": token}), http.StatusBadRequest, "Invalid or expired token")

	// Two sessions, one with its refresh token.
	login := c.PostForm("/api/auth/login", loginForm(email, pw))
	expectStatus(t, login, http.StatusOK)
	var first tokenBody
	login.Decode(t, &first)
	refresh := refreshCookieOf(t, login)
	second := g.Client(t).Login(email, pw)
	me := c.Get("/api/users/me", first.AccessToken)
	expectStatus(t, me, http.StatusOK)
	if v := decodeMailUser(t, me); !v.EmailVerified {
		t.Fatalf("/api/users/me after verification: %s", me.Body)
	}

	req := c.NewRequest(http.MethodPost, "/api/auth/password-reset", strings.NewReader(`{"email": "`+strings.ToUpper(email)+`"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Host = "evil.example"
	req.Header.Set("X-Forwarded-Host", "evil-forwarded.example")
	req.Header.Set("X-Forwarded-Proto", "http")
	req.Header.Set("Forwarded", "host=evil-forwarded2.example;proto=http")
	expectDetail(t, c.Do(req), http.StatusAccepted, "If the address belongs to an account, a message is on its way")
	reset := sink.waitTo(t, email, 2, 15*time.Second)[1]
	checkMailEnvelope(t, reset, email, "Reset your "+mailSite+" password")
	resetToken := linkToken(t, reset, "/accounts/reset-password")
	if strings.Contains(strings.ToLower(string(reset.Msg.Raw)), "evil") {
		t.Errorf("a forged host name is in the mail:\n%s", reset.Msg.Raw)
	}

	newPw := randomPassword()
	expectDetail(t, c.PostJSON("/api/auth/password-reset/confirm", "", map[string]string{"token": resetToken, "new_password": newPw}),
		http.StatusOK, "Password has been reset")
	for _, tok := range []string{first.AccessToken, second} {
		expectBearerError(t, c.Get("/api/users/me", tok), "Could not validate credentials")
	}
	expectBearerError(t, c.PostJSON("/api/auth/refresh", "", map[string]string{"refresh_token": refresh}), "Invalid refresh token")
	expectBearerError(t, c.PostForm("/api/auth/login", loginForm(email, pw)), "Incorrect email or password")
	expectStatus(t, c.Get("/api/users/me", c.Login(email, newPw)), http.StatusOK)
	expectDetail(t, c.PostJSON("/api/auth/password-reset/confirm", "", map[string]string{"token": resetToken, "new_password": randomPassword()}),
		http.StatusBadRequest, "Invalid or expired token")

	changed := sink.waitTo(t, email, 3, 15*time.Second)[2]
	checkMailEnvelope(t, changed, email, "Your "+mailSite+" password was changed")
	if strings.Contains(changed.Text, "#token=") {
		t.Errorf("the password-changed mail carries a token:\n%s", changed.Text)
	}
	time.Sleep(mailSettle)
	if n := len(sink.to(t, email)); n != 3 {
		t.Errorf("%d mails to %s, want 3 (verification, reset, password changed)", n, email)
	}
}

// TestMailVerificationRequired: with EMAIL_VERIFICATION=required an
// unverified account's login is 403 "Email not verified" (a wrong
// password is still 401), a resent link supersedes the first one, and
// after verification the login works.
func TestMailVerificationRequired(t *testing.T) {
	t.Parallel()
	sink := startMailSink(t)
	g := startGateway(t, GatewayOptions{Env: sink.env("EMAIL_VERIFICATION", "required")})
	c := g.Client(t)
	email, pw := uniqueEmail(t), randomPassword()
	c.Register(email, pw)
	expectDetail(t, c.PostForm("/api/auth/login", loginForm(email, pw)), http.StatusForbidden, "Email not verified")
	expectBearerError(t, c.PostForm("/api/auth/login", loginForm(email, pw+"x")), "Incorrect email or password")

	firstToken := linkToken(t, sink.waitTo(t, email, 1, 15*time.Second)[0], "/accounts/verify-email")
	expectDetail(t, c.PostJSON("/api/auth/verify-email/resend", "", map[string]string{"email": email}),
		http.StatusAccepted, "If the address belongs to an unverified account, a message is on its way")
	resent := sink.waitTo(t, email, 2, 15*time.Second)[1]
	checkMailEnvelope(t, resent, email, "Confirm your email address for "+mailSite)
	secondToken := linkToken(t, resent, "/accounts/verify-email")
	expectDetail(t, c.PostJSON("/api/auth/verify-email", "", map[string]string{"token": firstToken}), http.StatusBadRequest, "Invalid or expired token")
	expectStatus(t, c.PostJSON("/api/auth/verify-email", "", map[string]string{"token": secondToken}), http.StatusOK)
	expectStatus(t, c.Get("/api/users/me", c.Login(email, pw)), http.StatusOK)
}

// mailStatusBody is GET /api/admin/mail.
type mailStatusBody struct {
	Enabled         bool            `json:"enabled"`
	Pending         int             `json:"pending"`
	OldestPendingAt *string         `json:"oldest_pending_at"`
	SentLastHour    int             `json:"sent_last_hour"`
	FailedLastDay   int             `json:"failed_last_day"`
	LastFailure     json.RawMessage `json:"last_failure"`
}

// adminMailStatus logs in a new admin of g's database and returns a
// function that reads GET /api/admin/mail.
func adminMailStatus(t *testing.T, g *Gateway) func() (mailStatusBody, *Response) {
	t.Helper()
	email, pw := uniqueEmail(t), randomPassword()
	createAdmin(t, g.DatabaseURL, email, pw)
	c := g.Client(t)
	token := c.Login(email, pw)
	return func() (mailStatusBody, *Response) {
		t.Helper()
		r := c.Get("/api/admin/mail", token)
		expectStatus(t, r, http.StatusOK)
		var st mailStatusBody
		r.Decode(t, &st)
		return st, r
	}
}

// expectMailIdle checks an outbox with nothing pending or failed and
// sent mails sent in the last hour, exactly.
func expectMailIdle(t *testing.T, status func() (mailStatusBody, *Response), sent int) {
	t.Helper()
	_, r := status()
	want := fmt.Sprintf(`{"enabled":true,"failed_last_day":0,"last_failure":null,"oldest_pending_at":null,"pending":0,"sent_last_hour":%d}`, sent)
	if got := canonicalJSON(t, json.RawMessage(r.Body)); got != want {
		t.Errorf("GET /api/admin/mail: %s, want %s", got, want)
	}
}

// TestMailKilledMidSendDeliveredOnce: two instances on one database, each
// with its own sender address. The sink holds the first message mid-DATA;
// the instance sending it is killed there (SIGKILL). The other instance
// sends the mail once the dead one's lease has run out, with the same
// working link, and the recipient gets it exactly once.
func TestMailKilledMidSendDeliveredOnce(t *testing.T) {
	t.Parallel()
	sink := startMailSink(t)
	cf := caddyfileWithAccountsOptions(t, fastMailOptions)
	froms := []string{"instance-a@e2e.example", "instance-b@e2e.example"}
	gws := startInstancesWith(t,
		GatewayOptions{Caddyfile: cf, Env: sink.env("MAIL_FROM", "Instance A <"+froms[0]+">")},
		GatewayOptions{Caddyfile: cf, Env: sink.env("MAIL_FROM", "Instance B <"+froms[1]+">")})

	hold := sink.HoldNext()
	email, pw := uniqueEmail(t), randomPassword()
	gws[0].Client(t).Register(email, pw)
	select {
	case <-hold.Reached():
	case <-time.After(15 * time.Second):
		t.Fatal("no instance sent the verification mail within 15s")
	}
	victim := slices.Index(froms, hold.From())
	if victim < 0 || !slices.Equal(hold.To(), []string{email}) {
		t.Fatalf("held a mail from %q to %q", hold.From(), hold.To())
	}
	survivor := gws[1-victim]
	var claimedUntil time.Time
	var attempts int
	querySQL(t, survivor.DatabaseURL, "SELECT claimed_until, attempts FROM mail_outbox WHERE kind = 'verify_email' AND state = 'pending'",
		nil, &claimedUntil, &attempts)
	killed := time.Now()
	gws[victim].Kill()
	hold.Abort()
	t.Logf("instance %c killed mid-DATA; its lease ends in %v", 'A'+victim, time.Until(claimedUntil).Round(time.Millisecond))

	got := sink.waitTo(t, email, 1, 20*time.Second)[0]
	arrived := time.Now()
	t.Logf("delivered by instance %c %v after the kill, %v after the lease ended",
		'A'+(1-victim), arrived.Sub(killed).Round(time.Millisecond), arrived.Sub(claimedUntil).Round(time.Millisecond))
	if attempts != 1 {
		t.Errorf("the held send was attempt %d, want 1", attempts)
	}
	if arrived.Before(claimedUntil) {
		t.Errorf("delivered %v before the dead instance's lease ended", claimedUntil.Sub(arrived))
	}
	if got.Msg.From != froms[1-victim] {
		t.Errorf("delivered from %q, want the surviving instance's %q", got.Msg.From, froms[1-victim])
	}
	token := linkToken(t, got, "/accounts/verify-email")
	r := survivor.Client(t).PostJSON("/api/auth/verify-email", "", map[string]string{"token": token})
	expectStatus(t, r, http.StatusOK)

	time.Sleep(mailSettle)
	if n := len(sink.to(t, email)); n != 1 {
		t.Errorf("%d mails to %s, want exactly 1", n, email)
	}
	var state string
	querySQL(t, survivor.DatabaseURL, "SELECT state, attempts FROM mail_outbox WHERE kind = 'verify_email'", nil, &state, &attempts)
	if state != "sent" || attempts != 2 {
		t.Errorf("outbox row %s after %d attempts, want sent after 2", state, attempts)
	}
	expectMailIdle(t, adminMailStatus(t, survivor), 1)
	if t.Failed() {
		logOutbox(t, gws)
	}
}

// TestMailSMTPOutageLosesNothing: the SMTP server is down while mails are
// requested through two instances: the requests are answered as usual,
// the mails wait (GET /api/admin/mail shows them pending, each tried
// more than once), and when the server is back every one arrives, none
// twice.
func TestMailSMTPOutageLosesNothing(t *testing.T) {
	t.Parallel()
	sink := startMailSink(t)
	cf := caddyfileWithAccountsOptions(t, fastMailOptions)
	gws := startInstancesWith(t, GatewayOptions{Caddyfile: cf, Env: sink.env()}, GatewayOptions{Caddyfile: cf, Env: sink.env()})
	status := adminMailStatus(t, gws[0])

	early := uniqueEmail(t)
	gws[0].Client(t).Register(early, randomPassword())
	sink.waitTo(t, early, 1, 15*time.Second)

	sink.Stop()
	down := time.Now()
	var later []string
	var slowest time.Duration
	for i := range 4 {
		email := uniqueEmail(t)
		start := time.Now()
		gws[i%2].Client(t).Register(email, randomPassword())
		slowest = max(slowest, time.Since(start))
		later = append(later, email)
	}
	expectDetail(t, gws[1].Client(t).PostJSON("/api/auth/password-reset", "", map[string]string{"email": early}),
		http.StatusAccepted, "If the address belongs to an account, a message is on its way")
	const waiting = 5
	eventually(t, 15*time.Second, func() string {
		var pending, retried int
		querySQL(t, gws[0].DatabaseURL, `SELECT count(*), count(*) FILTER (WHERE attempts >= 2 AND last_error <> '')
			FROM mail_outbox WHERE state = 'pending'`, nil, &pending, &retried)
		if pending != waiting || retried != waiting {
			return fmt.Sprintf("%d mails pending, %d of them tried twice or more; want %d and %d", pending, retried, waiting, waiting)
		}
		return ""
	})
	st, r := status()
	if !st.Enabled || st.Pending != waiting || st.OldestPendingAt == nil || st.SentLastHour != 1 || st.FailedLastDay != 0 || string(st.LastFailure) != "null" {
		t.Errorf("GET /api/admin/mail during the outage: %s", r.Body)
	}
	if d := 3*time.Second - time.Since(down); d > 0 {
		time.Sleep(d)
	}

	if err := sink.Start(); err != nil {
		t.Fatal(err)
	}
	up := time.Now()
	outage := up.Sub(down)
	if _, err := sink.Wait(1+waiting, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("SMTP down %v; registering took at most %v meanwhile; the %d waiting mails all arrived %v after it came back",
		outage.Round(time.Millisecond), slowest.Round(time.Millisecond), waiting, time.Since(up).Round(time.Millisecond))

	time.Sleep(mailSettle)
	if n := len(sink.Messages()); n != 1+waiting {
		t.Errorf("%d mails in all, want %d", n, 1+waiting)
	}
	for _, email := range later {
		got := sink.to(t, email)
		if len(got) != 1 {
			t.Errorf("%d mails to %s, want 1", len(got), email)
			continue
		}
		checkMailEnvelope(t, got[0], email, "Confirm your email address for "+mailSite)
	}
	var subjects []string
	for _, m := range sink.to(t, early) {
		subjects = append(subjects, m.Subject)
	}
	if want := []string{"Confirm your email address for " + mailSite, "Reset your " + mailSite + " password"}; !slices.Equal(subjects, want) {
		t.Errorf("mails to %s: %q, want %q", early, subjects, want)
	}
	expectMailIdle(t, status, 1+waiting)
	var sent, noUser int
	querySQL(t, gws[0].DatabaseURL, "SELECT count(*) FILTER (WHERE state = 'sent'), count(*) FILTER (WHERE user_id IS NULL) FROM mail_outbox",
		nil, &sent, &noUser)
	if sent != 1+waiting || noUser != 0 {
		t.Errorf("outbox: %d rows sent, %d without the account's id; want %d and 0", sent, noUser, 1+waiting)
	}
	if t.Failed() {
		logOutbox(t, gws)
	}
}

// logOutbox logs the outbox rows and the mail log lines of gws, to tell
// why a test of the outbox failed.
func logOutbox(t *testing.T, gws []*Gateway) {
	t.Helper()
	var rows strings.Builder
	withConn(t, gws[0].DatabaseURL, "reading the outbox", func(ctx context.Context, conn *pgx.Conn) error {
		rs, err := conn.Query(ctx, `SELECT id, kind, state, attempts, COALESCE(last_error, ''), next_attempt_at, claimed_until, now()
			FROM mail_outbox ORDER BY id`)
		if err != nil {
			return err
		}
		for rs.Next() {
			vals, err := rs.Values()
			if err != nil {
				return err
			}
			fmt.Fprintln(&rows, vals...)
		}
		return rs.Err()
	})
	t.Logf("outbox (id kind state attempts last_error next_attempt_at claimed_until now):\n%s", rows.String())
	for i, g := range gws {
		for line := range strings.SplitSeq(g.Logs(), "\n") {
			if strings.Contains(line, `"msg":"mail`) {
				t.Logf("instance %c: %s", 'A'+i, line)
			}
		}
	}
}
