package accounts

// Admin: the routes under /api/admin, for role admin only (the role as
// stored now, not as the token says): listing users, and changing a
// user's role and active state.
//
// # The last active admin
//
// A change that would leave no active admin is refused with 409. The check
// and the update run in one transaction that first locks every active
// admin row (SELECT ... FOR UPDATE, in id order so that two such
// transactions cannot deadlock): two concurrent requests that each remove
// one of the last two admins are serialized, and the second sees that
// its target is the only active admin left.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
)

// Paging bounds of GET /api/admin/users (API.md).
const (
	defaultUserPageSize = 100
	maxUserPageSize     = 1000
)

// Errors of the admin routes; their details are part of the contract.
var (
	errUserNotFound = newError(http.StatusNotFound, "User not found")
	errLastAdmin    = newError(http.StatusConflict, "Cannot remove the last active admin")
)

// msgRole is pydantic's message for a role that is neither value.
const msgRole = "Input should be 'user' or 'admin'"

// ---- Query parameters ----

// queryParams are a request's query parameters as FastAPI reads them,
// validated one by one into pydantic-style 422 entries at ["query", name].
type queryParams struct {
	values map[string]string
	errs   ValidationError
}

// readQuery parses r's query string as Starlette does: pairs split on
// "&", "+" is a space, an invalid %-escape is kept as text, bytes that
// are not UTF-8 become U+FFFD, a name without "=" has the value "", and of
// a repeated name the last value counts.
func readQuery(r *http.Request) *queryParams {
	q := &queryParams{values: map[string]string{}}
	for pair := range strings.SplitSeq(r.URL.RawQuery, "&") {
		if pair == "" {
			continue
		}
		name, value, _ := strings.Cut(pair, "=")
		q.values[unquoteQuery(name)] = unquoteQuery(value)
	}
	return q
}

// unquoteQuery decodes one query-string component leniently, like
// Python's urllib.parse.unquote_plus.
func unquoteQuery(s string) string {
	if !strings.ContainsAny(s, "%+") {
		return strings.ToValidUTF8(s, "\uFFFD")
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '+':
			b = append(b, ' ')
		case c == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]):
			n, _ := strconv.ParseUint(s[i+1:i+3], 16, 8)
			b = append(b, byte(n))
			i += 2
		default:
			b = append(b, c)
		}
	}
	return strings.ToValidUTF8(string(b), "\uFFFD")
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// String returns the parameter's value and whether it was given.
func (q *queryParams) String(name string) (string, bool) {
	v, ok := q.values[name]
	return v, ok
}

// pydanticInt is the text form of an integer pydantic accepts from a
// string (surrounding whitespace aside): an optional sign, digits with
// single underscores between them, and an optional fraction of zeros.
var pydanticInt = regexp.MustCompile(`^[+-]?[0-9]+(_[0-9]+)*(\.0+)?$`)

// maxIntDigits is the longest integer pydantic parses (Python's limit).
const maxIntDigits = 4300

// Int returns the integer parameter name, def when it is absent. A value
// outside [min, max] is refused; but when max is math.MaxInt64 (no upper
// bound) a larger value is clamped to it instead, since PostgreSQL could
// not take it and it means "past the end" anyway.
func (q *queryParams) Int(name string, def, min, max int64) int64 {
	s, ok := q.values[name]
	if !ok {
		return def
	}
	s = strings.TrimSpace(s)
	if !pydanticInt.MatchString(s) {
		q.errs.add("int_parsing", "Input should be a valid integer, unable to parse string as an integer", "query", name)
		return def
	}
	s, _, _ = strings.Cut(s, ".")
	s = strings.ReplaceAll(s, "_", "")
	if len(strings.TrimLeft(s, "+-")) > maxIntDigits {
		q.errs.add("int_parsing_size", "Unable to parse input string as an integer, exceeded maximum size", "query", name)
		return def
	}
	n, _ := new(big.Int).SetString(s, 10)
	switch {
	case n.Cmp(big.NewInt(min)) < 0:
		q.errs.add("greater_than_equal", fmt.Sprintf("Input should be greater than or equal to %d", min), "query", name)
		return def
	case max == math.MaxInt64 && !n.IsInt64():
		return max
	case n.Cmp(big.NewInt(max)) > 0:
		q.errs.add("less_than_equal", fmt.Sprintf("Input should be less than or equal to %d", max), "query", name)
		return def
	}
	return n.Int64()
}

// Role returns the role parameter name, if given and valid.
func (q *queryParams) Role(name string) (string, bool) {
	v, ok := q.values[name]
	if !ok {
		return "", false
	}
	if v != RoleUser && v != RoleAdmin {
		q.errs.add("enum", msgRole, "query", name)
		return "", false
	}
	return v, true
}

// Bool returns the boolean parameter name, if given and valid; see
// parseBoolString.
func (q *queryParams) Bool(name string) (value, ok bool) {
	s, ok := q.values[name]
	if !ok {
		return false, false
	}
	v, valid := parseBoolString(s)
	if !valid {
		q.errs.add("bool_parsing", msgBoolParsing, "query", name)
		return false, false
	}
	return v, true
}

