package accounts

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"github.com/caddyaccounts/gateway/fastapi"
	"github.com/caddyaccounts/gateway/mail"
)

// The mail outbox (migration 0009). A request that sends mail only
// inserts a row; the sender of every instance (runOutbox) claims due
// rows one at a time, FOR UPDATE SKIP LOCKED and then a lease
// (claimed_until), resolves the recipient, makes the link token, sends,
// and marks the row sent. A temporary failure (the server down, a 4xx
// reply, a timeout) is retried with exponential backoff until
// GiveUpAfter has passed since the request; a permanent one (a 5xx
// reply) fails at once. An instance that dies mid-send leaves its lease,
// after which another instance sends the same mail with the same link;
// the lease outlasts a send's timeout, so two instances never send one
// row at the same time.

// Defaults of MailConfig.
const (
	DefaultVerifyEmailTTL   = 24 * time.Hour
	DefaultPasswordResetTTL = 30 * time.Minute
	DefaultMailGiveUp       = 24 * time.Hour
	DefaultMailRetryMin     = 30 * time.Second
	DefaultMailRetryMax     = 30 * time.Minute
	DefaultMailLease        = 2 * time.Minute
	DefaultMailPoll         = 2 * time.Second
	DefaultMailPerAddress   = time.Minute
)

// mailKeep is how long sent, failed and dropped outbox rows (and used or
// expired link tokens) are kept, for the status route and the record.
const mailKeep = 7 * 24 * time.Hour

// MailConfig holds outgoing mail: email verification and password reset.
type MailConfig struct {
	// Mailer sends the mail. Nil: no mail is sent; the routes answer as
	// usual, and requests for mail are not queued.
	Mailer *mail.Mailer
	// PublicURL is the site's public origin (https://app.example.com),
	// the only source of links in mails. Required with a Mailer.
	PublicURL string
	// SiteName names the site in mails (default: PublicURL's host).
	SiteName string
	// RequireVerification refuses the login of an account whose email
	// is not verified (403 "Email not verified"). Default: off.
	RequireVerification bool
	// VerifyEmailTTL is how long a verification link works (default 24h).
	VerifyEmailTTL time.Duration
	// PasswordResetTTL is how long a reset link works (default 30m).
	PasswordResetTTL time.Duration
	// GiveUpAfter is how long after its request a mail is retried before
	// it is given up (default 24h).
	GiveUpAfter time.Duration
	// RetryMin and RetryMax bound the backoff between two attempts at
	// one mail: RetryMin after the first failure, doubling up to RetryMax
	// (defaults 30s and 30m), with ±20% jitter.
	RetryMin, RetryMax time.Duration
	// Lease is how long an instance owns a mail it is sending (default
	// 2m); it must outlast the mailer's send timeout.
	Lease time.Duration
	// Poll is how often the sender looks for mail that another instance
	// queued or that is due again (default 2s); mail this instance
	// queues is sent at once.
	Poll time.Duration
	// PerAddress is the window within which one address gets at most one
	// mail of each purpose on request (resend, reset); default 1m.
	PerAddress time.Duration
}

func (c MailConfig) withDefaults() (MailConfig, error) {
	set := func(d *time.Duration, def time.Duration) {
		if *d == 0 {
			*d = def
		}
	}
	set(&c.VerifyEmailTTL, DefaultVerifyEmailTTL)
	set(&c.PasswordResetTTL, DefaultPasswordResetTTL)
	set(&c.GiveUpAfter, DefaultMailGiveUp)
	set(&c.RetryMin, DefaultMailRetryMin)
	set(&c.RetryMax, DefaultMailRetryMax)
	set(&c.Lease, DefaultMailLease)
	set(&c.Poll, DefaultMailPoll)
	set(&c.PerAddress, DefaultMailPerAddress)
	for _, d := range []time.Duration{c.VerifyEmailTTL, c.PasswordResetTTL, c.GiveUpAfter, c.RetryMin, c.RetryMax, c.Lease, c.Poll, c.PerAddress} {
		if d < 0 {
			return c, fmt.Errorf("mail: negative duration %s", d)
		}
	}
	if c.RetryMax < c.RetryMin {
		return c, fmt.Errorf("mail: retry maximum %s is below the minimum %s", c.RetryMax, c.RetryMin)
	}
	if c.Mailer == nil {
		return c, nil
	}
	u, err := url.Parse(c.PublicURL)
	if c.PublicURL == "" || err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" ||
		u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return c, fmt.Errorf("mail: public URL %q: want the site's origin, such as https://app.example.com", c.PublicURL)
	}
	c.PublicURL = u.Scheme + "://" + u.Host
	if c.SiteName == "" {
		c.SiteName = u.Hostname()
	}
	return c, nil
}

