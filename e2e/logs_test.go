package e2e

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// TestLogsHoldNoSecrets: after sign-ups, logins (right and wrong), token
// use and refusals, the gateway's output holds no password, token or key.
func TestLogsHoldNoSecrets(t *testing.T) {
	t.Parallel()
	g := startGateway(t, GatewayOptions{})
	c := g.Client(t)
	u, pw, token := c.NewUser()
	wrongPW := randomPassword()
	expectBearerError(t, c.PostForm("/api/auth/login", url.Values{"username": {u.Email}, "password": {wrongPW}}), "Incorrect email or password")
	expectBearerError(t, c.PostForm("/api/auth/login", url.Values{"username": {"nobody." + u.Email}, "password": {wrongPW}}), "Incorrect email or password")
	weakPW := "weak" + randomHex(4)
	expectStatus(t, c.PostJSON("/api/auth/register", "", map[string]string{"email": uniqueEmail(t), "password": weakPW}), http.StatusUnprocessableEntity)
	expectStatus(t, c.Get("/api/users/me", token), http.StatusOK)
	expectStatus(t, c.Get("/api/documents/x", token), http.StatusOK)
	forged := token[:strings.LastIndex(token, ".")+1] + "AAAA"
	expectBearerError(t, c.Get("/api/documents/x", forged), "Could not validate credentials")
	expectBearerError(t, c.Get("/api/users/me", forged), "Could not validate credentials")
	if err := g.Stop(); err != nil {
		t.Fatal(err)
	}

	logs := g.Logs()
	if !strings.Contains(logs, "accounts ready") {
		t.Fatalf("the gateway's output was not captured:\n%s", g.LogTail(2000))
	}
	keyBody := strings.Split(strings.TrimSpace(testKey.PrivatePEM), "\n")[1]
	for what, secret := range map[string]string{
		"password":           pw,
		"wrong password":     wrongPW,
		"refused password":   weakPW,
		"access token":       token,
		"token signature":    token[strings.LastIndex(token, ".")+1:],
		"token payload":      strings.Split(token, ".")[1],
		"forged token":       forged,
		"private key":        keyBody,
		"private key header": "BEGIN PRIVATE KEY",
	} {
		if strings.Contains(logs, secret) {
			t.Errorf("the logs hold the %s", what)
		}
	}
}
