package accounts

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/caddyaccounts/gateway/fastapi"
)

// Defaults of SessionConfig.
const (
	DefaultAccessCookieName     = "access_token"
	DefaultRefreshCookieName    = "refresh_token"
	DefaultAccessCookieLifetime = 15 * time.Minute
	DefaultSessionIdleTimeout   = 7 * 24 * time.Hour
	DefaultSessionMaxLifetime   = 30 * 24 * time.Hour
	DefaultRefreshReuseGrace    = 10 * time.Second
)

// SessionConfig holds the options of refresh sessions and their cookies.
// Zero values mean the defaults.
type SessionConfig struct {
	// AccessCookieName is the name of the cookie holding a short-lived
	// access token (default "access_token"). Path /, HttpOnly, Secure,
	// SameSite=Lax.
	AccessCookieName string
	// RefreshCookieName is the name of the cookie holding the refresh
	// token (default "refresh_token"). Path /api/auth, HttpOnly, Secure,
	// SameSite=Strict.
	RefreshCookieName string
	// CookieDomain is the Domain attribute of both cookies. Empty (the
	// default) makes host-only cookies, which is the safest choice.
	CookieDomain string
	// TrustedOrigins are origins ("https://app.example.com") whose
	// cross-origin requests are nonetheless accepted with cookies: a
	// frontend on another origin sharing the cookies through
	// CookieDomain. Default: none (same-origin only).
	TrustedOrigins []string
	// AccessCookieLifetime is the lifetime of the access token set as a
	// cookie at login, and of every access token that
	// /api/auth/refresh issues (default 15m). The token in the login's
	// JSON body keeps Config.TokenLifetime.
	AccessCookieLifetime time.Duration
	// IdleTimeout ends a session that has seen no login or refresh for
	// this long (default 7 days).
	IdleTimeout time.Duration
	// MaxLifetime ends a session this long after its login, however
	// active (default 30 days).
	MaxLifetime time.Duration
	// RefreshReuseGrace is how long a retired refresh token may still be
	// exchanged, for tabs or instances racing with the same token
	// (default 10s). Negative turns the grace off: any second use of a
	// refresh token revokes its session.
	RefreshReuseGrace time.Duration
	// RefreshTokenInBody also puts "refresh_token" in the JSON body of
	// the login and of a refresh made with the refresh cookie (default
	// false: browsers get it as an HttpOnly cookie, out of reach of
	// scripts; the login body keeps API.md's shape). A refresh made with
	// a refresh token in the JSON body always answers with one there.
	RefreshTokenInBody bool
	// OmitTokenFromBody leaves "access_token" out of the JSON body of
	// the login and of a cookie refresh whenever the response sets the
	// cookies (default false). For deployments whose only clients are
	// browsers; Bearer clients then cannot log in.
	OmitTokenFromBody bool
}

// withDefaults returns c with zero fields set to their defaults, or an
// error for an unusable option.
func (c SessionConfig) withDefaults(tokenLifetime time.Duration) (SessionConfig, error) {
	c.AccessCookieName = cmp.Or(c.AccessCookieName, DefaultAccessCookieName)
	c.RefreshCookieName = cmp.Or(c.RefreshCookieName, DefaultRefreshCookieName)
	c.AccessCookieLifetime = cmp.Or(c.AccessCookieLifetime, DefaultAccessCookieLifetime)
	c.IdleTimeout = cmp.Or(c.IdleTimeout, DefaultSessionIdleTimeout)
	c.MaxLifetime = cmp.Or(c.MaxLifetime, DefaultSessionMaxLifetime)
	c.RefreshReuseGrace = cmp.Or(c.RefreshReuseGrace, DefaultRefreshReuseGrace)
	for _, name := range []string{c.AccessCookieName, c.RefreshCookieName} {
		if err := (&http.Cookie{Name: name, Value: "x", Domain: c.CookieDomain}).Valid(); err != nil {
			return c, fmt.Errorf("sessions: cookie %q: %w", name, err)
		}
	}
	if c.AccessCookieName == c.RefreshCookieName {
		return c, fmt.Errorf("sessions: both cookies are named %q", c.AccessCookieName)
	}
	if c.AccessCookieLifetime < time.Minute || c.AccessCookieLifetime > tokenLifetime {
		return c, fmt.Errorf("sessions: access cookie lifetime %s is not between 1m and the token lifetime %s", c.AccessCookieLifetime, tokenLifetime)
	}
	if c.IdleTimeout < time.Minute || c.MaxLifetime < time.Minute {
		return c, fmt.Errorf("sessions: idle timeout %s and max lifetime %s must be at least 1m", c.IdleTimeout, c.MaxLifetime)
	}
	if c.RefreshReuseGrace > time.Minute {
		return c, fmt.Errorf("sessions: refresh reuse grace %s is longer than 1m", c.RefreshReuseGrace)
	}
	return c, nil
}

