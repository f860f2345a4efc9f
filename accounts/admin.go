package accounts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/caddyaccounts/gateway/fastapi"
)

// Paging bounds of every list of the API (API.md: GET /api/admin/users;
// the others page the same way).
const (
	defaultPageSize = 100
	maxPageSize     = 1000
)

// Errors of the admin routes; their details are part of the contract.
var (
	errUserNotFound = fastapi.NewError(http.StatusNotFound, "User not found")
	errLastAdmin    = fastapi.NewError(http.StatusConflict, "Cannot remove the last active admin")
)

// msgRole is pydantic's message for a role that is neither value.
const msgRole = "Input should be 'user' or 'admin'"

// ---- GET /api/admin/users ----

// escapeLike escapes the LIKE wildcards of s (with \ as the escape
// character), so that it matches literally.
func escapeLike(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s)
}

// userFilter selects users for the admin list.
type userFilter struct {
	// search is a substring of the email, in any letter case ("" for all).
	search string
	// role and active filter when set.
	role   *string
	active *bool
}

// listUsers returns one page of the users that f selects, oldest first
// (created_at, then id), and how many it selects in all. Both come from
// one snapshot.
func (s *Service) listUsers(ctx context.Context, f userFilter, page fastapi.Page) ([]*User, int64, error) {
	if strings.ContainsRune(f.search, 0) {
		return []*User{}, 0, nil // no stored text holds a NUL
	}
	var q pagedQuery
	if f.search != "" {
		q.cond(`email ILIKE '%' || ` + q.arg(escapeLike(f.search)) + ` || '%' ESCAPE '\'`)
	}
	if f.role != nil {
		q.cond("role::text = " + q.arg(*f.role))
	}
	if f.active != nil {
		q.cond("is_active = " + q.arg(*f.active))
	}
	return listPage(ctx, s.db, "users", userColumns, "created_at, id", q, page, func(row pgx.Row) (*User, error) {
		return scanUser(row)
	})
}

// handleListUsers serves GET /api/admin/users: one page of the users a
// filter selects, oldest first.
func (s *Service) handleListUsers(w http.ResponseWriter, r *http.Request, p *Principal) error {
	q := fastapi.ReadQuery(r)
	page := q.Page(defaultPageSize, maxPageSize)
	var f userFilter
	f.search, _ = q.String("q")
	if role, ok := q.Enum("role", msgRole, RoleUser, RoleAdmin); ok {
		f.role = &role
	}
	if active, ok := q.Bool("is_active"); ok {
		f.active = &active
	}
	if err := q.Err(); err != nil {
		return err
	}
	users, total, err := s.listUsers(r.Context(), f, page)
	if err != nil {
		return err
	}
	fastapi.WritePage(w, users, total)
	return nil
}

// ---- PATCH /api/admin/users/{id} ----

// userAccess is a change of a user's role and active state; nil keeps
// the current value.
type userAccess struct {
	role     *string
	active   *bool
	verified *bool
}

// removesAdmin reports whether the change could take admin rights away
// from an active admin.
func (c userAccess) removesAdmin() bool {
	return (c.role != nil && *c.role != RoleAdmin) || (c.active != nil && !*c.active)
}

// readUserAccess reads the body of PATCH /api/admin/users/{id}: role
// ("user" or "admin"), is_active and email_verified, all optional; null is the same as
// absent, as with the old backend's Optional fields. is_active is read
// as pydantic reads a bool from JSON in lax mode: true/false, 0/1, or a
// string that parseBoolString accepts.
func readUserAccess(body *fastapi.Object) userAccess {
	var c userAccess
	if raw, ok := body.OptionalRaw("role"); ok && !fastapi.IsNull(raw) {
		var role string
		if json.Unmarshal(raw, &role) != nil || (role != RoleUser && role != RoleAdmin) {
			body.Add("enum", msgRole, "role")
		} else {
			c.role = &role
		}
	}
	c.active = readLaxBool(body, "is_active")
	c.verified = readLaxBool(body, "email_verified")
	return c
}

// readLaxBool reads the optional bool field name (null is absent) with
// laxJSONBool, failing the field when it is not one.
func readLaxBool(body *fastapi.Object, name string) *bool {
	raw, ok := body.OptionalRaw(name)
	if !ok || fastapi.IsNull(raw) {
		return nil
	}
	v, typ := laxJSONBool(raw)
	if typ != "" {
		msg := fastapi.MsgBool
		if typ == "bool_parsing" {
			msg = fastapi.MsgBoolParsing
		}
		body.Add(typ, msg, name)
		return nil
	}
	return &v
}

// laxJSONBool reads a JSON value as a bool the way pydantic's lax mode
// does. It returns the error type when the value is not one.
func laxJSONBool(raw json.RawMessage) (bool, string) {
	var v any
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.UseNumber()
	if dec.Decode(&v) != nil {
		return false, "bool_type"
	}
	switch v := v.(type) {
	case bool:
		return v, ""
	case string:
		if b, ok := fastapi.ParseBool(v); ok {
			return b, ""
		}
		return false, "bool_parsing"
	case json.Number:
		switch f, err := v.Float64(); {
		case err == nil && f == 0:
			return false, ""
		case err == nil && f == 1:
			return true, ""
		}
		return false, "bool_parsing"
	}
	return false, "bool_type"
}

