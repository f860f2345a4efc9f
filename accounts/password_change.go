package accounts

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/caddyaccounts/gateway/fastapi"
)

var (
	errIncorrectPassword = fastapi.NewError(http.StatusBadRequest, "Incorrect password")
	errSamePassword      = fastapi.NewError(http.StatusBadRequest, "New password cannot be the same as the current one")
)

// handleChangePassword serves POST /api/users/me/password: a new
// password for the caller, ending every other session.
func (s *Service) handleChangePassword(w http.ResponseWriter, r *http.Request, p *Principal) error {
	body, err := fastapi.ReadObject(w, r)
	if err != nil {
		return err
	}
	current := body.String("current_password")
	newPassword := body.String("new_password")
	if !body.Failed("new_password") {
		for _, msg := range CheckPasswordPolicy(newPassword) {
			body.Fail("new_password", msg)
		}
	}
	if err := body.Finish(); err != nil {
		return err
	}

	ctx := r.Context()
	hash, err := s.passwordHashOf(ctx, p.User.ID)
	if errors.Is(err, errNoUser) {
		return errInvalidCredentials
	}
	if err != nil {
		return err
	}
	// Guesses of the current password count against the account's login
	// failures: a stolen session cannot be used to try
	// passwords without limit.
	if err := s.allowLogin(r, p.User.Email); err != nil {
		return err
	}
	if _, err := s.hasher.Verify(ctx, current, hash); errors.Is(err, ErrMismatch) {
		s.log.Info("password change refused: wrong current password", zap.String("user_id", p.User.ID))
		return errIncorrectPassword
	} else if err != nil {
		return err
	}
	s.loginSucceeded(r, p.User.Email)
	if newPassword == current {
		return errSamePassword
	}
	newHash, err := s.hasher.Hash(ctx, newPassword)
	if err != nil {
		return err
	}
	var revoked int64
	err = pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx,
			"UPDATE users SET hashed_password = $2, updated_at = now() WHERE id = $1", p.User.ID, newHash); err != nil {
			return fmt.Errorf("storing password hash: %w", err)
		}
		n, err := revokeOtherSessions(ctx, tx, p.User.ID, p.Claims.SessionID, revokedByPasswordChange)
		revoked = n
		return err
	})
	if err != nil {
		return err
	}
	s.cache.invalidate(p.User.ID)
	s.log.Info("password changed", zap.String("user_id", p.User.ID), zap.Int64("sessions_revoked", revoked))
	s.audit(r, EventPasswordChange, p.User.ID, p.User.ID, map[string]any{"sessions_revoked": revoked})
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// passwordHashOf returns the stored password hash of user id.
func (s *Service) passwordHashOf(ctx context.Context, id string) (string, error) {
	var hash string
	err := s.db.QueryRow(ctx, "SELECT hashed_password FROM users WHERE id = $1", id).Scan(&hash)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", errNoUser
	}
	if err != nil {
		return "", fmt.Errorf("loading password hash: %w", err)
	}
	return hash, nil
}
