package accounts

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/caddyaccounts/gateway/fastapi"
	"github.com/caddyaccounts/gateway/settings"
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
	EventAppCreate        = "app.create"
	EventAppUpdate        = "app.update"
	EventAppDelete        = "app.delete"
	EventGroupCreate      = "group.create"
	EventGroupUpdate      = "group.update"
	EventGroupDelete      = "group.delete"
	// EventGroupMemberAdd and EventGroupMemberRemove name the user as
	// target and the group in details.
	EventGroupMemberAdd      = "group.member_add"
	EventGroupMemberRemove   = "group.member_remove"
	EventUserAppGrant        = "user.app_grant"
	EventUserAppRevoke       = "user.app_revoke"
	EventGroupAppGrant       = "group.app_grant"
	EventGroupAppRevoke      = "group.app_revoke"
	EventEmailVerified       = "email.verified"
	EventEmailVerifiedChange = "user.email_verified_change"
	EventPasswordReset       = "password.reset"
	EventPasswordResetSent   = "password.reset_sent"
	EventMailFailed          = "mail.failed"
	EventSettingsChange      = settings.EventChange
	EventSettingsAITest      = settings.EventAITest
)

// AuditEvent is one row of the audit log, as GET /api/admin/audit shows
// it.
type AuditEvent struct {
	ID        int64     `json:"id"`
	At        time.Time `json:"at"`
	Event     string    `json:"event"`
	ActorID   *string   `json:"actor_id"`
	TargetID  *string   `json:"target_id"`
	IP        *string   `json:"ip"`
	UserAgent *string   `json:"user_agent"`
	// Details is the stored JSON object, passed on as it is.
	Details json.RawMessage `json:"details"`
}

// maxUserAgentLen bounds what is kept of a User-Agent header.
const maxUserAgentLen = 256

// audit records a security event of request r. actor is who acted and
// target whom it concerns (either may be ""). details must never hold a
// secret: no password, token, key or hash. A failure to write is logged,
// never returned: the event already happened.
func (s *Service) audit(r *http.Request, event, actor, target string, details map[string]any) {
	// The event is recorded even if the client has gone away.
	s.writeAudit(r.Context(), event, actor, target, ClientIP(r), cleanText(r.UserAgent(), maxUserAgentLen), details)
}

// writeAudit stores one audit event (see audit); ip and ua may be "".
func (s *Service) writeAudit(ctx context.Context, event, actor, target, ip, ua string, details map[string]any) {
	if details == nil {
		details = map[string]any{}
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_, err := s.db.Exec(ctx,
		`INSERT INTO audit_events (event, actor_id, target_id, ip, user_agent, details)
		 VALUES ($1, $2, $3, $4, $5, $6)`,
		event, nullIfEmpty(actor), nullIfEmpty(target), nullIfEmpty(ip), nullIfEmpty(ua), details)
	if err != nil {
		s.log.Error("could not write audit event", zap.String("event", event), zap.Error(err))
	}
}

// Actor is who makes a change of apps, groups or grants, as the audit
// log records it: an admin through the API, or the command line.
type Actor struct {
	userID string
	r      *http.Request // nil for the command line
}

// CommandLine is the actor of the `caddy accounts` subcommands. Their
// audit events have no actor, address or user agent, and "via": "cli"
// in their details.
var CommandLine = Actor{}

// apiActor is the admin p acting through request r.
func apiActor(r *http.Request, p *Principal) Actor { return Actor{userID: p.User.ID, r: r} }

// String names the actor in log lines: the user's id, or "cli".
func (a Actor) String() string {
	if a.r == nil {
		return "cli"
	}
	return a.userID
}

// auditBy records a change that a made (see audit).
func (s *Service) auditBy(ctx context.Context, a Actor, event, target string, details map[string]any) {
	if a.r != nil {
		s.audit(a.r, event, a.userID, target, details)
		return
	}
	if details == nil {
		details = map[string]any{}
	}
	details["via"] = "cli"
	s.writeAudit(ctx, event, "", target, "", "", details)
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

// auditedEmail is how an account name typed into a login enters the
// audit log: as typed when it is an email address, else only the fact
// that it was not one, since a password typed into the wrong field must
// not be kept.
func auditedEmail(username string) string {
	email := strings.TrimSpace(username)
	if checkEmail(email) != "" {
		return "(not an email address)"
	}
	return cleanText(email, maxEmailLen)
}

func nullIfEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// ---- GET /api/admin/audit ----

// auditFilter selects events of the audit log. Zero values select all.
type auditFilter struct {
	// events are the event names to keep (any of them) when set; a set
	// but empty list keeps nothing.
	events []string
	// actor and target are canonical UUIDs, or "".
	actor, target string
	// since keeps events at or after it, until those before it.
	since, until *time.Time
}

// auditColumns are selected, in this order, by scanAuditEvent.
const auditColumns = "id, at, event, actor_id::text, target_id::text, ip, user_agent, details"

func scanAuditEvent(row pgx.Row) (AuditEvent, error) {
	var e AuditEvent
	err := row.Scan(&e.ID, &e.At, &e.Event, &e.ActorID, &e.TargetID, &e.IP, &e.UserAgent, &e.Details)
	e.At = e.At.UTC()
	return e, err
}

// listAuditEvents returns one page of the events that f selects, newest
// first (at, then id), and how many it selects in all. Both come from
// one snapshot. The indexes of migration 0005 serve each filter and the
// order.
func (s *Service) listAuditEvents(ctx context.Context, f auditFilter, page fastapi.Page) ([]AuditEvent, int64, error) {
	if f.events != nil && len(f.events) == 0 {
		return []AuditEvent{}, 0, nil
	}
	var q pagedQuery
	if f.events != nil {
		q.cond("event = ANY(" + q.arg(f.events) + "::text[])")
	}
	if f.actor != "" {
		q.cond("actor_id = " + q.arg(f.actor) + "::uuid")
	}
	if f.target != "" {
		q.cond("target_id = " + q.arg(f.target) + "::uuid")
	}
	if f.since != nil {
		q.cond("at >= " + q.arg(*f.since))
	}
	if f.until != nil {
		q.cond("at < " + q.arg(*f.until))
	}
	return listPage(ctx, s.db, "audit_events", auditColumns, "at DESC, id DESC", q, page, scanAuditEvent)
}

// handleListAuditEvents serves GET /api/admin/audit: one page of the
// audit events a filter selects, newest first.
func (s *Service) handleListAuditEvents(w http.ResponseWriter, r *http.Request, p *Principal) error {
	q := fastapi.ReadQuery(r)
	page := q.Page(defaultPageSize, maxPageSize)
	var f auditFilter
	if names := q.Values("event"); names != nil {
		f.events = []string{}
		for _, name := range names {
			if !strings.ContainsRune(name, 0) { // no stored name holds a NUL
				f.events = append(f.events, name)
			}
		}
	}
	f.actor, _ = q.UUID("actor_id")
	f.target, _ = q.UUID("target_id")
	f.since = q.Time("since")
	f.until = q.Time("until")
	if err := q.Err(); err != nil {
		return err
	}
	events, total, err := s.listAuditEvents(r.Context(), f, page)
	if err != nil {
		return err
	}
	fastapi.WritePage(w, events, total)
	return nil
}
