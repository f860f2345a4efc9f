package accounts

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"maps"
	"math/big"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

var (
	testKeysOnce sync.Once
	testKeys     [2]*rsa.PrivateKey
)

// testKey returns one of two RSA keys made once per test binary.
func testKey(t testing.TB, i int) *rsa.PrivateKey {
	t.Helper()
	testKeysOnce.Do(func() {
		for j := range testKeys {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			testKeys[j] = k
		}
	})
	return testKeys[i]
}

func newTestIssuer(t testing.TB) *TokenIssuer {
	t.Helper()
	ks, err := NewKeySet(testKey(t, 0))
	if err != nil {
		t.Fatal(err)
	}
	return NewTokenIssuer(ks, "caddy-accounts", 8*time.Hour, 30*time.Second)
}

var testUser = &User{ID: "0b5a3c1e-8c1f-4b7e-9a43-3f6c1d2e4f50", Email: "a@b.co", Role: RoleUser}

func TestIssueAndVerify(t *testing.T) {
	ti := newTestIssuer(t)
	tok, issued, err := ti.Issue(testUser)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ti.Verify(tok)
	if err != nil {
		t.Fatalf("Verify(own token): %v", err)
	}
	if got.Subject != testUser.ID || got.Email != "a@b.co" || got.Role != "user" || got.Issuer != "caddy-accounts" || got.ID != issued.ID || len(got.ID) != 32 {
		t.Fatalf("claims = %+v", got)
	}
	if d := got.ExpiresAt.Sub(got.IssuedAt.Time); d != 8*time.Hour {
		t.Fatalf("exp - iat = %s, want 8h", d)
	}
	header := decodeSegment(t, tok, 0)
	if header["alg"] != "RS256" || header["kid"] != KeyID(&testKey(t, 0).PublicKey) || header["typ"] != "JWT" {
		t.Fatalf("header = %v", header)
	}
}

func decodeSegment(t *testing.T, tok string, i int) map[string]any {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[i])
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]any{}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func claimsFor(sub string, iat, exp time.Time, iss string) jwt.MapClaims {
	return jwt.MapClaims{"sub": sub, "email": "a@b.co", "role": "admin", "iat": iat.Unix(), "exp": exp.Unix(), "iss": iss, "jti": "x"}
}

