package mail

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/caddyaccounts/gateway/internal/smtptest"
)

const (
	testFrom     = "Example Site <no-reply@example.com>"
	testUser     = "mailer"
	testPassword = "s3cr3t:p@ss/word"
)

// newMailer is a Mailer for srv at url, trusting srv's certificate.
func newMailer(t *testing.T, srv *smtptest.Server, url string) *Mailer {
	t.Helper()
	m, err := New(Config{URL: url, From: testFrom, TLSConfig: srv.ClientTLSConfig(), SendTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func verifyMessage(t *testing.T, m *Mailer) Message {
	t.Helper()
	msg, err := m.Render(KindVerifyEmail, Data{
		SiteName: "Example", Name: "Ada Lovelace", Email: "ada@example.com",
		Link: "https://app.example.com/accounts/verify-email#token=abc", Expiry: 24 * time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

// one waits for exactly one message on srv and parses it.
func one(t *testing.T, srv *smtptest.Server) (smtptest.Message, *smtptest.Parsed) {
	t.Helper()
	msgs, err := srv.Wait(1, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 1 {
		t.Fatalf("%d messages, want 1", len(msgs))
	}
	p, err := msgs[0].Parse()
	if err != nil {
		t.Fatal(err)
	}
	return msgs[0], p
}

// noSecretOnWire fails if the password crossed the wire in clear, as
// itself or in an AUTH PLAIN or LOGIN encoding.
func noSecretOnWire(t *testing.T, srv *smtptest.Server) {
	t.Helper()
	wire := srv.ClientBytes()
	for _, s := range []string{
		testPassword,
		base64.StdEncoding.EncodeToString([]byte("\x00" + testUser + "\x00" + testPassword)),
		base64.StdEncoding.EncodeToString([]byte(testPassword)),
	} {
		if bytes.Contains(wire, []byte(s)) {
			t.Fatalf("the password crossed the wire in clear (%q)", s)
		}
	}
}

func sendError(t *testing.T, err error) *SendError {
	t.Helper()
	var se *SendError
	if !errors.As(err, &se) {
		t.Fatalf("error %v (%T) is not a *SendError", err, err)
	}
	return se
}

var messageID = regexp.MustCompile(`^<[0-9a-f]{32}@example\.com>$`)

// TestSendPlain: no TLS offered, no credentials: the mail goes in clear,
// with every header and both parts.
func TestSendPlain(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{Mode: smtptest.Plain})
	m := newMailer(t, srv, srv.URL())
	before := time.Now().Add(-time.Second)
	if err := m.Send(context.Background(), verifyMessage(t, m)); err != nil {
		t.Fatal(err)
	}
	got, p := one(t, srv)
	if got.TLS || got.AuthUser != "" {
		t.Errorf("TLS %v, auth %q; want neither", got.TLS, got.AuthUser)
	}
	if got.From != "no-reply@example.com" || len(got.To) != 1 || got.To[0] != "ada@example.com" {
		t.Errorf("envelope from %q to %q", got.From, got.To)
	}
	if p.Subject != "Confirm your email address for Example" {
		t.Errorf("Subject %q", p.Subject)
	}
	if p.From.Name != "Example Site" || p.From.Address != "no-reply@example.com" {
		t.Errorf("From %+v", p.From)
	}
	if len(p.To) != 1 || p.To[0].Name != "Ada Lovelace" || p.To[0].Address != "ada@example.com" {
		t.Errorf("To %+v", p.To)
	}
	if id := p.Header.Get("Message-Id"); !messageID.MatchString(id) {
		t.Errorf("Message-ID %q", id)
	}
	date, err := p.Header.Date()
	if err != nil || date.Before(before) || date.After(time.Now().Add(time.Second)) {
		t.Errorf("Date %q (%v)", p.Header.Get("Date"), err)
	}
	if want := []string{"multipart/alternative", "text/plain", "text/html"}; strings.Join(p.Types, " ") != strings.Join(want, " ") {
		t.Errorf("content types %q, want %q", p.Types, want)
	}
	link := "https://app.example.com/accounts/verify-email#token=abc"
	if !strings.Contains(p.Text, "\n"+link+"\n") || !strings.Contains(p.Text, "works for 24 hours") {
		t.Errorf("text part:\n%s", p.Text)
	}
	if !strings.Contains(p.HTML, `<a href="`+link+`">`) {
		t.Errorf("HTML part:\n%s", p.HTML)
	}
}

// TestSendStartTLS: without credentials, STARTTLS is used when offered.
func TestSendStartTLS(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{Mode: smtptest.StartTLS})
	m := newMailer(t, srv, srv.URL())
	if err := m.Send(context.Background(), verifyMessage(t, m)); err != nil {
		t.Fatal(err)
	}
	got, _ := one(t, srv)
	if !got.TLS || got.TLSVersion != tls.VersionTLS13 {
		t.Errorf("TLS %v version %x, want TLS 1.3", got.TLS, got.TLSVersion)
	}
}

// TestSendAuthStartTLS: credentials over STARTTLS; the password is
// percent-decoded from the URL and never on the wire in clear.
func TestSendAuthStartTLS(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{Mode: smtptest.StartTLS, Username: testUser, Password: testPassword})
	m := newMailer(t, srv, srv.URL())
	if err := m.Send(context.Background(), verifyMessage(t, m)); err != nil {
		t.Fatal(err)
	}
	got, _ := one(t, srv)
	if !got.TLS || got.AuthUser != testUser {
		t.Errorf("TLS %v, auth %q; want TLS and %q", got.TLS, got.AuthUser, testUser)
	}
	noSecretOnWire(t, srv)
}

// TestSendImplicitTLS: smtps:// speaks TLS from the first byte, and
// authenticates there.
func TestSendImplicitTLS(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{Mode: smtptest.ImplicitTLS, Username: testUser, Password: testPassword})
	if !strings.HasPrefix(srv.URL(), "smtps://") {
		t.Fatalf("URL %q", srv.URL())
	}
	m := newMailer(t, srv, srv.URL())
	if err := m.Send(context.Background(), verifyMessage(t, m)); err != nil {
		t.Fatal(err)
	}
	got, _ := one(t, srv)
	if !got.TLS || got.AuthUser != testUser {
		t.Errorf("TLS %v, auth %q", got.TLS, got.AuthUser)
	}
	noSecretOnWire(t, srv)
	if bytes.Contains(srv.ClientBytes(), []byte("EHLO")) {
		t.Error("EHLO crossed the wire in clear on an smtps:// connection")
	}
}

// TestCredentialsNeedTLS: a server without STARTTLS that even offers
// AUTH in clear gets neither the password nor the mail.
func TestCredentialsNeedTLS(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{Mode: smtptest.Plain, Username: testUser, Password: testPassword, InsecureAuth: true})
	m := newMailer(t, srv, srv.URL())
	err := m.Send(context.Background(), verifyMessage(t, m))
	se := sendError(t, err)
	if se.Stage != StageConnect || se.Permanent || IsPermanent(err) {
		t.Errorf("error %+v, want a temporary connect failure", se)
	}
	if !strings.Contains(err.Error(), "does not support STARTTLS") {
		t.Errorf("error %q does not say that STARTTLS is missing", err)
	}
	wire := srv.ClientBytes()
	if !bytes.Contains(wire, []byte("EHLO ")) {
		t.Fatalf("the client never spoke: %q", wire)
	}
	if bytes.Contains(wire, []byte("AUTH")) || bytes.Contains(wire, []byte("MAIL FROM")) {
		t.Errorf("the client went on without TLS: %q", wire)
	}
	noSecretOnWire(t, srv)
	if n := len(srv.Messages()); n != 0 {
		t.Errorf("%d messages accepted", n)
	}
}

// TestWrongPassword: a refused AUTH is a temporary failure (the
// configuration, not the message) and its text holds no password.
func TestWrongPassword(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{Mode: smtptest.StartTLS, Username: testUser, Password: "right-one"})
	m := newMailer(t, srv, srv.URLWith(testUser, testPassword))
	err := m.Send(context.Background(), verifyMessage(t, m))
	se := sendError(t, err)
	if se.Stage != StageConnect || se.Code != 535 || se.Permanent {
		t.Errorf("error %+v, want a temporary connect failure with 535", se)
	}
	desc, perr := m.Probe(context.Background(), "ada@example.com")
	if perr == nil {
		t.Fatal("Probe succeeded with a wrong password")
	}
	for _, s := range []string{err.Error(), desc, perr.Error()} {
		if strings.Contains(s, testPassword) || strings.Contains(s, "p@ss") {
			t.Errorf("the password is in %q", s)
		}
	}
}

// TestReplyClassification: 4xx answers are temporary and a retry goes
// through; 5xx answers to RCPT or DATA are permanent.
func TestReplyClassification(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{Mode: smtptest.StartTLS})
	m := newMailer(t, srv, srv.URL())
	msg := verifyMessage(t, m)
	for _, tc := range []struct {
		cmd       smtptest.Command
		code      int
		stage     Stage
		permanent bool
	}{
		{smtptest.Rcpt, 451, StageRcpt, false},
		{smtptest.Rcpt, 550, StageRcpt, true},
		{smtptest.Data, 452, StageData, false},
		{smtptest.Data, 554, StageData, true},
	} {
		srv.FailNext(tc.cmd, 1, tc.code)
		err := m.Send(context.Background(), msg)
		se := sendError(t, err)
		if se.Stage != tc.stage || se.Code != tc.code || se.Permanent != tc.permanent || IsPermanent(err) != tc.permanent {
			t.Errorf("%d: error %+v, want stage %s, permanent %v", tc.code, se, tc.stage, tc.permanent)
		}
	}
	if n := len(srv.Messages()); n != 0 {
		t.Fatalf("%d messages accepted while failing", n)
	}
	if err := m.Send(context.Background(), msg); err != nil {
		t.Fatalf("the retry: %v", err)
	}
	one(t, srv)
}

