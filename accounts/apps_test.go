package accounts

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/caddyaccounts/gateway/internal/apitest"
)

const seededApps = `[{"key":"ai","name":"AI","description":null,"open_to_all":true},` +
	`{"key":"documents","name":"Documents","description":null,"open_to_all":true}]`

// TestAppsMigrationSeeds: the registry starts with documents and ai,
// both open to all, so every signed-in user may use both.
func TestAppsMigrationSeeds(t *testing.T) {
	e := newAdminEnv(t)
	_, token := e.admin("root@example.com")
	_, userToken := e.user("ada@example.com")
	e.table(t, []apitest.Scenario{
		{Name: "admin list", URL: "/api/admin/apps", Headers: map[string]string{"Authorization": "Bearer " + token},
			ExpectedStatus: 200, ExpectedBody: seededApps},
		{Name: "user's apps", URL: "/api/apps", Headers: map[string]string{"Authorization": "Bearer " + userToken},
			ExpectedStatus: 200, ExpectedBody: seededApps},
		{Name: "anonymous", URL: "/api/apps", ExpectedStatus: 401, ExpectedBody: apitest.Detail("Not authenticated")},
		{Name: "user lists all", URL: "/api/admin/apps", Headers: map[string]string{"Authorization": "Bearer " + userToken},
			ExpectedStatus: 403, ExpectedBody: apitest.Detail("Not enough permissions")},
	})
	// The key's pattern is also the table's.
	if _, err := e.db.Exec(context.Background(), "INSERT INTO apps (key, name) VALUES ('Bad', 'x')"); err == nil {
		t.Fatal("the apps table took a key against the pattern")
	}
}

func TestAdminApps(t *testing.T) {
	e := newAdminEnv(t)
	admin, token := e.admin("root@example.com")
	bearer := map[string]string{"Authorization": "Bearer " + token}
	const keyPattern = `{"type":"string_pattern_mismatch","loc":["path","key"],"msg":"String should match pattern '^[a-z][a-z0-9_-]{0,62}$'"}`
	entry := func(typ, field, msg string) string {
		return fmt.Sprintf(`{"type":%q,"loc":["body",%q],"msg":%q}`, typ, field, msg)
	}
	e.table(t, []apitest.Scenario{
		{Name: "create", Method: "PUT", URL: "/api/admin/apps/wiki", Headers: bearer,
			Body: map[string]any{"name": " Wiki ", "description": "Pages", "open_to_all": false}, ExpectedStatus: 201,
			ExpectedBody: `{"key":"wiki","name":"Wiki","description":"Pages","open_to_all":false}`},
		{Name: "replace", Method: "PUT", URL: "/api/admin/apps/wiki", Headers: bearer,
			Body: map[string]any{"name": "Team wiki", "open_to_all": true}, ExpectedStatus: 200,
			ExpectedBody: `{"key":"wiki","name":"Team wiki","description":null,"open_to_all":true}`},
		{Name: "replace with defaults", Method: "PUT", URL: "/api/admin/apps/wiki", Headers: bearer,
			Body: map[string]any{"name": "Wiki"}, ExpectedStatus: 200,
			ExpectedBody: `{"key":"wiki","name":"Wiki","description":null,"open_to_all":false}`},
		{Name: "63 characters", Method: "PUT", URL: "/api/admin/apps/a" + strings.Repeat("b-_9", 15) + "zz", Headers: bearer,
			Body: map[string]any{"name": "Long"}, ExpectedStatus: 201},
		{Name: "64 characters", Method: "PUT", URL: "/api/admin/apps/a" + strings.Repeat("b-_9", 15) + "zzz", Headers: bearer,
			Body: map[string]any{"name": "Long"}, ExpectedStatus: 422, ExpectedBody: `{"detail":[` + keyPattern + `]}`},
		{Name: "upper case", Method: "PUT", URL: "/api/admin/apps/Wiki", Headers: bearer,
			Body: map[string]any{"name": "W"}, ExpectedStatus: 422, ExpectedBody: `{"detail":[` + keyPattern + `]}`},
		{Name: "digit first, blank name", Method: "PUT", URL: "/api/admin/apps/1wiki", Headers: bearer,
			Body: map[string]any{"name": "  "}, ExpectedStatus: 422,
			ExpectedBody: `{"detail":[` + keyPattern + `,` + entry("string_too_short", "name", "String should have at least 1 character") + `]}`},
		{Name: "missing name", Method: "PUT", URL: "/api/admin/apps/wiki", Headers: bearer,
			Body: map[string]any{"open_to_all": true}, ExpectedStatus: 422, ExpectedBody: `{"detail":[` + entry("missing", "name", "Field required") + `]}`},
		{Name: "long name", Method: "PUT", URL: "/api/admin/apps/wiki", Headers: bearer,
			Body: map[string]any{"name": strings.Repeat("n", 101)}, ExpectedStatus: 422,
			ExpectedBody: `{"detail":[` + entry("string_too_long", "name", "String should have at most 100 characters") + `]}`},
		{Name: "bad open_to_all", Method: "PUT", URL: "/api/admin/apps/wiki", Headers: bearer,
			Body: map[string]any{"name": "W", "open_to_all": "yes"}, ExpectedStatus: 422,
			ExpectedBody: `{"detail":[` + entry("bool_type", "open_to_all", "Input should be a valid boolean") + `]}`},
		{Name: "extra field", Method: "PUT", URL: "/api/admin/apps/wiki", Headers: bearer,
			Body: map[string]any{"name": "W", "key": "other"}, ExpectedStatus: 422,
			ExpectedBody: `{"detail":[` + entry("extra_forbidden", "key", "Extra inputs are not permitted") + `]}`},
		{Name: "delete", Method: "DELETE", URL: "/api/admin/apps/wiki", Headers: bearer, ExpectedStatus: 204, ExpectedBody: ""},
		{Name: "delete again", Method: "DELETE", URL: "/api/admin/apps/wiki", Headers: bearer,
			ExpectedStatus: 404, ExpectedBody: apitest.Detail("App not found")},
		{Name: "delete bad key", Method: "DELETE", URL: "/api/admin/apps/no%20pe", Headers: bearer,
			ExpectedStatus: 422, ExpectedBody: `{"detail":[` + keyPattern + `]}`},
	})
	got := e.groupAudit("app.")
	long := "a" + strings.Repeat("b-_9", 15) + "zz"
	wantLines(t, "audit", got, []string{
		`app.create - {"app": "wiki", "name": "Wiki", "open_to_all": false}`,
		`app.update - {"app": "wiki", "name": "Team wiki", "open_to_all": true}`,
		`app.update - {"app": "wiki", "name": "Wiki", "open_to_all": false}`,
		`app.create - {"app": "` + long + `", "name": "Long", "open_to_all": false}`,
		`app.delete - {"app": "wiki"}`,
	})
	if n := e.count("SELECT count(*) FROM audit_events WHERE event LIKE 'app.%' AND actor_id = $1", admin.ID); n != 5 {
		t.Fatalf("%d app events by the admin, want 5", n)
	}
}

