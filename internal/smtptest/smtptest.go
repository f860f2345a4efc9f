// Package smtptest runs a real SMTP server on 127.0.0.1 inside the test
// process, for the unit tests of the mail package and for end-to-end tests
// that read the mails the gateway sent.
//
// A Server speaks plain SMTP, STARTTLS or implicit TLS (with a self-signed
// certificate made at start; CertPool trusts it), optionally offers AUTH
// PLAIN with one user name and password (only over TLS, as real servers
// do), and keeps every message it accepts. FailNext makes the next RCPT or
// DATA commands answer with a given code; Stop and Start take the server
// down and bring it back on the same port; HoldNext stalls the next
// message mid-DATA, so that a test can kill its sender there. Every byte
// a client sent is kept as it crossed the wire (ClientBytes), so a test can prove that a
// password never travelled in clear.
package smtptest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Mode is how a Server offers TLS.
type Mode int

const (
	// Plain offers no TLS at all.
	Plain Mode = iota
	// StartTLS offers the STARTTLS command on a plain connection.
	StartTLS
	// ImplicitTLS speaks TLS from the first byte (an smtps:// server).
	ImplicitTLS
)

// String names the mode as a test log would.
func (m Mode) String() string {
	switch m {
	case Plain:
		return "plain"
	case StartTLS:
		return "starttls"
	case ImplicitTLS:
		return "implicit-tls"
	}
	return "mode(" + strconv.Itoa(int(m)) + ")"
}

// Options configure a Server.
type Options struct {
	// Mode is how TLS is offered; Plain by default.
	Mode Mode
	// Username and Password, when Username is set, make the server offer
	// AUTH PLAIN (over TLS only, unless InsecureAuth) and refuse MAIL
	// from a session that has not authenticated.
	Username string
	Password string
	// InsecureAuth offers AUTH on a connection without TLS, as a badly
	// configured server would: to prove that a client does not send its
	// password there.
	InsecureAuth bool
	// Addr is where to listen (host:port); default a free port of
	// 127.0.0.1. The development sink (cmd/mailsink) names a fixed one.
	Addr string
}

// Command names an SMTP command whose answer FailNext can replace.
type Command int

const (
	// Rcpt is the RCPT TO command.
	Rcpt Command = iota
	// Data is the DATA command (the answer after the message's final dot).
	Data
)

// Message is one message the server accepted.
type Message struct {
	// From is the envelope sender (MAIL FROM).
	From string
	// To are the envelope recipients (RCPT TO), in order.
	To []string
	// Raw is the message as received: headers, a blank line, the body.
	Raw []byte
	// TLS is whether the session was encrypted, and TLSVersion its
	// version (tls.VersionTLS13, ...), 0 without TLS.
	TLS        bool
	TLSVersion uint16
	// AuthUser is the user name the session authenticated as, "" if none.
	AuthUser string
}

// Server is a running SMTP server on 127.0.0.1.
type Server struct {
	opts    Options
	addr    string // 127.0.0.1:port, kept across Stop and Start
	tlsConf *tls.Config
	pool    *x509.CertPool

	mu       sync.Mutex
	srv      *smtp.Server // nil while stopped
	listener net.Listener
	done     chan struct{}
	messages []Message
	changed  chan struct{} // closed and replaced when a message arrives
	failures map[Command][]int
	holds    []*Hold // armed by HoldNext, taken by the next DATA in order
	held     []*Hold // taken: aborted by Stop unless ended before
	wire     bytes.Buffer
}

// New starts a server on a free port of 127.0.0.1.
func New(opts Options) (*Server, error) {
	s := &Server{opts: opts, changed: make(chan struct{}), failures: map[Command][]int{}}
	if opts.Mode != Plain {
		conf, pool, err := selfSigned()
		if err != nil {
			return nil, err
		}
		s.tlsConf, s.pool = conf, pool
	}
	s.addr = opts.Addr
	if s.addr == "" {
		s.addr = "127.0.0.1:0"
	}
	if err := s.Start(); err != nil {
		return nil, err
	}
	return s, nil
}

// Start runs a new server for t, stopped when the test ends.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	s, err := New(opts)
	if err != nil {
		t.Fatalf("smtptest: %v", err)
	}
	t.Cleanup(s.Stop)
	return s
}

