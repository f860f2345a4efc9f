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
	g, err := scanGroup(s.db.QueryRow(r.Context(), `WITH g AS (
			INSERT INTO groups (name, description) VALUES ($1, $2) RETURNING *
		) SELECT `+groupColumns+` FROM g`, name, desc))
	if isUniqueViolation(err) {
		return errGroupNameTaken
	}
	if err != nil {
		return fmt.Errorf("creating group: %w", err)
	}
	s.log.Info("group created", zap.String("group_id", g.ID), zap.String("by", p.User.ID))
	s.audit(r, EventGroupCreate, p.User.ID, g.ID, map[string]any{"name": g.Name})
	fastapi.WriteJSON(w, http.StatusCreated, g)
	return nil
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
	changed, err := s.setLink(r.Context(), linkMember, id, userID, add)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.ConstraintName == "group_members_per_user" {
		return errTooManyGroups
	}
	if err != nil {
		return err
	}
	if !add && !changed {
		return errNotAMember
	}
	if changed {
		s.cache.invalidate(userID)
		event := EventGroupMemberAdd
		if !add {
			event = EventGroupMemberRemove
		}
		s.audit(r, event, p.User.ID, userID, map[string]any{"group_id": id})
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// ---- PUT and DELETE /api/admin/groups/{id}/apps/{key} ----

// handleGroupGrant serves PUT (grant) and DELETE (revoke)
// /api/admin/groups/{id}/apps/{key}; both are idempotent.
func (s *Service) handleGroupGrant(w http.ResponseWriter, r *http.Request, p *Principal) error {
	return s.changeGrant(w, r, p, linkGroupApp, EventGroupAppGrant, EventGroupAppRevoke)
}
