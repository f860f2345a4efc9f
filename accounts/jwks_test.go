package accounts

import (
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"testing"

	"github.com/golang-jwt/jwt/v5"
)

// TestJWKSVerifiesTokensAcrossARotation publishes the keys, rotates, and
// verifies tokens of both keys with nothing but the published set.
func TestJWKSVerifiesTokensAcrossARotation(t *testing.T) {
	e := newTestEnv(t)
	_, oldToken := e.user("jwks@example.com")

	for _, path := range []string{"/api/auth/jwks.json", "/.well-known/jwks.json"} {
		r := e.do("GET", path, "", nil)
		if r.Status != 200 || r.Header.Get("Cache-Control") != "public, max-age=300" || r.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("%s: %d %v", path, r.Status, r.Header)
		}
		set := parseJWKS(t, r.Body)
		if len(set) != 1 || set[KeyID(&testKey(t, 0).PublicKey)] == nil {
			t.Fatalf("%s: keys %v", path, set)
		}
		verifyWith(t, set, oldToken)
	}

	// Rotation: the new key signs, the old one only verifies.
	rotated, err := NewKeySet(testKey(t, 1), &testKey(t, 0).PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	jwks := rotated.JWKS()
	if len(jwks) != 2 || jwks[0].Kid != KeyID(&testKey(t, 1).PublicKey) {
		t.Fatalf("rotated JWKS %+v: want the signing key first", jwks)
	}
	body, _ := json.Marshal(map[string]any{"keys": jwks})
	set := parseJWKS(t, body)
	newToken, _, err := NewTokenIssuer(rotated, "caddy-accounts", DefaultTokenLifetime, DefaultLeeway).Issue(testUser)
	if err != nil {
		t.Fatal(err)
	}
	verifyWith(t, set, oldToken)
	verifyWith(t, set, newToken)
}

func parseJWKS(t *testing.T, body []byte) map[string]*rsa.PublicKey {
	t.Helper()
	var doc struct {
		Keys []JWK `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatal(err)
	}
	set := map[string]*rsa.PublicKey{}
	for _, k := range doc.Keys {
		if k.Kty != "RSA" || k.Alg != "RS256" || k.Use != "sig" {
			t.Fatalf("key %+v", k)
		}
		n, err1 := base64.RawURLEncoding.DecodeString(k.N)
		e, err2 := base64.RawURLEncoding.DecodeString(k.E)
		if err1 != nil || err2 != nil {
			t.Fatalf("key %s: bad base64url", k.Kid)
		}
		pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
		if KeyID(pub) != k.Kid {
			t.Fatalf("kid %s is not the key's RFC 7638 thumbprint", k.Kid)
		}
		set[k.Kid] = pub
	}
	return set
}

// verifyWith checks a token as a feature service would: RS256 only, by
// kid, from the published set.
func verifyWith(t *testing.T, set map[string]*rsa.PublicKey, token string) {
	t.Helper()
	_, err := jwt.Parse(token, func(tok *jwt.Token) (any, error) {
		kid, _ := tok.Header["kid"].(string)
		if k, ok := set[kid]; ok {
			return k, nil
		}
		return nil, jwt.ErrTokenUnverifiable
	}, jwt.WithValidMethods([]string{"RS256"}), jwt.WithIssuer("caddy-accounts"), jwt.WithExpirationRequired())
	if err != nil {
		t.Fatalf("token not verifiable from the JWKS: %v", err)
	}
}
