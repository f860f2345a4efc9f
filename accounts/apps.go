package accounts

// The app registry and who may use each app (migration 0007). A user may
// use an app when it is open to all, granted to the user directly, or
// granted to a group the user belongs to; admins may use every app.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/caddyaccounts/gateway/fastapi"
)

// appKeyPattern is what an app key must match (also a CHECK of the apps
// table).
const appKeyPattern = `^[a-z][a-z0-9_-]{0,62}$`

var appKeyRE = regexp.MustCompile(appKeyPattern)

// IsAppKey reports whether key can name an app.
func IsAppKey(key string) bool { return appKeyRE.MatchString(key) }

// Bounds of the names and descriptions of apps and groups, in characters.
const (
	maxNameLen        = 100
	maxDescriptionLen = 1000
)

var (
	errAppNotFound = fastapi.NewError(http.StatusNotFound, "App not found")
	errAppRequired = fastapi.NewError(http.StatusConflict, "App is required by the gateway's configuration")
)

// RequireApp records that a route of the running configuration lets
// through only users of the app key (accounts_auth's require_app): such
// an app cannot be deleted, or the route would refuse everyone but the
// admins.
func (s *Service) RequireApp(key string) {
	s.requiredMu.Lock()
	defer s.requiredMu.Unlock()
	if s.requiredApps == nil {
		s.requiredApps = map[string]bool{}
	}
	s.requiredApps[key] = true
}

// appRequired reports whether a route of the running configuration
// requires the app key.
func (s *Service) appRequired(key string) bool {
	s.requiredMu.Lock()
	defer s.requiredMu.Unlock()
	return s.requiredApps[key]
}

// App is an entry of the app registry, as the API shows it.
type App struct {
	Key         string  `json:"key"`
	Name        string  `json:"name"`
	Description *string `json:"description"`
	OpenToAll   bool    `json:"open_to_all"`
}

// AppAccess is an app a user may use, and why (GET
// /api/admin/users/{id}/apps).
type AppAccess struct {
	Key string `json:"key"`
	// Direct is true when the app is granted to the user.
	Direct bool `json:"direct"`
	// Groups are the user's groups that the app is granted to.
	Groups    []string `json:"groups"`
	OpenToAll bool     `json:"open_to_all"`
}

const appColumns = "key, name, description, open_to_all"

func scanApp(row pgx.Row) (App, error) {
	var a App
	err := row.Scan(&a.Key, &a.Name, &a.Description, &a.OpenToAll)
	return a, err
}

func collectApp(row pgx.CollectableRow) (App, error) { return scanApp(row) }

// pathAppKey reads the path parameter name as an app key, adding a 422
// entry to v when it does not match appKeyPattern.
func pathAppKey(r *http.Request, name string, v *fastapi.ValidationError) string {
	key := r.PathValue(name)
	if !appKeyRE.MatchString(key) {
		v.Add("string_pattern_mismatch", "String should match pattern '"+appKeyPattern+"'", "path", name)
	}
	return key
}

// readName reads the required name field of an app or a group: 1 to
// maxNameLen characters after trimming. It returns the trimmed name.
func readName(body *fastapi.Object, field string) string {
	name := strings.TrimSpace(body.String(field))
	if body.Failed(field) {
		return ""
	}
	checkName(body, field, name)
	return name
}

// checkName refuses a trimmed name that is empty or too long.
func checkName(body *fastapi.Object, field, name string) {
	switch n := utf8.RuneCountInString(name); {
	case n == 0:
		body.Add("string_too_short", "String should have at least 1 character", field)
	case n > maxNameLen:
		body.Add("string_too_long", fmt.Sprintf("String should have at most %d characters", maxNameLen), field)
	}
}

// readDescription reads the optional description field (null clears it).
// present tells whether the field was sent.
func readDescription(body *fastapi.Object) (desc *string, present bool) {
	desc, present = body.OptionalString("description")
	if desc != nil && utf8.RuneCountInString(*desc) > maxDescriptionLen {
		body.Add("string_too_long", fmt.Sprintf("String should have at most %d characters", maxDescriptionLen), "description")
	}
	return desc, present
}

// ---- GET /api/apps ----

// mayUseApp is the SQL condition under which the user whose id is the
// SQL expression user may use the app a (of "FROM apps a"), role aside:
// the app is open to all, or granted to the user, or to one of the
// user's groups.
func mayUseApp(user string) string {
	return `(a.open_to_all
		OR EXISTS (SELECT 1 FROM user_app_grants g WHERE g.user_id = ` + user + ` AND g.app_key = a.key)
		OR EXISTS (SELECT 1 FROM group_app_grants g JOIN group_members m ON m.group_id = g.group_id
		           WHERE m.user_id = ` + user + ` AND g.app_key = a.key))`
}