// TestAppAccess follows who may use an app through open_to_all, direct
// grants, group grants and the admin role.
func TestAppAccess(t *testing.T) {
	e := newAdminEnv(t)
	root, token := e.admin("root@example.com")
	ada, adaToken := e.user("ada@example.com")
	bearer := map[string]string{"Authorization": "Bearer " + token}
	myApps := func(tok string) string {
		t.Helper()
		r := e.mustStatus(200, "GET", "/api/apps", tok, nil)
		var apps []App
		r2 := apitest.Response{Body: r.Body}
		r2.Decode(t, &apps)
		var keys []string
		for _, a := range apps {
			keys = append(keys, a.Key)
		}
		return strings.Join(keys, ",")
	}
	access := func(id string) string {
		t.Helper()
		return string(e.mustStatus(200, "GET", "/api/admin/users/"+id+"/apps", token, nil).Body)
	}

	// Close ai; add a closed app.
	e.mustStatus(200, "PUT", "/api/admin/apps/ai", token, map[string]any{"name": "AI"})
	e.mustStatus(201, "PUT", "/api/admin/apps/wiki", token, map[string]any{"name": "Wiki"})
	if got := myApps(adaToken); got != "documents" {
		t.Fatalf("ada's apps: %s", got)
	}
	if got := myApps(token); got != "ai,documents,wiki" {
		t.Fatalf("admin's apps: %s", got)
	}
	if got, want := access(ada.ID), `[{"key":"documents","direct":false,"groups":[],"open_to_all":true}]`; got != want {
		t.Fatalf("ada's access: %s, want %s", got, want)
	}
	if got, want := access(root.ID), `[{"key":"ai","direct":false,"groups":[],"open_to_all":false},`+
		`{"key":"documents","direct":false,"groups":[],"open_to_all":true},`+
		`{"key":"wiki","direct":false,"groups":[],"open_to_all":false}]`; got != want {
		t.Fatalf("admin's access: %s, want %s", got, want)
	}

	// A direct grant, twice (idempotent), then a group grant.
	e.mustStatus(204, "PUT", "/api/admin/users/"+ada.ID+"/apps/ai", token, nil)
	e.mustStatus(204, "PUT", "/api/admin/users/"+ada.ID+"/apps/ai", token, nil)
	if got := myApps(adaToken); got != "ai,documents" {
		t.Fatalf("ada's apps after the grant: %s", got)
	}
	g1 := e.createGroup(token, "Editors")
	g2 := e.createGroup(token, "Writers")
	for _, g := range []*Group{g1, g2} {
		e.mustStatus(204, "PUT", "/api/admin/groups/"+g.ID+"/apps/wiki", token, nil)
		e.mustStatus(204, "PUT", "/api/admin/groups/"+g.ID+"/apps/ai", token, nil)
	}
	e.mustStatus(204, "PUT", "/api/admin/groups/"+g1.ID+"/apps/wiki", token, nil) // idempotent
	if got := myApps(adaToken); got != "ai,documents" {
		t.Fatalf("ada's apps before joining: %s", got)
	}
	e.mustStatus(204, "PUT", "/api/admin/groups/"+g1.ID+"/members/"+ada.ID, token, nil)
	e.mustStatus(204, "PUT", "/api/admin/groups/"+g2.ID+"/members/"+ada.ID, token, nil)
	if got := myApps(adaToken); got != "ai,documents,wiki" {
		t.Fatalf("ada's apps in the groups: %s", got)
	}
	groups := `["` + min(g1.ID, g2.ID) + `","` + max(g1.ID, g2.ID) + `"]`
	if got, want := access(ada.ID), `[{"key":"ai","direct":true,"groups":`+groups+`,"open_to_all":false},`+
		`{"key":"documents","direct":false,"groups":[],"open_to_all":true},`+
		`{"key":"wiki","direct":false,"groups":`+groups+`,"open_to_all":false}]`; got != want {
		t.Fatalf("ada's access: %s, want %s", got, want)
	}
	if r := e.mustStatus(200, "GET", "/api/admin/groups/"+g1.ID, token, nil); !strings.Contains(string(r.Body), `"member_count":1,"apps":["ai","wiki"]`) {
		t.Fatalf("group: %s", r.Body)
	}

	// Revokes: idempotent; the wiki stays through the other group.
	e.mustStatus(204, "DELETE", "/api/admin/users/"+ada.ID+"/apps/ai", token, nil)
	e.mustStatus(204, "DELETE", "/api/admin/users/"+ada.ID+"/apps/ai", token, nil)
	e.mustStatus(204, "DELETE", "/api/admin/groups/"+g1.ID+"/apps/wiki", token, nil)
	e.mustStatus(204, "DELETE", "/api/admin/groups/"+g1.ID+"/apps/wiki", token, nil)
	e.mustStatus(204, "DELETE", "/api/admin/groups/"+g2.ID+"/apps/ai", token, nil)
	if got, want := access(ada.ID), `[{"key":"ai","direct":false,"groups":["`+g1.ID+`"],"open_to_all":false},`+
		`{"key":"documents","direct":false,"groups":[],"open_to_all":true},`+
		`{"key":"wiki","direct":false,"groups":["`+g2.ID+`"],"open_to_all":false}]`; got != want {
		t.Fatalf("ada's access after revokes: %s, want %s", got, want)
	}
	e.mustStatus(204, "DELETE", "/api/admin/groups/"+g2.ID+"/members/"+ada.ID, token, nil)
	if got := myApps(adaToken); got != "ai,documents" {
		t.Fatalf("ada's apps after leaving: %s", got)
	}

	unknown := "00000000-0000-4000-8000-000000000000"
	pattern := `{"detail":[{"type":"string_pattern_mismatch","loc":["path","key"],"msg":"String should match pattern '^[a-z][a-z0-9_-]{0,62}$'"}]}`
	var scenarios []apitest.Scenario
	for _, method := range []string{"PUT", "DELETE"} {
		scenarios = append(scenarios,
			apitest.Scenario{Name: method + " user unknown app", Method: method, URL: "/api/admin/users/" + ada.ID + "/apps/nope", Headers: bearer,
				ExpectedStatus: 404, ExpectedBody: apitest.Detail("App not found")},
			apitest.Scenario{Name: method + " unknown user", Method: method, URL: "/api/admin/users/" + unknown + "/apps/ai", Headers: bearer,
				ExpectedStatus: 404, ExpectedBody: apitest.Detail("User not found")},
			apitest.Scenario{Name: method + " group unknown app", Method: method, URL: "/api/admin/groups/" + g1.ID + "/apps/nope", Headers: bearer,
				ExpectedStatus: 404, ExpectedBody: apitest.Detail("App not found")},
			apitest.Scenario{Name: method + " unknown group", Method: method, URL: "/api/admin/groups/" + unknown + "/apps/ai", Headers: bearer,
				ExpectedStatus: 404, ExpectedBody: apitest.Detail("Group not found")},
			apitest.Scenario{Name: method + " user bad key", Method: method, URL: "/api/admin/users/" + ada.ID + "/apps/A", Headers: bearer,
				ExpectedStatus: 422, ExpectedBody: pattern},
			apitest.Scenario{Name: method + " group bad key", Method: method, URL: "/api/admin/groups/" + g1.ID + "/apps/-x", Headers: bearer,
				ExpectedStatus: 422, ExpectedBody: pattern},
			apitest.Scenario{Name: method + " by a user", Method: method, URL: "/api/admin/users/" + ada.ID + "/apps/ai",
				Headers: map[string]string{"Authorization": "Bearer " + adaToken}, ExpectedStatus: 403, ExpectedBody: apitest.Detail("Not enough permissions")},
		)
	}
	scenarios = append(scenarios,
		apitest.Scenario{Name: "access of unknown user", URL: "/api/admin/users/" + unknown + "/apps", Headers: bearer,
			ExpectedStatus: 404, ExpectedBody: apitest.Detail("User not found")},
		apitest.Scenario{Name: "access bad id", URL: "/api/admin/users/1/apps", Headers: bearer, ExpectedStatus: 422,
			ExpectedBody: `{"detail":[{"type":"uuid_parsing","loc":["path","id"],"msg":"Input should be a valid UUID, invalid length: expected length 32 for simple format, found 1"}]}`},
		apitest.Scenario{Name: "bad id and key", Method: "PUT", URL: "/api/admin/users/1/apps/A", Headers: bearer, ExpectedStatus: 422,
			ExpectedBody: `{"detail":[{"type":"uuid_parsing","loc":["path","id"],"msg":"Input should be a valid UUID, invalid length: expected length 32 for simple format, found 1"},` +
				`{"type":"string_pattern_mismatch","loc":["path","key"],"msg":"String should match pattern '^[a-z][a-z0-9_-]{0,62}$'"}]}`},
	)
	e.table(t, scenarios)

	wantLines(t, "grant audit", e.groupAudit("user.app_"), []string{
		`user.app_grant ` + ada.ID + ` {"app": "ai"}`,
		`user.app_revoke ` + ada.ID + ` {"app": "ai"}`,
	})
	wantLines(t, "group grant audit", e.groupAudit("group.app_"), []string{
		`group.app_grant ` + g1.ID + ` {"app": "wiki"}`,
		`group.app_grant ` + g1.ID + ` {"app": "ai"}`,
		`group.app_grant ` + g2.ID + ` {"app": "wiki"}`,
		`group.app_grant ` + g2.ID + ` {"app": "ai"}`,
		`group.app_revoke ` + g1.ID + ` {"app": "wiki"}`,
		`group.app_revoke ` + g2.ID + ` {"app": "ai"}`,
	})
}