// Start listens again on the server's port after Stop. Messages, pending
// failures and ClientBytes are kept.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		return errors.New("smtptest: server already running")
	}
	var l net.Listener
	var err error
	// The port may be in TIME_WAIT after Stop; Go's listeners set
	// SO_REUSEADDR, so a short retry covers the rare slower release.
	for range 50 {
		l, err = net.Listen("tcp", s.addr)
		if err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("smtptest: listen on %s: %w", s.addr, err)
	}
	s.addr = l.Addr().String()
	l = &recordingListener{Listener: l, s: s}
	if s.opts.Mode == ImplicitTLS {
		l = tls.NewListener(l, s.tlsConf)
	}

	srv := smtp.NewServer(backend{s})
	srv.Domain = "smtptest.localhost"
	srv.ReadTimeout = 30 * time.Second
	srv.WriteTimeout = 30 * time.Second
	srv.MaxMessageBytes = 10 << 20
	srv.AllowInsecureAuth = s.opts.InsecureAuth
	srv.ErrorLog = log.New(io.Discard, "", 0)
	if s.opts.Mode == StartTLS {
		srv.TLSConfig = s.tlsConf
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(l)
	}()
	s.srv, s.listener, s.done = srv, l, done
	return nil
}

// Stop closes the listener and every open connection, as an outage
// would; Start brings the server back on the same port. Stopping a
// stopped server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	srv, l, done := s.srv, s.listener, s.done
	s.srv, s.listener = nil, nil
	s.mu.Unlock()
	if srv == nil {
		return
	}
	s.mu.Lock()
	holds := append(s.holds, s.held...)
	s.holds, s.held = nil, nil
	s.mu.Unlock()
	for _, h := range holds {
		h.Abort()
	}
	_ = srv.Close()
	// Close only closes the listeners Serve has registered, and Serve
	// may not have started yet.
	_ = l.Close()
	<-done
}

// Addr is the server's host:port.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Port is the server's TCP port.
func (s *Server) Port() int {
	_, p, _ := net.SplitHostPort(s.Addr())
	n, _ := strconv.Atoi(p)
	return n
}

// URL is an SMTP URL for the server: smtps:// in ImplicitTLS mode, else
// smtp://, with the configured user name and password.
func (s *Server) URL() string {
	return s.URLWith(s.opts.Username, s.opts.Password)
}

// URLWith is URL with other credentials (none when username is "").
func (s *Server) URLWith(username, password string) string {
	u := url.URL{Scheme: "smtp", Host: s.Addr()}
	if s.opts.Mode == ImplicitTLS {
		u.Scheme = "smtps"
	}
	if username != "" {
		u.User = url.UserPassword(username, password)
	}
	return u.String()
}

// CertPool trusts the server's certificate (nil in Plain mode).
func (s *Server) CertPool() *x509.CertPool { return s.pool }

// CertPEM is the server's certificate in PEM (nil in Plain mode). A
// gateway process started by a test trusts it when the file holding it
// is named by SSL_CERT_FILE, which Go reads for the system roots.
func (s *Server) CertPEM() []byte {
	if s.tlsConf == nil {
		return nil
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.tlsConf.Certificates[0].Certificate[0]})
}

// ClientTLSConfig is a client configuration that trusts the server.
func (s *Server) ClientTLSConfig() *tls.Config {
	return &tls.Config{RootCAs: s.pool, MinVersion: tls.VersionTLS12}
}

// FailNext makes the next n answers to cmd carry code (4xx or 5xx)
// instead of accepting. Calls add up in order.
func (s *Server) FailNext(cmd Command, n, code int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.failures[cmd] = append(s.failures[cmd], code)
	}
}

// takeFailure returns the code to answer cmd with, 0 to accept.
func (s *Server) takeFailure(cmd Command) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.failures[cmd]
	if len(q) == 0 {
		return 0
	}
	s.failures[cmd] = q[1:]
	return q[0]
}

// Hold is a message the server holds mid-DATA (HoldNext).
type Hold struct {
	reached chan struct{} // closed when a DATA is held
	end     chan bool     // closed by Release (true) or Abort (false)
	once    sync.Once
	mu      sync.Mutex
	from    string
	to      []string
	release bool
}

// HoldNext makes the next DATA stall before the server reads the
// message: the client has sent DATA, got 354, has sent (or is sending)
// the message and waits for the answer that would say it was accepted.
// Reached is closed then. Release reads the message and accepts it as
// usual; Abort drops it unread with a 451, as a server does when the
// client's connection breaks mid-message. (A held server reads nothing,
// so it cannot notice the close itself: a test that kills the client
// calls Abort.) Stop aborts every hold. Calls add up in order.
func (s *Server) HoldNext() *Hold {
	h := &Hold{reached: make(chan struct{}), end: make(chan bool)}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.holds = append(s.holds, h)
	return h
}

// Reached is closed once a client's DATA is held.
func (h *Hold) Reached() <-chan struct{} { return h.reached }

// From is the envelope sender (MAIL FROM) of the held message, and To
// its recipients; both empty before Reached.
func (h *Hold) From() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.from
}

// To is the held message's envelope recipients.
func (h *Hold) To() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.to...)
}

// Release lets the held message be read and accepted. Only the first
// Release or Abort counts.
func (h *Hold) Release() { h.finish(true) }

// Abort drops the held message unread, answering 451.
func (h *Hold) Abort() { h.finish(false) }

