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
