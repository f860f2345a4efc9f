package accounts

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/caddyaccounts/gateway/fastapi"
)

// Claims are the claims of an access token (API.md, "Tokens").
type Claims struct {
	jwt.RegisteredClaims
	Email string `json:"email"`
	Role  string `json:"role"`
	// SessionID ("sid") is the refresh session the token was issued
	// for; revoking the session refuses the token. Tokens
	// of the old backend have none.
	SessionID string `json:"sid,omitempty"`
}

// KeySet holds the RSA key that signs new tokens and every public key
// whose tokens are still accepted. A key can be rotated by making a new
// one the signer while the old one stays in the set to verify.
type KeySet struct {
	signer    *rsa.PrivateKey
	signerKID string
	verifiers map[string]*rsa.PublicKey
	all       jwt.VerificationKeySet
}

// NewKeySet builds a key set from the signing key and extra public keys
// that only verify. A nil signer makes a verify-only set.
func NewKeySet(signer *rsa.PrivateKey, verifyOnly ...*rsa.PublicKey) (*KeySet, error) {
	ks := &KeySet{signer: signer, verifiers: map[string]*rsa.PublicKey{}}
	pubs := verifyOnly
	if signer != nil {
		ks.signerKID = KeyID(&signer.PublicKey)
		pubs = append([]*rsa.PublicKey{&signer.PublicKey}, verifyOnly...)
	}
	for _, pub := range pubs {
		kid := KeyID(pub)
		if _, dup := ks.verifiers[kid]; dup {
			continue
		}
		ks.verifiers[kid] = pub
		ks.all.Keys = append(ks.all.Keys, pub)
	}
	if len(ks.verifiers) == 0 {
		return nil, errors.New("no key configured")
	}
	return ks, nil
}

// SigningKeyID returns the kid of the signing key, or "" for a
// verify-only set.
func (ks *KeySet) SigningKeyID() string { return ks.signerKID }

// TokenIssuer signs and verifies access tokens.
type TokenIssuer struct {
	keys     *KeySet
	issuer   string
	audience string
	lifetime time.Duration
	leeway   time.Duration
	parser   *jwt.Parser
	now      func() time.Time

	acceptNoIssuer bool
}

// NewTokenIssuer returns a TokenIssuer. An empty issuer neither sets nor
// checks "iss".
func NewTokenIssuer(keys *KeySet, issuer string, lifetime, leeway time.Duration) *TokenIssuer {
	ti := &TokenIssuer{
		keys:     keys,
		issuer:   issuer,
		lifetime: lifetime,
		leeway:   leeway,
		now:      time.Now,
	}
	ti.parser = ti.newParser()
	return ti
}

func (ti *TokenIssuer) newParser() *jwt.Parser {
	opts := []jwt.ParserOption{
		jwt.WithValidMethods([]string{jwt.SigningMethodRS256.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(ti.leeway),
	}
	if ti.audience != "" {
		opts = append(opts, jwt.WithAudience(ti.audience))
	}
	return jwt.NewParser(opts...)
}

// RequireAudience makes Issue write aud into every token's "aud" claim
// and Verify refuse every token whose "aud" does not name it (tokens
// without "aud", such as the old backend's, included). An empty aud
// turns the check off.
func (ti *TokenIssuer) RequireAudience(aud string) {
	ti.audience = aud
	ti.parser = ti.newParser()
}

// AcceptMissingIssuer makes Verify also accept tokens that carry no "iss"
// at all, as the FastAPI backend issued them. A token naming another
// issuer is still refused. Meant for the first token lifetime after
// taking over an old deployment.
func (ti *TokenIssuer) AcceptMissingIssuer() { ti.acceptNoIssuer = true }

// Lifetime is how long an issued token is valid.
func (ti *TokenIssuer) Lifetime() time.Duration { return ti.lifetime }

// Issue signs an access token for u.
func (ti *TokenIssuer) Issue(u *User) (string, *Claims, error) {
	return ti.IssueForSession(u, "", ti.lifetime)
}

// IssueForSession signs an access token for u that carries the session
// id sid (when not empty) and is valid for lifetime.
func (ti *TokenIssuer) IssueForSession(u *User, sid string, lifetime time.Duration) (string, *Claims, error) {
	if ti.keys.signer == nil {
		return "", nil, errors.New("no signing key configured")
	}
	now := ti.now().Truncate(time.Second)
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		return "", nil, fmt.Errorf("reading token id: %w", err)
	}
	claims := &Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   u.ID,
			Issuer:    ti.issuer,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(lifetime)),
			ID:        hex.EncodeToString(jti),
		},
		Email:     u.Email,
		Role:      u.Role,
		SessionID: sid,
	}
	if ti.audience != "" {
		claims.Audience = jwt.ClaimStrings{ti.audience}
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	tok.Header["kid"] = ti.keys.signerKID
	signed, err := tok.SignedString(ti.keys.signer)
	if err != nil {
		return "", nil, fmt.Errorf("signing token: %w", err)
	}
	return signed, claims, nil
}

// Verify checks a token's signature, expiry, issue time, issuer and
// audience (when one is configured), and that its subject is a UUID.
//
// The signature must be RS256, by the key the kid names. A token whose
// kid is absent or names no key of the set (the old backend's tokens:
// no kid, or a kid of its own naming the same key) is checked against
// every key of the set, so that signed-in users stay signed in across
// the cut-over. A header with a "crit" parameter is refused: no
// extension is understood here (RFC 7515, section 4.1.11).
func (ti *TokenIssuer) Verify(token string) (*Claims, error) {
	claims := &Claims{}
	_, err := ti.parser.ParseWithClaims(token, claims, func(t *jwt.Token) (any, error) {
		if _, crit := t.Header["crit"]; crit {
			return nil, errors.New("token header has a crit parameter")
		}
		kid, present := t.Header["kid"]
		if !present {
			return ti.keys.all, nil
		}
		s, ok := kid.(string)
		if !ok {
			return nil, errors.New("kid is not a string")
		}
		if key, ok := ti.keys.verifiers[s]; ok {
			return key, nil
		}
		return ti.keys.all, nil
	})
	if err != nil {
		return nil, err
	}
	if ti.issuer != "" && claims.Issuer != ti.issuer && !(claims.Issuer == "" && ti.acceptNoIssuer) {
		return nil, errors.New("token has an unexpected issuer")
	}
	if !fastapi.IsUUID(claims.Subject) {
		return nil, errors.New("subject is not a UUID")
	}
	return claims, nil
}
