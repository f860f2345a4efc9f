package accounts

// Groups of users, their members and the apps granted to them (migration
// 0007).

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"github.com/caddyaccounts/gateway/fastapi"
)

// Errors of the group routes; their details are part of the contract.
// maxGroupsPerUser bounds a user's memberships (migration 0008), so that
// X-User-Groups stays under 8 KiB: 200 ids and their commas are 7,399
// bytes.
const maxGroupsPerUser = 200

var (
	errGroupNotFound  = fastapi.NewError(http.StatusNotFound, "Group not found")
	errGroupNameTaken = fastapi.NewError(http.StatusConflict, "Group name already exists")
	errNotAMember     = fastapi.NewError(http.StatusNotFound, "User is not a member of the group")
	errTooManyGroups  = fastapi.NewError(http.StatusConflict, fmt.Sprintf("User is in too many groups (at most %d)", maxGroupsPerUser))
)

// Group is a group of users, as the API shows it.
type Group struct {
	ID          string  `json:"id"`
	Name        string  `json:"name"`
	Description *string `json:"description"`
	MemberCount int64   `json:"member_count"`
	// Apps are the keys of the apps granted to the group, in order.
	Apps      []string  `json:"apps"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// GroupRef is a group as GET /api/users/me/groups shows it.
type GroupRef struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// groupColumns are selected from "groups g", in this order, by scanGroup.
const groupColumns = `g.id::text, g.name, g.description,
	(SELECT count(*) FROM group_members m WHERE m.group_id = g.id),
	ARRAY(SELECT a.app_key FROM group_app_grants a WHERE a.group_id = g.id ORDER BY a.app_key),
	g.created_at, g.updated_at`

func scanGroup(row pgx.Row) (*Group, error) {
	g := &Group{}
	if err := row.Scan(&g.ID, &g.Name, &g.Description, &g.MemberCount, &g.Apps, &g.CreatedAt, &g.UpdatedAt); err != nil {
		return nil, err
	}
	g.CreatedAt, g.UpdatedAt = g.CreatedAt.UTC(), g.UpdatedAt.UTC()
	if g.Apps == nil {
		g.Apps = []string{}
	}
	return g, nil
}

// groupByID returns the group id, or errGroupNotFound.
func (s *Service) groupByID(ctx context.Context, id string) (*Group, error) {
	g, err := scanGroup(s.db.QueryRow(ctx, "SELECT "+groupColumns+" FROM groups g WHERE g.id = $1", id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, errGroupNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("reading group: %w", err)
	}
	return g, nil
}

// FindGroup returns the group that ref names: its id, or else its name
// in any letter case (surrounding spaces ignored). No such group is an
// error with status 404 (Group not found).
func (s *Service) FindGroup(ctx context.Context, ref string) (*Group, error) {
	ref = strings.TrimSpace(ref)
	if id, bad := fastapi.ParseUUID(ref); bad == "" {
		g, err := s.groupByID(ctx, id)
		if !errors.Is(err, errGroupNotFound) {
			return g, err
		}
		// A group may be named like a UUID.
	}
	if fastapi.HasNUL(ref) || !utf8.ValidString(ref) {
		return nil, errGroupNotFound // no stored name is such text
	}
	g, err := scanGroup(s.db.QueryRow(ctx, "SELECT "+groupColumns+" FROM groups g WHERE lower(g.name) = lower($1)", ref))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, errGroupNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("reading group: %w", err)
	}
	return g, nil
}

// ListGroups returns every group, by name.
func (s *Service) ListGroups(ctx context.Context) ([]*Group, error) {
	rows, err := s.db.Query(ctx, "SELECT "+groupColumns+" FROM groups g ORDER BY lower(g.name), g.id")
	if err != nil {
		return nil, fmt.Errorf("listing groups: %w", err)
	}
	groups, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (*Group, error) { return scanGroup(row) })
	if err != nil {
		return nil, fmt.Errorf("listing groups: %w", err)
	}
	return groups, nil
}

// ---- GET /api/users/me/groups ----

// handleMyGroups serves GET /api/users/me/groups: the caller's groups, by
// name.
func (s *Service) handleMyGroups(w http.ResponseWriter, r *http.Request, p *Principal) error {
	rows, err := s.db.Query(r.Context(), `SELECT g.id::text, g.name FROM groups g
		JOIN group_members m ON m.group_id = g.id WHERE m.user_id = $1 ORDER BY lower(g.name), g.id`, p.User.ID)
	if err != nil {
		return fmt.Errorf("listing the caller's groups: %w", err)
	}
	groups, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (GroupRef, error) {
		var g GroupRef
		err := row.Scan(&g.ID, &g.Name)
		return g, err
	})
	if err != nil {
		return fmt.Errorf("listing the caller's groups: %w", err)
	}
	fastapi.WriteJSON(w, http.StatusOK, groups)
	return nil
}

// ---- GET /api/admin/groups ----

// handleListGroups serves GET /api/admin/groups: one page of the groups,
// by name, optionally those whose name holds q.
func (s *Service) handleListGroups(w http.ResponseWriter, r *http.Request, p *Principal) error {
	q := fastapi.ReadQuery(r)
	page := q.Page(defaultPageSize, maxPageSize)
	search, _ := q.String("q")
	if err := q.Err(); err != nil {
		return err
	}
	if strings.ContainsRune(search, 0) {
		fastapi.WritePage(w, []*Group{}, 0) // no stored name holds a NUL
		return nil
	}
	var pq pagedQuery
	if search != "" {
		pq.cond(`g.name ILIKE '%' || ` + pq.arg(escapeLike(search)) + ` || '%' ESCAPE '\'`)
	}
	groups, total, err := listPage(r.Context(), s.db, "groups g", groupColumns, "lower(g.name), g.id", pq, page, scanGroup)
	if err != nil {
		return err
	}
	fastapi.WritePage(w, groups, total)
	return nil
}

