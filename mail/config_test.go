package mail

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		raw  string
		want Endpoint
	}{
		{"smtp://mail.example.com", Endpoint{Host: "mail.example.com", Port: 587}},
		{"smtps://mail.example.com", Endpoint{Host: "mail.example.com", Port: 465, ImplicitTLS: true}},
		{"SMTP://mail.example.com:2525", Endpoint{Host: "mail.example.com", Port: 2525}},
		{"smtp://127.0.0.1:25/", Endpoint{Host: "127.0.0.1", Port: 25}},
		{"smtps://[::1]:4650", Endpoint{Host: "::1", Port: 4650, ImplicitTLS: true}},
		{"smtp://apikey:s%2Fe%3Ac%40r%23t@smtp.example.com:587",
			Endpoint{Host: "smtp.example.com", Port: 587, Username: "apikey", Password: "s/e:c@r#t"}},
		{"smtp://user%40example.com:pw@smtp.example.com",
			Endpoint{Host: "smtp.example.com", Port: 587, Username: "user@example.com", Password: "pw"}},
	} {
		got, err := ParseURL(tc.raw)
		if err != nil || got != tc.want {
			t.Errorf("ParseURL(%q) = %#v, %v; want %+v", tc.raw, got, err, tc.want.String())
		}
	}
}

// TestParseURLErrors: each mistake has its own clear message, and none
// quotes the password, even when the mistake cuts the password in two.
func TestParseURLErrors(t *testing.T) {
	for _, tc := range []struct{ raw, want string }{
		{"", "mail: the SMTP URL is empty"},
		{"mail.example.com:587", `mail: the SMTP URL's scheme "mail.example.com" is not supported: use smtp:// (STARTTLS) or smtps:// (implicit TLS)`},
		{"//mail.example.com", "mail: the SMTP URL has no scheme: it must start with smtp:// or smtps://"},
		{"http://mail.example.com", `mail: the SMTP URL's scheme "http" is not supported: use smtp:// (STARTTLS) or smtps:// (implicit TLS)`},
		{"smtp:mail.example.com", "mail: the SMTP URL must have the form smtp://host[:port] (the // is missing)"},
		{"smtp://", "mail: the SMTP URL has no host"},
		{"smtp://:587", "mail: the SMTP URL has no host"},
		{"smtp://mail.example.com:", "mail: the SMTP URL's port is empty"},
		{"smtp://mail.example.com:0", `mail: the SMTP URL's port "0" is not a number from 1 to 65535`},
		{"smtp://mail.example.com:70000", `mail: the SMTP URL's port "70000" is not a number from 1 to 65535`},
		{"smtp://mail.example.com/x", "mail: the SMTP URL must not have a path, query or fragment (a password containing / ? or # must be percent-encoded)"},
		{"smtp://mail.example.com?tls=off", "mail: the SMTP URL must not have a path, query or fragment (a password containing / ? or # must be percent-encoded)"},
		{"smtp://user:Zq9#x@mail.example.com", "mail: the SMTP URL cannot be parsed; the form is smtp://[user:pass@]host[:port] or smtps://[user:pass@]host[:port], and a user name or password containing / ? # @ or : must be percent-encoded"},
		{"smtp://user:Zq/9x@mail.example.com", "mail: the SMTP URL cannot be parsed; the form is smtp://[user:pass@]host[:port] or smtps://[user:pass@]host[:port], and a user name or password containing / ? # @ or : must be percent-encoded"},
		{"smtp://user:Zq9%zz@mail.example.com", "mail: the SMTP URL cannot be parsed; the form is smtp://[user:pass@]host[:port] or smtps://[user:pass@]host[:port], and a user name or password containing / ? # @ or : must be percent-encoded"},
		{"smtp://user@mail.example.com", "mail: the SMTP URL has a user name but no password"},
		{"smtp://user:@mail.example.com", "mail: the SMTP URL has a user name but no password"},
		{"smtp://:Zq9x@mail.example.com", "mail: the SMTP URL has a password but no user name"},
	} {
		_, err := ParseURL(tc.raw)
		if err == nil || err.Error() != tc.want {
			t.Errorf("ParseURL(%q): %v\nwant %s", tc.raw, err, tc.want)
			continue
		}
		if strings.Contains(err.Error(), "Zq") {
			t.Errorf("ParseURL(%q) quotes the password: %v", tc.raw, err)
		}
		if verr := (Config{URL: tc.raw, From: "a@example.com"}).Validate(); verr == nil || verr.Error() != tc.want {
			t.Errorf("Validate with %q: %v", tc.raw, verr)
		}
	}
}

// TestEndpointHidesPassword: every way of printing an Endpoint leaves
// the password out.
func TestEndpointHidesPassword(t *testing.T) {
	e, err := ParseURL("smtps://user:hunter2@mail.example.com")
	if err != nil {
		t.Fatal(err)
	}
	if e.String() != "smtps://user@mail.example.com:465" {
		t.Errorf("String() = %q", e.String())
	}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		if s := fmt.Sprintf(verb, e); strings.Contains(s, "hunter2") {
			t.Errorf("%s prints the password: %s", verb, s)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	const url = "smtp://mail.example.com"
	for _, tc := range []struct {
		c    Config
		want string
	}{
		{Config{URL: url, From: "Example <no-reply@example.com>"}, ""},
		{Config{URL: url, From: "no-reply@example.com", DialTimeout: time.Second, SendTimeout: time.Minute}, ""},
		{Config{URL: url}, "mail: the From address is empty"},
		{Config{URL: url, From: "no-reply"}, `mail: the From address "no-reply" is not an RFC 5322 address such as ` + "`Example <no-reply@example.com>`: mail: missing '@' or angle-addr"},
		{Config{URL: url, From: "Ex\r\nBcc: x@example.org <no-reply@example.com>"}, "mail: the From address contains a control character"},
		{Config{URL: url, From: "a@example.com, b@example.com"}, `mail: the From address "a@example.com, b@example.com" is not an RFC 5322 address such as ` + "`Example <no-reply@example.com>`: mail: expected single address, got \", b@example.com\""},
		{Config{URL: url, From: "a@example.com", DialTimeout: -time.Second}, "mail: the dial timeout -1s is negative"},
		{Config{URL: url, From: "a@example.com", SendTimeout: -time.Second}, "mail: the send timeout -1s is negative"},
	} {
		err := tc.c.Validate()
		if got := fmt.Sprint(err); (err == nil) != (tc.want == "") || (err != nil && got != tc.want) {
			t.Errorf("Validate(%+v) = %v\nwant %s", tc.c, err, tc.want)
		}
	}
}