func sign(t *testing.T, method jwt.SigningMethod, key any, claims jwt.MapClaims, kid string) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestVerifyRefusesForgedTokens lists the classic JWT attacks; each must
// be refused.
func TestVerifyRefusesForgedTokens(t *testing.T) {
	ti := newTestIssuer(t)
	key := testKey(t, 0)
	kid := KeyID(&key.PublicKey)
	now := time.Now()
	valid := claimsFor(testUser.ID, now, now.Add(time.Hour), "caddy-accounts")
	pubDER, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})

	own, _, _ := ti.Issue(testUser)
	parts := strings.Split(own, ".")
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(
		`{"sub":"`+testUser.ID+`","email":"a@b.co","role":"admin","iss":"caddy-accounts","iat":`+
			big.NewInt(now.Unix()).String()+`,"exp":`+big.NewInt(now.Add(time.Hour).Unix()).String()+`}`)) + "." + parts[2]

	none := sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, valid, kid)
	tests := map[string]string{
		"alg none":                 none,
		"alg none, no signature":   strings.TrimSuffix(none, "."),
		"HS256 keyed with the PEM": sign(t, jwt.SigningMethodHS256, pubPEM, valid, kid),
		"HS256 keyed with the DER": sign(t, jwt.SigningMethodHS256, pubDER, valid, ""),
		"RS512 with the right key": sign(t, jwt.SigningMethodRS512, key, valid, kid),
		"PS256 with the right key": sign(t, jwt.SigningMethodPS256, key, valid, kid),
		"tampered payload":         tampered,
		"expired":                  sign(t, jwt.SigningMethodRS256, key, claimsFor(testUser.ID, now.Add(-2*time.Hour), now.Add(-time.Minute), "caddy-accounts"), kid),
		"issued in the future":     sign(t, jwt.SigningMethodRS256, key, claimsFor(testUser.ID, now.Add(time.Hour), now.Add(2*time.Hour), "caddy-accounts"), kid),
		"no exp":                   sign(t, jwt.SigningMethodRS256, key, jwt.MapClaims{"sub": testUser.ID, "iss": "caddy-accounts", "iat": now.Unix()}, kid),
		"wrong issuer":             sign(t, jwt.SigningMethodRS256, key, claimsFor(testUser.ID, now, now.Add(time.Hour), "evil"), kid),
		"no issuer":                sign(t, jwt.SigningMethodRS256, key, claimsFor(testUser.ID, now, now.Add(time.Hour), ""), kid),
		"numeric kid":              sign(t, jwt.SigningMethodRS256, key, valid, ""),
		"another key, our kid":     sign(t, jwt.SigningMethodRS256, testKey(t, 1), valid, kid),
		"another key, no kid":      sign(t, jwt.SigningMethodRS256, testKey(t, 1), valid, ""),
		"another key, unknown kid": sign(t, jwt.SigningMethodRS256, testKey(t, 1), valid, "nope"),
		"another key, its own kid": sign(t, jwt.SigningMethodRS256, testKey(t, 1), valid, KeyID(&testKey(t, 1).PublicKey)),
		"unknown kid, HS256":       sign(t, jwt.SigningMethodHS256, pubPEM, valid, "nope"),
		"crit header":              signWithHeader(t, key, valid, map[string]any{"kid": kid, "crit": []string{"exp"}}),
		"crit header, no kid":      signWithHeader(t, key, valid, map[string]any{"crit": []string{"b64"}, "b64": false}),
		"crit header, empty":       signWithHeader(t, key, valid, map[string]any{"kid": kid, "crit": []string{}}),
		"subject not a UUID":       sign(t, jwt.SigningMethodRS256, key, claimsFor("admin", now, now.Add(time.Hour), "caddy-accounts"), kid),
		"empty":                    "",
		"garbage":                  "not.a.jwt",
	}
	// "numeric kid" gets a non-string kid.
	numeric := jwt.NewWithClaims(jwt.SigningMethodRS256, valid)
	numeric.Header["kid"] = 7
	tests["numeric kid"], _ = numeric.SignedString(key)

	for name, tok := range tests {
		if c, err := ti.Verify(tok); err == nil {
			t.Errorf("%s: accepted, claims %+v", name, c)
		}
	}

	// Within the leeway an expired token still passes; a token without a
	// kid, or with a kid of the old backend's naming (PyJWT), passes when
	// a known key signed it.
	for name, tok := range map[string]string{
		"expired 10s ago": sign(t, jwt.SigningMethodRS256, key, claimsFor(testUser.ID, now.Add(-time.Hour), now.Add(-10*time.Second), "caddy-accounts"), kid),
		"no kid":          sign(t, jwt.SigningMethodRS256, key, valid, ""),
		"unknown kid":     sign(t, jwt.SigningMethodRS256, key, valid, "backend-key-1"),
	} {
		if _, err := ti.Verify(tok); err != nil {
			t.Errorf("%s: refused: %v", name, err)
		}
	}
}