// appsFor returns the apps that the user id, with role, may use, by key.
func (s *Service) appsFor(ctx context.Context, id, role string) ([]App, error) {
	rows, err := s.db.Query(ctx, `SELECT `+appColumns+` FROM apps a
		WHERE $2 OR `+mayUseApp("$1")+`
		ORDER BY a.key`, id, role == RoleAdmin)
	if err != nil {
		return nil, fmt.Errorf("listing a user's apps: %w", err)
	}
	apps, err := pgx.CollectRows(rows, collectApp)
	if err != nil {
		return nil, fmt.Errorf("listing a user's apps: %w", err)
	}
	return apps, nil
}

// handleMyApps serves GET /api/apps: the apps the caller may use.
func (s *Service) handleMyApps(w http.ResponseWriter, r *http.Request, p *Principal) error {
	apps, err := s.appsFor(r.Context(), p.User.ID, p.User.Role)
	if err != nil {
		return err
	}
	fastapi.WriteJSON(w, http.StatusOK, apps)
	return nil
}

// ---- GET /api/admin/apps ----

// ListApps returns every app of the registry, by key.
func (s *Service) ListApps(ctx context.Context) ([]App, error) {
	rows, err := s.db.Query(ctx, "SELECT "+appColumns+" FROM apps ORDER BY key")
	if err != nil {
		return nil, fmt.Errorf("listing apps: %w", err)
	}
	apps, err := pgx.CollectRows(rows, collectApp)
	if err != nil {
		return nil, fmt.Errorf("listing apps: %w", err)
	}
	return apps, nil
}

// FindApp returns the app key, or an error with status 404 (App not
// found).
func (s *Service) FindApp(ctx context.Context, key string) (App, error) {
	if !appKeyRE.MatchString(key) {
		return App{}, errAppNotFound
	}
	a, err := scanApp(s.db.QueryRow(ctx, "SELECT "+appColumns+" FROM apps WHERE key = $1", key))
	if errors.Is(err, pgx.ErrNoRows) {
		return App{}, errAppNotFound
	}
	if err != nil {
		return App{}, fmt.Errorf("reading app: %w", err)
	}
	return a, nil
}

// handleListApps serves GET /api/admin/apps: every app, by key.
func (s *Service) handleListApps(w http.ResponseWriter, r *http.Request, p *Principal) error {
	apps, err := s.ListApps(r.Context())
	if err != nil {
		return err
	}
	fastapi.WriteJSON(w, http.StatusOK, apps)
	return nil
}

// ---- PUT /api/admin/apps/{key} ----

// handlePutApp serves PUT /api/admin/apps/{key}: creates (201) or
// replaces (200) an app.
func (s *Service) handlePutApp(w http.ResponseWriter, r *http.Request, p *Principal) error {
	var v fastapi.ValidationError
	key := pathAppKey(r, "key", &v)
	body, err := readBodyAfterPath(w, r, &v)
	if err != nil {
		return err
	}
	a := App{Key: key, Name: readName(body, "name")}
	a.Description, _ = readDescription(body)
	if open, _ := body.OptionalBool("open_to_all"); open != nil {
		a.OpenToAll = *open
	}
	if err := finishBody(body, &v); err != nil {
		return err
	}
	var created bool
	err = s.db.QueryRow(r.Context(), `INSERT INTO apps (key, name, description, open_to_all) VALUES ($1, $2, $3, $4)
		ON CONFLICT (key) DO UPDATE SET name = EXCLUDED.name, description = EXCLUDED.description,
			open_to_all = EXCLUDED.open_to_all, updated_at = now()
		RETURNING xmax = 0`, a.Key, a.Name, a.Description, a.OpenToAll).Scan(&created)
	if err != nil {
		return fmt.Errorf("storing app: %w", err)
	}
	// The change notification reaches this instance a moment later.
	s.cache.invalidate("")
	event, status := EventAppUpdate, http.StatusOK
	if created {
		event, status = EventAppCreate, http.StatusCreated
	}
	s.log.Info("app stored", zap.String("app", a.Key), zap.String("by", p.User.ID), zap.Bool("created", created))
	s.audit(r, event, p.User.ID, "", map[string]any{"app": a.Key, "name": a.Name, "open_to_all": a.OpenToAll})
	fastapi.WriteJSON(w, status, a)
	return nil
}

// readBodyAfterPath reads a JSON object body the way FastAPI orders the
// errors: a body that is not JSON is refused alone; otherwise the path's
// errors (already in v) come first, then the body's (finishBody).
func readBodyAfterPath(w http.ResponseWriter, r *http.Request, v *fastapi.ValidationError) (*fastapi.Object, error) {
	body, err := fastapi.ReadObject(w, r)
	var ve *fastapi.ValidationError
	switch {
	case err == nil:
		return body, nil
	case errors.As(err, &ve) && len(ve.Fields) > 0 && ve.Fields[0].Type != "json_invalid":
		v.Fields = append(v.Fields, ve.Fields...)
		return nil, v
	default:
		return nil, err
	}
}