// Reasons a session was revoked, stored in sessions.revoked_reason.
const (
	revokedByLogout         = "logout"
	revokedByLogoutAll      = "logout_all"
	revokedByUser           = "revoked"
	revokedByPasswordChange = "password_change"
	revokedByReuse          = "reuse"
	revokedByDeactivation   = "deactivated"
	revokedByPasswordReset  = "password_reset"
)

// refreshTokenBytes is the entropy of a refresh token: 256 bits.
const refreshTokenBytes = 32

// errInvalidRefresh answers every refused refresh token, whatever the
// reason: unknown, retired, expired, revoked, or its user inactive.
var errInvalidRefresh = fastapi.BearerError("Invalid refresh token")

// newRefreshToken returns a fresh refresh token and its hash.
func newRefreshToken() (string, []byte, error) {
	b := make([]byte, refreshTokenBytes)
	if _, err := rand.Read(b); err != nil {
		return "", nil, fmt.Errorf("reading refresh token: %w", err)
	}
	token := base64.RawURLEncoding.EncodeToString(b)
	return token, hashRefreshToken(token), nil
}

// hashRefreshToken is what the database keeps of a refresh token.
func hashRefreshToken(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// activeSessionSQL is the condition of a session that can still be
// refreshed; idle and maxLife name the parameters ("$2") holding the
// idle timeout and the max lifetime in seconds.
func activeSessionSQL(idle, maxLife string) string {
	return "revoked_at IS NULL AND last_used_at + " + idle + "::float8 * interval '1 second' > now()" +
		" AND created_at + " + maxLife + "::float8 * interval '1 second' > now()"
}

// session is a session's state after a login or a refresh.
type session struct {
	id           string
	user         *User
	refreshToken string
	// expires is when the session ends at the latest if not refreshed
	// again (the refresh cookie's lifetime).
	expires time.Time
}

// createSession starts a session for u and returns it with its first
// refresh token. It also deletes the user's sessions that ended long
// enough ago that no token of theirs can still be valid.
func (s *Service) createSession(ctx context.Context, u *User, ip, userAgent string) (*session, error) {
	token, hash, err := newRefreshToken()
	if err != nil {
		return nil, err
	}
	sess := &session{user: u, refreshToken: token}
	err = pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		keep := seconds(s.revokedWindow() + 24*time.Hour)
		if _, err := tx.Exec(ctx, `DELETE FROM sessions WHERE user_id = $1 AND (
			revoked_at < now() - $2::float8 * interval '1 second'
			OR last_used_at + ($3::float8 + $2::float8) * interval '1 second' < now()
			OR created_at + ($4::float8 + $2::float8) * interval '1 second' < now())`,
			u.ID, keep, seconds(s.cfg.Sessions.IdleTimeout), seconds(s.cfg.Sessions.MaxLifetime)); err != nil {
			return err
		}
		var now time.Time
		if err := tx.QueryRow(ctx,
			"INSERT INTO sessions (user_id, ip, user_agent) VALUES ($1, $2, $3) RETURNING id::text, now()",
			u.ID, cleanText(ip, 64), cleanText(userAgent, maxUserAgentLen)).Scan(&sess.id, &now); err != nil {
			return err
		}
		sess.expires = now.Add(min(s.cfg.Sessions.IdleTimeout, s.cfg.Sessions.MaxLifetime))
		_, err := tx.Exec(ctx, "INSERT INTO refresh_tokens (token_hash, session_id) VALUES ($1, $2)", hash, sess.id)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("creating session: %w", err)
	}
	return sess, nil
}

// refreshReuseError reports a retired refresh token presented after the
// grace window: the session has been revoked.
type refreshReuseError struct {
	sessionID, userID string
}

func (e *refreshReuseError) Error() string { return "refresh token reused; session revoked" }

