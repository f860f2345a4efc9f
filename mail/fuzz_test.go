package mail

import (
	"bytes"
	"mime"
	netmail "net/mail"
	"strings"
	"testing"
	"time"
)

// topHeaders are the only header fields a composed mail may have.
var topHeaders = map[string]bool{
	"Date": true, "MIME-Version": true, "Message-ID": true, "Subject": true, "From": true, "To": true,
	"Content-Type": true, "Content-Transfer-Encoding": true,
}

// FuzzRenderMessage runs any site name, display name, link and address
// through every kind's templates and the message builder. It never
// panics; a recipient is refused exactly when it is not a bare address;
// otherwise the header holds only the expected fields, each once, every
// line CRLF-terminated and under 998 characters, the To is the given
// address alone, and the display name and subject read back as the
// cleaned text.
func FuzzRenderMessage(f *testing.F) {
	f.Add("Example", "Ada Lovelace", "https://app.example.com/accounts/verify-email#token=abc", "ada@example.com")
	f.Add("Ex\r\nBcc: eve@example.org", "Eve\r\nBcc: victim@example.org\r\n\r\nbody", "https://x/\r\nX: y", "ada@example.com")
	f.Add("Bücher — ✓", "Zoë \"Jr.\" \\ <x@y>", "javascript:alert(1)", "bob@bücher.example")
	f.Add("=?utf-8?q?X-Injected:=0D=0A?=", "=?utf-8?b?RXZlDQpCY2M6IHZAZXhhbXBsZS5vcmc=?=", "", "ada@example.com\r\nRCPT TO:<eve@example.org>")
	f.Add(strings.Repeat("x", 2000), strings.Repeat("é ", 600), strings.Repeat("a", 5000), "a@b")
	f.Add("\u2028\u0085\x00\x7f\xff", "\t\v\f", "\n", "<ada@example.com>")
	tm, err := LoadTemplates("")
	if err != nil {
		f.Fatal(err)
	}
	from, domain, err := parseFrom("Example Site <no-reply@example.com>")
	if err != nil {
		f.Fatal(err)
	}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	f.Fuzz(func(t *testing.T, site, name, link, to string) {
		wantTo, _, addrErr := checkAddress(to)
		for _, kind := range Kinds() {
			msg, err := tm.Render(kind, Data{SiteName: site, Name: name, Email: to, Link: link, Expiry: 30 * time.Minute})
			if err != nil {
				t.Fatalf("%s: render: %v", kind, err)
			}
			gm, err := compose(from, domain, msg, now)
			if (err != nil) != (addrErr != nil) {
				t.Fatalf("%s: compose error %v, address error %v", kind, err, addrErr)
			}
			if err != nil {
				continue
			}
			var raw bytes.Buffer
			if _, err := gm.WriteTo(&raw); err != nil {
				t.Fatalf("%s: write: %v", kind, err)
			}
			checkHeaderLines(t, raw.Bytes())
			parsed, err := netmail.ReadMessage(bytes.NewReader(raw.Bytes()))
			if err != nil {
				t.Fatalf("%s: the message does not parse: %v\n%q", kind, err, raw.String())
			}
			tos, err := parsed.Header.AddressList("To")
			if err != nil || len(tos) != 1 || tos[0].Address != wantTo || tos[0].Name != headerText(name, maxNameRunes) {
				t.Fatalf("%s: To %q (%v), want %q <%s>", kind, parsed.Header.Get("To"), err, headerText(name, maxNameRunes), wantTo)
			}
			rcpts, err := gm.GetRecipients()
			if err != nil || len(rcpts) != 1 || rcpts[0] != "<"+wantTo+">" {
				t.Fatalf("%s: envelope recipients %q (%v), want %q", kind, rcpts, err, wantTo)
			}
			subject := parsed.Header.Get("Subject")
			if !isASCII(msg.Subject) {
				if subject, err = new(mime.WordDecoder).DecodeHeader(subject); err != nil {
					t.Fatalf("%s: Subject %q: %v", kind, parsed.Header.Get("Subject"), err)
				}
			}
			if subject != msg.Subject || msg.Subject != headerText(msg.Subject, maxSubjectRunes+1) {
				t.Fatalf("%s: Subject reads %q, rendered %q", kind, subject, msg.Subject)
			}
		}
	})
}

// checkHeaderLines fails unless every header line ends in CRLF, holds no
// other CR or LF, stays under 998 characters, and is either a
// continuation or one of topHeaders, each present once.
func checkHeaderLines(t *testing.T, raw []byte) {
	t.Helper()
	head, _, ok := bytes.Cut(raw, []byte("\r\n\r\n"))
	if !ok {
		t.Fatalf("no end of header: %q", raw)
	}
	seen := map[string]bool{}
	for _, line := range strings.Split(string(head), "\r\n") {
		if strings.ContainsAny(line, "\r\n") {
			t.Fatalf("a bare CR or LF in header line %q", line)
		}
		if len(line) > 998 {
			t.Fatalf("header line of %d characters", len(line))
		}
		if strings.HasPrefix(line, " ") || strings.HasPrefix(line, "\t") {
			continue
		}
		key, _, _ := strings.Cut(line, ":")
		if !topHeaders[key] || seen[key] {
			t.Fatalf("unexpected header line %q in\n%s", line, head)
		}
		seen[key] = true
	}
}
