// Package caddymodule plugs the accounts system into Caddy: the
// "accounts" app that owns the database pool, keys and settings, the HTTP
// handlers "accounts_api" and "accounts_auth", their Caddyfile syntax, and
// the "caddy accounts" subcommands.
package caddymodule

import (
	"context"
	"crypto/rsa"
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/caddyaccounts/gateway/accounts"
	"github.com/caddyaccounts/gateway/migrations"
	"github.com/caddyaccounts/gateway/settings"
)

func init() {
	caddy.RegisterModule(App{})
}

// Environment variables read when the config leaves an option empty. They
// are the names the old backend's .env used.
const (
	envDatabaseURL    = "DATABASE_URL"
	envPrivateKey     = "JWT_PRIVATE_KEY"
	envPrivateKeyFile = "JWT_PRIVATE_KEY_FILE"
	envPublicKey      = "JWT_PUBLIC_KEY"
	envPublicKeyFile  = "JWT_PUBLIC_KEY_FILE"
	envSettingsDir    = "SETTINGS_DIR"
	envAudience       = "JWT_AUDIENCE"
)

// App is the accounts app: one per config, shared by the accounts
// handlers through ctx.App("accounts"). It owns the PostgreSQL pool (kept
// across config reloads while the database URL stays the same), the RSA
// keys and the account service.
//
// Every option may hold placeholders such as {env.NAME}, and an option
// left empty falls back to the environment: DATABASE_URL,
// JWT_PRIVATE_KEY / JWT_PRIVATE_KEY_FILE, JWT_PUBLIC_KEY / JWT_PUBLIC_KEY_FILE,
// JWT_AUDIENCE.
type App struct {
	// PostgreSQL connection URL, e.g. postgres://user:pass@host/db.
	DatabaseURL string `json:"database_url,omitempty"`
	// The largest number of open database connections (default: pgx's,
	// four or the number of CPUs, whichever is more).
	MaxConns int32 `json:"max_conns,omitempty"`

	// PEM text of the RSA private key that signs access tokens.
	PrivateKey string `json:"private_key,omitempty"`
	// File holding PrivateKey, used when PrivateKey is empty.
	PrivateKeyFile string `json:"private_key_file,omitempty"`
	// PEM text of the matching public key. Optional: it is derived from
	// the private key, and checked against it when both are given.
	PublicKey string `json:"public_key,omitempty"`
	// File holding PublicKey.
	PublicKeyFile string `json:"public_key_file,omitempty"`
	// Public keys (PEM) whose tokens are still accepted though they no
	// longer sign: the old keys of a rotation. They are published in the
	// JWKS too.
	VerifyKeys []string `json:"verify_keys,omitempty"`
	// Files holding more VerifyKeys.
	VerifyKeyFiles []string `json:"verify_key_files,omitempty"`

	// How long an access token is valid. Default: 8h.
	TokenLifetime caddy.Duration `json:"token_lifetime,omitempty"`
	// The "iss" claim written into tokens and required of them.
	// Default: caddy-accounts.
	Issuer string `json:"issuer,omitempty"`
	// The "aud" claim written into tokens and required of them; tokens
	// without it (such as the old backend's) are then refused. Default:
	// $JWT_AUDIENCE, else none: "aud" is neither written nor checked.
	Audience string `json:"audience,omitempty"`
	// Also accept tokens without an "iss" claim, as the FastAPI backend
	// issued them; for the first token lifetime after taking over an old
	// deployment. A token naming another issuer is still refused.
	AcceptTokensWithoutIssuer bool `json:"accept_tokens_without_issuer,omitempty"`
	// Clock skew tolerated on exp and iat. Default: 30s.
	Leeway caddy.Duration `json:"leeway,omitempty"`

	// argon2id parameters for new password hashes. Default: OWASP's
	// (19 MiB, 2 iterations, 1 lane).
	Argon2 *accounts.Argon2Params `json:"argon2,omitempty"`
	// How many password hashes may run at once; further logins wait.
	// Default: the number of CPUs.
	HashConcurrency int `json:"hash_concurrency,omitempty"`

	// Directory of the settings files (ai.json, documents.json) that the
	// feature services read. Default: $SETTINGS_DIR, else ./settings
	// (settings.DefaultDir).
	SettingsDir string `json:"settings_dir,omitempty"`

	// Networks that the AI provider connection test (POST
	// /api/settings/ai/test) may connect to although its policy refuses
	// them: CIDR prefixes or single addresses, e.g. "127.0.0.1/32" for a
	// model server on the gateway's host. The policy refuses loopback,
	// unspecified, link-local (cloud metadata), multicast and broadcast
	// addresses, after DNS resolution; private networks are allowed
	// without this. Default: none.
	AITestAllow []string `json:"ai_test_allow,omitempty"`

	// Do not apply database migrations at start (run `caddy accounts
	// migrate` instead).
	SkipMigrations bool `json:"skip_migrations,omitempty"`

	// Limits of /api/auth/*, shared by every instance on the database.
	// Default: 60 requests a minute per client address; 10 failed logins
	// on one account name within 15 minutes lock that name for 5 minutes,
	// twice as long on each further lock within a day, at most 1 hour.
	RateLimit *RateLimit `json:"rate_limit,omitempty"`

	// Refresh sessions and browser cookies : cookie names,
	// domain and lifetimes, session timeouts, the refresh-token reuse
	// grace, and what the JSON bodies carry. Default: cookies
	// access_token (15m) and refresh_token, host-only; sessions end after
	// 7 days idle or 30 days; 10s reuse grace.
	Sessions *Sessions `json:"sessions,omitempty"`

	// Outgoing mail (verification and password reset): SMTP server,
	// sender, public origin, templates and retries. Default: from the
	// environment (SMTP_URL, MAIL_FROM, PUBLIC_URL, MAIL_TEMPLATES_DIR);
	// without an SMTP URL, no mail.
	Mail *Mail `json:"mail,omitempty"`

	// EmailVerification is "optional" (default: unverified accounts log
	// in) or "required" (their login gets 403 Email not verified).
	// Default: $EMAIL_VERIFICATION.
	EmailVerification string `json:"email_verification,omitempty"`

	service *accounts.Service
	poolKey string
	// inUse is read-locked by every request while it is in the account
	// code (enter, leave), so that Cleanup lets go of the pool only once the
	// requests of a config being replaced are done with it.
	inUse   *sync.RWMutex
	logger  *zap.Logger
	stop    context.CancelFunc
	stopped chan struct{}
}

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "accounts",
		New: func() caddy.Module { return new(App) },
	}
}

