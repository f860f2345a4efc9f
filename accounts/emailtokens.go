package accounts

import (
	"context"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/caddyaccounts/gateway/fastapi"
)

// The one-time tokens of the links in mails (email verification and
// password reset). A token is 256 bits, base64url without padding (43
// characters). It is made by the outbox's sender when it sends the mail,
// as an HMAC of the outbox row's random nonce under linkKey, a key
// derived from the token-signing key and never stored: a retry of the
// same mail sends the same link, and the database holds neither the
// token nor what makes it. Only a SHA-256 hash of it is stored, in
// email_tokens (migration 0009).

// Token purposes, as stored in email_tokens.purpose.
const (
	purposeVerifyEmail   = "verify_email"
	purposePasswordReset = "password_reset"
)

// tokenLen is the length of a link token: 32 bytes in base64url.
const tokenLen = 43

var errInvalidToken = fastapi.NewError(http.StatusBadRequest, "Invalid or expired token")

// deriveLinkKey derives the key that makes link tokens from the signing
// key; nil without one (a service that issues no tokens sends no links).
func deriveLinkKey(signer *rsa.PrivateKey) ([]byte, error) {
	if signer == nil {
		return nil, nil
	}
	der, err := x509.MarshalPKCS8PrivateKey(signer)
	if err != nil {
		return nil, fmt.Errorf("deriving the link key: %w", err)
	}
	return hkdf.Key(sha256.New, der, nil, "caddy-accounts mail link tokens v1", 32)
}

// linkToken is the token of the outbox row whose nonce is given.
func linkToken(key, nonce []byte) string {
	mac := hmac.New(sha256.New, key)
	mac.Write(nonce)
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// tokenHash is what email_tokens stores of a token.
func tokenHash(token string) []byte {
	sum := sha256.Sum256([]byte(token))
	return sum[:]
}

// storeLinkToken makes token the user's one live token of purpose, sent
// to email, valid for ttl from now: it deletes the user's other tokens of
// that purpose (a new link supersedes the old ones). Storing the same
// token again (a retry of the same mail) renews its expiry unless it was
// used.
func storeLinkToken(ctx context.Context, tx pgx.Tx, userID, purpose, email, token string, ttl time.Duration) error {
	h := tokenHash(token)
	if _, err := tx.Exec(ctx, "DELETE FROM email_tokens WHERE user_id = $1 AND purpose = $2 AND token_hash <> $3",
		userID, purpose, h); err != nil {
		return fmt.Errorf("superseding link tokens: %w", err)
	}
	if _, err := tx.Exec(ctx, `
		INSERT INTO email_tokens (token_hash, user_id, purpose, email, expires_at)
		VALUES ($1, $2, $3, $4, now() + $5::float8 * interval '1 second')
		ON CONFLICT (token_hash) DO UPDATE SET expires_at = EXCLUDED.expires_at
		WHERE email_tokens.used_at IS NULL`,
		h, userID, purpose, email, seconds(ttl)); err != nil {
		return fmt.Errorf("storing a link token: %w", err)
	}
	return nil
}

// consumeLinkToken uses token of purpose, once: it returns the id of its
// user, or errInvalidToken when the token is unknown, of another
// purpose, used, expired, superseded, or sent to an address that is no
// longer the user's (or the user is inactive). Of two concurrent
// consumers of one token, exactly one succeeds: the UPDATE locks the row
// and the second sees used_at set.
func consumeLinkToken(ctx context.Context, tx pgx.Tx, token, purpose string) (string, error) {
	if len(token) != tokenLen {
		return "", errInvalidToken
	}
	var userID string
	err := tx.QueryRow(ctx, `
		UPDATE email_tokens t SET used_at = now()
		FROM users u
		WHERE t.token_hash = $1 AND t.purpose = $2 AND t.used_at IS NULL AND t.expires_at > now()
		  AND u.id = t.user_id AND u.is_active AND lower(u.email) = lower(t.email)
		RETURNING u.id::text`, tokenHash(token), purpose).Scan(&userID)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", errInvalidToken
	}
	if err != nil {
		return "", fmt.Errorf("using a link token: %w", err)
	}
	return userID, nil
}

// endLinkTokens deletes every token of the user that is not used yet,
// of every purpose.
func endLinkTokens(ctx context.Context, tx pgx.Tx, userID string) error {
	if _, err := tx.Exec(ctx, "DELETE FROM email_tokens WHERE user_id = $1 AND used_at IS NULL", userID); err != nil {
		return fmt.Errorf("ending link tokens: %w", err)
	}
	return nil
}
