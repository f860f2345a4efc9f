package mail

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	netmail "net/mail"
	"net/textproto"
	"os"
	"strings"
	"time"

	gomail "github.com/wneessen/go-mail"
)

// Mailer renders and sends mail through one SMTP server. It is safe for
// concurrent use; every Send opens its own connection.
type Mailer struct {
	*Templates
	ep          Endpoint
	from        *netmail.Address
	domain      string // ASCII domain of From, for Message-IDs
	dialTimeout time.Duration
	sendTimeout time.Duration
	tlsConf     *tls.Config
}

// New validates c and loads the templates (built-in plus c.TemplateDir).
// It does not connect: Probe does.
func New(c Config) (*Mailer, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	ep, _ := ParseURL(c.URL)
	from, domain, _ := parseFrom(c.From)
	t, err := LoadTemplates(c.TemplateDir)
	if err != nil {
		return nil, err
	}
	m := &Mailer{
		Templates: t, ep: ep, from: from, domain: domain,
		dialTimeout: c.DialTimeout, sendTimeout: c.SendTimeout,
		tlsConf: &tls.Config{},
	}
	if m.dialTimeout == 0 {
		m.dialTimeout = DefaultDialTimeout
	}
	if m.sendTimeout == 0 {
		m.sendTimeout = DefaultSendTimeout
	}
	if c.TLSConfig != nil {
		m.tlsConf = c.TLSConfig.Clone()
	}
	if m.tlsConf.ServerName == "" {
		m.tlsConf.ServerName = ep.Host
	}
	if m.tlsConf.MinVersion == 0 {
		m.tlsConf.MinVersion = tls.VersionTLS12
	}
	return m, nil
}

// Endpoint is the parsed SMTP URL; its String is safe to log.
func (m *Mailer) Endpoint() Endpoint { return m.ep }

// Stage is the step of a delivery that failed.
type Stage string

// The stages of a delivery.
const (
	// StageMessage: the message itself is unusable (a bad recipient
	// address, an empty subject); nothing was sent.
	StageMessage Stage = "message"
	// StageConnect: connecting, TLS, EHLO or AUTH.
	StageConnect Stage = "connect"
	// StageMail: MAIL FROM.
	StageMail Stage = "mail"
	// StageRcpt: RCPT TO.
	StageRcpt Stage = "rcpt"
	// StageData: DATA, the message, and the answer to its end.
	StageData Stage = "data"
)

// SendError is why a delivery failed.
type SendError struct {
	// Stage is the step that failed.
	Stage Stage
	// Code is the server's SMTP reply code, 0 when there was none (a
	// network error, a timeout, a TLS failure).
	Code int
	// Permanent means that sending the same message again cannot
	// succeed: the message is unusable, or the server answered RCPT or
	// DATA with 5xx. Everything else is temporary: a 4xx, no answer, and
	// also a 5xx while connecting or authenticating or at MAIL FROM,
	// which concerns the configuration rather than this message.
	Permanent bool
	// Err is the underlying error.
	Err error
}

func (e *SendError) Error() string {
	return fmt.Sprintf("mail: %s: %v", e.Stage, e.Err)
}

func (e *SendError) Unwrap() error { return e.Err }

// IsPermanent reports whether err is a *SendError that retrying cannot
// cure. A nil error, and any other error, is not permanent.
func IsPermanent(err error) bool {
	var se *SendError
	return errors.As(err, &se) && se.Permanent
}

// session is what a delivery learnt about the server, for Probe.
type session struct {
	addr       string
	connected  bool
	tlsVersion uint16 // 0 without TLS
	authed     bool
	reply      string // the server's answer to the message
}

// Send delivers msg. Its error is a *SendError; see IsPermanent.
func (m *Mailer) Send(ctx context.Context, msg Message) error {
	_, err := m.deliver(ctx, msg)
	return err
}

func (m *Mailer) deliver(ctx context.Context, msg Message) (session, error) {
	s := session{addr: m.ep.Addr()}
	gm, err := compose(m.from, m.domain, msg, time.Now())
	if err != nil {
		return s, &SendError{Stage: StageMessage, Permanent: true, Err: err}
	}

	ctx, cancel := context.WithTimeout(ctx, m.sendTimeout)
	defer cancel()
	var conn net.Conn
	// The dial runs inside DialToSMTPClientWithContext, on this
	// goroutine. Closing the connection when ctx ends bounds the whole
	// delivery, whatever go-mail's per-command deadlines.
	dial := func(dctx context.Context, network, addr string) (net.Conn, error) {
		d := net.Dialer{Timeout: m.dialTimeout}
		c, err := d.DialContext(dctx, network, addr)
		if err != nil {
			return nil, err
		}
		raw := c
		stop := context.AfterFunc(ctx, func() { raw.Close() })
		if m.ep.ImplicitTLS {
			tc := tls.Client(c, m.tlsConf)
			if err := tc.HandshakeContext(dctx); err != nil {
				stop()
				raw.Close()
				return nil, err
			}
			c = tc
		}
		conn = c
		return c, nil
	}
	client, err := gomail.NewClient(m.ep.Host, m.clientOptions(dial)...)
	if err != nil {
		return s, &SendError{Stage: StageConnect, Err: err}
	}
	sc, err := client.DialToSMTPClientWithContext(ctx)
	if conn != nil {
		// go-mail leaves the connection open when EHLO, STARTTLS or
		// AUTH fails; it is closed here in every case.
		defer conn.Close()
	}
	if err != nil {
		return s, m.failure(ctx, StageConnect, 0, err)
	}
	s.connected = true
	if st, err := sc.GetTLSConnectionState(); err == nil {
		s.tlsVersion = st.Version
	}
	s.authed = m.ep.Username != ""

	err = client.SendWithSMTPClient(sc, gm)
	if gm.IsDelivered() {
		// Accepted: a failure after that (RSET) must not make the
		// caller send the mail again.
		s.reply = gm.ServerResponse()
		_ = client.CloseWithSMTPClient(sc)
		return s, nil
	}
	stage, code := StageData, 0
	var gse *gomail.SendError
	if errors.As(err, &gse) {
		code = gse.ErrorCode()
		switch gse.Reason {
		case gomail.ErrConnCheck:
			stage = StageConnect
		case gomail.ErrSMTPMailFrom:
			stage = StageMail
		case gomail.ErrSMTPRcptTo:
			stage = StageRcpt
		case gomail.ErrGetSender, gomail.ErrGetRcpts:
			stage = StageMessage
		}
	}
	return s, m.failure(ctx, stage, code, err)
}

