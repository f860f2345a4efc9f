package caddymodule

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"

	"github.com/caddyaccounts/gateway/internal/pgtest"
)

// cliDB is a fresh database for the `caddy accounts` subcommands, named
// by DATABASE_URL (no key, no ./Caddyfile in this directory), migrated
// by a first list-apps, and a connection to it.
func cliDB(t *testing.T) *pgx.Conn {
	t.Helper()
	dbURL := pgtest.Shared(t).NewDB(t, "", nil)
	t.Setenv("DATABASE_URL", dbURL)
	for _, name := range []string{"JWT_PRIVATE_KEY", "JWT_PRIVATE_KEY_FILE", "JWT_PUBLIC_KEY", "JWT_PUBLIC_KEY_FILE"} {
		t.Setenv(name, "")
	}
	if _, err := runAccounts(t, "list-apps"); err != nil {
		t.Fatalf("list-apps on a new database: %v", err)
	}
	conn, err := pgx.Connect(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// runAccounts runs `caddy accounts args...` in process, as registered,
// and returns its standard output and error.
func runAccounts(t *testing.T, args ...string) (string, error) {
	t.Helper()
	reg, ok := caddycmd.Commands()["accounts"]
	if !ok {
		t.Fatal("no accounts command registered")
	}
	root := &cobra.Command{Use: "accounts", SilenceUsage: true, SilenceErrors: true}
	reg.CobraFunc(root)
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetIn(strings.NewReader(""))
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}

// mustRun runs the command and requires success and exactly want.
func mustRun(t *testing.T, want string, args ...string) {
	t.Helper()
	out, err := runAccounts(t, args...)
	if err != nil {
		t.Fatalf("accounts %s: %v", strings.Join(args, " "), err)
	}
	if out != want {
		t.Errorf("accounts %s printed\n%q\nwant\n%q", strings.Join(args, " "), out, want)
	}
}

// mustFail runs the command and requires the error want and no output.
func mustFail(t *testing.T, want string, args ...string) {
	t.Helper()
	out, err := runAccounts(t, args...)
	if err == nil || err.Error() != want {
		t.Errorf("accounts %s: error %v, want %q", strings.Join(args, " "), err, want)
	}
	if out != "" {
		t.Errorf("accounts %s printed %q on failure", strings.Join(args, " "), out)
	}
}

// insertUser adds an active user with email (and no usable password)
// and returns the id.
func insertUser(t *testing.T, conn *pgx.Conn, email string) string {
	t.Helper()
	var id string
	err := conn.QueryRow(context.Background(), `INSERT INTO users (email, email_key, hashed_password)
		VALUES ($1, lower($1), '!') RETURNING id::text`, email).Scan(&id)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// auditRow is an audit event as the CLI tests compare it.
type auditRow struct {
	Event, Target string
	NoActor       bool // actor_id, ip and user_agent are all NULL
	Details       string
}

func auditRows(t *testing.T, conn *pgx.Conn) []auditRow {
	t.Helper()
	rows, err := conn.Query(context.Background(), `SELECT event, coalesce(target_id::text, ''),
		actor_id IS NULL AND ip IS NULL AND user_agent IS NULL, details::text FROM audit_events ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	list, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (auditRow, error) {
		var a auditRow
		err := row.Scan(&a.Event, &a.Target, &a.NoActor, &a.Details)
		return a, err
	})
	if err != nil {
		t.Fatal(err)
	}
	return list
}

// TestCLIProvisioning provisions from scratch with the subcommands: a
// group, a member, grants to the group and the user, then takes them
// back. Each change is in the database and audited once, with "via":
// "cli" and no actor; repeating a command changes nothing and says
// "already".
func TestCLIProvisioning(t *testing.T) {
	conn := cliDB(t)
	ctx := context.Background()
	alice := insertUser(t, conn, "alice@example.com")
	mustRun(t, "ai\topen\tAI\ndocuments\topen\tDocuments\n", "list-apps")
	if _, err := conn.Exec(ctx, "UPDATE apps SET open_to_all = false WHERE key = 'ai'"); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "ai\tclosed\tAI\ndocuments\topen\tDocuments\n", "list-apps")
	mustRun(t, `[
  {
    "key": "ai",
    "name": "AI",
    "description": null,
    "open_to_all": false
  },
  {
    "key": "documents",
    "name": "Documents",
    "description": null,
    "open_to_all": true
  }
]
`, "list-apps", "--json")
	mustRun(t, "", "list-groups")

	out, err := runAccounts(t, "create-group", "--name", "Analysts", "--description", "They analyse")
	if err != nil {
		t.Fatal(err)
	}
	var group string
	if _, err := fmt.Sscanf(out, "created group \"Analysts\" (%36s)\n", &group); err != nil || out != `created group "Analysts" (`+group+")\n" {
		t.Fatalf("create-group printed %q", out)
	}
	mustRun(t, `already exists: group "Analysts" (`+group+")\n", "create-group", "--name", " analysts ")

	g := `group "Analysts" (` + group + `)`
	u := `user alice@example.com (` + alice + `)`
	mustRun(t, "added "+u+" to "+g+"\n", "add-member", "--group", "ANALYSTS", "--user", "Alice@Example.COM")
	mustRun(t, u+" already in "+g+"\n", "add-member", "--group", group, "--user", alice)
	mustRun(t, "granted app ai to "+g+"\n", "grant", "--app", "ai", "--group", "analysts")
	mustRun(t, "app ai already granted to "+g+"\n", "grant", "--app", "ai", "--group", strings.ToUpper(group))
	mustRun(t, "granted app documents to "+u+"\n", "grant", "--app", "documents", "--user", "alice@example.com")
	mustRun(t, "app documents already granted to "+u+"\n", "grant", "--app", "documents", "--user", alice)
	mustRun(t, group+"\tAnalysts\t1\tai\n", "list-groups")

	out, err = runAccounts(t, "list-groups", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var groups []map[string]any
	if err := json.Unmarshal([]byte(out), &groups); err != nil {
		t.Fatalf("list-groups --json: %v\n%s", err, out)
	}
	if len(groups) != 1 || groups[0]["id"] != group || groups[0]["name"] != "Analysts" || groups[0]["description"] != "They analyse" ||
		groups[0]["member_count"] != 1.0 || fmt.Sprint(groups[0]["apps"]) != "[ai]" || groups[0]["created_at"] == nil {
		t.Errorf("list-groups --json printed %s", out)
	}

	var members, groupGrants, userGrants int
	err = conn.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM group_members WHERE group_id = $1 AND user_id = $2),
		(SELECT count(*) FROM group_app_grants WHERE group_id = $1 AND app_key = 'ai'),
		(SELECT count(*) FROM user_app_grants WHERE user_id = $2 AND app_key = 'documents')`, group, alice).
		Scan(&members, &groupGrants, &userGrants)
	if err != nil || members != 1 || groupGrants != 1 || userGrants != 1 {
		t.Fatalf("membership %d, group grant %d, user grant %d (%v), want one each", members, groupGrants, userGrants, err)
	}

	mustRun(t, "revoked app documents from "+u+"\n", "revoke", "--app", "documents", "--user", alice)
	mustRun(t, "app documents already not granted to "+u+"\n", "revoke", "--app", "documents", "--user", alice)
	mustRun(t, "revoked app ai from "+g+"\n", "revoke", "--app", "ai", "--group", "Analysts")
	mustRun(t, "removed "+u+" from "+g+"\n", "remove-member", "--group", "Analysts", "--user", "alice@example.com")
	mustRun(t, u+" already not in "+g+"\n", "remove-member", "--group", "Analysts", "--user", "alice@example.com")
	err = conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM group_members), (SELECT count(*) FROM group_app_grants),
		(SELECT count(*) FROM user_app_grants)`).Scan(&members, &groupGrants, &userGrants)
	if err != nil || members+groupGrants+userGrants != 0 {
		t.Fatalf("after the removals: %d memberships, %d group grants, %d user grants (%v)", members, groupGrants, userGrants, err)
	}

	want := []auditRow{
		{"group.create", group, true, `{"via": "cli", "name": "Analysts"}`},
		{"group.member_add", alice, true, `{"via": "cli", "group_id": "` + group + `"}`},
		{"group.app_grant", group, true, `{"app": "ai", "via": "cli"}`},
		{"user.app_grant", alice, true, `{"app": "documents", "via": "cli"}`},
		{"user.app_revoke", alice, true, `{"app": "documents", "via": "cli"}`},
		{"group.app_revoke", group, true, `{"app": "ai", "via": "cli"}`},
		{"group.member_remove", alice, true, `{"via": "cli", "group_id": "` + group + `"}`},
	}
	got := auditRows(t, conn)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("audit events\n%v\nwant\n%v", got, want)
	}
}

// TestCLIProvisioningRefusals: an unknown user, group or app, a
// malformed command or a rule of the API (a name taken, too long, the
// cap on memberships) is a one-line error, and nothing changes.
func TestCLIProvisioningRefusals(t *testing.T) {
	conn := cliDB(t)
	ctx := context.Background()
	alice := insertUser(t, conn, "alice@example.com")
	out, err := runAccounts(t, "create-group", "--name", "Analysts")
	if err != nil || !strings.HasPrefix(out, "created group") {
		t.Fatalf("create-group: %q %v", out, err)
	}
	before := auditRows(t, conn)

	mustFail(t, `no app "nope"`, "grant", "--app", "nope", "--user", alice)
	mustFail(t, `no app "Bad Key"`, "grant", "--app", "Bad Key", "--group", "Analysts")
	mustFail(t, `no user "bob@example.com"`, "grant", "--app", "ai", "--user", "bob@example.com")
	mustFail(t, `no user "00000000-0000-4000-8000-000000000000"`, "revoke", "--app", "ai", "--user", "00000000-0000-4000-8000-000000000000")
	mustFail(t, `no group "Nope"`, "grant", "--app", "ai", "--group", "Nope")
	mustFail(t, `no group "Nope"`, "add-member", "--group", "Nope", "--user", alice)
	mustFail(t, `no user "bob"`, "remove-member", "--group", "Analysts", "--user", "bob")
	mustFail(t, "name either --user or --group", "grant", "--app", "ai", "--user", alice, "--group", "Analysts")
	mustFail(t, "name either --user or --group", "revoke", "--app", "ai")
	mustFail(t, "--app is required", "grant", "--user", alice)
	mustFail(t, "--group and --user are required", "add-member", "--user", alice)
	mustFail(t, "--name is required", "create-group")
	mustFail(t, "a group name has 1 to 100 characters of text", "create-group", "--name", strings.Repeat("x", 101))
	mustFail(t, "a group name has 1 to 100 characters of text", "create-group", "--name", "   ")
	mustFail(t, "a group name has 1 to 100 characters of text", "create-group", "--name", "bad \xff")
	if after := auditRows(t, conn); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("the refusals were audited: %v", after[len(before):])
	}

	// The cap of migration 0008: a user in 200 groups joins no 201st.
	_, err = conn.Exec(ctx, `WITH g AS (INSERT INTO groups (name) SELECT 'cap ' || i FROM generate_series(1, 200) i RETURNING id)
		INSERT INTO group_members (group_id, user_id) SELECT id, $1 FROM g`, alice)
	if err != nil {
		t.Fatal(err)
	}
	mustFail(t, "User is in too many groups (at most 200)", "add-member", "--group", "Analysts", "--user", alice)
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM group_members WHERE user_id = $1", alice).Scan(&n); err != nil || n != 200 {
		t.Errorf("alice is in %d groups (%v), want 200", n, err)
	}
}

// TestCLIGrantNotifies: a grant made by the command line is announced on
// the channel that the gateways' caches listen to, naming the user.
func TestCLIGrantNotifies(t *testing.T) {
	conn := cliDB(t)
	alice := insertUser(t, conn, "alice@example.com")
	if _, err := conn.Exec(context.Background(), "LISTEN accounts_user_changed"); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "granted app ai to user alice@example.com ("+alice+")\n", "grant", "--app", "ai", "--user", alice)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n, err := conn.WaitForNotification(ctx)
	if err != nil {
		t.Fatalf("no notification after the grant: %v", err)
	}
	if n.Payload != alice {
		t.Errorf("notification %q, want the user's id %s", n.Payload, alice)
	}
}