func (h *Hold) finish(release bool) {
	h.once.Do(func() {
		h.mu.Lock()
		h.release = release
		h.mu.Unlock()
		close(h.end)
	})
}

// takeHold returns the hold the next DATA must wait on, nil if none.
func (s *Server) takeHold() *Hold {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.holds) == 0 {
		return nil
	}
	h := s.holds[0]
	s.holds = s.holds[1:]
	s.held = append(s.held, h)
	return h
}

// wait marks the hold reached by a session and blocks until Release or
// Abort; it reports whether the message may be read.
func (h *Hold) wait(from string, to []string) bool {
	h.mu.Lock()
	h.from, h.to = from, append([]string(nil), to...)
	h.mu.Unlock()
	close(h.reached)
	<-h.end
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.release
}

// Messages returns a copy of the messages accepted so far, in order.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.messages...)
}

// Wait returns the accepted messages once there are at least n, or an
// error after timeout.
func (s *Server) Wait(n int, timeout time.Duration) ([]Message, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		s.mu.Lock()
		got, changed := len(s.messages), s.changed
		if got >= n {
			msgs := append([]Message(nil), s.messages...)
			s.mu.Unlock()
			return msgs, nil
		}
		s.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, fmt.Errorf("smtptest: %d message(s) after %v, want %d", got, timeout, n)
		}
	}
}

// ClientBytes is everything clients sent to the server, as it crossed
// the wire: in clear before TLS, encrypted after it.
func (s *Server) ClientBytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.wire.Bytes())
}

func (s *Server) accept(m Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.messages = append(s.messages, m)
	close(s.changed)
	s.changed = make(chan struct{})
}

// recordingListener copies what clients send into Server.wire.
type recordingListener struct {
	net.Listener
	s *Server
}

func (l *recordingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &recordingConn{Conn: c, s: l.s}, nil
}

type recordingConn struct {
	net.Conn
	s *Server
}

func (c *recordingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.s.mu.Lock()
		c.s.wire.Write(p[:n])
		c.s.mu.Unlock()
	}
	return n, err
}

type backend struct{ s *Server }

func (b backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	return &session{s: b.s, conn: c}, nil
}

// session is one SMTP session; after STARTTLS go-smtp starts a new one.
type session struct {
	s        *Server
	conn     *smtp.Conn
	authUser string
	from     string
	to       []string
}

func (ss *session) AuthMechanisms() []string {
	if ss.s.opts.Username == "" {
		return nil
	}
	return []string{sasl.Plain}
}

func (ss *session) Auth(mech string) (sasl.Server, error) {
	if mech != sasl.Plain || ss.s.opts.Username == "" {
		return nil, smtp.ErrAuthUnknownMechanism
	}
	return sasl.NewPlainServer(func(identity, username, password string) error {
		userOK := subtle.ConstantTimeCompare([]byte(username), []byte(ss.s.opts.Username)) == 1
		passOK := subtle.ConstantTimeCompare([]byte(password), []byte(ss.s.opts.Password)) == 1
		if !userOK || !passOK || (identity != "" && identity != username) {
			return smtp.ErrAuthFailed
		}
		ss.authUser = username
		return nil
	}), nil
}

func (ss *session) Mail(from string, _ *smtp.MailOptions) error {
	if ss.s.opts.Username != "" && ss.authUser == "" {
		return smtp.ErrAuthRequired
	}
	ss.from = from
	return nil
}

func (ss *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	if code := ss.s.takeFailure(Rcpt); code != 0 {
		return injected(code)
	}
	ss.to = append(ss.to, to)
	return nil
}

func (ss *session) Data(r io.Reader) error {
	if h := ss.s.takeHold(); h != nil && !h.wait(ss.from, ss.to) {
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCodeNotSet, Message: "message dropped mid-DATA"}
	}
	raw, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if code := ss.s.takeFailure(Data); code != 0 {
		return injected(code)
	}
	m := Message{From: ss.from, To: append([]string(nil), ss.to...), Raw: raw, AuthUser: ss.authUser}
	if st, ok := ss.conn.TLSConnectionState(); ok {
		m.TLS, m.TLSVersion = true, st.Version
	}
	ss.s.accept(m)
	return nil
}

func (ss *session) Reset() { ss.from, ss.to = "", nil }

func (ss *session) Logout() error { return nil }

func injected(code int) error {
	return &smtp.SMTPError{Code: code, EnhancedCode: smtp.EnhancedCodeNotSet, Message: "injected failure"}
}

// selfSigned makes a certificate for 127.0.0.1 and localhost, valid for a
// day, and a pool that trusts it.
func selfSigned() (*tls.Config, *x509.CertPool, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("smtptest: key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, nil, fmt.Errorf("smtptest: serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "smtptest"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("smtptest: certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("smtptest: certificate: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	conf := &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}},
		MinVersion:   tls.VersionTLS12,
	}
	return conf, pool, nil
}
