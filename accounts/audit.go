package accounts

import (
	"context"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"
)

// Security events written to the audit log.
const (
	EventRegister         = "register"
	EventLoginSuccess     = "login.success"
	EventLoginFailure     = "login.failure"
	EventLoginLocked      = "login.locked"
	EventRefreshReuse     = "refresh.reuse_detected"
	EventLogout           = "logout"
	EventLogoutAll        = "logout.all"
	EventSessionRevoked   = "session.revoked"
	EventPasswordChange   = "password.change"
	EventUserRoleChange   = "user.role_change"
	EventUserActiveChange = "user.active_change"
	EventSettingsChange   = "settings.change"
)

// AuditEvent is one row of the audit log.
type AuditEvent struct {
	ID        int64          `json:"id"`
	At        time.Time      `json:"at"`
	Event     string         `json:"event"`
	ActorID   *string        `json:"actor_id"`
	TargetID  *string        `json:"target_id"`
	IP        *string        `json:"ip"`
	UserAgent *string        `json:"user_agent"`
	Details   map[string]any `json:"details"`
}

// maxUserAgentLen bounds what is kept of a User-Agent header.
const maxUserAgentLen = 256

// audit records a security event of request r. actor is who acted and
// target whom it concerns (either may be ""). details must never hold a
// secret: no password, token, key or hash. A failure to write is logged,
// never returned: the event already happened.
func (s *Service) audit(r *http.Request, event, actor, target string, details map[string]any) {
	if details == nil {
		details = map[string]any{}
	}
	ua := cleanText(r.UserAgent(), maxUserAgentLen)
	// The event is recorded even if the client has gone away.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 5*time.Second)
	defer cancel()
	_, err := s.db.Exec(ctx,
		`INSERT INTO audit_events (event, actor_id, target_id, ip, user_agent, details)
		 VALUES ($1, $2, $3, $4, $5, $6)`,
		event, nullIfEmpty(actor), nullIfEmpty(target), nullIfEmpty(ClientIP(r)), nullIfEmpty(ua), details)
	if err != nil {
		s.log.Error("could not write audit event", zap.String("event", event), zap.Error(err))
	}
}

// cleanText makes client-sent text storable: valid UTF-8, no NUL (which
// PostgreSQL refuses), at most max characters.
func cleanText(s string, max int) string {
	s = strings.ReplaceAll(strings.ToValidUTF8(s, ""), "\x00", "")
	if utf8.RuneCountInString(s) > max {
		s = string([]rune(s)[:max])
	}
	return s
}

func nullIfEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