// failure classifies err (see SendError.Permanent).
func (m *Mailer) failure(ctx context.Context, stage Stage, code int, err error) *SendError {
	if code == 0 {
		code = replyCode(err)
	}
	switch cerr := ctx.Err(); {
	case errors.Is(cerr, context.Canceled):
		err = fmt.Errorf("%w: %v", cerr, err)
	case cerr != nil || errors.Is(err, os.ErrDeadlineExceeded):
		// go-mail's per-command deadlines are the send timeout too.
		err = fmt.Errorf("%w: no answer within the send timeout of %v: %v", context.DeadlineExceeded, m.sendTimeout, err)
	}
	permanent := code >= 500 && code < 600 && (stage == StageRcpt || stage == StageData)
	if stage == StageMessage {
		permanent = true
	}
	return &SendError{Stage: stage, Code: code, Permanent: permanent, Err: err}
}

// replyCode is the code of the server reply in err's chain, 0 if none.
func replyCode(err error) int {
	var te *textproto.Error
	if errors.As(err, &te) {
		return te.Code
	}
	return 0
}

// clientOptions is the go-mail configuration: the TLS policy (see the
// package doc), AUTH when credentials are given, the timeouts.
func (m *Mailer) clientOptions(dial gomail.DialContextFunc) []gomail.Option {
	opts := []gomail.Option{
		gomail.WithPort(m.ep.Port),
		gomail.WithTimeout(m.sendTimeout),
		gomail.WithTLSConfig(m.tlsConf),
		gomail.WithDialContextFunc(dial),
	}
	switch {
	case m.ep.ImplicitTLS:
		// The dial function has already made the connection TLS.
		opts = append(opts, gomail.WithTLSPolicy(gomail.NoTLS))
	case m.ep.Username != "":
		// Credentials never go over a connection without TLS.
		opts = append(opts, gomail.WithTLSPolicy(gomail.TLSMandatory))
	default:
		opts = append(opts, gomail.WithTLSPolicy(gomail.TLSOpportunistic))
	}
	if m.ep.Username != "" {
		opts = append(opts,
			gomail.WithUsername(m.ep.Username),
			gomail.WithPassword(m.ep.Password),
			gomail.WithOpportunisticSMTPAuth(gomail.SMTPAuthPlain, gomail.SMTPAuthLogin),
		)
	}
	return opts
}

// Probe sends the test mail (kind "test") to the address to and returns
// what happened in one line for an operator: the server, TLS and its
// version, whether it authenticated, the server's answer. The line never
// holds the password. On failure it says how far the session got, and
// the error is the *SendError.
func (m *Mailer) Probe(ctx context.Context, to string) (string, error) {
	site := m.from.Name
	if site == "" {
		site = m.domain
	}
	msg, err := m.Render(KindTest, Data{SiteName: site, Email: to})
	if err != nil {
		return "", err
	}
	s, err := m.deliver(ctx, msg)
	var b strings.Builder
	if !s.connected {
		fmt.Fprintf(&b, "%s: no SMTP session", m.ep)
		if err != nil {
			fmt.Fprintf(&b, ": %v", err)
		}
		return b.String(), err
	}
	fmt.Fprintf(&b, "connected to %s; ", s.addr)
	switch {
	case s.tlsVersion == 0:
		b.WriteString("TLS: no; ")
	case m.ep.ImplicitTLS:
		fmt.Fprintf(&b, "TLS: yes (%s, implicit); ", tls.VersionName(s.tlsVersion))
	default:
		fmt.Fprintf(&b, "TLS: yes (%s, STARTTLS); ", tls.VersionName(s.tlsVersion))
	}
	if s.authed {
		fmt.Fprintf(&b, "authenticated: yes, as %q; ", m.ep.Username)
	} else {
		b.WriteString("authenticated: no; ")
	}
	if err != nil {
		fmt.Fprintf(&b, "refused: %v", err)
		return b.String(), err
	}
	fmt.Fprintf(&b, "accepted for %s: %q", msg.To, s.reply)
	return b.String(), nil
}