// ---- POST /api/admin/groups ----

// handleCreateGroup serves POST /api/admin/groups: a new group.
func (s *Service) handleCreateGroup(w http.ResponseWriter, r *http.Request, p *Principal) error {
	body, err := fastapi.ReadObject(w, r)
	if err != nil {
		return err
	}
	name := readName(body, "name")
	desc, _ := readDescription(body)
	if err := body.Finish(); err != nil {
		return err
	}
	g, err := s.CreateGroup(r.Context(), apiActor(r, p), name, desc)
	if err != nil {
		return err
	}
	fastapi.WriteJSON(w, http.StatusCreated, g)
	return nil
}

// CreateGroup creates the group name (surrounding spaces trimmed; 1 to
// 100 characters), with an optional description of at most 1,000. A
// name that another group has in any letter case is an error with status
// 409 (Group name already exists). The creation is audited as by's.
func (s *Service) CreateGroup(ctx context.Context, by Actor, name string, desc *string) (*Group, error) {
	name = strings.TrimSpace(name)
	if n := utf8.RuneCountInString(name); n == 0 || n > maxNameLen || fastapi.HasNUL(name) || !utf8.ValidString(name) {
		return nil, fmt.Errorf("a group name has 1 to %d characters of text", maxNameLen)
	}
	if desc != nil && (utf8.RuneCountInString(*desc) > maxDescriptionLen || fastapi.HasNUL(*desc) || !utf8.ValidString(*desc)) {
		return nil, fmt.Errorf("a group description has at most %d characters of text", maxDescriptionLen)
	}
	g, err := scanGroup(s.db.QueryRow(ctx, `WITH g AS (
			INSERT INTO groups (name, description) VALUES ($1, $2) RETURNING *
		) SELECT `+groupColumns+` FROM g`, name, desc))
	if isUniqueViolation(err) {
		return nil, errGroupNameTaken
	}
	if err != nil {
		return nil, fmt.Errorf("creating group: %w", err)
	}
	s.log.Info("group created", zap.String("group_id", g.ID), zap.Stringer("by", by))
	s.auditBy(ctx, by, EventGroupCreate, g.ID, map[string]any{"name": g.Name})
	return g, nil
}

// ---- GET /api/admin/groups/{id} ----

// handleGetGroup serves GET /api/admin/groups/{id}.
func (s *Service) handleGetGroup(w http.ResponseWriter, r *http.Request, p *Principal) error {
	var v fastapi.ValidationError
	id := fastapi.PathUUID(r, "id", &v)
	if err := v.Err(); err != nil {
		return err
	}
	g, err := s.groupByID(r.Context(), id)
	if err != nil {
		return err
	}
	fastapi.WriteJSON(w, http.StatusOK, g)
	return nil
}

// ---- PATCH /api/admin/groups/{id} ----

// handlePatchGroup serves PATCH /api/admin/groups/{id}: a group's name
// and description.
func (s *Service) handlePatchGroup(w http.ResponseWriter, r *http.Request, p *Principal) error {
	var v fastapi.ValidationError
	id := fastapi.PathUUID(r, "id", &v)
	body, err := readBodyAfterPath(w, r, &v)
	if err != nil {
		return err
	}
	var name *string
	if body.Has("name") {
		n := readName(body, "name")
		name = &n
	}
	desc, setDesc := readDescription(body)
	if err := finishBody(body, &v); err != nil {
		return err
	}
	if name == nil && !setDesc {
		// Nothing to change: nothing written, nothing audited.
		g, err := s.groupByID(r.Context(), id)
		if err != nil {
			return err
		}
		fastapi.WriteJSON(w, http.StatusOK, g)
		return nil
	}
	g, err := scanGroup(s.db.QueryRow(r.Context(), `WITH g AS (
			UPDATE groups SET name = COALESCE($2, name),
				description = CASE WHEN $3 THEN $4 ELSE description END,
				updated_at = now()
			WHERE id = $1 RETURNING *
		) SELECT `+groupColumns+` FROM g`, id, name, setDesc, desc))
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return errGroupNotFound
	case isUniqueViolation(err):
		return errGroupNameTaken
	case err != nil:
		return fmt.Errorf("changing group: %w", err)
	}
	details := map[string]any{}
	if name != nil {
		details["name"] = g.Name
	}
	if setDesc {
		details["description_changed"] = true
	}
	s.log.Info("group changed", zap.String("group_id", g.ID), zap.String("by", p.User.ID))
	s.audit(r, EventGroupUpdate, p.User.ID, g.ID, details)
	fastapi.WriteJSON(w, http.StatusOK, g)
	return nil
}

