package accounts

import (
	"context"
	"strings"
	"testing"
)

type auditRow struct {
	event, actor, target, ip, ua, details string
}

func (e *testEnv) auditRows() []auditRow {
	e.t.Helper()
	rows, err := e.db.Query(context.Background(),
		`SELECT event, coalesce(actor_id::text, ''), coalesce(target_id::text, ''), coalesce(ip, ''),
		        coalesce(user_agent, ''), details::text FROM audit_events ORDER BY id`)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rows.Close()
	var out []auditRow
	for rows.Next() {
		var a auditRow
		if err := rows.Scan(&a.event, &a.actor, &a.target, &a.ip, &a.ua, &a.details); err != nil {
			e.t.Fatal(err)
		}
		out = append(out, a)
	}
	return out
}

// TestAuditOfRegisterAndLogin records the auth events with actor, target
// and IP, and never a password.
func TestAuditOfRegisterAndLogin(t *testing.T) {
	e := newTestEnv(t)
	u, _ := e.user("audit@example.com")
	e.do("POST", "/api/auth/login", "", formOf("username", "audit@example.com", "password", "Wrong!pw1"))
	e.do("POST", "/api/auth/login", "", formOf("username", "ghost@example.com", "password", "Wrong!pw2"))
	e.exec("UPDATE users SET is_active = false WHERE id = $1", u.ID)
	e.do("POST", "/api/auth/login", "", formOf("username", "audit@example.com", "password", "Secret!pw1"))

	got := e.auditRows()
	want := []auditRow{
		{EventRegister, u.ID, u.ID, "127.0.0.1", "Go-http-client/1.1", `{}`},
		{EventLoginSuccess, u.ID, u.ID, "127.0.0.1", "Go-http-client/1.1", `{}`},
		{EventLoginFailure, "", u.ID, "127.0.0.1", "Go-http-client/1.1", `{"reason": "wrong_password"}`},
		{EventLoginFailure, "", "", "127.0.0.1", "Go-http-client/1.1", `{"email": "ghost@example.com", "reason": "unknown_email"}`},
		{EventLoginFailure, "", u.ID, "127.0.0.1", "Go-http-client/1.1", `{"reason": "inactive"}`},
	}
	if len(got) != len(want) {
		t.Fatalf("audit rows:\n%v\nwant\n%v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("row %d = %+v, want %+v", i, got[i], want[i])
		}
		if strings.Contains(got[i].details, "pw") {
			t.Errorf("row %d holds a password: %s", i, got[i].details)
		}
	}
}

func TestCleanText(t *testing.T) {
	if got := cleanText("a\x00b\xffc"+strings.Repeat("é", 300), 5); got != "abcéé" {
		t.Fatalf("cleanText = %q", got)
	}
}