// rotateSession exchanges a refresh token for its successor by the rules
// in this file's comment. It returns errInvalidRefresh, a
// *refreshReuseError (the session is then revoked), or a database error.
func (s *Service) rotateSession(ctx context.Context, token, ip, userAgent string) (*session, error) {
	hash := hashRefreshToken(token)
	next, nextHash, err := newRefreshToken()
	if err != nil {
		return nil, err
	}
	cfg := s.cfg.Sessions
	var sess *session
	var reuse *refreshReuseError
	err = pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		var sid, userID string
		var revoked, active bool
		var createdAt, now time.Time
		// The session row's lock orders concurrent exchanges of its
		// tokens, on every instance. Everything read after it is current.
		err := tx.QueryRow(ctx, `
			SELECT id::text, user_id::text, revoked_at IS NOT NULL, `+activeSessionSQL("$2", "$3")+`, created_at, now()
			FROM sessions WHERE id = (SELECT session_id FROM refresh_tokens WHERE token_hash = $1)
			FOR UPDATE`, hash, seconds(cfg.IdleTimeout), seconds(cfg.MaxLifetime)).
			Scan(&sid, &userID, &revoked, &active, &createdAt, &now)
		if errors.Is(err, pgx.ErrNoRows) || (err == nil && (revoked || !active)) {
			return errInvalidRefresh
		}
		if err != nil {
			return err
		}
		var retired, inGrace bool
		if err := tx.QueryRow(ctx, `
			SELECT retired_at IS NOT NULL, COALESCE(retired_at > now() - $2::float8 * interval '1 second', false)
			FROM refresh_tokens WHERE token_hash = $1`, hash, seconds(max(cfg.RefreshReuseGrace, 0))).Scan(&retired, &inGrace); err != nil {
			return err
		}
		if retired && !(cfg.RefreshReuseGrace > 0 && inGrace) {
			if _, err := tx.Exec(ctx,
				"UPDATE sessions SET revoked_at = now(), revoked_reason = $2 WHERE id = $1", sid, revokedByReuse); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx,
				"UPDATE refresh_tokens SET retired_at = now() WHERE session_id = $1 AND retired_at IS NULL", sid); err != nil {
				return err
			}
			reuse = &refreshReuseError{sessionID: sid, userID: userID}
			return nil // commit the revocation
		}
		u, err := scanUser(tx.QueryRow(ctx, "SELECT "+userColumns+" FROM users WHERE id = $1", userID))
		if errors.Is(err, pgx.ErrNoRows) || (err == nil && !u.IsActive) {
			return errInvalidRefresh
		}
		if err != nil {
			return err
		}
		if !retired {
			// An ordinary exchange: the token and any sibling minted in
			// a grace window are done.
			if _, err := tx.Exec(ctx,
				"UPDATE refresh_tokens SET retired_at = now() WHERE session_id = $1 AND retired_at IS NULL", sid); err != nil {
				return err
			}
		}
		if _, err := tx.Exec(ctx,
			"INSERT INTO refresh_tokens (token_hash, session_id, parent_hash) VALUES ($1, $2, $3)",
			nextHash, sid, hash); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "UPDATE sessions SET last_used_at = now(), ip = $2, user_agent = $3 WHERE id = $1",
			sid, cleanText(ip, 64), cleanText(userAgent, maxUserAgentLen)); err != nil {
			return err
		}
		sess = &session{
			id: sid, user: u, refreshToken: next,
			expires: minTime(now.Add(cfg.IdleTimeout), createdAt.Add(cfg.MaxLifetime)),
		}
		return nil
	})
	if err == errInvalidRefresh {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("refreshing session: %w", err)
	}
	if reuse != nil {
		s.cache.invalidate(reuse.userID)
		return nil, reuse
	}
	return sess, nil
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// revokeSession revokes the session id of user userID, if it is still
// active. It reports whether it did.
func (s *Service) revokeSession(ctx context.Context, id, userID, reason string) (bool, error) {
	tag, err := s.db.Exec(ctx, `UPDATE sessions SET revoked_at = now(), revoked_reason = $3
		WHERE id = $1 AND user_id = $2 AND `+activeSessionSQL("$4", "$5"),
		id, userID, reason, seconds(s.cfg.Sessions.IdleTimeout), seconds(s.cfg.Sessions.MaxLifetime))
	if err != nil {
		return false, fmt.Errorf("revoking session: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return false, nil
	}
	s.cache.invalidate(userID)
	return true, nil
}

// revokeSessionOfRefreshToken revokes the session that token (current or
// retired) belongs to. It returns the session's user, or "" when the
// token names no unrevoked session.
func (s *Service) revokeSessionOfRefreshToken(ctx context.Context, token, reason string) (sessionID, userID string, err error) {
	err = s.db.QueryRow(ctx, `UPDATE sessions SET revoked_at = now(), revoked_reason = $2
		WHERE id = (SELECT session_id FROM refresh_tokens WHERE token_hash = $1) AND revoked_at IS NULL
		RETURNING id::text, user_id::text`, hashRefreshToken(token), reason).Scan(&sessionID, &userID)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", "", nil
	}
	if err != nil {
		return "", "", fmt.Errorf("revoking session: %w", err)
	}
	s.cache.invalidate(userID)
	return sessionID, userID, nil
}

