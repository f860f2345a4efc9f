package mail

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	htmltemplate "html/template"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	texttemplate "text/template"
	"time"
)

// Kind names a mail the gateway sends.
type Kind string

// The kinds of mail, each with three templates (see the package doc).
const (
	KindVerifyEmail     Kind = "verify_email"
	KindPasswordReset   Kind = "password_reset"
	KindPasswordChanged Kind = "password_changed"
	KindTest            Kind = "test"
)

// Kinds lists every kind, in a stable order.
func Kinds() []Kind {
	return []Kind{KindVerifyEmail, KindPasswordReset, KindPasswordChanged, KindTest}
}

// Template file suffixes: <kind>.subject.tmpl (text/template, one line),
// <kind>.txt.tmpl (text/template) and <kind>.html.tmpl (html/template).
const (
	suffixSubject = ".subject.tmpl"
	suffixText    = ".txt.tmpl"
	suffixHTML    = ".html.tmpl"
)

//go:embed templates/*.tmpl
var builtin embed.FS

// Data is what a template sees.
type Data struct {
	// SiteName is the site or app name the mail speaks for.
	SiteName string
	// Name is the recipient's display name, "" when unknown.
	Name string
	// Email is the recipient's address; Render sends the mail there.
	Email string
	// Link is the link to follow (verification, reset), "" for kinds
	// without one.
	Link string
	// Expiry is how long Link works; templates show it as .ExpiresIn.
	Expiry time.Duration
}

// ExpiresIn is Expiry in words: "30 minutes", "24 hours", "2 days",
// "1 hour 30 minutes"; "" when Expiry is not positive.
func (d Data) ExpiresIn() string {
	return durationWords(d.Expiry)
}

// sampleData is what the templates are tried with at load, so that a
// template naming a field that does not exist fails at start.
var sampleData = Data{
	SiteName: "Example", Name: "Ada Lovelace", Email: "ada@example.com",
	Link: "https://app.example.com/accounts/verify-email#token=sample", Expiry: 30 * time.Minute,
}

// Templates are the parsed templates of every kind.
type Templates struct {
	kinds map[Kind]*kindTemplates
}

type kindTemplates struct {
	subject *texttemplate.Template
	text    *texttemplate.Template
	html    *htmltemplate.Template
}

// LoadTemplates parses the built-in templates and, when dir is not "",
// the files of dir that replace them (same file name). Each template is
// also executed once with sample data, so that a mistake in an override
// is an error here, naming the file, rather than at the first mail. A
// *.tmpl file in dir that is not one of the known names is an error too
// (a misspelt override would otherwise be silently ignored).
func LoadTemplates(dir string) (*Templates, error) {
	if dir != "" {
		if err := checkOverrideDir(dir); err != nil {
			return nil, err
		}
	}
	t := &Templates{kinds: map[Kind]*kindTemplates{}}
	for _, k := range Kinds() {
		kt := &kindTemplates{}
		for _, suffix := range []string{suffixSubject, suffixText, suffixHTML} {
			name := string(k) + suffix
			src, origin, err := templateSource(dir, name)
			if err != nil {
				return nil, err
			}
			if err := kt.parse(suffix, name, src); err != nil {
				return nil, fmt.Errorf("mail: template %s: %w", origin, err)
			}
		}
		if _, err := kt.render(sampleData); err != nil {
			return nil, fmt.Errorf("mail: templates of %s (%s): %w", k, overrideNames(dir, k), err)
		}
		t.kinds[k] = kt
	}
	return t, nil
}

// Render renders the mail of kind for d, addressed to d.Email (with
// d.Name as the display name).
func (t *Templates) Render(kind Kind, d Data) (Message, error) {
	kt, ok := t.kinds[kind]
	if !ok {
		return Message{}, fmt.Errorf("mail: no templates for the kind %q", kind)
	}
	msg, err := kt.render(d)
	if err != nil {
		return Message{}, fmt.Errorf("mail: render %s: %w", kind, err)
	}
	return msg, nil
}