// pools holds the database pools by URL. A reload that keeps the URL
// reuses the open pool; the last config to let go of a URL closes it.
var pools = caddy.NewUsagePool()

type poolHandle struct{ *pgxpool.Pool }

func (p poolHandle) Destruct() error {
	p.Close()
	return nil
}

// Provision loads the keys, opens (or shares) the database pool, applies
// migrations and builds the account service.
func (a *App) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger()
	a.inUse = new(sync.RWMutex)
	if err := a.resolve(); err != nil {
		return err
	}
	keys, err := a.loadKeys()
	if err != nil {
		return err
	}
	if keys == nil {
		return errors.New("accounts: no signing key: set JWT_PRIVATE_KEY or JWT_PRIVATE_KEY_FILE, or private_key / private_key_file (`caddy accounts genkeys` makes a pair)")
	}

	a.poolKey = fmt.Sprintf("%s|%d", a.DatabaseURL, a.MaxConns)
	val, _, err := pools.LoadOrNew(a.poolKey, func() (caddy.Destructor, error) {
		pool, err := accounts.NewPool(ctx, a.DatabaseURL, a.MaxConns)
		if err != nil {
			return nil, err
		}
		return poolHandle{pool}, nil
	})
	if err != nil {
		return fmt.Errorf("accounts: %w", err)
	}
	pool := val.(poolHandle).Pool

	if !a.SkipMigrations {
		if err := a.migrate(ctx, pool); err != nil {
			return err
		}
		a.reportEmailKeyConflicts(ctx, pool)
	}

	cfg := a.serviceConfig()
	if cfg.Mail, err = a.mailConfig(); err != nil {
		return err
	}
	a.service, err = accounts.New(pool, keys, cfg, a.logger)
	if err != nil {
		return err
	}
	a.logger.Info("accounts ready",
		zap.String("database", redactURL(a.DatabaseURL)),
		zap.String("signing_kid", keys.SigningKeyID()),
		zap.Duration("token_lifetime", time.Duration(a.TokenLifetime)))
	return nil
}