// revokeOtherSessions revokes every unrevoked session of user userID but
// except (which may be "") inside tx, and returns how many it revoked.
func revokeOtherSessions(ctx context.Context, tx pgx.Tx, userID, except, reason string) (int64, error) {
	tag, err := tx.Exec(ctx, `UPDATE sessions SET revoked_at = now(), revoked_reason = $3
		WHERE user_id = $1 AND revoked_at IS NULL AND id::text <> $2`, userID, except, reason)
	if err != nil {
		return 0, fmt.Errorf("revoking sessions: %w", err)
	}
	return tag.RowsAffected(), nil
}

// logoutAll revokes every session of user userID and refuses every
// access token issued so far, in one transaction, and returns how many
// sessions it revoked.
func (s *Service) logoutAll(ctx context.Context, userID string) (int64, error) {
	var n int64
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		var err error
		n, err = endAllSessions(ctx, tx, userID, revokedByLogoutAll)
		return err
	})
	if err != nil {
		return 0, err
	}
	// The notification reaches the other instances within moments; this
	// one must refuse the old tokens on the very next request.
	s.cache.invalidate(userID)
	return n, nil
}

// endAllSessions ends every session of user userID and refuses every
// access token issued so far, inside tx, and returns how many sessions it
// revoked. The caller invalidates the user's cache entry after the
// commit.
//
// tokens_valid_after is set to the start of the next whole second by this
// instance's clock (the clock that writes iat): iat has one-second
// resolution, so a token issued earlier in this very second has an iat
// before it too. A token issued after it in the same second would be
// refused as well; issueAccessToken waits for that second to end
// instead. Instances' clocks must agree (NTP); the session revocation,
// which refuses every token with a sid, does not depend on clocks at all.
func endAllSessions(ctx context.Context, tx pgx.Tx, userID, reason string) (int64, error) {
	validAfter := time.Now().Truncate(time.Second).Add(time.Second)
	if _, err := tx.Exec(ctx,
		"UPDATE users SET tokens_valid_after = GREATEST(tokens_valid_after, $2) WHERE id = $1",
		userID, validAfter); err != nil {
		return 0, fmt.Errorf("setting tokens_valid_after: %w", err)
	}
	return revokeOtherSessions(ctx, tx, userID, "", reason)
}

// revokedWindow is how long after its revocation a session's access
// tokens may still be unexpired: the longest token lifetime, the leeway,
// and the user cache's lifetime as margin.
func (s *Service) revokedWindow() time.Duration {
	return max(s.cfg.TokenLifetime, s.cfg.Sessions.AccessCookieLifetime) + s.cfg.Leeway + userCacheTTL + time.Minute
}

// userForAuth loads a user as the request path needs it, in one query:
// with tokens_valid_after, the ids of the sessions revoked within
// revokedWindow, the user's groups and the apps the user may use.
func (s *Service) userForAuth(ctx context.Context, id string) (*User, error) {
	var revoked, groups, apps []string
	u, err := scanUser(s.db.QueryRow(ctx, "SELECT "+userColumns+`,
		ARRAY(SELECT s.id::text FROM sessions s
		      WHERE s.user_id = users.id AND s.revoked_at > now() - $2::float8 * interval '1 second'),
		ARRAY(SELECT m.group_id::text FROM group_members m WHERE m.user_id = users.id ORDER BY 1),
		ARRAY(SELECT a.key FROM apps a WHERE `+mayUseApp("users.id")+` ORDER BY 1)
		FROM users WHERE id = $1`, id, seconds(s.revokedWindow())), &revoked, &groups, &apps)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, errNoUser
	}
	if err != nil {
		return nil, fmt.Errorf("loading user: %w", err)
	}
	if len(revoked) > 0 {
		u.revokedSessions = revoked
	}
	u.groupsHeader = strings.Join(groups, ",")
	u.apps = apps
	return u, nil
}

