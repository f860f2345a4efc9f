package e2e

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
	"github.com/golang-jwt/jwt/v5"

	"github.com/caddyaccounts/gateway/accounts"
)

// Access tokens: what the gateway issues, checked with an independent
// JOSE library and nothing but the public key, and forgeries it must
// refuse.

const (
	issuer        = "caddy-accounts"
	tokenLifetime = 8 * 60 * 60
)

// publicKeyFromPEM parses the public key PEM without the accounts package.
func publicKeyFromPEM(t *testing.T, text string) *rsa.PublicKey {
	t.Helper()
	block, _ := pem.Decode([]byte(text))
	if block == nil {
		t.Fatal("no PEM block in the public key")
	}
	key, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pub, ok := key.(*rsa.PublicKey)
	if !ok {
		t.Fatalf("public key is %T", key)
	}
	return pub
}

// tokenClaims are the claims the contract lists.
type tokenClaims struct {
	Email string `json:"email"`
	Role  string `json:"role"`
}

var hex32 = regexp.MustCompile(`^[0-9a-f]{32}$`)

// verifyWithJose checks token with go-jose and key alone and returns its
// claims.
func verifyWithJose(t *testing.T, token string, key any) (josejwt.Claims, tokenClaims, jose.Header) {
	t.Helper()
	tok, err := josejwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatalf("go-jose cannot parse the token: %v", err)
	}
	if len(tok.Headers) != 1 {
		t.Fatalf("%d JOSE headers", len(tok.Headers))
	}
	var std josejwt.Claims
	var own tokenClaims
	if err := tok.Claims(key, &std, &own); err != nil {
		t.Fatalf("go-jose does not verify the token with the public key: %v", err)
	}
	return std, own, tok.Headers[0]
}

func TestTokenVerifiesWithPublicKeyOnly(t *testing.T) {
	t.Parallel()
	g := sharedGateway(t)
	c := g.Client(t)
	u, pw, token := c.NewUser()
	pub := publicKeyFromPEM(t, testKey.PublicPEM)

	std, own, hdr := verifyWithJose(t, token, pub)
	if hdr.Algorithm != string(jose.RS256) {
		t.Errorf("alg %q, want RS256", hdr.Algorithm)
	}
	if hdr.KeyID != accounts.KeyID(pub) {
		t.Errorf("kid %q, want accounts.KeyID %q", hdr.KeyID, accounts.KeyID(pub))
	}
	// The kid is the RFC 7638 thumbprint, as go-jose computes it too.
	thumb, err := (&jose.JSONWebKey{Key: pub}).Thumbprint(crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if want := base64.RawURLEncoding.EncodeToString(thumb); hdr.KeyID != want {
		t.Errorf("kid %q, want the RFC 7638 thumbprint %q", hdr.KeyID, want)
	}
	if err := std.ValidateWithLeeway(josejwt.Expected{Issuer: issuer, Subject: u.ID, Time: time.Now()}, 5*time.Second); err != nil {
		t.Errorf("claims do not validate: %v (%+v)", err, std)
	}
	if std.IssuedAt == nil || std.Expiry == nil {
		t.Fatalf("iat %v exp %v", std.IssuedAt, std.Expiry)
	}
	iat, exp := std.IssuedAt.Time(), std.Expiry.Time()
	if d := time.Since(iat); d < -5*time.Second || d > time.Minute {
		t.Errorf("iat %v is not about now", iat)
	}
	if got := exp.Sub(iat); got != tokenLifetime*time.Second {
		t.Errorf("exp - iat = %v, want 8h", got)
	}
	if !hex32.MatchString(std.ID) {
		t.Errorf("jti %q, want 128 random bits in hex", std.ID)
	}
	if own.Email != u.Email || own.Role != "user" {
		t.Errorf("email %q role %q, want %q user", own.Email, own.Role, u.Email)
	}

	// Every claim of the contract is there; nothing secret is.
	payload, err := base64.RawURLEncoding.DecodeString(strings.Split(token, ".")[1])
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if err := json.Unmarshal(payload, &raw); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"sub", "email", "role", "iat", "exp", "jti", "iss"} {
		if _, ok := raw[name]; !ok {
			t.Errorf("claim %q missing: %s", name, payload)
		}
	}
	if strings.Contains(string(payload), pw) || strings.Contains(string(payload), "hash") {
		t.Errorf("the token carries a secret: %s", payload)
	}

	// A second login gets a different jti.
	std2, _, _ := verifyWithJose(t, c.Login(u.Email, pw), pub)
	if std2.ID == std.ID {
		t.Errorf("two logins share jti %q", std.ID)
	}
}