// finishBody adds the body's errors to the path's and returns them all,
// or nil.
func finishBody(body *fastapi.Object, v *fastapi.ValidationError) error {
	var ve *fastapi.ValidationError
	if err := body.Finish(); errors.As(err, &ve) {
		v.Fields = append(v.Fields, ve.Fields...)
	} else if err != nil {
		return err
	}
	return v.Err()
}

// ---- DELETE /api/admin/apps/{key} ----

// handleDeleteApp serves DELETE /api/admin/apps/{key}; its grants go
// with it.
func (s *Service) handleDeleteApp(w http.ResponseWriter, r *http.Request, p *Principal) error {
	var v fastapi.ValidationError
	key := pathAppKey(r, "key", &v)
	if err := v.Err(); err != nil {
		return err
	}
	if s.appRequired(key) {
		return errAppRequired
	}
	tag, err := s.db.Exec(r.Context(), "DELETE FROM apps WHERE key = $1", key)
	if err != nil {
		return fmt.Errorf("deleting app: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return errAppNotFound
	}
	s.cache.invalidate("")
	s.log.Info("app deleted", zap.String("app", key), zap.String("by", p.User.ID))
	s.audit(r, EventAppDelete, p.User.ID, "", map[string]any{"app": key})
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// ---- PUT and DELETE /api/admin/users/{id}/apps/{key} ----

// handleUserGrant serves PUT (grant) and DELETE (revoke)
// /api/admin/users/{id}/apps/{key}; both are idempotent.
func (s *Service) handleUserGrant(w http.ResponseWriter, r *http.Request, p *Principal) error {
	return s.changeGrant(w, r, p, s.SetUserApp)
}

// changeGrant grants (PUT) or revokes (DELETE) the app {key} to the user
// or group {id} with set (SetUserApp or SetGroupApp).
func (s *Service) changeGrant(w http.ResponseWriter, r *http.Request, p *Principal,
	set func(ctx context.Context, by Actor, id, key string, grant bool) (bool, error)) error {
	var v fastapi.ValidationError
	id := fastapi.PathUUID(r, "id", &v)
	key := pathAppKey(r, "key", &v)
	if err := v.Err(); err != nil {
		return err
	}
	if _, err := set(r.Context(), apiActor(r, p), id, key, r.Method == http.MethodPut); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// SetUserApp grants (grant) or revokes the app key to the user userID
// (a canonical UUID) and reports whether that changed anything: granting
// twice or revoking what is not granted is no error. A user or app that
// does not exist is an error with status 404. A change is audited as by's.
func (s *Service) SetUserApp(ctx context.Context, by Actor, userID, key string, grant bool) (bool, error) {
	return s.setGrant(ctx, by, linkUserApp, userID, key, grant, EventUserAppGrant, EventUserAppRevoke)
}

// SetGroupApp is SetUserApp for the group groupID: the grant holds for
// each of its members.
func (s *Service) SetGroupApp(ctx context.Context, by Actor, groupID, key string, grant bool) (bool, error) {
	return s.setGrant(ctx, by, linkGroupApp, groupID, key, grant, EventGroupAppGrant, EventGroupAppRevoke)
}

// setGrant grants or revokes the app key to the user or group id that l
// names, and audits a change with the event grantEvent or revokeEvent.
func (s *Service) setGrant(ctx context.Context, by Actor, l link, id, key string, grant bool, grantEvent, revokeEvent string) (bool, error) {
	if !fastapi.IsUUID(id) {
		return false, l.leftMissing
	}
	if !appKeyRE.MatchString(key) {
		return false, errAppNotFound
	}
	changed, err := s.setLink(ctx, l, id, key, grant)
	if err != nil || !changed {
		return false, err
	}
	if l == linkUserApp {
		s.cache.invalidate(id)
	} else {
		// Every member is concerned; the notifications name each one.
		s.cache.invalidate("")
	}
	event := grantEvent
	if !grant {
		event = revokeEvent
	}
	s.auditBy(ctx, by, event, id, map[string]any{"app": key})
	return true, nil
}

// ---- GET /api/admin/users/{id}/apps ----

// userAppAccess returns every app the user id may use and why, by key:
// for an admin every app.
func (s *Service) userAppAccess(ctx context.Context, id string) ([]AppAccess, error) {
	out := []AppAccess{}
	err := pgx.BeginTxFunc(ctx, s.db, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		var role string
		err := tx.QueryRow(ctx, "SELECT role::text FROM users WHERE id = $1", id).Scan(&role)
		if errors.Is(err, pgx.ErrNoRows) {
			return errUserNotFound
		}
		if err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT a.key, a.open_to_all,
			EXISTS (SELECT 1 FROM user_app_grants g WHERE g.user_id = $1 AND g.app_key = a.key),
			ARRAY(SELECT g.group_id::text FROM group_app_grants g JOIN group_members m ON m.group_id = g.group_id
			      WHERE m.user_id = $1 AND g.app_key = a.key ORDER BY g.group_id)
			FROM apps a ORDER BY a.key`, id)
		if err != nil {
			return err
		}
		all, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (AppAccess, error) {
			var a AppAccess
			err := row.Scan(&a.Key, &a.OpenToAll, &a.Direct, &a.Groups)
			if a.Groups == nil {
				a.Groups = []string{}
			}
			return a, err
		})
		if err != nil {
			return err
		}
		for _, a := range all {
			if role == RoleAdmin || a.OpenToAll || a.Direct || len(a.Groups) > 0 {
				out = append(out, a)
			}
		}
		return nil
	})
	if err != nil {
		if errors.Is(err, errUserNotFound) {
			return nil, err
		}
		return nil, fmt.Errorf("reading a user's apps: %w", err)
	}
	return out, nil
}

// handleUserApps serves GET /api/admin/users/{id}/apps: every app the
// user may use, and why.
func (s *Service) handleUserApps(w http.ResponseWriter, r *http.Request, p *Principal) error {
	var v fastapi.ValidationError
	id := fastapi.PathUUID(r, "id", &v)
	if err := v.Err(); err != nil {
		return err
	}
	apps, err := s.userAppAccess(r.Context(), id)
	if err != nil {
		return err
	}
	fastapi.WriteJSON(w, http.StatusOK, apps)
	return nil
}

// ---- link tables: memberships and grants ----

// link is a table of pairs (a membership or a grant) whose columns
// reference two tables.
type link struct {
	table, leftCol, rightCol string
	// leftExists and rightExists tell whether a referenced row exists
	// ($1 is its key); leftMissing and rightMissing are the errors when
	// it does not.
	leftExists, rightExists   string
	leftMissing, rightMissing error
}

const (
	groupExistsSQL = "SELECT EXISTS (SELECT 1 FROM groups WHERE id = $1)"
	userExistsSQL  = "SELECT EXISTS (SELECT 1 FROM users WHERE id = $1)"
	appExistsSQL   = "SELECT EXISTS (SELECT 1 FROM apps WHERE key = $1)"
)

var (
	linkMember = link{"group_members", "group_id", "user_id",
		groupExistsSQL, userExistsSQL, errGroupNotFound, errUserNotFound}
	linkGroupApp = link{"group_app_grants", "group_id", "app_key",
		groupExistsSQL, appExistsSQL, errGroupNotFound, errAppNotFound}
	linkUserApp = link{"user_app_grants", "user_id", "app_key",
		userExistsSQL, appExistsSQL, errUserNotFound, errAppNotFound}
)

// setLink adds (add) or removes the pair left, right of l and reports
// whether that changed anything; adding a pair that exists or removing
// one that does not is no error. A referenced row that does not exist
// is its error (404), even when it went away during the change.
// Concurrent calls for the same pair never fail: the insert ignores a
// conflict, and a delete of a missing row deletes nothing.
func (s *Service) setLink(ctx context.Context, l link, left, right string, add bool) (bool, error) {
	q := fmt.Sprintf("DELETE FROM %s WHERE %s = $1 AND %s = $2", l.table, l.leftCol, l.rightCol)
	if add {
		q = fmt.Sprintf("INSERT INTO %s (%s, %s) VALUES ($1, $2) ON CONFLICT DO NOTHING", l.table, l.leftCol, l.rightCol)
	}
	tag, err := s.db.Exec(ctx, q, left, right)
	if err != nil && !isForeignKeyViolation(err) {
		return false, fmt.Errorf("changing %s: %w", l.table, err)
	}
	if err == nil && tag.RowsAffected() > 0 {
		return true, nil
	}
	// Nothing changed: either a referenced row is missing, or the pair
	// already was (or was not) there.
	for _, c := range []struct {
		query   string
		arg     string
		missing error
	}{{l.leftExists, left, l.leftMissing}, {l.rightExists, right, l.rightMissing}} {
		var ok bool
		if err := s.db.QueryRow(ctx, c.query, c.arg).Scan(&ok); err != nil {
			return false, fmt.Errorf("changing %s: %w", l.table, err)
		}
		if !ok {
			return false, c.missing
		}
	}
	if err != nil {
		// A referenced row went away and another took its key (an app
		// deleted and created again) between the insert and the checks.
		return false, fmt.Errorf("changing %s: %w", l.table, err)
	}
	return false, nil
}
