package accounts

import (
	"crypto/rsa"
	"encoding/base64"
	"math/big"
	"net/http"
	"sort"

	"github.com/caddyaccounts/gateway/fastapi"
)

// JWK is one RSA public key of a JSON Web Key Set (RFC 7517).
type JWK struct {
	Kty string `json:"kty"`
	Use string `json:"use"`
	Alg string `json:"alg"`
	Kid string `json:"kid"`
	N   string `json:"n"`
	E   string `json:"e"`
}

// JWKS returns the set of public keys that verify the service's tokens:
// the signing key first, then the verify-only keys of a rotation. A
// feature service can verify tokens itself with nothing but this set.
func (ks *KeySet) JWKS() []JWK {
	keys := make([]JWK, 0, len(ks.verifiers))
	for kid, pub := range ks.verifiers {
		keys = append(keys, jwkOf(kid, pub))
	}
	sort.Slice(keys, func(i, j int) bool {
		if (keys[i].Kid == ks.signerKID) != (keys[j].Kid == ks.signerKID) {
			return keys[i].Kid == ks.signerKID
		}
		return keys[i].Kid < keys[j].Kid
	})
	return keys
}

func jwkOf(kid string, pub *rsa.PublicKey) JWK {
	return JWK{
		Kty: "RSA",
		Use: "sig",
		Alg: "RS256",
		Kid: kid,
		N:   base64.RawURLEncoding.EncodeToString(pub.N.Bytes()),
		E:   base64.RawURLEncoding.EncodeToString(big.NewInt(int64(pub.E)).Bytes()),
	}
}

// handleJWKS serves GET /api/auth/jwks.json and /.well-known/jwks.json.
func (s *Service) handleJWKS(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Cache-Control", "public, max-age=300")
	body := map[string][]JWK{"keys": s.tokens.keys.JWKS()}
	fastapi.WriteJSONCached(w, http.StatusOK, body)
	return nil
}