// msgBoolParsing is pydantic's message for text that is no boolean.
const msgBoolParsing = "Input should be a valid boolean, unable to interpret input"

// parseBoolString reads a boolean as pydantic does from a string: 1, 0,
// and true/false, yes/no, on/off, t/f, y/n in any letter case.
func parseBoolString(s string) (value, ok bool) {
	switch strings.ToLower(s) {
	case "1", "true", "t", "yes", "y", "on":
		return true, true
	case "0", "false", "f", "no", "n", "off":
		return false, true
	}
	return false, false
}

// ---- Path parameters ----

// parseUUID parses s as pydantic's UUID type does (with the Rust uuid
// crate): hyphenated, 32 hex digits, {braced} or urn:uuid:, in any letter
// case. It returns the canonical form (lowercase, hyphenated), or the
// crate's text for why s is not a UUID.
func parseUUID(s string) (uuid string, reason string) {
	hex := ""
	switch {
	case len(s) == 32:
		hex = s
	case len(s) == 36:
		hex = unhyphenate(s)
	case len(s) == 38 && s[0] == '{' && s[37] == '}':
		hex = unhyphenate(s[1:37])
	case len(s) == 45 && strings.HasPrefix(s, "urn:uuid:"):
		hex = unhyphenate(s[9:])
	}
	if len(hex) == 32 && strings.IndexFunc(hex, func(r rune) bool { return r > 0x7f || !isHex(byte(r)) }) < 0 {
		h := strings.ToLower(hex)
		return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:], ""
	}
	return "", uuidParseError(s)
}

// unhyphenate returns the 32 digits of a hyphenated UUID, or "" when the
// hyphens are not where they belong.
func unhyphenate(s string) string {
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return ""
	}
	return s[:8] + s[9:13] + s[14:18] + s[19:23] + s[24:]
}

// uuidParseError explains why s is not a UUID, in the words (and with
// the 1-based byte positions) of the Rust uuid crate, which pydantic
// quotes.
func uuidParseError(input string) string {
	if !utf8.ValidString(input) {
		return "non-UTF8 input"
	}
	str, offset, simple := input, 0, true
	switch {
	case len(input) >= 2 && input[0] == '{' && input[len(input)-1] == '}':
		str, offset, simple = input[1:len(input)-1], 1, false
	case strings.HasPrefix(input, "urn:uuid:"):
		str, offset, simple = input[len("urn:uuid:"):], len("urn:uuid:"), false
	}
	hyphens := 0
	var bounds [4]int
	for i, r := range str {
		switch {
		case r == '-':
			if hyphens < 4 {
				bounds[hyphens] = i
			}
			hyphens++
		case r > 0x7f || !isHex(byte(r)):
			return fmt.Sprintf("invalid character: expected an optional prefix of `urn:uuid:` followed by [0-9a-fA-F-], found `%c` at %d", r, i+offset+1)
		}
	}
	switch {
	case hyphens == 0 && simple:
		return fmt.Sprintf("invalid length: expected length 32 for simple format, found %d", len(input))
	case hyphens != 4:
		return fmt.Sprintf("invalid group count: expected 5, found %d", hyphens+1)
	}
	starts := [5]int{0, 9, 14, 19, 24}
	expected := [5]int{8, 4, 4, 4, 12}
	for g := 0; g < 4; g++ {
		if bounds[g] != starts[g+1]-1 {
			return fmt.Sprintf("invalid group length in group %d: expected %d, found %d", g, expected[g], bounds[g]-starts[g])
		}
	}
	return fmt.Sprintf("invalid group length in group 4: expected 12, found %d", len(input)-starts[4])
}

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
func (s *Service) listUsers(ctx context.Context, f userFilter, skip, limit int64) ([]*User, int64, error) {
	users := []*User{}
	if strings.ContainsRune(f.search, 0) {
		return users, 0, nil // no stored text holds a NUL
	}
	var where []string
	var args []any
	if f.search != "" {
		args = append(args, escapeLike(f.search))
		where = append(where, fmt.Sprintf(`email ILIKE '%%' || $%d || '%%' ESCAPE '\'`, len(args)))
	}
	if f.role != nil {
		args = append(args, *f.role)
		where = append(where, fmt.Sprintf("role::text = $%d", len(args)))
	}
	if f.active != nil {
		args = append(args, *f.active)
		where = append(where, fmt.Sprintf("is_active = $%d", len(args)))
	}
	cond := ""
	if len(where) > 0 {
		cond = " WHERE " + strings.Join(where, " AND ")
	}
	var total int64
	err := pgx.BeginTxFunc(ctx, s.db, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, "SELECT count(*) FROM users"+cond, args...).Scan(&total); err != nil {
			return err
		}
		if total <= skip {
			return nil
		}
		n := len(args)
		rows, err := tx.Query(ctx, fmt.Sprintf("SELECT %s FROM users%s ORDER BY created_at, id OFFSET $%d LIMIT $%d",
			userColumns, cond, n+1, n+2), append(args, skip, limit)...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			u, err := scanUser(rows)
			if err != nil {
				return err
			}
			users = append(users, u)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, 0, fmt.Errorf("listing users: %w", err)
	}
	return users, total, nil
}

