package accounts

// The routes of a session's life after login: refresh, logout,
// logout-all, and the caller's list of sessions (the rules are in the
// package doc).

import (
	"bytes"
	"errors"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/caddyaccounts/gateway/fastapi"
)

// readRefreshToken returns the refresh token of a request: from a JSON
// body {"refresh_token": "..."} when the request has a body (non-browser
// clients), else from the refresh cookie, whose request must pass the
// cross-origin check. fromCookie tells which. A body that is not that
// object is a 422, as usual.
func (s *Service) readRefreshToken(w http.ResponseWriter, r *http.Request) (token string, fromCookie bool, err error) {
	raw, err := fastapi.ReadBody(w, r)
	if err != nil {
		return "", false, err
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		token, ok := s.refreshCookie(r)
		if ok {
			if err := s.checkCrossOrigin(r); err != nil {
				return "", true, err
			}
		}
		return token, ok, nil
	}
	body, err := fastapi.DecodeObject(r.Header.Get("Content-Type"), raw)
	if err != nil {
		return "", false, err
	}
	token = body.String("refresh_token")
	if err := body.Finish(); err != nil {
		return "", false, err
	}
	return token, false, nil
}

// handleRefresh serves POST /api/auth/refresh: a refresh token (cookie
// or body) exchanged for new tokens, by the rotation rules (package doc).
func (s *Service) handleRefresh(w http.ResponseWriter, r *http.Request) error {
	token, fromCookie, err := s.readRefreshToken(w, r)
	if err != nil {
		return err
	}
	if token == "" {
		s.clearSessionCookies(w)
		return errInvalidRefresh
	}
	ctx := r.Context()
	sess, err := s.rotateSession(ctx, token, ClientIP(r), r.UserAgent())
	var reuse *refreshReuseError
	switch {
	case errors.As(err, &reuse):
		s.log.Warn("refresh token reused: session revoked",
			zap.String("user_id", reuse.userID), zap.String("session_id", reuse.sessionID))
		s.audit(r, EventRefreshReuse, "", reuse.userID, map[string]any{"session_id": reuse.sessionID})
		s.clearSessionCookies(w)
		return errInvalidRefresh
	case errors.Is(err, errInvalidRefresh):
		s.clearSessionCookies(w)
		return errInvalidRefresh
	case err != nil:
		return err
	}

	cfg := s.cfg.Sessions
	access, err := s.issueAccessToken(ctx, sess.user, sess.id, cfg.AccessCookieLifetime)
	if err != nil {
		return err
	}
	body := sessionTokenResponse{
		AccessToken: access, TokenType: "bearer",
		ExpiresIn: int64(cfg.AccessCookieLifetime.Seconds()), RefreshToken: sess.refreshToken,
	}
	if fromCookie {
		s.setSessionCookies(w, access, sess.refreshToken, sess.expires)
		if !cfg.RefreshTokenInBody {
			body.RefreshToken = ""
		}
		if cfg.OmitTokenFromBody {
			body.AccessToken = ""
		}
	}
	fastapi.WriteJSON(w, http.StatusOK, body)
	return nil
}

// handleLogout serves POST /api/auth/logout: the end of the session of
// the refresh token, or of the access token, and the cookies cleared.
func (s *Service) handleLogout(w http.ResponseWriter, r *http.Request) error {
	token, _, err := s.readRefreshToken(w, r)
	if err != nil {
		return err
	}
	ctx := r.Context()
	var sessionID, userID string
	if token != "" {
		if sessionID, userID, err = s.revokeSessionOfRefreshToken(ctx, token, revokedByLogout); err != nil {
			return err
		}
	} else {
		p, err := s.Authenticate(r)
		var ae *fastapi.Error
		switch {
		case err == nil && p.Claims.SessionID != "":
			if _, err := s.revokeSession(ctx, p.Claims.SessionID, p.User.ID, revokedByLogout); err != nil {
				return err
			}
			sessionID, userID = p.Claims.SessionID, p.User.ID
		case err == nil, errors.As(err, &ae) && ae.Status == http.StatusUnauthorized:
			// A token without a session, or no valid credential at
			// all: nothing to revoke.
		default:
			return err // cross-origin (403), database down (503)
		}
	}
	if userID != "" {
		s.audit(r, EventLogout, userID, userID, map[string]any{"session_id": sessionID})
	}
	s.clearSessionCookies(w)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// handleLogoutAll serves POST /api/auth/logout-all: every session of the
// caller ended, and every access token issued until now refused.
func (s *Service) handleLogoutAll(w http.ResponseWriter, r *http.Request, p *Principal) error {
	n, err := s.logoutAll(r.Context(), p.User.ID)
	if err != nil {
		return err
	}
	s.log.Info("logged out everywhere", zap.String("user_id", p.User.ID), zap.Int64("sessions", n))
	s.audit(r, EventLogoutAll, p.User.ID, p.User.ID, map[string]any{"sessions_revoked": n})
	s.clearSessionCookies(w)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// sessionInfo is one entry of GET /api/users/me/sessions.
type sessionInfo struct {
	ID string `json:"id"`
	// Device is the User-Agent of the last login or refresh (at most 256
	// characters), or null.
	Device *string `json:"device"`
	// IP is the client address of the last login or refresh, or null.
	IP         *string   `json:"ip"`
	CreatedAt  time.Time `json:"created_at"`
	LastUsedAt time.Time `json:"last_used_at"`
	// Current is true for the session of the request's access token.
	Current bool `json:"current"`
}

// handleListSessions serves GET /api/users/me/sessions: the caller's
// active sessions, the current one marked.
func (s *Service) handleListSessions(w http.ResponseWriter, r *http.Request, p *Principal) error {
	list, err := s.listSessions(r.Context(), p.User.ID, p.Claims.SessionID)
	if err != nil {
		return err
	}
	fastapi.WriteJSON(w, http.StatusOK, list)
	return nil
}

var errSessionNotFound = fastapi.NewError(http.StatusNotFound, "Session not found")

// handleRevokeSession serves DELETE /api/users/me/sessions/{session_id}:
// the end of one of the caller's sessions.
func (s *Service) handleRevokeSession(w http.ResponseWriter, r *http.Request, p *Principal) error {
	id, reason := fastapi.ParseUUID(strings.ToValidUTF8(r.PathValue("session_id"), "\uFFFD"))
	if reason != "" {
		var v fastapi.ValidationError
		v.Add("uuid_parsing", "Input should be a valid UUID, "+reason, "path", "session_id")
		return &v
	}
	ok, err := s.revokeSession(r.Context(), id, p.User.ID, revokedByUser)
	if err != nil {
		return err
	}
	if !ok {
		return errSessionNotFound
	}
	s.log.Info("session revoked", zap.String("user_id", p.User.ID), zap.String("session_id", id))
	s.audit(r, EventSessionRevoked, p.User.ID, p.User.ID, map[string]any{"session_id": id})
	if strings.EqualFold(id, p.Claims.SessionID) {
		s.clearSessionCookies(w)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
