package mail

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	netmail "net/mail"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	gomail "github.com/wneessen/go-mail"
	"golang.org/x/net/idna"
)

// Header text limits, in runes: a display name or a subject longer than
// this is cut (with an ellipsis), which also keeps every header line
// far below SMTP's 998 characters.
const (
	maxNameRunes    = 200
	maxSubjectRunes = 250
)

// Message is one mail to one recipient.
type Message struct {
	// To is the recipient's bare address, local@domain. An address with
	// a control character, a space, a display name or angle brackets is
	// refused.
	To string
	// ToName is the recipient's display name, "" for none. Control
	// characters and line breaks become spaces.
	ToName string
	// Subject is the subject line. Control characters and line breaks
	// become spaces.
	Subject string
	// Text is the text/plain body.
	Text string
	// HTML is the text/html body, "" for a text-only mail; with both,
	// the mail is multipart/alternative.
	HTML string
}

// compose builds the go-mail message: From, To, Subject, Date, a
// Message-ID in the sender's domain, and the bodies (UTF-8,
// quoted-printable).
func compose(from *netmail.Address, domain string, msg Message, now time.Time) (*gomail.Msg, error) {
	to, _, err := checkAddress(msg.To)
	if err != nil {
		return nil, fmt.Errorf("mail: the recipient: %w", err)
	}
	subject := headerText(msg.Subject, maxSubjectRunes)
	if subject == "" {
		return nil, errors.New("mail: the subject is empty")
	}
	if msg.Text == "" {
		return nil, errors.New("mail: the text body is empty")
	}
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return nil, fmt.Errorf("mail: Message-ID: %w", err)
	}

	m := gomail.NewMsg(gomail.WithNoDefaultUserAgent())
	m.FromMailAddress(&netmail.Address{Name: from.Name, Address: from.Address})
	m.ToMailAddress(&netmail.Address{Name: headerText(msg.ToName, maxNameRunes), Address: to})
	m.Subject(subject)
	m.SetDateWithValue(now)
	m.SetMessageIDWithValue(hex.EncodeToString(id) + "@" + domain)
	m.SetBodyString(gomail.TypeTextPlain, msg.Text)
	if msg.HTML != "" {
		m.AddAlternativeString(gomail.TypeTextHTML, msg.HTML)
	}
	return m, nil
}

// checkAddress accepts a bare address (local@domain) and returns it with
// an internationalised domain in its ASCII (punycode) form, and that
// domain.
func checkAddress(s string) (addr, domain string, err error) {
	if s == "" {
		return "", "", errors.New("no address")
	}
	if strings.ContainsFunc(s, func(r rune) bool { return isControl(r) || unicode.IsSpace(r) }) {
		return "", "", fmt.Errorf("the address %q contains a control character or a space", s)
	}
	if !utf8.ValidString(s) {
		return "", "", fmt.Errorf("the address %q is not valid UTF-8", s)
	}
	a, err := netmail.ParseAddress(s)
	if err != nil || a.Name != "" || a.Address != s {
		return "", "", fmt.Errorf("%q is not a bare email address (local@domain)", s)
	}
	at := strings.LastIndexByte(s, '@')
	local, domain := s[:at], s[at+1:]
	if strings.HasPrefix(domain, "[") {
		return "", "", fmt.Errorf("the address %q has an IP literal for a domain", s)
	}
	if isASCII(domain) {
		return s, domain, nil
	}
	ascii, err := idna.Lookup.ToASCII(domain)
	if err != nil {
		return "", "", fmt.Errorf("the domain of %q is not a valid internationalised domain name", s)
	}
	return local + "@" + ascii, ascii, nil
}

// headerText makes s safe for a header: every control character, line
// break or other space becomes one plain space, runs of them collapse,
// the ends are trimmed, invalid UTF-8 becomes U+FFFD, and at most max
// runes are kept.
func headerText(s string, max int) string {
	var b strings.Builder
	n, space := 0, false
	for _, r := range s {
		if isControl(r) || unicode.IsSpace(r) {
			space = true
			continue
		}
		if n == max {
			b.WriteRune('…')
			break
		}
		if space && b.Len() > 0 {
			b.WriteByte(' ')
		}
		space = false
		b.WriteRune(r) // an invalid byte arrives here as utf8.RuneError
		n++
	}
	return b.String()
}

// isControl reports C0 and C1 controls and DEL, plus the Unicode line and
// paragraph separators.
func isControl(r rune) bool {
	return unicode.IsControl(r) || r == '\u2028' || r == '\u2029'
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}