// signWithHeader signs claims with RS256 and key, with header fields
// added to alg and typ.
func signWithHeader(t *testing.T, key any, claims jwt.MapClaims, header map[string]any) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	maps.Copy(tok.Header, header)
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestVerifyUnknownKIDOfAVerifyOnlyKey: a token with a kid the set does
// not know passes when any key of the set signed it, a retired one too.
func TestVerifyUnknownKIDOfAVerifyOnlyKey(t *testing.T) {
	oldKey, newKey := testKey(t, 0), testKey(t, 1)
	ks, err := NewKeySet(newKey, &oldKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	ti := NewTokenIssuer(ks, "caddy-accounts", time.Hour, 0)
	now := time.Now()
	valid := claimsFor(testUser.ID, now, now.Add(time.Hour), "caddy-accounts")
	for _, key := range []*rsa.PrivateKey{oldKey, newKey} {
		if _, err := ti.Verify(sign(t, jwt.SigningMethodRS256, key, valid, "kid-of-the-old-backend")); err != nil {
			t.Errorf("key %s: refused: %v", KeyID(&key.PublicKey), err)
		}
	}
}

// TestAudience: with an audience configured, issued tokens carry it and
// only tokens naming it pass; without one, aud is neither written nor
// checked.
func TestAudience(t *testing.T) {
	key := testKey(t, 0)
	kid := KeyID(&key.PublicKey)
	now := time.Now()
	withAud := func(aud any) jwt.MapClaims {
		c := claimsFor(testUser.ID, now, now.Add(time.Hour), "caddy-accounts")
		if aud != nil {
			c["aud"] = aud
		}
		return c
	}

	plain := newTestIssuer(t)
	tok, _, err := plain.Issue(testUser)
	if err != nil {
		t.Fatal(err)
	}
	if aud, ok := decodeSegment(t, tok, 1)["aud"]; ok {
		t.Fatalf("aud %v written without an audience configured", aud)
	}
	if _, err := plain.Verify(sign(t, jwt.SigningMethodRS256, key, withAud("anything"), kid)); err != nil {
		t.Fatalf("aud checked without an audience configured: %v", err)
	}

	ti := newTestIssuer(t)
	ti.RequireAudience("docs.example")
	tok, claims, err := ti.Issue(testUser)
	if err != nil {
		t.Fatal(err)
	}
	if got := decodeSegment(t, tok, 1)["aud"]; !reflect.DeepEqual(got, []any{"docs.example"}) {
		t.Fatalf("issued aud = %#v, want [docs.example]", got)
	}
	if !slices.Equal(claims.Audience, []string{"docs.example"}) {
		t.Fatalf("claims.Audience = %v", claims.Audience)
	}
	for name, tok := range map[string]string{
		"issued":             tok,
		"aud string":         sign(t, jwt.SigningMethodRS256, key, withAud("docs.example"), kid),
		"aud list with ours": sign(t, jwt.SigningMethodRS256, key, withAud([]string{"other", "docs.example"}), kid),
	} {
		if _, err := ti.Verify(tok); err != nil {
			t.Errorf("%s: refused: %v", name, err)
		}
	}
	for name, tok := range map[string]string{
		"no aud":          sign(t, jwt.SigningMethodRS256, key, withAud(nil), kid),
		"other aud":       sign(t, jwt.SigningMethodRS256, key, withAud("other.example"), kid),
		"aud list":        sign(t, jwt.SigningMethodRS256, key, withAud([]string{"a", "b"}), kid),
		"empty aud":       sign(t, jwt.SigningMethodRS256, key, withAud(""), kid),
		"aud not strings": sign(t, jwt.SigningMethodRS256, key, withAud(7), kid),
		"issued by plain": func() string { s, _, _ := plain.Issue(testUser); return s }(),
	} {
		if c, err := ti.Verify(tok); err == nil {
			t.Errorf("%s: accepted, claims %+v", name, c)
		}
	}
}

func TestVerifyOnlyKeysAcceptButDoNotSign(t *testing.T) {
	oldKey, newKey := testKey(t, 0), testKey(t, 1)
	before := newTestIssuer(t)
	oldTok, _, _ := before.Issue(testUser)

	ks, err := NewKeySet(newKey, &oldKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	after := NewTokenIssuer(ks, "caddy-accounts", time.Hour, 0)
	if _, err := after.Verify(oldTok); err != nil {
		t.Fatalf("token of the retired key refused: %v", err)
	}
	newTok, _, _ := after.Issue(testUser)
	if kid := decodeSegment(t, newTok, 0)["kid"]; kid != KeyID(&newKey.PublicKey) {
		t.Fatalf("new token kid = %v, want the new key's", kid)
	}
	if _, err := before.Verify(newTok); err == nil {
		t.Fatal("an issuer without the new key accepted its token")
	}
}

// TestKeyIDMatchesRFC7638 checks the thumbprint against the example of
// RFC 7638, section 3.1.
func TestKeyIDMatchesRFC7638(t *testing.T) {
	n, err := base64.RawURLEncoding.DecodeString("0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw")
	if err != nil {
		t.Fatal(err)
	}
	pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: 65537}
	if got, want := KeyID(pub), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"; got != want {
		t.Fatalf("KeyID = %s, want %s", got, want)
	}
}

