package accounts

import (
	"net/http"
	"strings"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/caddyaccounts/gateway/fastapi"
)

// maxFullNameLen bounds profile names (API.md).
const maxFullNameLen = 200

// handleRegister serves POST /api/auth/register.
func (s *Service) handleRegister(w http.ResponseWriter, r *http.Request) error {
	body, err := fastapi.ReadObject(w, r)
	if err != nil {
		return err
	}
	email := strings.TrimSpace(body.String("email"))
	password := body.String("password")
	fullName, _ := body.OptionalString("full_name")
	if ok := body.Has("email"); ok && body.Valid() {
		if msg := checkEmail(email); msg != "" {
			body.Add("value_error", msg, "email")
		}
	}
	if ok := body.Has("password"); ok {
		for _, msg := range CheckPasswordPolicy(password) {
			body.Fail("password", msg)
		}
	}
	if fullName != nil && utf8.RuneCountInString(*fullName) > maxFullNameLen {
		body.Add("string_too_long", "String should have at most 200 characters", "full_name")
	}
	if err := body.Finish(); err != nil {
		return err
	}

	hash, err := s.hasher.Hash(r.Context(), password)
	if err != nil {
		return err
	}
	u, err := s.createUser(r.Context(), email, hash, RoleUser, fullName, false)
	if err != nil {
		return err
	}
	// The verification mail; an account is usable at once unless the
	// verification is required, so a failure here only logs: the user
	// can ask for another mail.
	if err := s.queueMail(r.Context(), s.db, mailVerifyEmail, u.ID, ""); err != nil {
		s.log.Warn("could not queue the verification mail", zap.String("user_id", u.ID), zap.Error(err))
	}
	s.wakeSender()
	s.log.Info("user registered", zap.String("user_id", u.ID))
	s.audit(r, EventRegister, u.ID, u.ID, nil)
	fastapi.WriteJSON(w, http.StatusCreated, u)
	return nil
}