// migrate applies the migrations. A database that cannot be reached yet
// (containers starting together) is waited for, up to a minute.
func (a *App) migrate(ctx caddy.Context, pool *pgxpool.Pool) error {
	mctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	wait := 250 * time.Millisecond
	for {
		applied, err := accounts.Migrate(mctx, pool, migrations.FS)
		for _, name := range applied {
			a.logger.Info("applied database migration", zap.String("migration", name))
		}
		if err == nil {
			return nil
		}
		if !accounts.IsUnavailable(err) || mctx.Err() != nil {
			return fmt.Errorf("accounts: %w", err)
		}
		a.logger.Warn("database not reachable yet; retrying", zap.Error(err), zap.Duration("in", wait))
		select {
		case <-mctx.Done():
			return fmt.Errorf("accounts: database not reachable: %w", err)
		case <-time.After(wait):
		}
		wait = min(wait*2, 5*time.Second)
	}
}

// maxConflictLines bounds the warnings reportEmailKeyConflicts logs at
// one start; `caddy accounts migrate` lists them all.
const maxConflictLines = 20

// reportEmailKeyConflicts warns of each account that the migration left
// without a normalised email key (accounts.EmailKeyConflicts), by user
// id: addresses are personal data and stay out of the log.
func (a *App) reportEmailKeyConflicts(ctx context.Context, pool *pgxpool.Pool) {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conflicts, err := accounts.EmailKeyConflicts(cctx, pool)
	if err != nil {
		a.logger.Warn("could not check the accounts' email keys", zap.Error(err))
		return
	}
	for i, c := range conflicts {
		if i == maxConflictLines {
			a.logger.Warn("more accounts without an email key; `caddy accounts migrate` lists them all",
				zap.Int("more", len(conflicts)-i))
			break
		}
		fields := []zap.Field{zap.String("user_id", c.UserID), zap.String("reason", c.Reason())}
		if c.HolderID != "" {
			fields = append(fields, zap.String("older_user_id", c.HolderID))
		}
		a.logger.Warn("account without an email key: it logs in only with its exact address until an operator resolves it", fields...)
	}
}

// resolve fills empty options from the environment and replaces
// placeholders (resolveOptions), and requires a database.
func (a *App) resolve() error {
	a.resolveOptions()
	if a.DatabaseURL == "" {
		return errors.New("accounts: no database: set DATABASE_URL or database_url")
	}
	return nil
}

// resolveOptions fills empty options from the environment and replaces
// placeholders.
func (a *App) resolveOptions() {
	repl := caddy.NewReplacer()
	fill := func(field *string, env string) {
		*field = repl.ReplaceKnown(*field, "")
		if *field == "" && env != "" {
			*field = os.Getenv(env)
		}
	}
	fill(&a.DatabaseURL, envDatabaseURL)
	fill(&a.SettingsDir, envSettingsDir)
	fill(&a.Audience, envAudience)
	// Key options fall back to the environment only as a group, so that a
	// config naming its own key file is not mixed with a stray variable.
	fill(&a.PrivateKey, "")
	fill(&a.PrivateKeyFile, "")
	fill(&a.PublicKey, "")
	fill(&a.PublicKeyFile, "")
	if a.PrivateKey == "" && a.PrivateKeyFile == "" && a.PublicKey == "" && a.PublicKeyFile == "" {
		fill(&a.PrivateKey, envPrivateKey)
		fill(&a.PrivateKeyFile, envPrivateKeyFile)
		fill(&a.PublicKey, envPublicKey)
		fill(&a.PublicKeyFile, envPublicKeyFile)
	}
	a.Issuer = repl.ReplaceKnown(a.Issuer, "")
	a.resolveMail(fill)
}

// loadKeys reads the key pair. It returns nil, nil when no key is
// configured at all.
func (a *App) loadKeys() (*accounts.KeySet, error) {
	privPEM, err := pemOption(a.PrivateKey, a.PrivateKeyFile, "private")
	if err != nil {
		return nil, err
	}
	pubPEM, err := pemOption(a.PublicKey, a.PublicKeyFile, "public")
	if err != nil {
		return nil, err
	}
	if privPEM == "" {
		if pubPEM != "" {
			return nil, errors.New("accounts: a public key alone cannot sign tokens; configure the private key")
		}
		return nil, nil
	}
	priv, err := accounts.ParsePrivateKey(privPEM)
	if err != nil {
		return nil, fmt.Errorf("accounts: private key: %w", err)
	}
	if pubPEM != "" {
		pub, err := accounts.ParsePublicKey(pubPEM)
		if err != nil {
			return nil, fmt.Errorf("accounts: public key: %w", err)
		}
		if !pub.Equal(&priv.PublicKey) {
			return nil, errors.New("accounts: the public key does not belong to the private key")
		}
	}
	verifyPEMs := slices.Clone(a.VerifyKeys)
	for _, file := range a.VerifyKeyFiles {
		text, err := pemOption("", file, "verify")
		if err != nil {
			return nil, err
		}
		verifyPEMs = append(verifyPEMs, text)
	}
	var verify []*rsa.PublicKey
	for i, text := range verifyPEMs {
		pub, err := accounts.ParsePublicKey(text)
		if err != nil {
			return nil, fmt.Errorf("accounts: verify key %d: %w", i+1, err)
		}
		verify = append(verify, pub)
	}
	return accounts.NewKeySet(priv, verify...)
}

