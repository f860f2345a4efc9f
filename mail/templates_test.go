package mail

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRenderKinds: every built-in kind renders a subject, a text and an
// HTML body from its data, and the HTML escapes what it shows.
func TestRenderKinds(t *testing.T) {
	tm, err := LoadTemplates("")
	if err != nil {
		t.Fatal(err)
	}
	d := Data{
		SiteName: "Docs & Co", Name: "<b>Ada</b>", Email: "ada@example.com",
		Link: "https://app.example.com/accounts/reset-password#token=t0k", Expiry: 30 * time.Minute,
	}
	for _, tc := range []struct {
		kind     Kind
		subject  string
		withLink bool
	}{
		{KindVerifyEmail, "Confirm your email address for Docs & Co", true},
		{KindPasswordReset, "Reset your Docs & Co password", true},
		{KindPasswordChanged, "Your Docs & Co password was changed", false},
		{KindTest, "Test message from Docs & Co", false},
	} {
		msg, err := tm.Render(tc.kind, d)
		if err != nil {
			t.Fatalf("%s: %v", tc.kind, err)
		}
		if msg.To != "ada@example.com" || msg.ToName != "<b>Ada</b>" || msg.Subject != tc.subject {
			t.Errorf("%s: to %q %q, subject %q", tc.kind, msg.ToName, msg.To, msg.Subject)
		}
		if strings.Contains(msg.HTML, "<b>Ada</b>") || strings.Contains(msg.HTML, "Docs & Co") {
			t.Errorf("%s: the HTML does not escape its data:\n%s", tc.kind, msg.HTML)
		}
		if !strings.Contains(msg.HTML, "Docs &amp; Co") || !strings.Contains(msg.Text, "Docs & Co") {
			t.Errorf("%s: site name missing:\n%s\n%s", tc.kind, msg.Text, msg.HTML)
		}
		hasLink := strings.Contains(msg.Text, d.Link) && strings.Contains(msg.HTML, `href="`+d.Link+`"`) &&
			strings.Contains(msg.Text, "30 minutes")
		if hasLink != tc.withLink {
			t.Errorf("%s: link and expiry shown %v, want %v:\n%s\n%s", tc.kind, hasLink, tc.withLink, msg.Text, msg.HTML)
		}
	}
	if _, err := tm.Render("welcome", d); err == nil || err.Error() != `mail: no templates for the kind "welcome"` {
		t.Errorf("unknown kind: %v", err)
	}
}

// TestRenderUnsafeLink: html/template keeps a javascript: link out of
// an href.
func TestRenderUnsafeLink(t *testing.T) {
	tm, err := LoadTemplates("")
	if err != nil {
		t.Fatal(err)
	}
	msg, err := tm.Render(KindPasswordReset, Data{SiteName: "S", Email: "a@example.com", Link: "javascript:alert(1)", Expiry: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(msg.HTML, `href="javascript:`) {
		t.Errorf("HTML:\n%s", msg.HTML)
	}
}

func writeFile(t *testing.T, dir, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestTemplateOverride: a file in the directory replaces the built-in
// one of the same name; the others stay built in.
func TestTemplateOverride(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "verify_email.subject.tmpl", "Welcome to {{.SiteName}}, {{.Name}}\n")
	writeFile(t, dir, "password_reset.html.tmpl", `<p>Reset: <a href="{{.Link}}">here</a> ({{.ExpiresIn}})</p>`)
	writeFile(t, dir, "README.txt", "not a template")
	m, err := New(Config{URL: "smtp://127.0.0.1:2525", From: "a@example.com", TemplateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	d := Data{SiteName: "Docs", Name: "Ada", Email: "ada@example.com", Link: "https://app.example.com/x", Expiry: 2 * time.Hour}
	msg, err := m.Render(KindVerifyEmail, d)
	if err != nil {
		t.Fatal(err)
	}
	if msg.Subject != "Welcome to Docs, Ada" || !strings.HasPrefix(msg.Text, "Hello Ada,") {
		t.Errorf("subject %q, text %q", msg.Subject, msg.Text)
	}
	msg, err = m.Render(KindPasswordReset, d)
	if err != nil {
		t.Fatal(err)
	}
	if msg.HTML != `<p>Reset: <a href="https://app.example.com/x">here</a> (2 hours)</p>` || msg.Subject != "Reset your Docs password" {
		t.Errorf("subject %q, HTML %q", msg.Subject, msg.HTML)
	}
}

// TestBrokenOverride: a broken override fails at load, naming the file.
func TestBrokenOverride(t *testing.T) {
	for _, tc := range []struct {
		name, content, want string
	}{
		{"verify_email.txt.tmpl", "Hello {{.Name", "verify_email.txt.tmpl"},
		{"password_reset.html.tmpl", "<a href={{.Link}}>{{.Nope}}</a>", "password_reset.html.tmpl"},
		{"test.subject.tmpl", "{{if .Name}}", "test.subject.tmpl"},
		{"password_changed.subject.tmpl", "  \n", "the subject renders empty"},
		{"verify-email.txt.tmpl", "Hello", "verify-email.txt.tmpl is not a known template name"},
	} {
		dir := t.TempDir()
		writeFile(t, dir, tc.name, tc.content)
		_, err := New(Config{URL: "smtp://127.0.0.1:2525", From: "a@example.com", TemplateDir: dir})
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "mail: ") {
			t.Errorf("%s %q: %v, want an error naming %q", tc.name, tc.content, err, tc.want)
		}
	}
	_, err := LoadTemplates(filepath.Join(t.TempDir(), "missing"))
	if err == nil || !strings.Contains(err.Error(), "mail: template directory: ") {
		t.Errorf("missing directory: %v", err)
	}
}

func TestDurationWords(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0:                                  "",
		-time.Minute:                       "",
		time.Second:                        "1 second",
		45 * time.Second:                   "45 seconds",
		time.Minute:                        "1 minute",
		90 * time.Second:                   "2 minutes",
		30 * time.Minute:                   "30 minutes",
		time.Hour:                          "1 hour",
		90 * time.Minute:                   "1 hour 30 minutes",
		24 * time.Hour:                     "24 hours",
		25*time.Hour + time.Minute:         "25 hours 1 minute",
		48 * time.Hour:                     "2 days",
		7 * 24 * time.Hour:                 "7 days",
		7*24*time.Hour + 20*time.Second:    "7 days",
		2*time.Hour + 59*time.Second:       "2 hours 1 minute",
		2*time.Hour + 29*time.Second:       "2 hours",
		time.Minute - time.Nanosecond:      "1 minute",
		time.Duration(1) * time.Nanosecond: "1 second",
	} {
		if got := (Data{Expiry: d}).ExpiresIn(); got != want {
			t.Errorf("%v: %q, want %q", d, got, want)
		}
	}
}