// TestAppAndGroupChangesNotify: each change to memberships, grants,
// groups and apps is announced on the user channel for the users it
// concerns, or with an empty payload (everyone) for an app or a group.
func TestAppAndGroupChangesNotify(t *testing.T) {
	e := newAdminEnv(t)
	_, token := e.admin("root@example.com")
	ada, _ := e.user("ada@example.com")
	bob, _ := e.user("bob@example.com")
	g := e.createGroup(token, "G")
	e.mustStatus(204, "PUT", "/api/admin/groups/"+g.ID+"/members/"+bob.ID, token, nil)

	ctx := context.Background()
	conn, err := pgx.ConnectConfig(ctx, e.db.Config().ConnConfig)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "LISTEN "+userChangedChannel); err != nil {
		t.Fatal(err)
	}
	// payloads returns the payloads of the change's notifications,
	// sorted, until none arrives for 200 ms.
	payloads := func(method, path string, status int) string {
		t.Helper()
		e.mustStatus(status, method, path, token, nil)
		var got []string
		for {
			wctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
			n, err := conn.WaitForNotification(wctx)
			cancel()
			if err != nil {
				sort.Strings(got)
				return strings.Join(got, ",")
			}
			if n.Payload == "" {
				got = append(got, "everyone")
			} else {
				got = append(got, map[string]string{ada.ID: "ada", bob.ID: "bob"}[n.Payload])
			}
		}
	}
	for _, tt := range []struct {
		method, path string
		status       int
		want         string
	}{
		{"PUT", "/api/admin/groups/" + g.ID + "/members/" + ada.ID, 204, "ada"},
		{"PUT", "/api/admin/groups/" + g.ID + "/members/" + ada.ID, 204, ""}, // no change
		{"PUT", "/api/admin/users/" + ada.ID + "/apps/ai", 204, "ada"},
		{"DELETE", "/api/admin/users/" + ada.ID + "/apps/ai", 204, "ada"},
		{"PUT", "/api/admin/groups/" + g.ID + "/apps/ai", 204, "ada,bob"},
		{"DELETE", "/api/admin/groups/" + g.ID + "/apps/ai", 204, "ada,bob"},
		{"DELETE", "/api/admin/groups/" + g.ID + "/members/" + ada.ID, 204, "ada"},
		{"DELETE", "/api/admin/apps/ai", 204, "everyone"},
		{"DELETE", "/api/admin/groups/" + g.ID, 204, "bob,everyone"},
	} {
		if got := payloads(tt.method, tt.path, tt.status); got != tt.want {
			t.Errorf("%s %s: notified %q, want %q", tt.method, tt.path, got, tt.want)
		}
	}
	// Renaming a group or changing an app concerns everyone.
	h := e.createGroup(token, "H")
	for _, tt := range []struct {
		sql  string
		want string
	}{
		{"UPDATE groups SET name = 'H2' WHERE id = '" + h.ID + "'", "everyone"},
		{"INSERT INTO apps (key, name) VALUES ('wiki', 'Wiki')", "everyone"},
		{"UPDATE apps SET open_to_all = true WHERE key = 'wiki'", "everyone"},
	} {
		e.exec(tt.sql)
		wctx, cancel := context.WithTimeout(ctx, time.Second)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		if err != nil || n.Payload != "" {
			t.Errorf("%s: notification %v, %v; want an empty payload", tt.sql, n, err)
		}
	}
}