// Mail kinds, as stored in mail_outbox.kind.
const (
	mailVerifyEmail     = string(mail.KindVerifyEmail)
	mailPasswordReset   = string(mail.KindPasswordReset)
	mailPasswordChanged = string(mail.KindPasswordChanged)
)

// Outbox row states.
const (
	mailPending = "pending"
	mailSent    = "sent"
	mailFailed  = "failed"
	mailDropped = "dropped"
)

// execer is a pool or a transaction.
type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// queueMail queues a mail of kind to the user userID, or (userID "") to
// the account of the address a client typed, which the sender resolves.
// Call wakeSender after the commit. Without a mailer nothing is queued.
func (s *Service) queueMail(ctx context.Context, db execer, kind, userID, address string) error {
	if s.cfg.Mail.Mailer == nil {
		return nil
	}
	var nonce []byte
	if kind != mailPasswordChanged {
		nonce = newNonce()
	}
	if _, err := db.Exec(ctx, "INSERT INTO mail_outbox (kind, user_id, address, nonce) VALUES ($1, $2, $3, $4)",
		kind, nullIfEmpty(userID), nullIfEmpty(address), nonce); err != nil {
		return fmt.Errorf("queueing mail: %w", err)
	}
	return nil
}

// newNonce returns the random nonce of a link mail's outbox row.
func newNonce() []byte {
	n := make([]byte, 32)
	rand.Read(n)
	return n
}

// wakeSender makes this instance's sender look for due mail now.
func (s *Service) wakeSender() {
	select {
	case s.mailWake <- struct{}{}:
	default:
	}
}

// runOutbox sends queued mail until ctx ends.
func (s *Service) runOutbox(ctx context.Context) {
	cfg := s.cfg.Mail
	lastCleanup := time.Time{}
	for {
		for ctx.Err() == nil {
			sent, err := s.sendNext(ctx)
			if err != nil {
				if ctx.Err() == nil {
					s.log.Warn("mail outbox: cannot claim mail; retrying", zap.Error(err))
				}
				break
			}
			if !sent {
				break
			}
		}
		if time.Since(lastCleanup) > time.Hour {
			s.cleanOutbox(ctx)
			lastCleanup = time.Now()
		}
		select {
		case <-ctx.Done():
			return
		case <-s.mailWake:
		case <-time.After(cfg.Poll):
		}
	}
}

// outboxRow is a claimed outbox row.
type outboxRow struct {
	id        int64
	kind      string
	userID    string
	address   string
	nonce     []byte
	attempts  int
	createdAt time.Time
}

// claimSQL claims the next due row for a lease of $1 seconds.
const claimSQL = `
UPDATE mail_outbox SET claimed_until = now() + $1::float8 * interval '1 second', attempts = attempts + 1
WHERE id = (SELECT id FROM mail_outbox
            WHERE state = 'pending' AND next_attempt_at <= now()
              AND (claimed_until IS NULL OR claimed_until <= now())
            ORDER BY next_attempt_at, id LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING id, kind, COALESCE(user_id::text, ''), COALESCE(address, ''), nonce, attempts, created_at`