func pemOption(text, file, which string) (string, error) {
	if text != "" {
		return text, nil
	}
	if file == "" {
		return "", nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("accounts: reading %s key file: %w", which, err)
	}
	return string(b), nil
}

func (a *App) serviceConfig() accounts.Config {
	cfg := accounts.Config{
		TokenLifetime:             time.Duration(a.TokenLifetime),
		Leeway:                    time.Duration(a.Leeway),
		Issuer:                    a.Issuer,
		Audience:                  a.Audience,
		AcceptTokensWithoutIssuer: a.AcceptTokensWithoutIssuer,
		HashConcurrency:           a.HashConcurrency,
		Settings:                  settings.Config{Dir: a.SettingsDir, AITestAllow: a.AITestAllow},
	}
	if a.Argon2 != nil {
		cfg.Argon2 = *a.Argon2
	}
	if a.RateLimit != nil {
		cfg.RateLimit = a.RateLimit.config()
	}
	if a.Sessions != nil {
		cfg.Sessions = a.Sessions.config()
	}
	return cfg
}

// RateLimit holds the limits of /api/auth/* (see accounts.RateLimitConfig).
// Zero values mean the defaults; a negative count (-1) turns that limit
// off. Over a limit, the answer is 429 with Retry-After.
type RateLimit struct {
	// Requests to /api/auth/* (every route but the JWKS) that one client
	// address (IPv6: one /64) may make per ip_window. Default: 60.
	IPRequests int `json:"ip_requests,omitempty"`
	// The window of ip_requests. Default: 1m.
	IPWindow caddy.Duration `json:"ip_window,omitempty"`
	// Failed logins on one account name (the email as typed, whether or
	// not an account has it) per login_window before its logins are
	// refused for a while, right password or not. Default: 10.
	LoginFailures int `json:"login_failures,omitempty"`
	// The window of login_failures. Default: 15m.
	LoginWindow caddy.Duration `json:"login_window,omitempty"`
	// How long the first lock of an account name lasts; each further
	// lock within a day lasts twice as long. Default: 5m.
	Lockout caddy.Duration `json:"lockout,omitempty"`
	// The longest lock. Default: 1h.
	LockoutMax caddy.Duration `json:"lockout_max,omitempty"`
}

func (rl *RateLimit) config() accounts.RateLimitConfig {
	return accounts.RateLimitConfig{
		IPRequests:    rl.IPRequests,
		IPWindow:      time.Duration(rl.IPWindow),
		LoginFailures: rl.LoginFailures,
		LoginWindow:   time.Duration(rl.LoginWindow),
		Lockout:       time.Duration(rl.Lockout),
		LockoutMax:    time.Duration(rl.LockoutMax),
	}
}