// TestEmptyNotificationClearsEveryCachedUser: the empty payload that an
// app or group change sends drops every cached user.
func TestEmptyNotificationClearsEveryCachedUser(t *testing.T) {
	e := newAdminEnv(t)
	e.startListening()
	ada, adaToken := e.user("ada@example.com")
	bob, bobToken := e.user("bob@example.com")
	for _, tok := range []string{adaToken, bobToken} {
		e.mustStatus(200, "GET", "/api/users/me", tok, nil)
	}
	for _, id := range []string{ada.ID, bob.ID} {
		if _, ok := e.svc.cache.user(id, time.Now()); !ok {
			t.Fatal("user not cached while listening")
		}
	}
	// Behind the service's back, as another instance would.
	e.exec("UPDATE apps SET open_to_all = false WHERE key = 'ai'")
	eventually(t, "every cached user dropped", func() bool {
		_, a := e.svc.cache.user(ada.ID, time.Now())
		_, b := e.svc.cache.user(bob.ID, time.Now())
		return !a && !b
	})
}

// TestDeleteRequiredAppRefused: an app that a route of the running
// configuration requires (accounts_auth's require_app) cannot be
// deleted, or the route would refuse everyone but the admins; closing it
// stays possible.
func TestDeleteRequiredAppRefused(t *testing.T) {
	e := newTestEnv(t)
	_, token := e.admin("root@example.com")
	e.svc.RequireApp("documents")
	bearer := map[string]string{"Authorization": "Bearer " + token}
	e.table(t, []apitest.Scenario{
		{Name: "required", Method: "DELETE", URL: "/api/admin/apps/documents", Headers: bearer,
			ExpectedStatus: 409, ExpectedBody: apitest.Detail("App is required by the gateway's configuration")},
		{Name: "closed instead", Method: "PUT", URL: "/api/admin/apps/documents", Headers: bearer,
			Body: map[string]any{"name": "Documents", "open_to_all": false}, ExpectedStatus: 200},
		{Name: "not required", Method: "DELETE", URL: "/api/admin/apps/ai", Headers: bearer, ExpectedStatus: 204},
	})
	if n := e.count("SELECT count(*) FROM apps WHERE key = 'documents'"); n != 1 {
		t.Fatalf("%d documents apps after the refused delete, want 1", n)
	}
}
