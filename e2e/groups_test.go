package e2e

import (
	"net/http"
	"strings"
	"testing"
)

// TestGroupGrantOpensAnApp: an admin closes an app, creates a group, adds
// a user and grants the app to the group; the user's very next GET
// /api/apps lists the app, with the real binary and its migrations.
func TestGroupGrantOpensAnApp(t *testing.T) {
	t.Parallel()
	g := startGateway(t, GatewayOptions{})
	c := g.Client(t)
	adminEmail, adminPassword := uniqueEmail(t), randomPassword()
	createAdmin(t, g.DatabaseURL, adminEmail, adminPassword)
	admin := c.Login(adminEmail, adminPassword)
	user, _, token := c.NewUser()

	send := func(method, path, body string) *Response {
		t.Helper()
		var req *http.Request
		if body == "" {
			req = c.NewRequest(method, path, nil)
		} else {
			req = c.NewRequest(method, path, strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
		}
		setToken(req, admin)
		return c.Do(req)
	}
	appsOf := func() string {
		t.Helper()
		r := c.Get("/api/apps", token)
		expectStatus(t, r, http.StatusOK)
		return string(r.Body)
	}
	const docs = `{"key":"documents","name":"Documents","description":null,"open_to_all":true}`
	const ai = `{"key":"ai","name":"AI","description":null,"open_to_all":false}`

	if got, want := appsOf(), `[{"key":"ai","name":"AI","description":null,"open_to_all":true},`+docs+`]`; got != want {
		t.Fatalf("apps at the start: %s, want %s", got, want)
	}
	expectStatus(t, send(http.MethodPut, "/api/admin/apps/ai", `{"name": "AI"}`), http.StatusOK)
	if got, want := appsOf(), `[`+docs+`]`; got != want {
		t.Fatalf("apps with ai closed: %s, want %s", got, want)
	}

	r := send(http.MethodPost, "/api/admin/groups", `{"name": "Analysts"}`)
	expectStatus(t, r, http.StatusCreated)
	var group struct {
		ID string `json:"id"`
	}
	r.Decode(t, &group)
	expectStatus(t, send(http.MethodPut, "/api/admin/groups/"+group.ID+"/members/"+user.ID, ""), http.StatusNoContent)
	expectStatus(t, send(http.MethodPut, "/api/admin/groups/"+group.ID+"/apps/ai", ""), http.StatusNoContent)

	if got, want := appsOf(), `[`+ai+`,`+docs+`]`; got != want {
		t.Fatalf("apps through the group: %s, want %s", got, want)
	}
	r = c.Get("/api/users/me/groups", token)
	expectStatus(t, r, http.StatusOK)
	if want := `[{"id":"` + group.ID + `","name":"Analysts"}]`; string(r.Body) != want {
		t.Fatalf("my groups: %s, want %s", r.Body, want)
	}
	r = send(http.MethodGet, "/api/admin/users/"+user.ID+"/apps", "")
	expectStatus(t, r, http.StatusOK)
	if want := `[{"key":"ai","direct":false,"groups":["` + group.ID + `"],"open_to_all":false},` +
		`{"key":"documents","direct":false,"groups":[],"open_to_all":true}]`; string(r.Body) != want {
		t.Fatalf("the user's apps: %s, want %s", r.Body, want)
	}
}