// setUserAccess applies c to the user id in one transaction and returns
// the user before and after. It refuses (errLastAdmin) a change that
// would leave no active admin; see the file comment for the locking.
// Nothing is written, and updated_at is kept, when nothing changes. A
// deactivation also ends all of the user's sessions and tokens in the
// same transaction (endAllSessions), so that a later reactivation does
// not bring them back.
func (s *Service) setUserAccess(ctx context.Context, id string, c userAccess) (before, after *User, err error) {
	err = pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		var admins []string
		if c.removesAdmin() {
			rows, err := tx.Query(ctx, "SELECT id::text FROM users WHERE role = 'admin' AND is_active ORDER BY id FOR UPDATE")
			if err != nil {
				return err
			}
			if admins, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
				return err
			}
		}
		cur, err := scanUser(tx.QueryRow(ctx, "SELECT "+userColumns+" FROM users WHERE id = $1 FOR UPDATE", id))
		if errors.Is(err, pgx.ErrNoRows) {
			return errUserNotFound
		}
		if err != nil {
			return err
		}
		before, after = cur, cur
		role, active, verified := cur.Role, cur.IsActive, cur.EmailVerified
		if c.role != nil {
			role = *c.role
		}
		if c.active != nil {
			active = *c.active
		}
		if c.verified != nil {
			verified = *c.verified
		}
		if role == cur.Role && active == cur.IsActive && verified == cur.EmailVerified {
			return nil
		}
		if cur.Role == RoleAdmin && cur.IsActive && (role != RoleAdmin || !active) && !hasOtherThan(admins, cur.ID) {
			return errLastAdmin
		}
		after, err = scanUser(tx.QueryRow(ctx,
			"UPDATE users SET role = $2, is_active = $3, email_verified = $4, updated_at = now() WHERE id = $1 RETURNING "+userColumns,
			id, role, active, verified))
		if err != nil || !cur.IsActive || active {
			return err
		}
		// Deactivation ends every session and refuses every token issued
		// so far, for good: reactivating the user revives none of them.
		_, err = endAllSessions(ctx, tx, id, revokedByDeactivation)
		return err
	})
	if err != nil {
		var ae *fastapi.Error
		if errors.As(err, &ae) {
			return nil, nil, err
		}
		return nil, nil, fmt.Errorf("changing user access: %w", err)
	}
	// The change notification reaches this instance too, but a moment
	// later; the user's very next request must see the change here as
	// well, even one sent as soon as this answer arrives.
	s.cache.invalidate(after.ID)
	return before, after, nil
}

// hasOtherThan reports whether ids holds an id other than id.
func hasOtherThan(ids []string, id string) bool {
	for _, x := range ids {
		if x != id {
			return true
		}
	}
	return false
}

// handlePatchUser serves PATCH /api/admin/users/{id}: a user's role and
// active state, never leaving no active admin.
func (s *Service) handlePatchUser(w http.ResponseWriter, r *http.Request, p *Principal) error {
	// Like FastAPI: a body that is not JSON is refused alone; otherwise
	// the path's error comes first, then the body's.
	var v fastapi.ValidationError
	id := fastapi.PathUUID(r, "id", &v)
	body, err := fastapi.ReadObject(w, r)
	var ve *fastapi.ValidationError
	switch {
	case err == nil:
		c := readUserAccess(body)
		if err := body.Finish(); errors.As(err, &ve) {
			v.Fields = append(v.Fields, ve.Fields...)
		}
		if err := v.Err(); err != nil {
			return err
		}
		return s.patchUser(w, r, p, id, c)
	case errors.As(err, &ve) && len(ve.Fields) > 0 && ve.Fields[0].Type != "json_invalid":
		v.Fields = append(v.Fields, ve.Fields...)
		return &v
	default:
		return err
	}
}

// patchUser applies a validated change, then logs and audits it.
func (s *Service) patchUser(w http.ResponseWriter, r *http.Request, p *Principal, id string, c userAccess) error {
	before, after, err := s.setUserAccess(r.Context(), id, c)
	if err != nil {
		return err
	}
	if before.Role != after.Role {
		s.log.Info("user role changed", zap.String("user_id", after.ID), zap.String("by", p.User.ID),
			zap.String("from", before.Role), zap.String("to", after.Role))
		s.audit(r, EventUserRoleChange, p.User.ID, after.ID, map[string]any{"from": before.Role, "to": after.Role})
	}
	if before.IsActive != after.IsActive {
		s.log.Info("user active state changed", zap.String("user_id", after.ID), zap.String("by", p.User.ID),
			zap.Bool("from", before.IsActive), zap.Bool("to", after.IsActive))
		s.audit(r, EventUserActiveChange, p.User.ID, after.ID, map[string]any{"from": before.IsActive, "to": after.IsActive})
	}
	if before.EmailVerified != after.EmailVerified {
		s.audit(r, EventEmailVerifiedChange, p.User.ID, after.ID, map[string]any{"from": before.EmailVerified, "to": after.EmailVerified})
	}
	fastapi.WriteJSON(w, http.StatusOK, after)
	return nil
}