// ---- DELETE /api/admin/groups/{id} ----

// handleDeleteGroup serves DELETE /api/admin/groups/{id}; its memberships
// and grants go with it.
func (s *Service) handleDeleteGroup(w http.ResponseWriter, r *http.Request, p *Principal) error {
	var v fastapi.ValidationError
	id := fastapi.PathUUID(r, "id", &v)
	if err := v.Err(); err != nil {
		return err
	}
	var name string
	err := s.db.QueryRow(r.Context(), "DELETE FROM groups WHERE id = $1 RETURNING name", id).Scan(&name)
	if errors.Is(err, pgx.ErrNoRows) {
		return errGroupNotFound
	}
	if err != nil {
		return fmt.Errorf("deleting group: %w", err)
	}
	// The change notification reaches this instance a moment later.
	s.cache.invalidate("")
	s.log.Info("group deleted", zap.String("group_id", id), zap.String("by", p.User.ID))
	s.audit(r, EventGroupDelete, p.User.ID, id, map[string]any{"name": name})
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// ---- GET /api/admin/groups/{id}/members ----

// handleGroupMembers serves GET /api/admin/groups/{id}/members: the
// members, oldest account first.
func (s *Service) handleGroupMembers(w http.ResponseWriter, r *http.Request, p *Principal) error {
	var v fastapi.ValidationError
	id := fastapi.PathUUID(r, "id", &v)
	if err := v.Err(); err != nil {
		return err
	}
	users := []*User{}
	err := pgx.BeginTxFunc(r.Context(), s.db, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		var ok bool
		if err := tx.QueryRow(r.Context(), groupExistsSQL, id).Scan(&ok); err != nil {
			return err
		}
		if !ok {
			return errGroupNotFound
		}
		rows, err := tx.Query(r.Context(), "SELECT "+userColumns+` FROM users
			WHERE id IN (SELECT user_id FROM group_members WHERE group_id = $1) ORDER BY created_at, id`, id)
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
	if errors.Is(err, errGroupNotFound) {
		return err
	}
	if err != nil {
		return fmt.Errorf("listing group members: %w", err)
	}
	fastapi.WriteJSON(w, http.StatusOK, users)
	return nil
}

// ---- PUT and DELETE /api/admin/groups/{id}/members/{user_id} ----

// handleMembership serves PUT (add, idempotent) and DELETE (remove; 404
// when not a member) /api/admin/groups/{id}/members/{user_id}.
func (s *Service) handleMembership(w http.ResponseWriter, r *http.Request, p *Principal) error {
	var v fastapi.ValidationError
	id := fastapi.PathUUID(r, "id", &v)
	userID := fastapi.PathUUID(r, "user_id", &v)
	if err := v.Err(); err != nil {
		return err
	}
	add := r.Method == http.MethodPut
	changed, err := s.SetMember(r.Context(), apiActor(r, p), id, userID, add)
	if err != nil {
		return err
	}
	if !add && !changed {
		return errNotAMember
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// SetMember adds (add) the user userID to the group groupID, or removes
// them (both canonical UUIDs), and reports whether that changed
// anything: adding a member again or removing one who is not is no
// error. A group or user that does not exist is an error with status 404;
// a user already in maxGroupsPerUser groups, one with status 409. A
// change is audited as by's.
func (s *Service) SetMember(ctx context.Context, by Actor, groupID, userID string, add bool) (bool, error) {
	if !fastapi.IsUUID(groupID) {
		return false, errGroupNotFound
	}
	if !fastapi.IsUUID(userID) {
		return false, errUserNotFound
	}
	changed, err := s.setLink(ctx, linkMember, groupID, userID, add)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.ConstraintName == "group_members_per_user" {
		return false, errTooManyGroups
	}
	if err != nil || !changed {
		return false, err
	}
	s.cache.invalidate(userID)
	event := EventGroupMemberAdd
	if !add {
		event = EventGroupMemberRemove
	}
	s.auditBy(ctx, by, event, userID, map[string]any{"group_id": groupID})
	return true, nil
}

// ---- PUT and DELETE /api/admin/groups/{id}/apps/{key} ----

// handleGroupGrant serves PUT (grant) and DELETE (revoke)
// /api/admin/groups/{id}/apps/{key}; both are idempotent.
func (s *Service) handleGroupGrant(w http.ResponseWriter, r *http.Request, p *Principal) error {
	return s.changeGrant(w, r, p, s.SetGroupApp)
}