// sendNext claims and sends one due mail; it reports whether there was
// one.
func (s *Service) sendNext(ctx context.Context) (bool, error) {
	var row outboxRow
	err := s.db.QueryRow(ctx, claimSQL, seconds(s.cfg.Mail.Lease)).Scan(
		&row.id, &row.kind, &row.userID, &row.address, &row.nonce, &row.attempts, &row.createdAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	sendErr := s.deliver(ctx, &row)
	if sendErr != nil && ctx.Err() != nil {
		// Stopped mid-send: the lease runs out, and an instance sends it.
		// (A mail the server accepted is recorded as sent even now.)
		return true, nil
	}
	s.finish(context.WithoutCancel(ctx), &row, sendErr)
	return true, nil
}

// errNoRecipient: the mail has nobody to go to (no such account, or one
// that needs no such mail any more): the row is dropped, not failed.
var errNoRecipient = errors.New("no recipient")

// errCannotSend: the mail cannot be made (a template that fails on this
// data, no key for links): it fails at once, with the reason recorded.
var errCannotSend = errors.New("mail cannot be made")

// recipient is who a mail goes to: always the address of the account,
// never one a client typed.
type recipient struct {
	id, email, name  string
	active, verified bool
}

// deliver resolves the recipient of row, stores its link token and
// sends the mail.
func (s *Service) deliver(ctx context.Context, row *outboxRow) error {
	cfg := s.cfg.Mail
	rc, err := s.mailRecipient(ctx, row)
	if err != nil {
		return err
	}
	// A mail to a typed address is recorded as the account's when done.
	row.userID = rc.id
	data := mail.Data{SiteName: cfg.SiteName, Name: rc.name, Email: rc.email}
	purpose, page := "", ""
	switch row.kind {
	case mailVerifyEmail:
		if !rc.active || rc.verified {
			return errNoRecipient
		}
		purpose, page, data.Expiry = purposeVerifyEmail, "/accounts/verify-email", cfg.VerifyEmailTTL
	case mailPasswordReset:
		if !rc.active {
			return errNoRecipient
		}
		purpose, page, data.Expiry = purposePasswordReset, "/accounts/reset-password", cfg.PasswordResetTTL
	}
	if purpose != "" {
		if len(row.nonce) == 0 || s.linkKey == nil {
			return fmt.Errorf("%w: no key for link tokens (no signing key)", errCannotSend)
		}
		token := linkToken(s.linkKey, row.nonce)
		if err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
			return storeLinkToken(ctx, tx, rc.id, purpose, rc.email, token, data.Expiry)
		}); err != nil {
			return err
		}
		data.Link = cfg.PublicURL + page + "#token=" + token
	}
	msg, err := cfg.Mailer.Render(mail.Kind(row.kind), data)
	if err != nil {
		return fmt.Errorf("%w: %w", errCannotSend, err)
	}
	return cfg.Mailer.Send(ctx, msg)
}

// mailRecipient loads the account row names: by id, or by the address a
// client typed (its normalised key, as login matches it).
func (s *Service) mailRecipient(ctx context.Context, row *outboxRow) (recipient, error) {
	const q = `SELECT u.id::text, u.email, u.is_active, u.email_verified, COALESCE(p.full_name, '')
		FROM users u LEFT JOIN profiles p ON p.user_id = u.id WHERE `
	var r pgx.Row
	if row.userID != "" {
		r = s.db.QueryRow(ctx, q+"u.id = $1", row.userID)
	} else {
		key, err := emailKey(strings.TrimSpace(row.address))
		if err != nil {
			return recipient{}, errNoRecipient
		}
		r = s.db.QueryRow(ctx, q+"u.email_key = $1", key)
	}
	var rc recipient
	err := r.Scan(&rc.id, &rc.email, &rc.active, &rc.verified, &rc.name)
	if errors.Is(err, pgx.ErrNoRows) {
		return rc, errNoRecipient
	}
	return rc, err
}

// finish records the outcome of an attempt at row.
func (s *Service) finish(ctx context.Context, row *outboxRow, sendErr error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cfg := s.cfg.Mail
	state, next, reason := mailSent, time.Time{}, ""
	switch {
	case sendErr == nil:
	case errors.Is(sendErr, errNoRecipient):
		state = mailDropped
	case mail.IsPermanent(sendErr) || errors.Is(sendErr, errCannotSend):
		state, reason = mailFailed, sendErr.Error()
	case time.Since(row.createdAt) >= cfg.GiveUpAfter:
		state, reason = mailFailed, fmt.Sprintf("gave up after %d attempts in %s: %v", row.attempts, cfg.GiveUpAfter, sendErr)
	default:
		state, reason = mailPending, sendErr.Error()
		next = time.Now().Add(mailBackoff(cfg, row.attempts))
	}
	// The row is done or waits: the nonce of a done one (what makes its
	// link) and the address a client typed are not kept.
	var err error
	if state == mailPending {
		_, err = s.db.Exec(ctx, `UPDATE mail_outbox SET claimed_until = NULL, next_attempt_at = $3, last_error = $4
			WHERE id = $1 AND attempts = $2`, row.id, row.attempts, next, reason)
	} else {
		_, err = s.db.Exec(ctx, `UPDATE mail_outbox SET state = $3, claimed_until = NULL, last_error = $4, done_at = now(),
			nonce = NULL, address = NULL, user_id = COALESCE(user_id, $5::uuid) WHERE id = $1 AND attempts = $2`,
			row.id, row.attempts, state, nullIfEmpty(reason), nullIfEmpty(row.userID))
	}
	if err != nil {
		s.log.Error("mail outbox: cannot record the outcome of a send", zap.Int64("mail_id", row.id), zap.Error(err))
	}
	fields := []zap.Field{zap.Int64("mail_id", row.id), zap.String("kind", row.kind), zap.Int("attempt", row.attempts)}
	switch state {
	case mailSent:
		s.log.Info("mail sent", fields...)
	case mailDropped:
		s.log.Debug("mail dropped: no recipient", fields...)
	case mailPending:
		s.log.Warn("mail not sent; retrying", append(fields, zap.Time("next_attempt", next), zap.Error(sendErr))...)
	case mailFailed:
		s.log.Error("mail given up", append(fields, zap.String("reason", reason))...)
		s.writeAudit(ctx, EventMailFailed, "", row.userID, "", "", map[string]any{"kind": row.kind, "reason": reason, "attempts": row.attempts})
	}
}

