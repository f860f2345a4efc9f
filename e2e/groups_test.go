package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
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
	admin := c.NewAdmin(g.DatabaseURL)
	user, _, token := c.NewUser()

	send := func(method, path, body string) *Response {
		t.Helper()
		return c.SendJSON(method, path, admin, body)
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
	admin := ca.NewAdmin(a.DatabaseURL)
	user, _, token := ca.NewUser()

	send := func(method, path, body string) *Response {
		t.Helper()
		return ca.SendJSON(method, path, admin, body)
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

// TestDocumentSharingByGroup: a document service that shares documents
// with groups, as README "Sharing documents with a group" describes,
// behind the real gateway. The owner shares with a group they belong
// to; its members read the document, others get 404 whatever
// X-User-Groups they send; a member removed from the group loses it at
// the next request.
func TestDocumentSharingByGroup(t *testing.T) {
	t.Parallel()
	docs := newSharingDocService()
	t.Cleanup(docs.srv.Close)
	g := startGateway(t, GatewayOptions{DocService: docs.srv.Listener.Addr().String()})
	c := g.Client(t)
	admin := c.NewAdmin(g.DatabaseURL)
	alice, _, aliceToken := c.NewUser()
	bob, _, bobToken := c.NewUser()
	_, _, carolToken := c.NewUser()

	r := c.PostJSON("/api/admin/groups", admin, `{"name": "Team `+randomHex(4)+`"}`)
	expectStatus(t, r, http.StatusCreated)
	var team struct {
		ID string `json:"id"`
	}
	r.Decode(t, &team)
	for _, u := range []apiUser{alice, bob} {
		expectStatus(t, c.SendJSON(http.MethodPut, "/api/admin/groups/"+team.ID+"/members/"+u.ID, admin, nil), http.StatusNoContent)
	}

	r = c.PostJSON("/api/documents", aliceToken, `{"title": "Plan"}`)
	expectStatus(t, r, http.StatusCreated)
	var doc struct {
		ID    string `json:"id"`
		Owner string `json:"owner"`
	}
	r.Decode(t, &doc)
	if doc.Owner != alice.ID {
		t.Fatalf("the document's owner is %q, want alice %q", doc.Owner, alice.ID)
	}
	read := func(token string, forgedGroups ...string) func() *Response {
		return func() *Response {
			req := c.NewRequest(http.MethodGet, "/api/documents/"+doc.ID, nil)
			setToken(req, token)
			for _, forged := range forgedGroups {
				req.Header.Add("X-User-Groups", forged)
			}
			return c.Do(req)
		}
	}
	expectDetail(t, read(bobToken)(), http.StatusNotFound, "Document not found")

	share := "/api/documents/" + doc.ID + "/shares/" + team.ID
	expectDetail(t, c.SendJSON(http.MethodPut, share, bobToken, nil), http.StatusNotFound, "Document not found")
	expectStatus(t, c.SendJSON(http.MethodPut, share, aliceToken, nil), http.StatusNoContent)
	r = read(bobToken)()
	expectStatus(t, r, http.StatusOK)
	if want := `{"id":"` + doc.ID + `","owner":"` + alice.ID + `","title":"Plan","shared_with":["` + team.ID + `"]}`; strings.TrimSpace(string(r.Body)) != want {
		t.Fatalf("bob reads %s, want %s", r.Body, want)
	}
	// Carol is in no group: the gateway replaces what she claims.
	expectDetail(t, read(carolToken, team.ID)(), http.StatusNotFound, "Document not found")
	// Nor can she share her own document with a group she is not in.
	r = c.PostJSON("/api/documents", carolToken, `{"title": "Mine"}`)
	expectStatus(t, r, http.StatusCreated)
	var carolDoc struct {
		ID string `json:"id"`
	}
	r.Decode(t, &carolDoc)
	req := c.NewRequest(http.MethodPut, "/api/documents/"+carolDoc.ID+"/shares/"+team.ID, nil)
	setToken(req, carolToken)
	req.Header.Set("X-User-Groups", team.ID)
	expectDetail(t, c.Do(req), http.StatusForbidden, "Not a member of that group")

	since := time.Now()
	expectStatus(t, c.SendJSON(http.MethodDelete, "/api/admin/groups/"+team.ID+"/members/"+bob.ID, admin, nil), http.StatusNoContent)
	propagation(t, "removed from the group, the shared document is gone", since, statusIs(http.StatusNotFound, read(bobToken)))
	expectStatus(t, read(aliceToken)(), http.StatusOK)
}

// sharingDocService is a document service that shares documents with
// groups: it keeps, for each document, its owner (the X-User-Id that
// created it) and the groups it is shared with, and lets a user read a
// document they own or that is shared with one of their X-User-Groups.
// It trusts both headers because only the gateway reaches it.
type sharingDocService struct {
	srv  *httptest.Server
	mu   sync.Mutex
	docs map[string]*sharedDoc
}

type sharedDoc struct {
	ID         string   `json:"id"`
	Owner      string   `json:"owner"`
	Title      string   `json:"title"`
	SharedWith []string `json:"shared_with"`
}

func newSharingDocService() *sharingDocService {
	s := &sharingDocService{docs: map[string]*sharedDoc{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/documents", s.create)
	mux.HandleFunc("GET /api/documents/{id}", s.read)
	mux.HandleFunc("PUT /api/documents/{id}/shares/{group}", s.share)
	s.srv = httptest.NewServer(mux)
	return s
}

// identity is who the gateway says the caller is: the user's id and the
// ids of their groups (X-User-Groups: comma-separated, empty for none).
func identity(r *http.Request) (user string, groups []string) {
	if g := r.Header.Get("X-User-Groups"); g != "" {
		groups = strings.Split(g, ",")
	}
	return r.Header.Get("X-User-Id"), groups
}

// visible returns the document if the caller may read it.
func (s *sharingDocService) visible(r *http.Request) *sharedDoc {
	user, groups := identity(r)
	d := s.docs[r.PathValue("id")]
	if d == nil || d.Owner != user && !slices.ContainsFunc(d.SharedWith, func(g string) bool { return slices.Contains(groups, g) }) {
		return nil
	}
	return d
}

func (s *sharingDocService) create(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Title string `json:"title"`
	}
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		writeStubJSON(w, http.StatusUnprocessableEntity, map[string]string{"detail": "Invalid body"})
		return
	}
	user, _ := identity(r)
	s.mu.Lock()
	d := &sharedDoc{ID: randomHex(8), Owner: user, Title: in.Title, SharedWith: []string{}}
	s.docs[d.ID] = d
	s.mu.Unlock()
	writeStubJSON(w, http.StatusCreated, d)
}

func (s *sharingDocService) read(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d := s.visible(r); d != nil {
		writeStubJSON(w, http.StatusOK, d)
		return
	}
	writeStubJSON(w, http.StatusNotFound, map[string]string{"detail": "Document not found"})
}

// share shares a document of the caller's with one of the caller's
// groups.
func (s *sharingDocService) share(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	user, groups := identity(r)
	d := s.visible(r)
	switch group := r.PathValue("group"); {
	case d == nil || d.Owner != user:
		writeStubJSON(w, http.StatusNotFound, map[string]string{"detail": "Document not found"})
	case !slices.Contains(groups, group):
		writeStubJSON(w, http.StatusForbidden, map[string]string{"detail": "Not a member of that group"})
	default:
		if !slices.Contains(d.SharedWith, group) {
			d.SharedWith = append(d.SharedWith, group)
		}
		w.WriteHeader(http.StatusNoContent)
	}
}

func writeStubJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
