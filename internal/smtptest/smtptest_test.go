package smtptest

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"net"
	"net/textproto"
	"strings"
	"testing"
	"time"
)

// dialText opens a plain connection and reads the greeting.
func dialText(t *testing.T, s *Server) *textproto.Conn {
	t.Helper()
	c, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	tc := textproto.NewConn(c)
	t.Cleanup(func() { tc.Close() })
	if _, _, err := tc.ReadResponse(220); err != nil {
		t.Fatal(err)
	}
	return tc
}

func cmd(t *testing.T, tc *textproto.Conn, want int, format string, args ...any) string {
	t.Helper()
	id, err := tc.Cmd(format, args...)
	if err != nil {
		t.Fatal(err)
	}
	tc.StartResponse(id)
	defer tc.EndResponse(id)
	code, msg, err := tc.ReadResponse(want)
	if err != nil {
		t.Fatalf("%s: %d %s (%v)", format, code, msg, err)
	}
	return msg
}

// TestAuthOnlyOverTLS: AUTH is neither offered nor accepted before
// STARTTLS, and MAIL needs it; after STARTTLS it works.
func TestAuthOnlyOverTLS(t *testing.T) {
	s := Start(t, Options{Mode: StartTLS, Username: "u", Password: "p"})
	tc := dialText(t, s)
	ehlo := cmd(t, tc, 250, "EHLO client.test")
	if strings.Contains(ehlo, "AUTH") || !strings.Contains(ehlo, "STARTTLS") {
		t.Errorf("EHLO before TLS: %q", ehlo)
	}
	plain := base64.StdEncoding.EncodeToString([]byte("\x00u\x00p"))
	cmd(t, tc, 523, "AUTH PLAIN %s", plain)
	cmd(t, tc, 502, "MAIL FROM:<a@example.com>")

	c, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	tc = textproto.NewConn(c)
	defer tc.Close()
	if _, _, err := tc.ReadResponse(220); err != nil {
		t.Fatal(err)
	}
	cmd(t, tc, 250, "EHLO client.test")
	cmd(t, tc, 220, "STARTTLS")
	tlsConn := tls.Client(c, &tls.Config{RootCAs: s.CertPool(), ServerName: "127.0.0.1"})
	tc = textproto.NewConn(tlsConn)
	if ehlo := cmd(t, tc, 250, "EHLO client.test"); !strings.Contains(ehlo, "AUTH PLAIN") {
		t.Errorf("EHLO after TLS: %q", ehlo)
	}
	cmd(t, tc, 535, "AUTH PLAIN %s", base64.StdEncoding.EncodeToString([]byte("\x00u\x00wrong")))
	cmd(t, tc, 235, "AUTH PLAIN %s", plain)
	cmd(t, tc, 250, "MAIL FROM:<a@example.com>")
	cmd(t, tc, 250, "RCPT TO:<b@example.com>")
	cmd(t, tc, 354, "DATA")
	if err := tc.PrintfLine("Subject: hi\r\n\r\nbody\r\n."); err != nil {
		t.Fatal(err)
	}
	if _, _, err := tc.ReadResponse(250); err != nil {
		t.Fatal(err)
	}
	msgs, err := s.Wait(1, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if m := msgs[0]; m.From != "a@example.com" || m.To[0] != "b@example.com" || !m.TLS || m.AuthUser != "u" {
		t.Errorf("message %+v", m)
	}
}

// TestWaitTimeout: Wait gives up with a clear error.
func TestWaitTimeout(t *testing.T) {
	s := Start(t, Options{})
	_, err := s.Wait(1, 50*time.Millisecond)
	if err == nil || err.Error() != "smtptest: 0 message(s) after 50ms, want 1" {
		t.Errorf("Wait: %v", err)
	}
}

// TestCertPEM: the PEM certificate verifies the server for 127.0.0.1,
// as a child process given it through SSL_CERT_FILE would.
func TestCertPEM(t *testing.T) {
	s := Start(t, Options{Mode: ImplicitTLS})
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(s.CertPEM()) {
		t.Fatalf("CertPEM is not a PEM certificate: %q", s.CertPEM())
	}
	c, err := tls.Dial("tcp", s.Addr(), &tls.Config{RootCAs: pool})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if Start(t, Options{}).CertPEM() != nil {
		t.Error("a plain server has a certificate")
	}
}

// sendData runs one plain session up to the end of the message and
// returns the connection, whose next answer is the DATA reply.
func sendData(t *testing.T, s *Server, from, to string) *textproto.Conn {
	t.Helper()
	tc := dialText(t, s)
	cmd(t, tc, 250, "EHLO client.test")
	cmd(t, tc, 250, "MAIL FROM:<%s>", from)
	cmd(t, tc, 250, "RCPT TO:<%s>", to)
	cmd(t, tc, 354, "DATA")
	if err := tc.PrintfLine("Subject: hi\r\n\r\nbody\r\n."); err != nil {
		t.Fatal(err)
	}
	return tc
}

// TestHoldNext: a held DATA answers nothing until Release (then the
// message is accepted) or Abort (451, nothing kept); Stop ends a hold
// nobody ended; the message after a hold passes.
func TestHoldNext(t *testing.T) {
	s := Start(t, Options{})
	released, aborted := s.HoldNext(), s.HoldNext()

	tc := sendData(t, s, "a@example.com", "b@example.com")
	select {
	case <-released.Reached():
	case <-time.After(5 * time.Second):
		t.Fatal("the first DATA was not held")
	}
	if released.From() != "a@example.com" || len(released.To()) != 1 || released.To()[0] != "b@example.com" {
		t.Errorf("held from %q to %q", released.From(), released.To())
	}
	reply := make(chan error, 1)
	go func() { _, _, err := tc.ReadResponse(250); reply <- err }()
	select {
	case err := <-reply:
		t.Fatalf("a held DATA was answered (%v)", err)
	case <-time.After(200 * time.Millisecond):
	}
	if n := len(s.Messages()); n != 0 {
		t.Fatalf("%d messages kept while held", n)
	}
	released.Release()
	if err := <-reply; err != nil {
		t.Fatalf("after Release: %v", err)
	}
	if _, err := s.Wait(1, time.Second); err != nil {
		t.Fatal(err)
	}

	tc = sendData(t, s, "c@example.com", "d@example.com")
	<-aborted.Reached()
	aborted.Abort()
	if code, msg, err := tc.ReadResponse(250); code != 451 {
		t.Fatalf("after Abort: %d %s (%v), want 451", code, msg, err)
	}
	tc = sendData(t, s, "e@example.com", "f@example.com")
	if _, _, err := tc.ReadResponse(250); err != nil {
		t.Fatalf("the DATA after the holds: %v", err)
	}
	if msgs := s.Messages(); len(msgs) != 2 || msgs[1].From != "e@example.com" {
		t.Errorf("messages %+v, want those from a@ and e@", msgs)
	}

	stopped := s.HoldNext()
	sendData(t, s, "g@example.com", "h@example.com")
	<-stopped.Reached()
	done := make(chan struct{})
	go func() { s.Stop(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Stop hung on a hold")
	}
	if len(s.Messages()) != 2 {
		t.Errorf("a held message was kept after Stop: %d", len(s.Messages()))
	}
}
