package accounts

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/caddyaccounts/gateway/internal/apitest"
)

// createGroup creates a group through the API and returns it.
func (e *testEnv) createGroup(token, name string) *Group {
	e.t.Helper()
	r := e.do("POST", "/api/admin/groups", token, map[string]any{"name": name})
	if r.Status != http.StatusCreated {
		e.t.Fatalf("create group %q: %d %s", name, r.Status, r.Body)
	}
	g := &Group{}
	if err := json.Unmarshal(r.Body, g); err != nil {
		e.t.Fatal(err)
	}
	return g
}

// mustStatus sends a request and fails unless it gets status.
func (e *testEnv) mustStatus(status int, method, path, token string, body any) *response {
	e.t.Helper()
	r := e.do(method, path, token, body)
	if r.Status != status {
		e.t.Fatalf("%s %s: %d %s, want %d", method, path, r.Status, r.Body, status)
	}
	return r
}

// count runs a SELECT count(*) query.
func (e *testEnv) count(sql string, args ...any) int {
	e.t.Helper()
	var n int
	if err := e.db.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// groupAudit returns "event target details" of the audit events whose
// names start with prefix, oldest first.
func (e *testEnv) groupAudit(prefix string) []string {
	e.t.Helper()
	rows, err := e.db.Query(context.Background(),
		`SELECT event || ' ' || coalesce(target_id::text, '-') || ' ' || details::text FROM audit_events
		 WHERE event LIKE $1 || '%' ORDER BY id`, prefix)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			e.t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

func wantLines(t *testing.T, what string, got, want []string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("%s:\n%s\nwant:\n%s", what, strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestAdminGroupLifecycle(t *testing.T) {
	e := newAdminEnv(t)
	admin, token := e.admin("root@example.com")

	r := e.mustStatus(201, "POST", "/api/admin/groups", token, map[string]any{"name": "  Sales Team ", "description": "The sellers"})
	var g map[string]any
	if err := json.Unmarshal(r.Body, &g); err != nil {
		t.Fatal(err)
	}
	id, _ := g["id"].(string)
	if len(g) != 7 || g["name"] != "Sales Team" || g["description"] != "The sellers" || g["member_count"] != 0.0 ||
		fmt.Sprint(g["apps"]) != "[]" || g["created_at"] != g["updated_at"] || len(id) != 36 {
		t.Fatalf("created group %s", r.Body)
	}
	r = e.mustStatus(200, "GET", "/api/admin/groups/"+id, token, nil)
	if got := r.JSON(t).(map[string]any); got["name"] != "Sales Team" || got["created_at"] != g["created_at"] {
		t.Fatalf("GET group %s", r.Body)
	}
	support := e.createGroup(token, "Support")

	// PATCH: name only keeps the description; null clears it.
	r = e.mustStatus(200, "PATCH", "/api/admin/groups/"+id, token, map[string]any{"name": "Sales"})
	if got := r.JSON(t).(map[string]any); got["name"] != "Sales" || got["description"] != "The sellers" || got["updated_at"] == g["updated_at"] {
		t.Fatalf("PATCH name: %s", r.Body)
	}
	r = e.mustStatus(200, "PATCH", "/api/admin/groups/"+id, token, map[string]any{"description": nil})
	if got := r.JSON(t).(map[string]any); got["name"] != "Sales" || got["description"] != nil {
		t.Fatalf("PATCH description: %s", r.Body)
	}
	before := e.mustStatus(200, "GET", "/api/admin/groups/"+id, token, nil)
	r = e.mustStatus(200, "PATCH", "/api/admin/groups/"+id, token, map[string]any{})
	if string(r.Body) != string(before.Body) {
		t.Fatalf("empty PATCH: %s, want the group unchanged: %s", r.Body, before.Body)
	}

	bearer := map[string]string{"Authorization": "Bearer " + token}
	unknown := "00000000-0000-4000-8000-000000000000"
	e.table(t, []apitest.Scenario{
		{Name: "same name other case", Method: "POST", URL: "/api/admin/groups", Headers: bearer, Body: map[string]any{"name": "SUPPORT"},
			ExpectedStatus: 409, ExpectedBody: apitest.Detail("Group name already exists")},
		{Name: "rename onto another", Method: "PATCH", URL: "/api/admin/groups/" + id, Headers: bearer, Body: map[string]any{"name": " support"},
			ExpectedStatus: 409, ExpectedBody: apitest.Detail("Group name already exists")},
		{Name: "get unknown", URL: "/api/admin/groups/" + unknown, Headers: bearer,
			ExpectedStatus: 404, ExpectedBody: apitest.Detail("Group not found")},
		{Name: "patch unknown", Method: "PATCH", URL: "/api/admin/groups/" + unknown, Headers: bearer, Body: map[string]any{"name": "X"},
			ExpectedStatus: 404, ExpectedBody: apitest.Detail("Group not found")},
		{Name: "delete unknown", Method: "DELETE", URL: "/api/admin/groups/" + unknown, Headers: bearer,
			ExpectedStatus: 404, ExpectedBody: apitest.Detail("Group not found")},
	})

	e.mustStatus(204, "DELETE", "/api/admin/groups/"+id, token, nil)
	if r := e.mustStatus(404, "GET", "/api/admin/groups/"+id, token, nil); r.Detail(t) != `"Group not found"` {
		t.Fatalf("after delete: %s", r.Body)
	}
	// The name is free again.
	again := e.createGroup(token, "sales")

	wantLines(t, "audit", e.groupAudit("group."), []string{
		`group.create ` + id + ` {"name": "Sales Team"}`,
		`group.create ` + support.ID + ` {"name": "Support"}`,
		`group.update ` + id + ` {"name": "Sales"}`,
		`group.update ` + id + ` {"description_changed": true}`,
		`group.delete ` + id + ` {"name": "Sales"}`,
		`group.create ` + again.ID + ` {"name": "sales"}`,
	})
	if n := e.count("SELECT count(*) FROM audit_events WHERE event LIKE 'group.%' AND actor_id = $1", admin.ID); n != 6 {
		t.Fatalf("%d group events by the admin, want 6", n)
	}
}

func TestAdminGroupValidation(t *testing.T) {
	e := newAdminEnv(t)
	_, token := e.admin("root@example.com")
	_, userToken := e.user("user@example.com")
	g := e.createGroup(token, "Existing")
	bearer := map[string]string{"Authorization": "Bearer " + token}
	entry := func(typ, field, msg string) string {
		return fmt.Sprintf(`{"type":%q,"loc":["body",%q],"msg":%q}`, typ, field, msg)
	}
	pathUUID := `{"type":"uuid_parsing","loc":["path","id"],"msg":"Input should be a valid UUID, invalid character: expected an optional prefix of ` +
		"`urn:uuid:`" + ` followed by [0-9a-fA-F-], found ` + "`n`" + ` at 1"}`
	tooShort := entry("string_too_short", "name", "String should have at least 1 character")
	tooLong := entry("string_too_long", "name", "String should have at most 100 characters")
	var scenarios []apitest.Scenario
	for _, tt := range []struct {
		name   string
		body   any
		detail string
	}{
		{"missing name", map[string]any{}, entry("missing", "name", "Field required")},
		{"null name", map[string]any{"name": nil}, entry("string_type", "name", "Input should be a valid string")},
		{"number name", map[string]any{"name": 5}, entry("string_type", "name", "Input should be a valid string")},
		{"empty name", map[string]any{"name": ""}, tooShort},
		{"blank name", map[string]any{"name": " \t "}, tooShort},
		{"long name", map[string]any{"name": strings.Repeat("é", 101)}, tooLong},
		{"long description", map[string]any{"name": "ok", "description": strings.Repeat("d", 1001)},
			entry("string_too_long", "description", "String should have at most 1000 characters")},
		{"extra field", map[string]any{"name": "ok", "members": []string{}}, entry("extra_forbidden", "members", "Extra inputs are not permitted")},
	} {
		scenarios = append(scenarios, apitest.Scenario{Name: "POST " + tt.name, Method: "POST", URL: "/api/admin/groups", Headers: bearer,
			Body: tt.body, ExpectedStatus: 422, ExpectedBody: `{"detail":[` + tt.detail + `]}`})
	}
	scenarios = append(scenarios,
		apitest.Scenario{Name: "100 characters", Method: "POST", URL: "/api/admin/groups", Headers: bearer,
			Body: map[string]any{"name": strings.Repeat("é", 100)}, ExpectedStatus: 201},
		apitest.Scenario{Name: "PATCH blank name", Method: "PATCH", URL: "/api/admin/groups/" + g.ID, Headers: bearer,
			Body: map[string]any{"name": " "}, ExpectedStatus: 422, ExpectedBody: `{"detail":[` + tooShort + `]}`},
		apitest.Scenario{Name: "PATCH null name", Method: "PATCH", URL: "/api/admin/groups/" + g.ID, Headers: bearer,
			Body: map[string]any{"name": nil}, ExpectedStatus: 422, ExpectedBody: `{"detail":[` + entry("string_type", "name", "Input should be a valid string") + `]}`},
		apitest.Scenario{Name: "PATCH bad id and name", Method: "PATCH", URL: "/api/admin/groups/nope", Headers: bearer,
			Body: map[string]any{"name": ""}, ExpectedStatus: 422, ExpectedBody: `{"detail":[` + pathUUID + `,` + tooShort + `]}`},
		apitest.Scenario{Name: "GET bad id", URL: "/api/admin/groups/nope", Headers: bearer,
			ExpectedStatus: 422, ExpectedBody: `{"detail":[` + pathUUID + `]}`},
		apitest.Scenario{Name: "DELETE bad id", Method: "DELETE", URL: "/api/admin/groups/nope", Headers: bearer,
			ExpectedStatus: 422, ExpectedBody: `{"detail":[` + pathUUID + `]}`},
		apitest.Scenario{Name: "members bad id", URL: "/api/admin/groups/nope/members", Headers: bearer,
			ExpectedStatus: 422, ExpectedBody: `{"detail":[` + pathUUID + `]}`},
		apitest.Scenario{Name: "not JSON", Method: "POST", URL: "/api/admin/groups", Headers: bearer, Body: "{",
			ExpectedStatus: 422, ExpectedContent: []string{`"json_invalid"`}},
		apitest.Scenario{Name: "user", Method: "POST", URL: "/api/admin/groups", Headers: map[string]string{"Authorization": "Bearer " + userToken},
			Body: map[string]any{"name": "Mine"}, ExpectedStatus: 403, ExpectedBody: apitest.Detail("Not enough permissions")},
		apitest.Scenario{Name: "user list", URL: "/api/admin/groups", Headers: map[string]string{"Authorization": "Bearer " + userToken},
			ExpectedStatus: 403, ExpectedBody: apitest.Detail("Not enough permissions")},
		apitest.Scenario{Name: "anonymous", URL: "/api/admin/groups/" + g.ID,
			ExpectedStatus: 401, ExpectedBody: apitest.Detail("Not authenticated")},
	)
	e.table(t, scenarios)
	if n := e.count("SELECT count(*) FROM groups"); n != 2 {
		t.Fatalf("%d groups, want 2", n)
	}
}

func TestAdminListGroups(t *testing.T) {
	e := newAdminEnv(t)
	_, token := e.admin("root@example.com")
	for _, name := range []string{"delta", "Alpha", "charlie", "Bravo", "alpha_2", "50%"} {
		e.createGroup(token, name)
	}
	names := func(query string, wantTotal string) string {
		t.Helper()
		r := e.mustStatus(200, "GET", "/api/admin/groups"+query, token, nil)
		if got := r.Header.Get("X-Total-Count"); got != wantTotal {
			t.Fatalf("%s: X-Total-Count %q, want %q", query, got, wantTotal)
		}
		var gs []Group
		if err := json.Unmarshal(r.Body, &gs); err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, g := range gs {
			out = append(out, g.Name)
		}
		return strings.Join(out, ",")
	}
	for _, tt := range []struct{ query, total, want string }{
		{"", "6", "50%,Alpha,alpha_2,Bravo,charlie,delta"},
		{"?skip=1&limit=2", "6", "Alpha,alpha_2"},
		{"?skip=10", "6", ""},
		{"?q=ALPHA", "2", "Alpha,alpha_2"},
		{"?q=_", "1", "alpha_2"},
		{"?q=%25", "1", "50%"},
		{"?q=a%00", "0", ""},
		{"?q=zzz", "0", ""},
	} {
		if got := names(tt.query, tt.total); got != tt.want {
			t.Errorf("%s: %s, want %s", tt.query, got, tt.want)
		}
	}
	e.table(t, []apitest.Scenario{
		{URL: "/api/admin/groups?limit=0", Headers: map[string]string{"Authorization": "Bearer " + token}, ExpectedStatus: 422,
			ExpectedBody: `{"detail":[{"type":"greater_than_equal","loc":["query","limit"],"msg":"Input should be greater than or equal to 1"}]}`},
		{URL: "/api/admin/groups?skip=x", Headers: map[string]string{"Authorization": "Bearer " + token}, ExpectedStatus: 422,
			ExpectedBody: `{"detail":[{"type":"int_parsing","loc":["query","skip"],"msg":"Input should be a valid integer, unable to parse string as an integer"}]}`},
	})
}

func TestGroupMembers(t *testing.T) {
	e := newAdminEnv(t)
	_, token := e.admin("root@example.com")
	ada, adaToken := e.user("ada@example.com")
	bob, _ := e.user("bob@example.com")
	sales := e.createGroup(token, "Sales")
	ops := e.createGroup(token, "ops")
	members := "/api/admin/groups/" + sales.ID + "/members/"

	e.mustStatus(204, "PUT", members+bob.ID, token, nil)
	e.mustStatus(204, "PUT", members+ada.ID, token, nil)
	e.mustStatus(204, "PUT", members+ada.ID, token, nil) // idempotent
	e.mustStatus(204, "PUT", "/api/admin/groups/"+ops.ID+"/members/"+ada.ID, token, nil)

	r := e.mustStatus(200, "GET", "/api/admin/groups/"+sales.ID+"/members", token, nil)
	var users []User
	if err := json.Unmarshal(r.Body, &users); err != nil {
		t.Fatal(err)
	}
	if len(users) != 2 || users[0].ID != ada.ID || users[1].ID != bob.ID || users[0].Email != "ada@example.com" {
		t.Fatalf("members: %s", r.Body)
	}
	if r := e.mustStatus(200, "GET", "/api/admin/groups/"+sales.ID, token, nil); r.JSON(t).(map[string]any)["member_count"] != 2.0 {
		t.Fatalf("member_count: %s", r.Body)
	}
	r = e.mustStatus(200, "GET", "/api/users/me/groups", adaToken, nil)
	if want := `[{"id":"` + ops.ID + `","name":"ops"},{"id":"` + sales.ID + `","name":"Sales"}]`; string(r.Body) != want {
		t.Fatalf("my groups: %s, want %s", r.Body, want)
	}

	bearer := map[string]string{"Authorization": "Bearer " + token}
	unknown := "00000000-0000-4000-8000-000000000000"
	e.table(t, []apitest.Scenario{
		{Name: "remove", Method: "DELETE", URL: members + bob.ID, Headers: bearer, ExpectedStatus: 204, ExpectedBody: ""},
		{Name: "remove again", Method: "DELETE", URL: members + bob.ID, Headers: bearer,
			ExpectedStatus: 404, ExpectedBody: apitest.Detail("User is not a member of the group")},
		{Name: "add to unknown group", Method: "PUT", URL: "/api/admin/groups/" + unknown + "/members/" + bob.ID, Headers: bearer,
			ExpectedStatus: 404, ExpectedBody: apitest.Detail("Group not found")},
		{Name: "add unknown user", Method: "PUT", URL: members + unknown, Headers: bearer,
			ExpectedStatus: 404, ExpectedBody: apitest.Detail("User not found")},
		{Name: "remove from unknown group", Method: "DELETE", URL: "/api/admin/groups/" + unknown + "/members/" + bob.ID, Headers: bearer,
			ExpectedStatus: 404, ExpectedBody: apitest.Detail("Group not found")},
		{Name: "remove unknown user", Method: "DELETE", URL: members + unknown, Headers: bearer,
			ExpectedStatus: 404, ExpectedBody: apitest.Detail("User not found")},
		{Name: "members of unknown group", URL: "/api/admin/groups/" + unknown + "/members", Headers: bearer,
			ExpectedStatus: 404, ExpectedBody: apitest.Detail("Group not found")},
		{Name: "bad user id", Method: "PUT", URL: members + "x", Headers: bearer, ExpectedStatus: 422,
			ExpectedBody: `{"detail":[{"type":"uuid_parsing","loc":["path","user_id"],"msg":"Input should be a valid UUID, invalid character: expected an optional prefix of ` + "`urn:uuid:`" + ` followed by [0-9a-fA-F-], found ` + "`x`" + ` at 1"}]}`},
		{Name: "user adds", Method: "PUT", URL: members + bob.ID, Headers: map[string]string{"Authorization": "Bearer " + adaToken},
			ExpectedStatus: 403, ExpectedBody: apitest.Detail("Not enough permissions")},
		{Name: "anonymous groups", URL: "/api/users/me/groups", ExpectedStatus: 401, ExpectedBody: apitest.Detail("Not authenticated")},
	})
	wantLines(t, "audit", e.groupAudit("group.member"), []string{
		`group.member_add ` + bob.ID + ` {"group_id": "` + sales.ID + `"}`,
		`group.member_add ` + ada.ID + ` {"group_id": "` + sales.ID + `"}`,
		`group.member_add ` + ada.ID + ` {"group_id": "` + ops.ID + `"}`,
		`group.member_remove ` + bob.ID + ` {"group_id": "` + sales.ID + `"}`,
	})
}

// TestGroupCascades deletes groups, users and apps and sees their
// memberships and grants go with them.
func TestGroupCascades(t *testing.T) {
	e := newAdminEnv(t)
	_, token := e.admin("root@example.com")
	ada, _ := e.user("ada@example.com")
	bob, _ := e.user("bob@example.com")
	g := e.createGroup(token, "G")
	h := e.createGroup(token, "H")
	for _, gid := range []string{g.ID, h.ID} {
		for _, uid := range []string{ada.ID, bob.ID} {
			e.mustStatus(204, "PUT", "/api/admin/groups/"+gid+"/members/"+uid, token, nil)
		}
		e.mustStatus(204, "PUT", "/api/admin/groups/"+gid+"/apps/ai", token, nil)
	}
	e.mustStatus(204, "PUT", "/api/admin/users/"+ada.ID+"/apps/ai", token, nil)
	e.mustStatus(204, "PUT", "/api/admin/users/"+bob.ID+"/apps/ai", token, nil)

	e.mustStatus(204, "DELETE", "/api/admin/groups/"+g.ID, token, nil)
	if n := e.count("SELECT count(*) FROM group_members WHERE group_id = $1", g.ID) +
		e.count("SELECT count(*) FROM group_app_grants WHERE group_id = $1", g.ID); n != 0 {
		t.Fatalf("%d rows of the deleted group left", n)
	}
	e.exec("DELETE FROM users WHERE id = $1", bob.ID)
	if n := e.count("SELECT count(*) FROM group_members WHERE user_id = $1", bob.ID) +
		e.count("SELECT count(*) FROM user_app_grants WHERE user_id = $1", bob.ID); n != 0 {
		t.Fatalf("%d rows of the deleted user left", n)
	}
	if r := e.mustStatus(200, "GET", "/api/admin/groups/"+h.ID, token, nil); !strings.Contains(string(r.Body), `"member_count":1,"apps":["ai"]`) {
		t.Fatalf("group H: %s", r.Body)
	}
	e.mustStatus(204, "DELETE", "/api/admin/apps/ai", token, nil)
	if n := e.count("SELECT count(*) FROM group_app_grants") + e.count("SELECT count(*) FROM user_app_grants"); n != 0 {
		t.Fatalf("%d grants of the deleted app left", n)
	}
	if n := e.count("SELECT count(*) FROM group_members WHERE user_id = $1", ada.ID); n != 1 {
		t.Fatalf("ada in %d groups, want 1", n)
	}
}

// TestConcurrentMembershipChanges adds and removes one membership from
// many requests at once: each answers 204, or 404 for a removal that
// found no membership; never a 5xx.
func TestConcurrentMembershipChanges(t *testing.T) {
	e := newAdminEnv(t)
	_, token := e.admin("root@example.com")
	u, _ := e.user("ada@example.com")
	g := e.createGroup(token, "Busy")
	path := "/api/admin/groups/" + g.ID + "/members/" + u.ID
	const n = 16
	type result struct {
		method string
		status int
		body   string
	}
	results := make(chan result, 4*n)
	var wg sync.WaitGroup
	for round := 0; round < 4; round++ {
		for i := 0; i < n; i++ {
			method := "PUT"
			if i%2 == 1 {
				method = "DELETE"
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := send(t, e.srv.Client(), e.srv.URL, method, path, nil, "Authorization", "Bearer "+token)
				results <- result{method, r.Status, string(r.Body)}
			}()
		}
		wg.Wait()
	}
	close(results)
	for r := range results {
		ok := r.status == 204 || (r.method == "DELETE" && r.status == 404 && r.body == `{"detail":"User is not a member of the group"}`)
		if !ok {
			t.Errorf("%s: %d %s", r.method, r.status, r.body)
		}
	}
	// Each change that happened is audited once: an add only when there
	// was no membership, a removal only when there was one, so adds and
	// removals alternate and their difference is the final state.
	events := e.groupAudit("group.member")
	adds := 0
	for _, ev := range events {
		if strings.HasPrefix(ev, "group.member_add ") {
			adds++
		}
	}
	member := e.count("SELECT count(*) FROM group_members WHERE group_id = $1 AND user_id = $2", g.ID, u.ID)
	if adds-(len(events)-adds) != member {
		t.Fatalf("%d adds and %d removals audited, but %d membership left", adds, len(events)-adds, member)
	}
	if len(events) == 0 {
		t.Fatal("no membership change audited")
	}
}

// TestGroupsPerUserCapped: a user in 200 groups gets an X-User-Groups
// value of 7,399 bytes, under 8 KiB; a 201st membership is refused with
// 409 and changes nothing.
func TestGroupsPerUserCapped(t *testing.T) {
	e := newTestEnv(t)
	_, token := e.admin("root@example.com")
	u, _ := e.user("member@example.com")
	e.exec(`INSERT INTO groups (name) SELECT 'group ' || n FROM generate_series(1, 201) n`)
	e.exec(`INSERT INTO group_members (group_id, user_id)
		SELECT id, $1 FROM groups WHERE name <> 'group 201'`, u.ID)

	loaded, err := e.svc.userForAuth(context.Background(), u.ID)
	if err != nil {
		t.Fatal(err)
	}
	header := loaded.GroupsHeader()
	ids := strings.Split(header, ",")
	if len(header) != 7399 || len(ids) != 200 || !slices.IsSorted(ids) {
		t.Fatalf("X-User-Groups of 200 groups: %d bytes, %d ids, sorted %v", len(header), len(ids), slices.IsSorted(ids))
	}

	var last string
	if err := e.db.QueryRow(context.Background(), `SELECT id::text FROM groups WHERE name = 'group 201'`).Scan(&last); err != nil {
		t.Fatal(err)
	}
	e.table(t, []apitest.Scenario{{
		Name: "201st group", Method: "PUT", URL: "/api/admin/groups/" + last + "/members/" + u.ID,
		Headers:        map[string]string{"Authorization": "Bearer " + token},
		ExpectedStatus: 409, ExpectedBody: apitest.Detail("User is in too many groups (at most 200)"),
	}})
	if n := e.count("SELECT count(*) FROM group_members WHERE user_id = $1", u.ID); n != 200 {
		t.Fatalf("%d memberships after the refused one, want 200", n)
	}
}