// TestServerDown: a server that is down is a temporary failure; the
// mail goes once it is back on the same port.
func TestServerDown(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{Mode: smtptest.StartTLS})
	m := newMailer(t, srv, srv.URL())
	msg := verifyMessage(t, m)
	srv.Stop()
	err := m.Send(context.Background(), msg)
	se := sendError(t, err)
	if se.Stage != StageConnect || se.Code != 0 || se.Permanent {
		t.Errorf("error %+v, want a temporary connect failure", se)
	}
	if !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("error %q", err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	if err := m.Send(context.Background(), msg); err != nil {
		t.Fatalf("after the restart: %v", err)
	}
	one(t, srv)
}

// TestSendTimeout: a server that accepts and then says nothing costs
// SendTimeout, not more, and the failure is temporary.
func TestSendTimeout(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	m, err := New(Config{URL: "smtp://" + l.Addr().String(), From: testFrom, SendTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = m.Send(context.Background(), verifyMessage(t, m))
	took := time.Since(start)
	se := sendError(t, err)
	if se.Permanent || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %+v, want a temporary deadline failure", se)
	}
	if took < 250*time.Millisecond || took > 3*time.Second {
		t.Errorf("took %v with a 300ms send timeout", took)
	}
}

// TestUTF8Headers: a UTF-8 subject and display names arrive intact, as
// encoded words (every header byte is ASCII).
func TestUTF8Headers(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{Mode: smtptest.Plain})
	m, err := New(Config{URL: srv.URL(), From: "Bücherstube Ω <no-reply@example.com>"})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := m.Render(KindPasswordReset, Data{
		SiteName: "Bücherstube Ω — ✓", Name: "Zoë Åström-Øre, \"Jr.\"", Email: "zoe@example.com",
		Link: "https://app.example.com/accounts/reset-password#token=x", Expiry: 30 * time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Send(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
	got, p := one(t, srv)
	if p.Subject != "Reset your Bücherstube Ω — ✓ password" {
		t.Errorf("Subject %q", p.Subject)
	}
	if p.To[0].Name != "Zoë Åström-Øre, \"Jr.\"" || p.From.Name != "Bücherstube Ω" {
		t.Errorf("To %q, From %q", p.To[0].Name, p.From.Name)
	}
	if !strings.Contains(p.Text, "Hello Zoë Åström-Øre") || !strings.Contains(p.Text, "works for 30 minutes") {
		t.Errorf("text:\n%s", p.Text)
	}
	head, _, _ := bytes.Cut(got.Raw, []byte("\r\n\r\n"))
	for i, b := range head {
		if b >= 0x80 {
			t.Fatalf("a raw 8-bit byte in the header at %d: %q", i, head)
		}
	}
}

// TestHeaderInjection: CR/LF in a display name or subject never start a
// header of their own; the mail goes to the given address only.
func TestHeaderInjection(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{Mode: smtptest.Plain})
	m := newMailer(t, srv, srv.URL())
	msg := Message{
		To:      "ada@example.com",
		ToName:  "Eve\r\nBcc: victim@example.org\r\n\r\nbody",
		Subject: "Hi\nX-Injected: 1\u2028Reply-To: eve@example.org",
		Text:    "hello",
	}
	if err := m.Send(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
	got, p := one(t, srv)
	for _, h := range []string{"Bcc", "X-Injected", "Reply-To"} {
		if _, ok := p.Header[h]; ok {
			t.Errorf("header %s injected", h)
		}
	}
	if len(got.To) != 1 || got.To[0] != "ada@example.com" {
		t.Errorf("envelope to %q", got.To)
	}
	if p.To[0].Name != "Eve Bcc: victim@example.org body" || p.To[0].Address != "ada@example.com" {
		t.Errorf("To %+v", p.To[0])
	}
	if p.Subject != "Hi X-Injected: 1 Reply-To: eve@example.org" {
		t.Errorf("Subject %q", p.Subject)
	}
}

// TestBadRecipient: an address that is not a bare address is refused
// before any connection, as a permanent failure.
func TestBadRecipient(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{Mode: smtptest.Plain})
	m := newMailer(t, srv, srv.URL())
	for _, to := range []string{
		"",
		"ada@example.com\r\nRCPT TO:<eve@example.org>",
		"ada@example.com\n",
		"Ada <ada@example.com>",
		"<ada@example.com>",
		"ada@example.com, eve@example.org",
		"a da@example.com",
		"ada",
		"ada@[127.0.0.1]",
		"\"ada\"@example.com",
		"ada@example.com (comment)",
	} {
		err := m.Send(context.Background(), Message{To: to, Subject: "s", Text: "t"})
		se := sendError(t, err)
		if se.Stage != StageMessage || !se.Permanent {
			t.Errorf("%q: error %+v, want a permanent message failure", to, se)
		}
	}
	if wire := srv.ClientBytes(); len(wire) != 0 {
		t.Errorf("a connection was made: %q", wire)
	}
}

// TestIDNRecipient: an internationalised domain goes out in its ASCII
// form, in the envelope and the header.
func TestIDNRecipient(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{Mode: smtptest.Plain})
	m := newMailer(t, srv, srv.URL())
	if err := m.Send(context.Background(), Message{To: "bob@bücher.example", Subject: "s", Text: "t"}); err != nil {
		t.Fatal(err)
	}
	got, p := one(t, srv)
	if got.To[0] != "bob@xn--bcher-kva.example" || p.To[0].Address != "bob@xn--bcher-kva.example" {
		t.Errorf("envelope %q, header %q", got.To, p.To[0].Address)
	}
}

// TestProbe: the operator's one line says where, TLS and its version,
// the user, and the answer; never the password.
func TestProbe(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{Mode: smtptest.StartTLS, Username: testUser, Password: testPassword})
	m := newMailer(t, srv, srv.URL())
	desc, err := m.Probe(context.Background(), "ops@example.com")
	if err != nil {
		t.Fatalf("%v (%s)", err, desc)
	}
	want := "connected to " + srv.Addr() + `; TLS: yes (TLS 1.3, STARTTLS); authenticated: yes, as "mailer"; accepted for ops@example.com: "2.0.0 OK: queued"`
	if desc != want {
		t.Errorf("Probe said\n%s\nwant\n%s", desc, want)
	}
	_, p := one(t, srv)
	if p.Subject != "Test message from Example Site" || p.To[0].Address != "ops@example.com" {
		t.Errorf("Subject %q to %q", p.Subject, p.To[0].Address)
	}

	srv.FailNext(smtptest.Rcpt, 1, 550)
	desc, err = m.Probe(context.Background(), "nobody@example.com")
	if !IsPermanent(err) || !strings.HasPrefix(desc, "connected to "+srv.Addr()+`; TLS: yes (TLS 1.3, STARTTLS); authenticated: yes, as "mailer"; refused: mail: rcpt: `) ||
		!strings.Contains(desc, "550") {
		t.Errorf("Probe said %q (%v)", desc, err)
	}

	srv.Stop()
	desc, err = m.Probe(context.Background(), "ops@example.com")
	if err == nil || !strings.HasPrefix(desc, "smtp://mailer@"+srv.Addr()+": no SMTP session: mail: connect: ") {
		t.Errorf("Probe said %q (%v)", desc, err)
	}
	if strings.Contains(desc, testPassword) {
		t.Errorf("the password is in %q", desc)
	}
}

// TestConcurrentSends: one Mailer serves several senders at once, each
// on its own connection.
func TestConcurrentSends(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{Mode: smtptest.StartTLS, Username: testUser, Password: testPassword})
	m := newMailer(t, srv, srv.URL())
	const n = 8
	errs := make(chan error, n)
	for i := range n {
		go func() {
			errs <- m.Send(context.Background(), Message{To: fmt.Sprintf("user%d@example.com", i), Subject: "s", Text: "t"})
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	msgs, err := srv.Wait(n, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, msg := range msgs {
		seen[msg.To[0]] = true
	}
	if len(msgs) != n || len(seen) != n {
		t.Errorf("%d messages to %d recipients, want %d each", len(msgs), len(seen), n)
	}
}