// TestTokenVerifiesWithJWKS: the published key set verifies the tokens.
func TestTokenVerifiesWithJWKS(t *testing.T) {
	t.Parallel()
	g := sharedGateway(t)
	c := g.Client(t)
	u, _, token := c.NewUser()
	for _, path := range []string{"/.well-known/jwks.json", "/api/auth/jwks.json"} {
		r := c.Get(path, "")
		expectStatus(t, r, http.StatusOK)
		var set jose.JSONWebKeySet
		r.Decode(t, &set)
		keys := set.Key(testKey.KID)
		if len(keys) != 1 || !keys[0].Valid() || !keys[0].IsPublic() {
			t.Fatalf("%s: no valid public key %s in %s", path, testKey.KID, r.Body)
		}
		if keys[0].Algorithm != "RS256" || keys[0].Use != "sig" {
			t.Errorf("%s: alg %q use %q", path, keys[0].Algorithm, keys[0].Use)
		}
		std, _, _ := verifyWithJose(t, token, keys[0])
		if std.Subject != u.ID {
			t.Errorf("sub %q", std.Subject)
		}
	}
}

// signToken signs claims with method and key, with header fields added
// to alg and typ (a nil value removes the field).
func signToken(t *testing.T, method jwt.SigningMethod, key any, header map[string]any, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	for k, v := range header {
		if v == nil {
			delete(tok.Header, k)
		} else {
			tok.Header[k] = v
		}
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func b64JSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// tamper returns token with its payload changed by edit and the original
// signature.
func tamper(t *testing.T, token string, edit func(map[string]any)) string {
	t.Helper()
	parts := strings.Split(token, ".")
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	edit(claims)
	parts[1] = b64JSON(t, claims)
	return strings.Join(parts, ".")
}

func TestTokenForgeriesRefused(t *testing.T) {
	t.Parallel()
	g := sharedGateway(t)
	c := g.Client(t)
	u, _, issued := c.NewUser()
	other, _, _ := c.NewUser()
	otherPriv, otherPubPEM, err := accounts.GenerateKeyPair(2048)
	if err != nil {
		t.Fatal(err)
	}
	otherKey, err := accounts.ParsePrivateKey(otherPriv)
	if err != nil {
		t.Fatal(err)
	}
	otherKID := accounts.KeyID(publicKeyFromPEM(t, otherPubPEM))
	realKey, kid := testKey.Private, testKey.KID

	claims := func(edit func(jwt.MapClaims)) jwt.MapClaims {
		now := time.Now()
		m := jwt.MapClaims{
			"sub": u.ID, "email": u.Email, "role": "user", "iss": issuer, "jti": randomHex(16),
			"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
		}
		if edit != nil {
			edit(m)
		}
		return m
	}
	withKID := map[string]any{"kid": kid}

	// Controls: what the forgeries are made from is accepted as it is.
	controls := map[string]string{
		"signed by the test with the real key":         signToken(t, jwt.SigningMethodRS256, realKey, withKID, claims(nil)),
		"exp 5s ago, within the 30s leeway":            signToken(t, jwt.SigningMethodRS256, realKey, withKID, claims(func(m jwt.MapClaims) { m["exp"] = time.Now().Add(-5 * time.Second).Unix() })),
		"without kid (as the old backend signed them)": signToken(t, jwt.SigningMethodRS256, realKey, nil, claims(nil)),
		"a kid of the old backend's naming":            signToken(t, jwt.SigningMethodRS256, realKey, map[string]any{"kid": "unknown-key"}, claims(nil)),
		"issued by the gateway":                        issued,
	}
	for name, token := range controls {
		r := c.Get("/api/users/me", token)
		if r.Status != http.StatusOK {
			t.Fatalf("control %q: %d %s; the forgeries below would prove nothing", name, r.Status, r.Body)
		}
	}

	none := func(header map[string]any) string {
		return b64JSON(t, header) + "." + b64JSON(t, claims(nil)) + "."
	}
	forgeries := map[string]string{
		"alg none":                                    none(map[string]any{"alg": "none", "typ": "JWT", "kid": kid}),
		"alg none without kid":                        none(map[string]any{"alg": "none", "typ": "JWT"}),
		"alg None":                                    none(map[string]any{"alg": "None", "typ": "JWT"}),
		"alg none with the real signature":            none(map[string]any{"alg": "none", "kid": kid}) + strings.Split(issued, ".")[2],
		"HS256 keyed with the public key PEM":         signToken(t, jwt.SigningMethodHS256, []byte(testKey.PublicPEM), withKID, claims(nil)),
		"HS256 keyed with the public key PEM, no kid": signToken(t, jwt.SigningMethodHS256, []byte(testKey.PublicPEM), nil, claims(nil)),
		"HS256 keyed with the trimmed PEM":            signToken(t, jwt.SigningMethodHS256, []byte(strings.TrimSpace(testKey.PublicPEM)), withKID, claims(nil)),
		"RS512 with the real key":                     signToken(t, jwt.SigningMethodRS512, realKey, withKID, claims(nil)),
		"PS256 with the real key":                     signToken(t, jwt.SigningMethodPS256, realKey, withKID, claims(nil)),
		"payload tampered: role admin":                tamper(t, issued, func(m map[string]any) { m["role"] = "admin" }),
		"payload tampered: other sub":                 tamper(t, issued, func(m map[string]any) { m["sub"] = other.ID }),
		"payload tampered: later exp":                 tamper(t, issued, func(m map[string]any) { m["exp"] = time.Now().Add(1000 * time.Hour).Unix() }),
		"signature removed":                           strings.Join(strings.Split(issued, ".")[:2], ".") + ".",
		"expired beyond the leeway": signToken(t, jwt.SigningMethodRS256, realKey, withKID, claims(func(m jwt.MapClaims) {
			m["iat"] = time.Now().Add(-time.Hour).Unix()
			m["exp"] = time.Now().Add(-2 * time.Minute).Unix()
		})),
		"issued in the future": signToken(t, jwt.SigningMethodRS256, realKey, withKID, claims(func(m jwt.MapClaims) {
			m["iat"] = time.Now().Add(10 * time.Minute).Unix()
		})),
		"no exp":                   signToken(t, jwt.SigningMethodRS256, realKey, withKID, claims(func(m jwt.MapClaims) { delete(m, "exp") })),
		"issuer evil":              signToken(t, jwt.SigningMethodRS256, realKey, withKID, claims(func(m jwt.MapClaims) { m["iss"] = "evil" })),
		"no issuer":                signToken(t, jwt.SigningMethodRS256, realKey, withKID, claims(func(m jwt.MapClaims) { delete(m, "iss") })),
		"other key, unknown kid":   signToken(t, jwt.SigningMethodRS256, otherKey, map[string]any{"kid": "unknown-key"}, claims(nil)),
		"crit header":              signToken(t, jwt.SigningMethodRS256, realKey, map[string]any{"kid": kid, "crit": []string{"exp"}}, claims(nil)),
		"crit header, unknown kid": signToken(t, jwt.SigningMethodRS256, realKey, map[string]any{"kid": "unknown-key", "crit": []string{"b64"}, "b64": false}, claims(nil)),
		"crit header, no kid":      signToken(t, jwt.SigningMethodRS256, realKey, map[string]any{"crit": []string{"x-custom"}, "x-custom": true}, claims(nil)),
		"kid not a string":         signToken(t, jwt.SigningMethodRS256, realKey, map[string]any{"kid": 42}, claims(nil)),
		"other key, own kid":       signToken(t, jwt.SigningMethodRS256, otherKey, map[string]any{"kid": otherKID}, claims(nil)),
		"other key, the real kid":  signToken(t, jwt.SigningMethodRS256, otherKey, withKID, claims(nil)),
		"other key, no kid":        signToken(t, jwt.SigningMethodRS256, otherKey, nil, claims(nil)),
		"sub of nobody":            signToken(t, jwt.SigningMethodRS256, realKey, withKID, claims(func(m jwt.MapClaims) { m["sub"] = "00000000-0000-4000-8000-000000000001" })),
		"sub not a UUID":           signToken(t, jwt.SigningMethodRS256, realKey, withKID, claims(func(m jwt.MapClaims) { m["sub"] = u.Email })),
	}
	marker := "/api/documents/forged-" + randomHex(6)
	names := make([]string, 0, len(forgeries))
	for name := range forgeries {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		token := forgeries[name]
		t.Run(name, func(t *testing.T) {
			expectBearerError(t, c.Get("/api/users/me", token), "Could not validate credentials")
			expectBearerError(t, c.Get(marker+"?case="+url.QueryEscape(name), token), "Could not validate credentials")
		})
	}
	if got := g.Doc.WithPathPrefix(marker); len(got) != 0 {
		t.Errorf("%d forged requests reached the document service", len(got))
	}
}

// pyjwtToken makes an RS256 token the way the old backend's PyJWT did:
// the header's members sorted ({"alg","kid","typ"}), compact JSON, the
// payload's members in the order the backend wrote them, and an RSA
// PKCS #1 v1.5 signature over SHA-256; no JWT library involved.
func pyjwtToken(t *testing.T, key *rsa.PrivateKey, kid string, sub, email, role, iss string, iat, exp time.Time) string {
	t.Helper()
	header := `{"alg":"RS256","kid":` + jsonString(t, kid) + `,"typ":"JWT"}`
	payload := fmt.Sprintf(`{"sub":%s,"email":%s,"role":%s,"exp":%d,"iat":%d,"iss":%s}`,
		jsonString(t, sub), jsonString(t, email), jsonString(t, role), exp.Unix(), iat.Unix(), jsonString(t, iss))
	enc := base64.RawURLEncoding
	signingInput := enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString([]byte(payload))
	digest := sha256.Sum256([]byte(signingInput))
	sig, err := rsa.SignPKCS1v15(nil, key, crypto.SHA256, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	return signingInput + "." + enc.EncodeToString(sig)
}

func jsonString(t *testing.T, s string) string {
	t.Helper()
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestCutOverKeepsOldBackendTokens: a token the old backend issued an
// hour before the switch, signed with the very key the gateway now uses
// and with the configured issuer, but with a kid of its own naming,
// keeps its user signed in: on the API and through to the document
// service, which gets the user's id. The same token signed by a key the
// gateway does not have, or naming another issuer, is refused.
func TestCutOverKeepsOldBackendTokens(t *testing.T) {
	t.Parallel()
	g := sharedGateway(t)
	c := g.Client(t)
	u, _, _ := c.NewUser()
	iat := time.Now().Add(-time.Hour)
	exp := iat.Add(8 * time.Hour)
	old := pyjwtToken(t, testKey.Private, "backend-2024-key", u.ID, u.Email, "user", issuer, iat, exp)

	r := c.Get("/api/users/me", old)
	expectStatus(t, r, http.StatusOK)
	if got := expectUserObject(t, r.Body); got.ID != u.ID {
		t.Fatalf("me = %s, want %s", r.Body, u.ID)
	}
	path := "/api/documents/cut-over-" + randomHex(6)
	expectStatus(t, c.Get(path, old), http.StatusOK)
	got := g.Doc.WithPathPrefix(path)
	if len(got) != 1 || got[0].Header.Get("X-User-Id") != u.ID {
		t.Fatalf("document service got %d requests, X-User-Id %v; want one with %s", len(got), got, u.ID)
	}

	otherPriv, _, err := accounts.GenerateKeyPair(2048)
	if err != nil {
		t.Fatal(err)
	}
	otherKey, err := accounts.ParsePrivateKey(otherPriv)
	if err != nil {
		t.Fatal(err)
	}
	for name, tok := range map[string]string{
		"signed by another key":     pyjwtToken(t, otherKey, "backend-2024-key", u.ID, u.Email, "user", issuer, iat, exp),
		"another issuer":            pyjwtToken(t, testKey.Private, "backend-2024-key", u.ID, u.Email, "user", "fastapi", iat, exp),
		"expired before the switch": pyjwtToken(t, testKey.Private, "backend-2024-key", u.ID, u.Email, "user", issuer, iat.Add(-9*time.Hour), iat.Add(-time.Hour)),
	} {
		t.Run(name, func(t *testing.T) {
			expectBearerError(t, c.Get("/api/users/me", tok), "Could not validate credentials")
		})
	}
}

// TestAudienceFromEnvironment: with JWT_AUDIENCE set (the project's
// Caddyfile leaves the option out), issued tokens carry it in aud and a
// token without it, such as the old backend's, is refused.
func TestAudienceFromEnvironment(t *testing.T) {
	t.Parallel()
	g := startGateway(t, GatewayOptions{Env: map[string]string{"JWT_AUDIENCE": "docs.example"}})
	c := g.Client(t)
	u, _, token := c.NewUser()
	var claims map[string]any
	payload, err := base64.RawURLEncoding.DecodeString(strings.Split(token, ".")[1])
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	if aud, ok := claims["aud"].([]any); !ok || len(aud) != 1 || aud[0] != "docs.example" {
		t.Fatalf("aud = %#v, want [docs.example]", claims["aud"])
	}
	expectStatus(t, c.Get("/api/users/me", token), http.StatusOK)
	expectStatus(t, c.Get("/api/documents/aud", token), http.StatusOK)

	now := time.Now()
	base := jwt.MapClaims{"sub": u.ID, "email": u.Email, "role": "user", "iss": issuer, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
	with := func(aud any) jwt.MapClaims {
		m := jwt.MapClaims{}
		maps.Copy(m, base)
		if aud != nil {
			m["aud"] = aud
		}
		return m
	}
	kid := map[string]any{"kid": testKey.KID}
	expectStatus(t, c.Get("/api/users/me", signToken(t, jwt.SigningMethodRS256, testKey.Private, kid, with("docs.example"))), http.StatusOK)
	for name, tok := range map[string]string{
		"no aud":        signToken(t, jwt.SigningMethodRS256, testKey.Private, kid, with(nil)),
		"another aud":   signToken(t, jwt.SigningMethodRS256, testKey.Private, kid, with("other.example")),
		"old backend's": pyjwtToken(t, testKey.Private, "backend-2024-key", u.ID, u.Email, "user", issuer, now.Add(-time.Minute), now.Add(time.Hour)),
	} {
		t.Run(name, func(t *testing.T) {
			expectBearerError(t, c.Get("/api/users/me", tok), "Could not validate credentials")
			expectBearerError(t, c.Get("/api/documents/aud", tok), "Could not validate credentials")
		})
	}
}
