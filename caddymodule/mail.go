package caddymodule

import (
	"errors"
	"fmt"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"

	"github.com/caddyaccounts/gateway/accounts"
	"github.com/caddyaccounts/gateway/mail"
)

// The environment variables of outgoing mail (API.md).
const (
	envSMTPURL           = "SMTP_URL"
	envMailFrom          = "MAIL_FROM"
	envPublicURL         = "PUBLIC_URL"
	envMailTemplates     = "MAIL_TEMPLATES_DIR"
	envEmailVerification = "EMAIL_VERIFICATION"
)

// Mail holds outgoing mail: the verification and password-reset mails
// (see accounts.MailConfig). Without an SMTP URL no mail is sent, and
// the gateway says so at start.
type Mail struct {
	// The SMTP server: smtp://[user:pass@]host[:port] (STARTTLS when
	// offered, required with credentials; port 587) or
	// smtps://[user:pass@]host[:port] (implicit TLS; port 465).
	// Default: $SMTP_URL.
	SMTPURL string `json:"smtp_url,omitempty"`
	// The sender, such as "Example <no-reply@example.com>". Default:
	// $MAIL_FROM.
	From string `json:"from,omitempty"`
	// The site's public origin, the only source of links in mails.
	// Default: $PUBLIC_URL.
	PublicURL string `json:"public_url,omitempty"`
	// The site's name in mails. Default: the public URL's host.
	SiteName string `json:"site_name,omitempty"`
	// A directory whose <kind>.subject.tmpl, <kind>.txt.tmpl and
	// <kind>.html.tmpl files replace the built-in templates. Default:
	// $MAIL_TEMPLATES_DIR.
	TemplatesDir string `json:"templates_dir,omitempty"`
	// How long links work: verification (default 24h), reset (30m).
	VerifyEmailTTL   caddy.Duration `json:"verify_email_ttl,omitempty"`
	PasswordResetTTL caddy.Duration `json:"password_reset_ttl,omitempty"`
	// Retries: the first after RetryMin (default 30s), doubling up to
	// RetryMax (30m), until GiveUp after the request (24h).
	RetryMin caddy.Duration `json:"retry_min,omitempty"`
	RetryMax caddy.Duration `json:"retry_max,omitempty"`
	GiveUp   caddy.Duration `json:"give_up,omitempty"`
	// SendTimeout bounds one delivery (default 30s).
	SendTimeout caddy.Duration `json:"send_timeout,omitempty"`
	// Poll is how often each instance looks for due mail (default 2s).
	Poll caddy.Duration `json:"poll,omitempty"`
}

// resolveMail fills the mail options from the environment.
func (a *App) resolveMail(fill func(field *string, env string)) {
	if a.Mail == nil {
		a.Mail = new(Mail)
	}
	m := a.Mail
	fill(&m.SMTPURL, envSMTPURL)
	fill(&m.From, envMailFrom)
	fill(&m.PublicURL, envPublicURL)
	fill(&m.SiteName, "")
	fill(&m.TemplatesDir, envMailTemplates)
	fill(&a.EmailVerification, envEmailVerification)
}

// mailConfig makes the service's mail configuration, with its mailer
// when an SMTP URL is set.
func (a *App) mailConfig() (accounts.MailConfig, error) {
	m := a.Mail
	cfg := accounts.MailConfig{
		PublicURL:        m.PublicURL,
		SiteName:         m.SiteName,
		VerifyEmailTTL:   time.Duration(m.VerifyEmailTTL),
		PasswordResetTTL: time.Duration(m.PasswordResetTTL),
		GiveUpAfter:      time.Duration(m.GiveUp),
		RetryMin:         time.Duration(m.RetryMin),
		RetryMax:         time.Duration(m.RetryMax),
		Poll:             time.Duration(m.Poll),
	}
	switch a.EmailVerification {
	case "", "optional":
	case "required":
		cfg.RequireVerification = true
	default:
		return cfg, fmt.Errorf("accounts: email_verification %q: want optional or required", a.EmailVerification)
	}
	if m.SMTPURL == "" {
		if cfg.RequireVerification {
			return cfg, errors.New("accounts: email_verification required needs mail: set SMTP_URL or smtp_url")
		}
		a.logger.Warn("no SMTP_URL: no mail is sent (email verification, password reset); set SMTP_URL, MAIL_FROM and PUBLIC_URL")
		return cfg, nil
	}
	if m.PublicURL == "" {
		return cfg, errors.New("accounts: mail needs the site's public origin for its links: set PUBLIC_URL or public_url")
	}
	mailer, sendTimeout, err := m.newMailer()
	if err != nil {
		return cfg, fmt.Errorf("accounts: mail: %w", err)
	}
	cfg.Mailer = mailer
	// A mail being sent belongs to its instance until the send has
	// surely ended.
	cfg.Lease = sendTimeout + max(sendTimeout/2, time.Second)
	a.logger.Info("mail configured", zap.Stringer("smtp", mailer.Endpoint()), zap.String("public_url", m.PublicURL),
		zap.Bool("verification_required", cfg.RequireVerification))
	return cfg, nil
}

// newMailer makes the mailer of the SMTP settings, and says its send
// timeout (SendTimeout, or mail's default).
func (m *Mail) newMailer() (*mail.Mailer, time.Duration, error) {
	sendTimeout := time.Duration(m.SendTimeout)
	if sendTimeout == 0 {
		sendTimeout = mail.DefaultSendTimeout
	}
	mailer, err := mail.New(mail.Config{URL: m.SMTPURL, From: m.From, SendTimeout: sendTimeout, TemplateDir: m.TemplatesDir})
	return mailer, sendTimeout, err
}

// unmarshalMail parses the mail block of the accounts option:
//
//	mail {
//		smtp_url      <url>
//		from          <address>
//		public_url    <origin>
//		site_name     <name>
//		templates_dir <path>
//		verify_email_ttl   <duration>
//		password_reset_ttl <duration>
//		retry         <min> [<max>]
//		give_up       <duration>
//		send_timeout  <duration>
//		poll          <duration>
//	}
func (a *App) unmarshalMail(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	if a.Mail == nil {
		a.Mail = new(Mail)
	}
	m := a.Mail
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		var err error
		switch opt {
		case "smtp_url":
			err = oneString(d, &m.SMTPURL)
		case "from":
			err = oneString(d, &m.From)
		case "public_url":
			err = oneString(d, &m.PublicURL)
		case "site_name":
			err = oneString(d, &m.SiteName)
		case "templates_dir":
			err = oneString(d, &m.TemplatesDir)
		case "verify_email_ttl":
			err = oneDuration(d, &m.VerifyEmailTTL, true)
		case "password_reset_ttl":
			err = oneDuration(d, &m.PasswordResetTTL, true)
		case "retry":
			args := d.RemainingArgs()
			if len(args) < 1 || len(args) > 2 {
				return d.ArgErr()
			}
			if m.RetryMin, err = parseDuration(d, args[0], true); err != nil {
				return err
			}
			if len(args) == 2 {
				m.RetryMax, err = parseDuration(d, args[1], true)
			}
		case "give_up":
			err = oneDuration(d, &m.GiveUp, true)
		case "send_timeout":
			err = oneDuration(d, &m.SendTimeout, true)
		case "poll":
			err = oneDuration(d, &m.Poll, true)
		default:
			return d.Errf("unknown mail option %q", opt)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