// tokenRevoked reports whether claims, verified and of user u, were
// revoked since they were issued: by logout-all (iat before
// tokens_valid_after) or by the end of their session.
func tokenRevoked(u *User, claims *Claims) bool {
	if !u.tokensValidAfter.IsZero() &&
		(claims.IssuedAt == nil || claims.IssuedAt.Time.Before(u.tokensValidAfter)) {
		return true
	}
	return claims.SessionID != "" && slices.Contains(u.revokedSessions, claims.SessionID)
}

// maxValidAfterWait bounds how long issueAccessToken waits for a
// tokens_valid_after in the future: more than a second or so means
// clocks disagree, and waiting longer would not help.
const maxValidAfterWait = 2 * time.Second

// issueAccessToken signs an access token of session sid for u, valid for
// lifetime. Right after a logout-all (within the same second) it first
// waits for u's tokens_valid_after, so that the new token is not refused.
func (s *Service) issueAccessToken(ctx context.Context, u *User, sid string, lifetime time.Duration) (string, error) {
	if wait := time.Until(u.tokensValidAfter); wait > 0 {
		t := time.NewTimer(min(wait, maxValidAfterWait))
		select {
		case <-ctx.Done():
			t.Stop()
			return "", ctx.Err()
		case <-t.C:
		}
	}
	token, _, err := s.tokens.IssueForSession(u, sid, lifetime)
	return token, err
}

// sessionTokenResponse is the body of a login or a refresh: API.md's
// login body, plus refresh_token where the rules say so (see
// SessionConfig).
type sessionTokenResponse struct {
	AccessToken  string `json:"access_token,omitempty"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	RefreshToken string `json:"refresh_token,omitempty"`
}

// startSession is the end of a successful login: it creates a session,
// sets the cookies when the request may have them (not a cross-origin
// browser request), and returns the JSON body, which keeps API.md's
// shape: an access token of Config.TokenLifetime, with the session's sid.
func (s *Service) startSession(w http.ResponseWriter, r *http.Request, u *User) (*sessionTokenResponse, error) {
	ctx := r.Context()
	cfg := s.cfg.Sessions
	sess, err := s.createSession(ctx, u, ClientIP(r), r.UserAgent())
	if err != nil {
		return nil, err
	}
	body := &sessionTokenResponse{TokenType: "bearer", ExpiresIn: int64(s.tokens.Lifetime().Seconds())}
	withCookies := s.crossOrigin.Check(r) == nil
	if withCookies {
		cookieToken, err := s.issueAccessToken(ctx, u, sess.id, cfg.AccessCookieLifetime)
		if err != nil {
			return nil, err
		}
		s.setSessionCookies(w, cookieToken, sess.refreshToken, sess.expires)
	}
	if !withCookies || !cfg.OmitTokenFromBody {
		if body.AccessToken, err = s.issueAccessToken(ctx, u, sess.id, s.tokens.Lifetime()); err != nil {
			return nil, err
		}
	} else {
		body.ExpiresIn = int64(cfg.AccessCookieLifetime.Seconds())
	}
	if cfg.RefreshTokenInBody {
		body.RefreshToken = sess.refreshToken
	}
	return body, nil
}

// listSessions returns the active sessions of user userID, the most
// recently used first.
func (s *Service) listSessions(ctx context.Context, userID, current string) ([]sessionInfo, error) {
	rows, err := s.db.Query(ctx, `SELECT id::text, user_agent, ip, created_at, last_used_at FROM sessions
		WHERE user_id = $1 AND `+activeSessionSQL("$2", "$3")+`
		ORDER BY last_used_at DESC, created_at DESC, id`,
		userID, seconds(s.cfg.Sessions.IdleTimeout), seconds(s.cfg.Sessions.MaxLifetime))
	if err != nil {
		return nil, fmt.Errorf("listing sessions: %w", err)
	}
	list := []sessionInfo{}
	for rows.Next() {
		var si sessionInfo
		var ua, ip string
		if err := rows.Scan(&si.ID, &ua, &ip, &si.CreatedAt, &si.LastUsedAt); err != nil {
			rows.Close()
			return nil, fmt.Errorf("listing sessions: %w", err)
		}
		si.Device, si.IP = nullIfEmpty(ua), nullIfEmpty(ip)
		si.CreatedAt, si.LastUsedAt = si.CreatedAt.UTC(), si.LastUsedAt.UTC()
		si.Current = current != "" && si.ID == current
		list = append(list, si)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing sessions: %w", err)
	}
	return list, nil
}