// handleListUsers serves GET /api/admin/users: a JSON array of users,
// oldest first, with the count before paging in X-Total-Count. Query:
// skip (≥ 0, default 0), limit (1..1000, default 100), q (a substring of
// the email, any case, wildcards literal), role (user|admin), is_active
// (a boolean as pydantic reads one).
func (s *Service) handleListUsers(w http.ResponseWriter, r *http.Request, p *Principal) error {
	q := readQuery(r)
	skip := q.Int("skip", 0, 0, math.MaxInt64)
	limit := q.Int("limit", defaultUserPageSize, 1, maxUserPageSize)
	var f userFilter
	f.search, _ = q.String("q")
	if role, ok := q.Role("role"); ok {
		f.role = &role
	}
	if active, ok := q.Bool("is_active"); ok {
		f.active = &active
	}
	if err := q.errs.err(); err != nil {
		return err
	}
	users, total, err := s.listUsers(r.Context(), f, skip, limit)
	if err != nil {
		return err
	}
	w.Header().Set("X-Total-Count", strconv.FormatInt(total, 10))
	writeJSON(w, http.StatusOK, users)
	return nil
}

// ---- PATCH /api/admin/users/{id} ----

// userAccess is a change of a user's role and active state; nil keeps
// the current value.
type userAccess struct {
	role   *string
	active *bool
}

// removesAdmin reports whether the change could take admin rights away
// from an active admin.
func (c userAccess) removesAdmin() bool {
	return (c.role != nil && *c.role != RoleAdmin) || (c.active != nil && !*c.active)
}

// readUserAccess reads the body of PATCH /api/admin/users/{id}: role
// ("user" or "admin") and is_active, both optional; null is the same as
// absent, as with the old backend's Optional fields. is_active is read
// as pydantic reads a bool from JSON in lax mode: true/false, 0/1, or a
// string that parseBoolString accepts.
func readUserAccess(body *jsonBody) userAccess {
	var c userAccess
	if raw, ok := body.take("role"); ok && !isNull(raw) {
		var role string
		if json.Unmarshal(raw, &role) != nil || (role != RoleUser && role != RoleAdmin) {
			body.errs.add("enum", msgRole, "body", "role")
		} else {
			c.role = &role
		}
	}
	if raw, ok := body.take("is_active"); ok && !isNull(raw) {
		if v, typ := laxJSONBool(raw); typ != "" {
			msg := msgBool
			if typ == "bool_parsing" {
				msg = msgBoolParsing
			}
			body.errs.add(typ, msg, "body", "is_active")
		} else {
			c.active = &v
		}
	}
	return c
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
		if b, ok := parseBoolString(v); ok {
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
		role, active := cur.Role, cur.IsActive
		if c.role != nil {
			role = *c.role
		}
		if c.active != nil {
			active = *c.active
		}
		if role == cur.Role && active == cur.IsActive {
			return nil
		}
		if cur.Role == RoleAdmin && cur.IsActive && (role != RoleAdmin || !active) && !hasOtherThan(admins, cur.ID) {
			return errLastAdmin
		}
		after, err = scanUser(tx.QueryRow(ctx,
			"UPDATE users SET role = $2, is_active = $3, updated_at = now() WHERE id = $1 RETURNING "+userColumns,
			id, role, active))
		if err != nil || !cur.IsActive || active {
			return err
		}
		// Deactivation ends every session and refuses every token issued
		// so far, for good: reactivating the user revives none of them.
		_, err = endAllSessions(ctx, tx, id, revokedByDeactivation)
		return err
	})
	if err != nil {
		var ae *Error
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

// handlePatchUser serves PATCH /api/admin/users/{id}: any of role and
// is_active; 200 → the user. An admin may demote or deactivate
// themselves while another active admin remains. The change holds from
// the user's next request on: every request reads the user's current
// state.
func (s *Service) handlePatchUser(w http.ResponseWriter, r *http.Request, p *Principal) error {
	// Like FastAPI: a body that is not JSON is refused alone; otherwise
	// the path's error comes first, then the body's.
	var v ValidationError
	id, reason := parseUUID(strings.ToValidUTF8(r.PathValue("id"), "\uFFFD"))
	if reason != "" {
		v.add("uuid_parsing", "Input should be a valid UUID, "+reason, "path", "id")
	}
	body, err := readJSONBody(w, r)
	var ve *ValidationError
	switch {
	case err == nil:
		c := readUserAccess(body)
		if err := body.Finish(); err != nil {
			v.Fields = append(v.Fields, body.errs.Fields...)
		}
		if err := v.err(); err != nil {
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
	writeJSON(w, http.StatusOK, after)
	return nil
}