func (kt *kindTemplates) parse(suffix, name, src string) error {
	var err error
	switch suffix {
	case suffixSubject:
		kt.subject, err = texttemplate.New(name).Option("missingkey=error").Parse(src)
	case suffixText:
		kt.text, err = texttemplate.New(name).Option("missingkey=error").Parse(src)
	case suffixHTML:
		kt.html, err = htmltemplate.New(name).Option("missingkey=error").Parse(src)
	}
	return err
}

func (kt *kindTemplates) render(d Data) (Message, error) {
	var subject, text, html bytes.Buffer
	if err := kt.subject.Execute(&subject, d); err != nil {
		return Message{}, err
	}
	if err := kt.text.Execute(&text, d); err != nil {
		return Message{}, err
	}
	if err := kt.html.Execute(&html, d); err != nil {
		return Message{}, err
	}
	msg := Message{
		To:      d.Email,
		ToName:  d.Name,
		Subject: headerText(subject.String(), maxSubjectRunes),
		Text:    text.String(),
		HTML:    html.String(),
	}
	if msg.Subject == "" {
		return Message{}, errors.New("the subject renders empty")
	}
	if strings.TrimSpace(msg.Text) == "" {
		return Message{}, errors.New("the text body renders empty")
	}
	if strings.TrimSpace(msg.HTML) == "" {
		msg.HTML = ""
	}
	return msg, nil
}

// templateSource returns the override in dir when there is one, else
// the built-in template, and where it came from.
func templateSource(dir, name string) (src, origin string, err error) {
	if dir != "" {
		path := filepath.Join(dir, name)
		b, err := os.ReadFile(path)
		if err == nil {
			return string(b), path, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", "", fmt.Errorf("mail: template override: %w", err)
		}
	}
	b, err := builtin.ReadFile("templates/" + name)
	if err != nil {
		return "", "", fmt.Errorf("mail: built-in template %s: %w", name, err)
	}
	return string(b), "built-in " + name, nil
}

func checkOverrideDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("mail: template directory: %w", err)
	}
	var known []string
	for _, k := range Kinds() {
		known = append(known, string(k)+suffixSubject, string(k)+suffixText, string(k)+suffixHTML)
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".tmpl") && !slices.Contains(known, e.Name()) {
			return fmt.Errorf("mail: template directory %s: %s is not a known template name (known: %s)",
				dir, e.Name(), strings.Join(known, ", "))
		}
	}
	return nil
}

// overrideNames names the files that make up a kind, for an error.
func overrideNames(dir string, k Kind) string {
	var names []string
	for _, suffix := range []string{suffixSubject, suffixText, suffixHTML} {
		name := string(k) + suffix
		if dir != "" {
			if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
				names = append(names, filepath.Join(dir, name))
				continue
			}
		}
		names = append(names, "built-in "+name)
	}
	return strings.Join(names, ", ")
}

// durationWords writes d in words, rounded to the minute from a minute
// on: "45 seconds", "30 minutes", "1 hour", "24 hours", "2 days",
// "1 hour 30 minutes".
func durationWords(d time.Duration) string {
	if d <= 0 {
		return ""
	}
	if secs := (d + time.Second - 1) / time.Second; secs < 60 {
		return plural(int(secs), "second")
	}
	d = d.Round(time.Minute)
	const day = 24 * time.Hour
	if d >= 2*day && d%day == 0 {
		return plural(int(d/day), "day")
	}
	h, m := int(d/time.Hour), int(d%time.Hour/time.Minute)
	switch {
	case h == 0:
		return plural(m, "minute")
	case m == 0:
		return plural(h, "hour")
	}
	return plural(h, "hour") + " " + plural(m, "minute")
}

func plural(n int, unit string) string {
	if n == 1 {
		return "1 " + unit
	}
	return strconv.Itoa(n) + " " + unit + "s"
}
