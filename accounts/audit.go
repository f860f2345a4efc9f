package accounts

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
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
	EventSettingsAITest   = "settings.ai_test"
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

// auditedEmail is how an account name typed into a login enters the
// audit log: as typed when it is an email address, else only the fact
// that it was not one, since a password typed into the wrong field must
// not be kept.
func auditedEmail(username string) string {
	email := trimEmail(username)
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
func (s *Service) listAuditEvents(ctx context.Context, f auditFilter, skip, limit int64) ([]AuditEvent, int64, error) {
	events := []AuditEvent{}
	if f.events != nil && len(f.events) == 0 {
		return events, 0, nil
	}
	var where []string
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if f.events != nil {
		where = append(where, "event = ANY("+arg(f.events)+"::text[])")
	}
	if f.actor != "" {
		where = append(where, "actor_id = "+arg(f.actor)+"::uuid")
	}
	if f.target != "" {
		where = append(where, "target_id = "+arg(f.target)+"::uuid")
	}
	if f.since != nil {
		where = append(where, "at >= "+arg(*f.since))
	}
	if f.until != nil {
		where = append(where, "at < "+arg(*f.until))
	}
	cond := ""
	if len(where) > 0 {
		cond = " WHERE " + strings.Join(where, " AND ")
	}
	var total int64
	err := pgx.BeginTxFunc(ctx, s.db, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, "SELECT count(*) FROM audit_events"+cond, args...).Scan(&total); err != nil {
			return err
		}
		if total <= skip {
			return nil
		}
		n := len(args)
		rows, err := tx.Query(ctx, fmt.Sprintf("SELECT %s FROM audit_events%s ORDER BY at DESC, id DESC OFFSET $%d LIMIT $%d",
			auditColumns, cond, n+1, n+2), append(args, skip, limit)...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			e, err := scanAuditEvent(rows)
			if err != nil {
				return err
			}
			events = append(events, e)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, 0, fmt.Errorf("listing audit events: %w", err)
	}
	return events, total, nil
}

// msgDateTime is the message of a since or until that is no RFC 3339
// date-time (pydantic's datetime_parsing, with the reason this API has).
const msgDateTime = "Input should be a valid datetime, expected an RFC 3339 date-time with a time zone"

// auditQueryUUID reads the UUID parameter name into *dst, as the path
// parameters are read (parseUUID).
func auditQueryUUID(q *queryParams, name string, dst *string) {
	v, ok := q.String(name)
	if !ok {
		return
	}
	id, reason := parseUUID(v)
	if reason != "" {
		q.errs.add("uuid_parsing", "Input should be a valid UUID, "+reason, "query", name)
		return
	}
	*dst = id
}

// auditQueryTime reads the RFC 3339 date-time parameter name.
func auditQueryTime(q *queryParams, name string) *time.Time {
	v, ok := q.String(name)
	if !ok {
		return nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		q.errs.add("datetime_parsing", msgDateTime, "query", name)
		return nil
	}
	return &t
}

// queryValues returns every value of the query parameter name, in order,
// decoded as readQuery decodes them.
func queryValues(r *http.Request, name string) []string {
	var out []string
	for pair := range strings.SplitSeq(r.URL.RawQuery, "&") {
		k, v, _ := strings.Cut(pair, "=")
		if pair != "" && unquoteQuery(k) == name {
			out = append(out, unquoteQuery(v))
		}
	}
	return out
}

// handleListAuditEvents serves GET /api/admin/audit: a JSON array of
// audit events, newest first, with the count before paging in
// X-Total-Count. Query, all optional: skip and limit as for GET
// /api/admin/users; event (an event name, exact; repeated: any of them);
// actor_id and target_id (UUIDs); since (at or after) and until (before),
// RFC 3339 date-times with a time zone. Errors are listed in the order of
// the parameters above.
func (s *Service) handleListAuditEvents(w http.ResponseWriter, r *http.Request, p *Principal) error {
	q := readQuery(r)
	// The same paging as the user list.
	skip := q.Int("skip", 0, 0, math.MaxInt64)
	limit := q.Int("limit", defaultUserPageSize, 1, maxUserPageSize)
	var f auditFilter
	if names := queryValues(r, "event"); names != nil {
		f.events = []string{}
		for _, name := range names {
			if !strings.ContainsRune(name, 0) { // no stored name holds a NUL
				f.events = append(f.events, name)
			}
		}
	}
	auditQueryUUID(q, "actor_id", &f.actor)
	auditQueryUUID(q, "target_id", &f.target)
	f.since = auditQueryTime(q, "since")
	f.until = auditQueryTime(q, "until")
	if err := q.errs.err(); err != nil {
		return err
	}
	events, total, err := s.listAuditEvents(r.Context(), f, skip, limit)
	if err != nil {
		return err
	}
	w.Header().Set("X-Total-Count", strconv.FormatInt(total, 10))
	writeJSON(w, http.StatusOK, events)
	return nil
}