func TestParseKeys(t *testing.T) {
	privPEM, pubPEM, err := GenerateKeyPair(2048)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := ParsePrivateKey(privPEM)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ParsePublicKey(pubPEM)
	if err != nil {
		t.Fatal(err)
	}
	if !pub.Equal(&priv.PublicKey) {
		t.Fatal("generated public key does not match the private key")
	}
	// .env files often hold the PEM on one line with escaped newlines,
	// sometimes quoted.
	escaped := `"` + strings.ReplaceAll(strings.TrimSpace(privPEM), "\n", `\n`) + `"`
	if k, err := ParsePrivateKey(escaped); err != nil || !k.Equal(priv) {
		t.Fatalf("escaped PEM: %v", err)
	}
	// PKCS #1 forms, as older tools write them.
	pkcs1 := string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(priv)}))
	if k, err := ParsePrivateKey(pkcs1); err != nil || !k.Equal(priv) {
		t.Fatalf("PKCS #1 private key: %v", err)
	}
	pkcs1Pub := string(pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(pub)}))
	if k, err := ParsePublicKey(pkcs1Pub); err != nil || !k.Equal(pub) {
		t.Fatalf("PKCS #1 public key: %v", err)
	}

	env := EnvFile(privPEM, pubPEM)
	if !strings.HasPrefix(env, "JWT_PRIVATE_KEY=\"-----BEGIN PRIVATE KEY-----\n") || !strings.Contains(env, "\nJWT_PUBLIC_KEY=\"-----BEGIN PUBLIC KEY-----\n") {
		t.Fatalf("EnvFile layout:\n%s", env)
	}

	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	smallPEM := string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(small)}))
	for name, bad := range map[string]string{
		"1024-bit key":      smallPEM,
		"not PEM":           "hello",
		"public as private": pubPEM,
		"certificate":       "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
	} {
		if _, err := ParsePrivateKey(bad); err == nil {
			t.Errorf("ParsePrivateKey(%s) accepted", name)
		}
	}
	if _, err := ParsePublicKey(privPEM); err == nil {
		t.Error("ParsePublicKey(private key) accepted")
	}
}

// benchIssuers returns token issuers signing with the test key (2048
// bits) and with a production-size key (4096 bits, productionKey in
// bench_test.go), by sub-benchmark name.
func benchIssuers(b *testing.B) map[string]*TokenIssuer {
	b.Helper()
	issuers := map[string]*TokenIssuer{}
	for _, key := range []*rsa.PrivateKey{testKey(b, 0), productionKey(b)} {
		ks, err := NewKeySet(key)
		if err != nil {
			b.Fatal(err)
		}
		issuers[fmt.Sprintf("rsa%d", key.N.BitLen())] = NewTokenIssuer(ks, "caddy-accounts", 8*time.Hour, 30*time.Second)
	}
	return issuers
}

func BenchmarkIssueToken(b *testing.B) {
	issuers := benchIssuers(b)
	for _, name := range slices.Sorted(maps.Keys(issuers)) {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				if _, _, err := issuers[name].Issue(testUser); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkVerifyToken(b *testing.B) {
	issuers := benchIssuers(b)
	for _, name := range slices.Sorted(maps.Keys(issuers)) {
		b.Run(name, func(b *testing.B) {
			ti := issuers[name]
			tok, _, err := ti.Issue(testUser)
			if err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if _, err := ti.Verify(tok); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
