package accounts

import (
	"crypto/rsa"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/caddyaccounts/gateway/settings"
)

// Defaults of Config.
const (
	DefaultTokenLifetime = 8 * time.Hour
	DefaultLeeway        = 30 * time.Second
	DefaultIssuer        = "caddy-accounts"
	connectTimeout       = 5 * time.Second
)

// Config holds the tunables of a Service. Zero values mean the defaults.
type Config struct {
	// TokenLifetime is how long an access token is valid (default 8h).
	TokenLifetime time.Duration
	// Leeway is the clock skew tolerated on exp and iat (default 30s).
	Leeway time.Duration
	// Issuer is the "iss" claim set and required (default "caddy-accounts").
	Issuer string
	// Audience, when set, is the "aud" claim written into tokens and
	// required of them (see TokenIssuer.RequireAudience). Default: none,
	// neither written nor checked.
	Audience string
	// AcceptTokensWithoutIssuer also accepts tokens with no "iss" claim,
	// as the FastAPI backend issued them (see TokenIssuer.AcceptMissingIssuer).
	AcceptTokensWithoutIssuer bool
	// Argon2 are the password-hash parameters (default OWASP's).
	Argon2 Argon2Params
	// HashConcurrency bounds concurrent password hashes (default: the
	// number of CPUs).
	HashConcurrency int
	// TokenCacheSize bounds the cache of verified tokens (default 50000).
	TokenCacheSize int
	// Settings holds the options of the feature services' settings:
	// their directory, and the networks the AI connection test may reach
	// (package settings).
	Settings settings.Config
	// RateLimit holds the limits of /api/auth/*.
	RateLimit RateLimitConfig
	// Sessions holds the refresh sessions' and cookies' options.
	Sessions SessionConfig
	// Mail holds outgoing mail: email verification and password reset.
	Mail MailConfig
}

func (c *Config) setDefaults() {
	if c.TokenLifetime == 0 {
		c.TokenLifetime = DefaultTokenLifetime
	}
	if c.Leeway == 0 {
		c.Leeway = DefaultLeeway
	}
	if c.Issuer == "" {
		c.Issuer = DefaultIssuer
	}
	if c.Argon2 == (Argon2Params{}) {
		c.Argon2 = DefaultArgon2Params
	}
	if c.HashConcurrency == 0 {
		c.HashConcurrency = runtime.GOMAXPROCS(0)
	}
}

// Service is the account system: it owns no resources itself (the pool
// belongs to the caller) and is safe for concurrent use.
type Service struct {
	db     *pgxpool.Pool
	tokens *TokenIssuer
	hasher *Hasher
	// legacy tracks the old backend's bcrypt hashes.
	legacy legacyHashes
	log    *zap.Logger
	cfg    Config
	cache  *authCache
	// limiter throttles /api/auth/*.
	limiter *rateLimiter
	// requiredApps are the apps a route of the running configuration
	// requires (RequireApp).
	requiredMu   sync.Mutex
	requiredApps map[string]bool
	// crossOrigin refuses cross-origin unsafe requests that a cookie
	// authenticates.
	crossOrigin *http.CrossOriginProtection
	// settings holds the settings files and serves their routes.
	settings *settings.Settings
	// linkKey makes the tokens of links in mails (emailtokens.go);
	// mailWake wakes the outbox's sender.
	linkKey  []byte
	mailWake chan struct{}
}

// New returns a Service using pool for storage and keys for tokens. A nil
// key set makes a service that can manage accounts (the command line's
// create-admin) but neither issues nor accepts tokens.
func New(pool *pgxpool.Pool, keys *KeySet, cfg Config, log *zap.Logger) (*Service, error) {
	if pool == nil {
		return nil, errors.New("accounts: no database pool")
	}
	if keys == nil {
		keys = &KeySet{verifiers: map[string]*rsa.PublicKey{}}
	}
	if log == nil {
		log = zap.NewNop()
	}
	cfg.setDefaults()
	if cfg.TokenLifetime < time.Minute {
		return nil, fmt.Errorf("accounts: token lifetime %s is too short", cfg.TokenLifetime)
	}
	hasher, err := NewHasher(cfg.Argon2, cfg.HashConcurrency)
	if err != nil {
		return nil, fmt.Errorf("accounts: %w", err)
	}
	limiter, err := newRateLimiter(pool, cfg.RateLimit, log)
	if err != nil {
		return nil, fmt.Errorf("accounts: %w", err)
	}
	cfg.RateLimit = limiter.cfg
	if cfg.Sessions, err = cfg.Sessions.withDefaults(cfg.TokenLifetime); err != nil {
		return nil, fmt.Errorf("accounts: %w", err)
	}
	if cfg.Mail, err = cfg.Mail.withDefaults(); err != nil {
		return nil, fmt.Errorf("accounts: %w", err)
	}
	linkKey, err := deriveLinkKey(keys.signer)
	if err != nil {
		return nil, fmt.Errorf("accounts: %w", err)
	}
	crossOrigin, err := newCrossOriginProtection(cfg.Sessions.TrustedOrigins)
	if err != nil {
		return nil, fmt.Errorf("accounts: %w", err)
	}
	tokens := NewTokenIssuer(keys, cfg.Issuer, cfg.TokenLifetime, cfg.Leeway)
	if cfg.AcceptTokensWithoutIssuer {
		tokens.AcceptMissingIssuer()
	}
	if cfg.Audience != "" {
		tokens.RequireAudience(cfg.Audience)
	}
	s := &Service{
		db:          pool,
		tokens:      tokens,
		hasher:      hasher,
		log:         log,
		cfg:         cfg,
		cache:       newAuthCache(cfg.TokenCacheSize),
		limiter:     limiter,
		crossOrigin: crossOrigin,
		linkKey:     linkKey,
		mailWake:    make(chan struct{}, 1),
	}
	// The settings audit their changes and connection tests here.
	audit := func(r *http.Request, event, actorID string, details map[string]any) {
		s.audit(r, event, actorID, "", details)
	}
	if s.settings, err = settings.New(cfg.Settings, audit, log); err != nil {
		return nil, fmt.Errorf("accounts: %w", err)
	}
	return s, nil
}

// Settings returns the feature services' settings, whose routes the
// service serves.
func (s *Service) Settings() *settings.Settings { return s.settings }

// Tokens returns the service's token issuer.
func (s *Service) Tokens() *TokenIssuer { return s.tokens }
