package accounts

import (
	"errors"
	"mime"
	"net/http"
	"net/url"
	"strings"

	"go.uber.org/zap"

	"github.com/caddyaccounts/gateway/fastapi"
)

var (
	errBadLogin     = fastapi.BearerError("Incorrect email or password")
	errInactiveUser = fastapi.NewError(http.StatusForbidden, "Inactive user")
)

// readLoginForm reads the OAuth2 password-flow form. Like FastAPI, an
// empty value counts as missing.
func readLoginForm(w http.ResponseWriter, r *http.Request) (username, password string, err error) {
	body, err := fastapi.ReadBody(w, r)
	if err != nil {
		return "", "", err
	}
	var form url.Values
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt == "application/x-www-form-urlencoded" {
		form, err = url.ParseQuery(string(body))
		if err != nil {
			form = url.Values{}
		}
	} else {
		form = url.Values{}
	}
	var v fastapi.ValidationError
	username, password = form.Get("username"), form.Get("password")
	if username == "" {
		v.Add("missing", fastapi.MsgMissing, "body", "username")
	}
	if password == "" {
		v.Add("missing", fastapi.MsgMissing, "body", "password")
	}
	if gt := form.Get("grant_type"); gt != "" && gt != "password" {
		v.Add("string_pattern_mismatch", "String should match pattern '^password$'", "body", "grant_type")
	}
	return username, password, v.Err()
}

// handleLogin serves POST /api/auth/login: the OAuth2 password flow,
// answering an unknown email and a wrong password alike.
func (s *Service) handleLogin(w http.ResponseWriter, r *http.Request) error {
	username, password, err := readLoginForm(w, r)
	if err != nil {
		return err
	}
	// A locked account name is refused here,
	// before any lookup or hashing.
	if err := s.allowLogin(r, username); err != nil {
		return err
	}
	ctx := r.Context()
	// Failed logins cost as much as one on the slowest bcrypt hash still
	// stored.
	s.knowLegacyHashes(ctx)
	u, hash, err := s.userByEmail(ctx, strings.TrimSpace(username))
	if errors.Is(err, errNoUser) {
		s.hasher.VerifyDummy(ctx, password)
		s.audit(r, EventLoginFailure, "", "", map[string]any{"email": auditedEmail(username), "reason": "unknown_email"})
		return errBadLogin
	}
	if err != nil {
		return err
	}
	rehash, err := s.hasher.Verify(ctx, password, hash)
	if errors.Is(err, ErrMismatch) {
		s.log.Info("login failed", zap.String("user_id", u.ID))
		s.audit(r, EventLoginFailure, "", u.ID, map[string]any{"reason": "wrong_password"})
		return errBadLogin
	}
	if err != nil {
		return err
	}
	s.loginSucceeded(r, username) // the password is right: forget the failures
	if !u.IsActive {
		s.audit(r, EventLoginFailure, "", u.ID, map[string]any{"reason": "inactive"})
		return errInactiveUser
	}
	if s.cfg.Mail.RequireVerification && !u.EmailVerified {
		s.audit(r, EventLoginFailure, "", u.ID, map[string]any{"reason": "email_not_verified"})
		return errEmailNotVerified
	}
	if rehash {
		if newHash, err := s.hasher.Hash(ctx, password); err == nil {
			if err := s.setPasswordHash(ctx, u.ID, newHash); err != nil {
				s.log.Warn("could not upgrade password hash", zap.String("user_id", u.ID), zap.Error(err))
			} else if isBcrypt(hash) {
				s.legacyHashUpgraded(ctx)
			}
		}
	}
	// Login starts a refresh session; the body
	// keeps API.md's shape, browsers also get cookies.
	body, err := s.startSession(w, r, u)
	if err != nil {
		return err
	}
	s.audit(r, EventLoginSuccess, u.ID, u.ID, nil)
	fastapi.WriteJSON(w, http.StatusOK, body)
	return nil
}
