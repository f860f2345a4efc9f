package accounts

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/caddyaccounts/gateway/fastapi"
)

// Email verification and password reset: the routes. The mail goes
// through the outbox (outbox.go); the link tokens are in emailtokens.go.

// The answers of the routes that mail an address: the same whether or
// not an account has it, so that they tell nobody which addresses have
// accounts.
const (
	detailResendQueued = "If the address belongs to an unverified account, a message is on its way"
	detailResetQueued  = "If the address belongs to an account, a message is on its way"
	detailResetDone    = "Password has been reset"
	detailResetSent    = "A password reset link is on its way"
)

var (
	errEmailNotVerified = fastapi.NewError(http.StatusForbidden, "Email not verified")
	errMailNotEnabled   = fastapi.NewError(http.StatusConflict, "Mail is not configured")
)

// ---- POST /api/auth/verify-email ----

// handleVerifyEmail serves POST /api/auth/verify-email: uses a
// verification token and answers the user, now verified.
func (s *Service) handleVerifyEmail(w http.ResponseWriter, r *http.Request) error {
	body, err := fastapi.ReadObject(w, r)
	if err != nil {
		return err
	}
	token := body.String("token")
	if err := body.Finish(); err != nil {
		return err
	}
	ctx := r.Context()
	var u *User
	err = pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		id, err := consumeLinkToken(ctx, tx, token, purposeVerifyEmail)
		if err != nil {
			return err
		}
		u, err = scanUser(tx.QueryRow(ctx,
			"UPDATE users SET email_verified = true, updated_at = now() WHERE id = $1 RETURNING "+userColumns, id))
		return err
	})
	if err != nil {
		return err
	}
	s.cache.invalidate(u.ID)
	s.audit(r, EventEmailVerified, u.ID, u.ID, nil)
	fastapi.WriteJSON(w, http.StatusOK, u)
	return nil
}

// ---- POST /api/auth/verify-email/resend and /api/auth/password-reset ----

// handleResendVerification serves POST /api/auth/verify-email/resend.
func (s *Service) handleResendVerification(w http.ResponseWriter, r *http.Request) error {
	return s.mailOnRequest(w, r, mailVerifyEmail, detailResendQueued)
}

// handleRequestReset serves POST /api/auth/password-reset.
func (s *Service) handleRequestReset(w http.ResponseWriter, r *http.Request) error {
	return s.mailOnRequest(w, r, mailPasswordReset, detailResetQueued)
}

// mailOnRequest queues a mail of kind to the account of the address in
// the body, and answers 202 with detail. It does the same work whatever
// the address: one rate-limit count, and one outbox row unless the
// address got such a mail within PerAddress; the sender finds out later
// whether an account has it. So neither the answer nor its time says.
func (s *Service) mailOnRequest(w http.ResponseWriter, r *http.Request, kind, detail string) error {
	body, err := fastapi.ReadObject(w, r)
	if err != nil {
		return err
	}
	email := strings.TrimSpace(body.String("email"))
	if body.Has("email") && body.Valid() {
		if msg := checkEmail(email); msg != "" {
			body.Add("value_error", msg, "email")
		}
	}
	if err := body.Finish(); err != nil {
		return err
	}
	ctx := r.Context()
	if s.cfg.Mail.Mailer != nil && s.limiter.allowMail(ctx, kind, email, s.cfg.Mail.PerAddress) {
		if err := s.queueMail(ctx, s.db, kind, "", email); err != nil {
			return err
		}
		s.wakeSender()
	}
	fastapi.WriteJSON(w, http.StatusAccepted, map[string]string{"detail": detail})
	return nil
}

// mailKey is the rate_limits key of the mail of kind to an address:
// hashed, like loginKey, so that the table holds no addresses.
func mailKey(kind, email string) string {
	name := strings.ToLower(email)
	if key, err := emailKey(email); err == nil {
		name = key
	}
	sum := sha256.Sum256([]byte(name))
	return "mail:" + kind + ":" + hex.EncodeToString(sum[:])
}

// allowMail counts a mail of kind to email and reports whether it is the
// first within window. A limiter that cannot ask the database lets it
// through.
func (l *rateLimiter) allowMail(ctx context.Context, kind, email string, window time.Duration) bool {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), limiterTimeout)
	defer cancel()
	var count int
	var retry float64
	err := l.db.QueryRow(ctx, ipCheckSQL, mailKey(kind, email), seconds(window)).Scan(&count, &retry)
	l.maybeCleanup()
	if err != nil {
		l.failOpen("mail", err)
		return true
	}
	return count <= 1
}

// ---- POST /api/auth/password-reset/confirm ----

// handleConfirmReset serves POST /api/auth/password-reset/confirm: a
// reset token and a new password. It ends everything the user had: every
// session and token, and every other link token; the email counts as
// verified (the user read a mail sent to it), and a mail says the
// password was changed.
func (s *Service) handleConfirmReset(w http.ResponseWriter, r *http.Request) error {
	body, err := fastapi.ReadObject(w, r)
	if err != nil {
		return err
	}
	token := body.String("token")
	password := body.String("new_password")
	if !body.Failed("new_password") {
		for _, msg := range CheckPasswordPolicy(password) {
			body.Fail("new_password", msg)
		}
	}
	if err := body.Finish(); err != nil {
		return err
	}
	ctx := r.Context()
	hash, err := s.hasher.Hash(ctx, password)
	if err != nil {
		return err
	}
	var userID string
	var revoked int64
	err = pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		if userID, err = consumeLinkToken(ctx, tx, token, purposePasswordReset); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE users SET hashed_password = $2, email_verified = true, updated_at = now()
			WHERE id = $1`, userID, hash); err != nil {
			return fmt.Errorf("storing password hash: %w", err)
		}
		if err := endLinkTokens(ctx, tx, userID); err != nil {
			return err
		}
		if revoked, err = endAllSessions(ctx, tx, userID, revokedByPasswordReset); err != nil {
			return err
		}
		return s.queueMail(ctx, tx, mailPasswordChanged, userID, "")
	})
	if err != nil {
		return err
	}
	s.cache.invalidate(userID)
	s.wakeSender()
	s.log.Info("password reset", zap.String("user_id", userID), zap.Int64("sessions_revoked", revoked))
	s.audit(r, EventPasswordReset, userID, userID, map[string]any{"sessions_revoked": revoked})
	fastapi.WriteJSON(w, http.StatusOK, map[string]string{"detail": detailResetDone})
	return nil
}

// ---- POST /api/admin/users/{id}/password-reset ----

// handleAdminReset serves POST /api/admin/users/{id}/password-reset:
// mails the user a reset link. 409 when mail is not configured.
func (s *Service) handleAdminReset(w http.ResponseWriter, r *http.Request, p *Principal) error {
	var v fastapi.ValidationError
	id := fastapi.PathUUID(r, "id", &v)
	if err := v.Err(); err != nil {
		return err
	}
	if s.cfg.Mail.Mailer == nil {
		return errMailNotEnabled
	}
	ctx := r.Context()
	tag, err := s.db.Exec(ctx, `INSERT INTO mail_outbox (kind, user_id, nonce)
		SELECT $1, id, $3 FROM users WHERE id = $2`, mailPasswordReset, id, newNonce())
	if err != nil {
		return fmt.Errorf("queueing mail: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return errUserNotFound
	}
	s.wakeSender()
	s.audit(r, EventPasswordResetSent, p.User.ID, id, nil)
	fastapi.WriteJSON(w, http.StatusAccepted, map[string]string{"detail": detailResetSent})
	return nil
}