// Sessions holds the options of refresh sessions and of the browser
// cookies (see accounts.SessionConfig). Zero values mean the defaults.
//
// Login sets an access-token cookie (Path=/, HttpOnly, Secure,
// SameSite=Lax) and a refresh-token cookie (Path=/api/auth, HttpOnly,
// Secure, SameSite=Strict) besides its JSON body; POST /api/auth/refresh
// exchanges the refresh token for new ones (rotation with reuse
// detection); cookie-authenticated unsafe requests must be same-origin.
type Sessions struct {
	// Name of the access-token cookie. Default: access_token.
	AccessCookieName string `json:"access_cookie_name,omitempty"`
	// Name of the refresh-token cookie. Default: refresh_token.
	RefreshCookieName string `json:"refresh_cookie_name,omitempty"`
	// Domain attribute of both cookies. Default: none (host-only
	// cookies, the safest).
	CookieDomain string `json:"cookie_domain,omitempty"`
	// Origins (https://app.example.com) whose cross-origin requests are
	// accepted with cookies, for a frontend on another origin sharing
	// the cookies through cookie_domain. Default: none.
	TrustedOrigins []string `json:"trusted_origins,omitempty"`
	// Lifetime of the access token in the cookie and of every access
	// token issued by /api/auth/refresh. The login's JSON body keeps
	// token_lifetime. Default: 15m.
	AccessCookieLifetime caddy.Duration `json:"access_cookie_lifetime,omitempty"`
	// A session with no login or refresh for this long ends. Default: 7d.
	IdleTimeout caddy.Duration `json:"idle_timeout,omitempty"`
	// A session ends this long after its login, however active.
	// Default: 30d.
	MaxLifetime caddy.Duration `json:"max_lifetime,omitempty"`
	// How long a just-retired refresh token may still be exchanged, for
	// tabs racing with the same token; after it, reusing a retired token
	// revokes the whole session. Negative turns the grace off.
	// Default: 10s.
	RefreshReuseGrace caddy.Duration `json:"refresh_reuse_grace,omitempty"`
	// Also put refresh_token in the JSON body of the login and of a
	// cookie refresh (a refresh with a body token always returns one).
	// Default: false (the login body keeps its documented shape).
	RefreshTokenInBody bool `json:"refresh_token_in_body,omitempty"`
	// Leave access_token out of the JSON body of the login and of a
	// cookie refresh when the response sets the cookies: for
	// deployments whose only clients are browsers. Bearer clients then
	// cannot log in. Default: false.
	OmitTokenFromBody bool `json:"omit_token_from_body,omitempty"`
}

func (s *Sessions) config() accounts.SessionConfig {
	return accounts.SessionConfig{
		AccessCookieName:     s.AccessCookieName,
		RefreshCookieName:    s.RefreshCookieName,
		CookieDomain:         s.CookieDomain,
		TrustedOrigins:       s.TrustedOrigins,
		AccessCookieLifetime: time.Duration(s.AccessCookieLifetime),
		IdleTimeout:          time.Duration(s.IdleTimeout),
		MaxLifetime:          time.Duration(s.MaxLifetime),
		RefreshReuseGrace:    time.Duration(s.RefreshReuseGrace),
		RefreshTokenInBody:   s.RefreshTokenInBody,
		OmitTokenFromBody:    s.OmitTokenFromBody,
	}
}

// Service returns the account service.
func (a *App) Service() *accounts.Service { return a.service }

// Start begins listening for user changes in the database, which keeps
// the request path's caches current on every instance.
func (a *App) Start() error {
	ctx, cancel := context.WithCancel(context.Background())
	a.stop, a.stopped = cancel, make(chan struct{})
	go func() {
		defer close(a.stopped)
		a.service.Run(ctx)
	}()
	return nil
}

// Stop ends the listener and waits for it.
func (a *App) Stop() error {
	if a.stop != nil {
		a.stop()
		<-a.stopped
	}
	return nil
}

// enter marks the account service as in use by a request until it calls
// leave. (A pair of methods rather than one returning its undo: that
// function would be allocated on every request.)
func (a *App) enter() { a.inUse.RLock() }

// leave ends what enter began.
func (a *App) leave() { a.inUse.RUnlock() }

// poolReleaseDelay is how long a config replaced by a reload keeps its
// hold on the database pool before it waits for its last requests and
// lets go. Caddy cleans up the old config as soon as it has begun to shut
// the old servers down, and for a moment a request can still begin on
// one of them (read from a kept-alive connection just before the server
// closed its idle ones).
const poolReleaseDelay = 2 * time.Second

// Cleanup lets go of the database pool; the last config using it closes
// it. At a reload Caddy neither waits for the old config's requests nor
// for its servers to stop taking new ones, so the pool is let go of a
// little later, once the requests in the account code are done with it:
// closing it under them would fail them with 503. When the process exits,
// the servers have been shut down already.
func (a *App) Cleanup() error {
	if a.poolKey == "" {
		return nil
	}
	if caddy.Exiting() {
		_, err := pools.Delete(a.poolKey)
		return err
	}
	go func() {
		time.Sleep(poolReleaseDelay)
		a.inUse.Lock()
		defer a.inUse.Unlock()
		if _, err := pools.Delete(a.poolKey); err != nil {
			a.logger.Error("closing the database pool", zap.Error(err))
		}
	}()
	return nil
}

// redactURL hides the password of a database URL for logs.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" {
		if strings.Contains(raw, "password") {
			return "(redacted)"
		}
		return raw
	}
	return u.Redacted()
}

// Interface guards
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
)