// mailBackoff is the wait after the attempts-th failed attempt.
func mailBackoff(cfg MailConfig, attempts int) time.Duration {
	d := cfg.RetryMin
	for i := 1; i < attempts && d < cfg.RetryMax; i++ {
		d *= 2
	}
	d = min(d, cfg.RetryMax)
	jitter := 0.8 + 0.4*mrand.Float64()
	return time.Duration(float64(d) * jitter)
}

// cleanOutbox deletes done rows and used or expired link tokens older
// than mailKeep.
func (s *Service) cleanOutbox(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := s.db.Exec(ctx, `DELETE FROM mail_outbox WHERE state <> 'pending' AND done_at < now() - $1::float8 * interval '1 second'`,
		seconds(mailKeep)); err != nil && ctx.Err() == nil {
		s.log.Warn("mail outbox: cleanup failed", zap.Error(err))
	}
	if _, err := s.db.Exec(ctx, `DELETE FROM email_tokens WHERE expires_at < now() - $1::float8 * interval '1 second'`,
		seconds(mailKeep)); err != nil && ctx.Err() == nil {
		s.log.Warn("link tokens: cleanup failed", zap.Error(err))
	}
}

// ---- GET /api/admin/mail ----

// mailStatus is the outbox at a glance.
type mailStatus struct {
	Enabled         bool         `json:"enabled"`
	Pending         int          `json:"pending"`
	OldestPendingAt *time.Time   `json:"oldest_pending_at"`
	SentLastHour    int          `json:"sent_last_hour"`
	FailedLastDay   int          `json:"failed_last_day"`
	LastFailure     *mailFailure `json:"last_failure"`
}

type mailFailure struct {
	Kind   string    `json:"kind"`
	UserID *string   `json:"user_id"`
	At     time.Time `json:"at"`
	Reason string    `json:"reason"`
}

// handleMailStatus serves GET /api/admin/mail: how many mails wait, were
// sent in the last hour and failed in the last day, and the last failure.
func (s *Service) handleMailStatus(w http.ResponseWriter, r *http.Request, p *Principal) error {
	st := mailStatus{Enabled: s.cfg.Mail.Mailer != nil}
	ctx := r.Context()
	err := s.db.QueryRow(ctx, `SELECT
		count(*) FILTER (WHERE state = 'pending'),
		min(created_at) FILTER (WHERE state = 'pending'),
		count(*) FILTER (WHERE state = 'sent' AND done_at > now() - interval '1 hour'),
		count(*) FILTER (WHERE state = 'failed' AND done_at > now() - interval '1 day')
		FROM mail_outbox`).Scan(&st.Pending, &st.OldestPendingAt, &st.SentLastHour, &st.FailedLastDay)
	if err != nil {
		return fmt.Errorf("reading the outbox: %w", err)
	}
	if st.OldestPendingAt != nil {
		t := st.OldestPendingAt.UTC()
		st.OldestPendingAt = &t
	}
	var f mailFailure
	err = s.db.QueryRow(ctx, `SELECT kind, user_id::text, done_at, COALESCE(last_error, '') FROM mail_outbox
		WHERE state = 'failed' ORDER BY done_at DESC LIMIT 1`).Scan(&f.Kind, &f.UserID, &f.At, &f.Reason)
	switch {
	case err == nil:
		f.At = f.At.UTC()
		st.LastFailure = &f
	case !errors.Is(err, pgx.ErrNoRows):
		return fmt.Errorf("reading the outbox: %w", err)
	}
	fastapi.WriteJSON(w, http.StatusOK, st)
	return nil
}
