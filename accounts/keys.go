package accounts

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strings"
)

// minRSABits is the smallest RSA modulus accepted. API.md asks for 4096
// bits in production and accepts 2048 for tests.
const minRSABits = 2048

// ParsePrivateKey reads an RSA private key from PEM (PKCS #1 or PKCS #8).
// Escaped newlines ("\n" as two characters), as .env files often hold
// them, are accepted.
func ParsePrivateKey(pemText string) (*rsa.PrivateKey, error) {
	block, err := decodePEM(pemText)
	if err != nil {
		return nil, err
	}
	var key any
	switch block.Type {
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("PEM block %q is not a private key", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parsing private key: %w", err)
	}
	rsaKey, ok := key.(*rsa.PrivateKey)
	if !ok {
		return nil, errors.New("private key is not an RSA key (RS256 needs RSA)")
	}
	if rsaKey.N.BitLen() < minRSABits {
		return nil, fmt.Errorf("RSA key has %d bits; at least %d are required", rsaKey.N.BitLen(), minRSABits)
	}
	return rsaKey, nil
}

// ParsePublicKey reads an RSA public key from PEM (PKIX or PKCS #1).
func ParsePublicKey(pemText string) (*rsa.PublicKey, error) {
	block, err := decodePEM(pemText)
	if err != nil {
		return nil, err
	}
	var key any
	switch block.Type {
	case "PUBLIC KEY":
		key, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		key, err = x509.ParsePKCS1PublicKey(block.Bytes)
	default:
		return nil, fmt.Errorf("PEM block %q is not a public key", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parsing public key: %w", err)
	}
	rsaKey, ok := key.(*rsa.PublicKey)
	if !ok {
		return nil, errors.New("public key is not an RSA key (RS256 needs RSA)")
	}
	if rsaKey.N.BitLen() < minRSABits {
		return nil, fmt.Errorf("RSA key has %d bits; at least %d are required", rsaKey.N.BitLen(), minRSABits)
	}
	return rsaKey, nil
}

func decodePEM(text string) (*pem.Block, error) {
	text = strings.TrimSpace(strings.Trim(strings.TrimSpace(text), `"'`))
	if !strings.Contains(text, "\n") && strings.Contains(text, `\n`) {
		text = strings.ReplaceAll(text, `\n`, "\n")
	}
	block, _ := pem.Decode([]byte(text))
	if block == nil {
		return nil, errors.New("no PEM block found")
	}
	return block, nil
}

// KeyID is the RFC 7638 JWK thumbprint of an RSA public key, base64url
// encoded: a stable kid that anyone holding the key can recompute.
func KeyID(pub *rsa.PublicKey) string {
	// Members in lexicographic order, no whitespace (RFC 7638 §3).
	doc, _ := json.Marshal(struct {
		E   string `json:"e"`
		Kty string `json:"kty"`
		N   string `json:"n"`
	}{
		E:   base64.RawURLEncoding.EncodeToString(big.NewInt(int64(pub.E)).Bytes()),
		Kty: "RSA",
		N:   base64.RawURLEncoding.EncodeToString(pub.N.Bytes()),
	})
	sum := sha256.Sum256(doc)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// GenerateKeyPair makes a new RSA key pair of the given size and returns
// it as PEM text: the private key in PKCS #8, the public key in PKIX.
func GenerateKeyPair(bits int) (privatePEM, publicPEM string, err error) {
	key, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		return "", "", fmt.Errorf("generating RSA key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", fmt.Errorf("encoding private key: %w", err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return "", "", fmt.Errorf("encoding public key: %w", err)
	}
	privatePEM = string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	publicPEM = string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}))
	return privatePEM, publicPEM, nil
}

// EnvFile renders a key pair as .env lines JWT_PRIVATE_KEY and
// JWT_PUBLIC_KEY, double-quoted with real newlines, which both
// python-dotenv (the old backend) and docker compose read.
func EnvFile(privatePEM, publicPEM string) string {
	return fmt.Sprintf("JWT_PRIVATE_KEY=\"%s\"\nJWT_PUBLIC_KEY=\"%s\"\n",
		strings.TrimSpace(privatePEM), strings.TrimSpace(publicPEM))
}
