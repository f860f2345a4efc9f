package mail

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	netmail "net/mail"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Default timeouts, used when the Config leaves them zero.
const (
	DefaultDialTimeout = 10 * time.Second
	DefaultSendTimeout = 30 * time.Second
)

// Config is the outgoing-mail configuration.
type Config struct {
	// URL is the SMTP server:
	//   smtp://[user:pass@]host[:port]   port 587 by default; STARTTLS when
	//                                    the server offers it, required
	//                                    when credentials are given
	//   smtps://[user:pass@]host[:port]  port 465 by default; TLS from the
	//                                    first byte
	// User and password are percent-decoded (a password containing
	// / ? # @ or : must be percent-encoded). The password never appears
	// in an error, a log line or Endpoint.String.
	URL string
	// From is the sender, an RFC 5322 address with an optional display
	// name, such as `Example <no-reply@example.com>`. Its domain also
	// names the Message-IDs.
	From string
	// DialTimeout bounds the TCP connect; DefaultDialTimeout when zero.
	DialTimeout time.Duration
	// SendTimeout bounds one whole delivery (connect, TLS, AUTH, the
	// message, QUIT); DefaultSendTimeout when zero.
	SendTimeout time.Duration
	// TLSConfig, when set, is the base of every TLS connection (tests
	// put their RootCAs here). ServerName defaults to the URL's host and
	// MinVersion to TLS 1.2.
	TLSConfig *tls.Config
	// TemplateDir, when set, is a directory whose files replace the
	// built-in templates of the same name (see the package doc).
	TemplateDir string
}

// Endpoint is a parsed SMTP URL.
type Endpoint struct {
	// Host is the server's host name or IP address (no brackets).
	Host string
	// Port is the TCP port.
	Port int
	// ImplicitTLS is true for smtps:// (TLS from the first byte) and
	// false for smtp:// (STARTTLS).
	ImplicitTLS bool
	// Username and Password are the AUTH credentials, both empty for none.
	Username string
	Password string
}

// Addr is host:port.
func (e Endpoint) Addr() string {
	return net.JoinHostPort(e.Host, strconv.Itoa(e.Port))
}

// String is the URL without the password, safe to log:
// smtp://user@host:port.
func (e Endpoint) String() string {
	u := url.URL{Scheme: "smtp", Host: e.Addr()}
	if e.ImplicitTLS {
		u.Scheme = "smtps"
	}
	if e.Username != "" {
		u.User = url.User(e.Username)
	}
	return u.String()
}

// GoString keeps the password out of %#v.
func (e Endpoint) GoString() string { return "mail.Endpoint(" + e.String() + ")" }

// ParseURL parses an SMTP URL (see Config.URL). Its errors never contain
// the password.
func ParseURL(raw string) (Endpoint, error) {
	if strings.TrimSpace(raw) == "" {
		return Endpoint{}, errors.New("mail: the SMTP URL is empty")
	}
	// url.Parse's errors quote the URL, or a piece of it that can be
	// part of the password: none of their text is passed on.
	u, err := url.Parse(raw)
	if err != nil {
		return Endpoint{}, errors.New("mail: the SMTP URL cannot be parsed; the form is smtp://[user:pass@]host[:port] " +
			"or smtps://[user:pass@]host[:port], and a user name or password containing / ? # @ or : must be percent-encoded")
	}
	var e Endpoint
	switch strings.ToLower(u.Scheme) {
	case "smtp":
		e.Port = 587
	case "smtps":
		e.Port, e.ImplicitTLS = 465, true
	case "":
		return Endpoint{}, errors.New("mail: the SMTP URL has no scheme: it must start with smtp:// or smtps://")
	default:
		return Endpoint{}, fmt.Errorf("mail: the SMTP URL's scheme %q is not supported: use smtp:// (STARTTLS) or smtps:// (implicit TLS)", u.Scheme)
	}
	if u.Opaque != "" {
		return Endpoint{}, errors.New("mail: the SMTP URL must have the form smtp://host[:port] (the // is missing)")
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return Endpoint{}, errors.New("mail: the SMTP URL must not have a path, query or fragment " +
			"(a password containing / ? or # must be percent-encoded)")
	}
	e.Host = u.Hostname()
	if e.Host == "" {
		return Endpoint{}, errors.New("mail: the SMTP URL has no host")
	}
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return Endpoint{}, fmt.Errorf("mail: the SMTP URL's port %q is not a number from 1 to 65535", p)
		}
		e.Port = n
	} else if strings.HasSuffix(u.Host, ":") {
		return Endpoint{}, errors.New("mail: the SMTP URL's port is empty")
	}
	if u.User != nil {
		e.Username = u.User.Username()
		e.Password, _ = u.User.Password()
		switch {
		case e.Username == "":
			return Endpoint{}, errors.New("mail: the SMTP URL has a password but no user name")
		case e.Password == "":
			return Endpoint{}, errors.New("mail: the SMTP URL has a user name but no password")
		}
	}
	return e, nil
}

// Validate checks the configuration without connecting: the URL, the
// From address and the timeouts. Templates are checked by New and
// LoadTemplates.
func (c Config) Validate() error {
	if _, err := ParseURL(c.URL); err != nil {
		return err
	}
	if _, _, err := parseFrom(c.From); err != nil {
		return err
	}
	if c.DialTimeout < 0 {
		return fmt.Errorf("mail: the dial timeout %v is negative", c.DialTimeout)
	}
	if c.SendTimeout < 0 {
		return fmt.Errorf("mail: the send timeout %v is negative", c.SendTimeout)
	}
	return nil
}

// parseFrom parses the sender and returns it with the ASCII form of its
// domain.
func parseFrom(s string) (*netmail.Address, string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, "", errors.New("mail: the From address is empty")
	}
	if strings.ContainsFunc(s, isControl) {
		return nil, "", errors.New("mail: the From address contains a control character")
	}
	a, err := netmail.ParseAddress(s)
	if err != nil {
		return nil, "", fmt.Errorf("mail: the From address %q is not an RFC 5322 address such as `Example <no-reply@example.com>`: %w", s, err)
	}
	addr, domain, err := checkAddress(a.Address)
	if err != nil {
		return nil, "", fmt.Errorf("mail: the From address: %w", err)
	}
	return &netmail.Address{Name: headerText(a.Name, maxNameRunes), Address: addr}, domain, nil
}
