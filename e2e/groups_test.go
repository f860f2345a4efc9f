package e2e

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
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

// TestDocumentsRequireApp: the project's Caddyfile lets through to the
// document service only users who may use the documents app, with
// X-User-Groups set to their groups (ids, sorted, comma-separated; empty
// for none) whatever the client sent. Two gateway instances share one
// database: a change made through one (closing the app, a grant through
// a group, a removal from the group) holds on the other at its user's
// next request, within propagationLimit.
func TestDocumentsRequireApp(t *testing.T) {
	t.Parallel()
	gws := startInstances(t, 2, "")
	a, b := gws[0], gws[1]
	ca := a.Client(t)
	cb := viaGateway(ca, b)
	adminEmail, adminPassword := uniqueEmail(t), randomPassword()
	createAdmin(t, a.DatabaseURL, adminEmail, adminPassword)
	admin := ca.Login(adminEmail, adminPassword)
	user, _, token := ca.NewUser()

	send := func(method, path, body string) *Response {
		t.Helper()
		req := ca.NewRequest(method, path, strings.NewReader(body))
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		setToken(req, admin)
		return ca.Do(req)
	}
	// documentAs sends a document request through b, with a forged
	// X-User-Groups, and returns the answer and what the service got.
	documentAs := func() (*Response, []StubRequest) {
		path := "/api/documents/d-" + randomHex(6)
		req := cb.NewRequest(http.MethodGet, path, nil)
		setToken(req, token)
		req.Header.Set("X-User-Groups", "forged")
		req.Header["x_user_groups"] = []string{"forged"}
		r := cb.Do(req)
		return r, b.Doc.Where(func(s StubRequest) bool { return s.Path == path })
	}
	groupsSeen := func(want string) func() string {
		return func() string {
			r, got := documentAs()
			if r.Status != http.StatusOK || len(got) != 1 {
				return fmt.Sprintf("status %d %s, %d requests at the service, want 200", r.Status, truncate(r.Body, 200), len(got))
			}
			if vs := got[0].Header.Values("X-User-Groups"); !slices.Equal(vs, []string{want}) {
				return fmt.Sprintf("X-User-Groups %q, want [%q]", vs, want)
			}
			for name := range got[0].Header {
				if strings.EqualFold(strings.ReplaceAll(name, "_", "-"), "x-user-groups") && name != "X-User-Groups" {
					return fmt.Sprintf("the service got the client's %s", name)
				}
			}
			return ""
		}
	}
	refused := func() string {
		r, got := documentAs()
		if r.Status != http.StatusForbidden || len(got) != 0 {
			return fmt.Sprintf("status %d %s, %d requests at the service, want 403 and none", r.Status, truncate(r.Body, 200), len(got))
		}
		expectDetail(t, r, http.StatusForbidden, "Not enough permissions")
		return ""
	}

	// Open to all at first: through, with no groups.
	propagation(t, "documents open to all", time.Now(), groupsSeen(""))

	since := time.Now()
	expectStatus(t, send(http.MethodPut, "/api/admin/apps/documents", `{"name": "Documents", "open_to_all": false}`), http.StatusOK)
	propagation(t, "documents closed, refused on the other instance", since, refused)

	newGroup := func(name string) string {
		r := send(http.MethodPost, "/api/admin/groups", `{"name": "`+name+`"}`)
		expectStatus(t, r, http.StatusCreated)
		var g struct {
			ID string `json:"id"`
		}
		r.Decode(t, &g)
		return g.ID
	}
	g1, g2 := newGroup("Readers "+randomHex(4)), newGroup("Writers "+randomHex(4))
	for _, g := range []string{g1, g2} {
		expectStatus(t, send(http.MethodPut, "/api/admin/groups/"+g+"/members/"+user.ID, ""), http.StatusNoContent)
	}
	propagation(t, "members of two groups, no grant yet", time.Now(), refused)
	sorted := []string{g1, g2}
	slices.Sort(sorted)

	since = time.Now()
	expectStatus(t, send(http.MethodPut, "/api/admin/groups/"+g1+"/apps/documents", ""), http.StatusNoContent)
	propagation(t, "granted through a group, let through on the other instance", since, groupsSeen(strings.Join(sorted, ",")))

	since = time.Now()
	expectStatus(t, send(http.MethodDelete, "/api/admin/groups/"+g1+"/members/"+user.ID, ""), http.StatusNoContent)
	propagation(t, "removed from the granting group, refused on the other instance", since, refused)

	since = time.Now()
	expectStatus(t, send(http.MethodPut, "/api/admin/users/"+user.ID+"/apps/documents", ""), http.StatusNoContent)
	propagation(t, "granted directly", since, groupsSeen(g2))

	since = time.Now()
	expectStatus(t, send(http.MethodDelete, "/api/admin/groups/"+g2, ""), http.StatusNoContent)
	propagation(t, "group deleted", since, groupsSeen(""))

	// Admins use every app, granted or not.
	req := cb.NewRequest(http.MethodGet, "/api/documents/admin", nil)
	setToken(req, admin)
	expectStatus(t, cb.Do(req), http.StatusOK)
}
