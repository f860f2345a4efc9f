package accounts

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/caddyaccounts/gateway/fastapi"
)

// Defaults of RateLimitConfig.
const (
	DefaultIPRequests    = 60
	DefaultIPWindow      = time.Minute
	DefaultLoginFailures = 10
	DefaultLoginWindow   = 15 * time.Minute
	DefaultLockout       = 5 * time.Minute
	DefaultLockoutMax    = time.Hour
)

const (
	// lockoutMemory is how long a lock of an account name makes the next
	// one longer: locks that ended more than this ago are forgotten.
	lockoutMemory = 24 * time.Hour
	// limiterTimeout bounds one limiter query. A limiter that cannot ask
	// the database in time lets the request through (fail open).
	limiterTimeout = 2 * time.Second
	// cleanupOneIn: one limiter query in this many also deletes expired
	// rows, in the background.
	cleanupOneIn = 100
	// cleanupBatch bounds the rows one cleanup deletes.
	cleanupBatch = 10_000
	// cleanupTimeout bounds one cleanup.
	cleanupTimeout = 10 * time.Second
)

// Client-facing details of the 429 answers. Both carry Retry-After.
const (
	detailTooManyRequests = "Too many requests"
	detailLoginLocked     = "Too many failed login attempts, try again later"
)

// RateLimitConfig holds the limits of /api/auth/*. Zero values mean the
// defaults; a negative count turns that limit off.
type RateLimitConfig struct {
	// IPRequests is how many requests to /api/auth/* (every route but the
	// JWKS) one client address may make per IPWindow (default 60).
	IPRequests int
	// IPWindow is the window of IPRequests (default 1m).
	IPWindow time.Duration
	// LoginFailures is how many login attempts on one account name (the
	// email as typed, trimmed and normalised) may fail per LoginWindow
	// before further attempts are refused for a while (default 10).
	LoginFailures int
	// LoginWindow is the window of LoginFailures (default 15m).
	LoginWindow time.Duration
	// Lockout is how long the first lock of an account name lasts
	// (default 5m). Each further lock within a day lasts twice as long as
	// the one before, up to LockoutMax.
	Lockout time.Duration
	// LockoutMax is the longest lock (default 1h).
	LockoutMax time.Duration
}

// withDefaults returns c with zero fields set to their defaults, or an
// error for a negative duration.
func (c RateLimitConfig) withDefaults() (RateLimitConfig, error) {
	for name, d := range map[string]time.Duration{
		"IP window": c.IPWindow, "login window": c.LoginWindow,
		"lockout": c.Lockout, "lockout max": c.LockoutMax,
	} {
		if d < 0 {
			return c, fmt.Errorf("rate limit: negative %s %s", name, d)
		}
	}
	c.IPRequests = cmp.Or(c.IPRequests, DefaultIPRequests)
	c.IPWindow = cmp.Or(c.IPWindow, DefaultIPWindow)
	c.LoginFailures = cmp.Or(c.LoginFailures, DefaultLoginFailures)
	c.LoginWindow = cmp.Or(c.LoginWindow, DefaultLoginWindow)
	c.Lockout = cmp.Or(c.Lockout, DefaultLockout)
	if c.LockoutMax == 0 {
		c.LockoutMax = max(DefaultLockoutMax, c.Lockout)
	}
	if c.LockoutMax < c.Lockout {
		return c, fmt.Errorf("rate limit: lockout max %s is shorter than the first lockout %s", c.LockoutMax, c.Lockout)
	}
	return c, nil
}

// rateLimiter throttles /api/auth/* with counters kept in the rate_limits
// table (migration 0004), so that every gateway instance on the database
// counts together and a restart forgets nothing. Each check is one atomic
// INSERT ... ON CONFLICT DO UPDATE ... RETURNING: no read-then-write race
// between instances, one round trip. Times are the database's (now()), so
// instances with skewed clocks still agree.
//
// Two limits, in the manner of Authelia's regulation:
//
// Per client address (ClientIP; IPv6 by /64, the block one subscriber
// usually gets), a fixed window of IPRequests requests per IPWindow over
// every /api/auth/* route but the JWKS (public, free, and fetched by
// services). A fixed window may let up to twice the limit through around
// the window's end; for a brute-force brake that is good enough and costs
// one row per address.
//
// Per account name (the email as tried, trimmed and normalised as for
// lookups, whether or not an account has it), at most LoginFailures login attempts per
// LoginWindow may fail. Every attempt is counted when it starts and the
// count is cleared when its password turns out right, so concurrent
// attempts cannot slip past the limit together. The attempt that reaches
// the limit starts a lock; while locked, attempts are refused with 429 and
// Retry-After before any user lookup or password hashing: the answer is
// the same, and as fast, for an unknown email as for a known one, and
// costs the server nothing. Each lock within a day of the previous one
// lasts twice as long, up to LockoutMax; a successful login forgets the
// name's failures and locks.
//
// The trade-off: a lock on an account name refuses its owner too, right
// password or not, so whoever knows an email can keep that account locked
// by failing LoginFailures times per LockoutMax. That is the price of
// bounding online guessing per account when the guesses come from many
// addresses (which the per-address limit alone cannot stop). It is kept
// bounded: locks never last longer than LockoutMax and always expire by
// themselves (there is no permanent lockout and nothing an administrator
// must clear), and the refusal tells nothing about the account. An
// attacker holding a lock open costs at most LockoutMax of waiting at a
// time, and leaves login.locked events in the audit log.
//
// If the database cannot be asked, the limiter lets the request through
// (fail open) and logs it: the request's own database work then answers
// 503 anyway, and an outage of the limiter must not become an outage of
// login.
type rateLimiter struct {
	db       *pgxpool.Pool
	log      *zap.Logger
	cfg      RateLimitConfig
	cleaning atomic.Bool
}

func newRateLimiter(db *pgxpool.Pool, cfg RateLimitConfig, log *zap.Logger) (*rateLimiter, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return &rateLimiter{db: db, log: log, cfg: cfg}, nil
}

// tooManyRequests is a 429 with Retry-After in whole seconds (at least 1).
func tooManyRequests(detail string, retryAfter float64) *fastapi.Error {
	secs := int64(1)
	if !math.IsNaN(retryAfter) && retryAfter > 1 {
		secs = int64(math.Ceil(min(retryAfter, math.MaxInt32)))
	}
	return &fastapi.Error{
		Status: http.StatusTooManyRequests,
		Detail: detail,
		Header: http.Header{"Retry-After": {strconv.FormatInt(secs, 10)}},
	}
}

// limitAuthRoute puts the per-address limit in front of f when pattern
// (a ServeMux pattern, "METHOD /path") is an /api/auth/* route other than
// the JWKS. Routes added later under /api/auth/ are thus limited too.
func (s *Service) limitAuthRoute(pattern string, f apiFunc) apiFunc {
	path := pattern
	if _, p, ok := strings.Cut(pattern, " "); ok {
		path = strings.TrimSpace(p)
	}
	if !strings.HasPrefix(path, "/api/auth/") || path == "/api/auth/jwks.json" {
		return f
	}
	return func(w http.ResponseWriter, r *http.Request) error {
		if err := s.limiter.allowClient(r); err != nil {
			return err
		}
		return f(w, r)
	}
}

// ipKey is the rate_limits key of a client address: IPv4 addresses (also
// IPv4-mapped ones) as they are, IPv6 addresses by their /64 prefix.
func ipKey(ip string) string {
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		// Not an address (a test's or a unix socket's peer): bounded text.
		return "ip:" + cleanText(ip, 64)
	}
	addr = addr.Unmap().WithZone("")
	if addr.Is4() {
		return "ip:" + addr.String()
	}
	return "ip:" + netip.PrefixFrom(addr, 64).Masked().String()
}

// loginKey is the rate_limits key of an account name. The email is
// hashed: the key stays short whatever was typed, and the table holds no
// addresses. An address counts under its normalised key, so
// that the spellings of one mailbox, which all log in to its account,
// share one limit; for an ASCII address that is its lower-case form.
func loginKey(username string) string {
	name := strings.TrimSpace(username)
	if key, err := emailKey(name); err == nil {
		name = key
	} else {
		name = strings.ToLower(name)
	}
	sum := sha256.Sum256([]byte(name))
	return "login:" + hex.EncodeToString(sum[:])
}

const ipCheckSQL = `
INSERT INTO rate_limits AS r (key, window_start, count, expires_at)
VALUES ($1::text, now(), 1, now() + $2::float8 * interval '1 second')
ON CONFLICT (key) DO UPDATE SET (window_start, count, expires_at) = (
    SELECT CASE WHEN a.fresh THEN now() ELSE r.window_start END,
           CASE WHEN a.fresh THEN 1 ELSE LEAST(r.count, 2147483646) + 1 END,
           CASE WHEN a.fresh THEN now() + $2::float8 * interval '1 second' ELSE r.expires_at END
    FROM (SELECT r.window_start + $2::float8 * interval '1 second' <= now() AS fresh) a
)
RETURNING count, EXTRACT(EPOCH FROM (window_start + $2::float8 * interval '1 second' - now()))::float8`

// allowClient counts a request of the client of r against the
// per-address limit; it returns a 429 *fastapi.Error when over the limit.
func (l *rateLimiter) allowClient(r *http.Request) error {
	if l.cfg.IPRequests < 0 {
		return nil
	}
	ip := ClientIP(r)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), limiterTimeout)
	defer cancel()
	var count int
	var retry float64
	err := l.db.QueryRow(ctx, ipCheckSQL, ipKey(ip), seconds(l.cfg.IPWindow)).Scan(&count, &retry)
	l.maybeCleanup()
	if err != nil {
		l.failOpen("ip", err)
		return nil
	}
	if count <= l.cfg.IPRequests {
		return nil
	}
	if count == l.cfg.IPRequests+1 {
		l.log.Info("client over the auth rate limit", zap.String("ip", ip),
			zap.Int("limit", l.cfg.IPRequests), zap.Duration("window", l.cfg.IPWindow))
	}
	return tooManyRequests(detailTooManyRequests, retry)
}

// loginAttemptSQL counts one login attempt on an account name. The
// existing row r is turned into the new one by a chain of lateral steps:
//
//	a: locked (a lock is running), fresh (the window ended, or ended with
//	   a lock), prev (the locks within lockoutMemory so far)
//	b: c, the new count: above the limit while locked (those attempts
//	   are refused), 1 in a fresh window, else one more
//	d: lock, whether this attempt reaches the limit and starts a lock
//	e: the new window start, lock end and lock count
//
// The attempt is allowed when the returned count is at most the limit.
// Parameters: $1 key, $2 limit, $3 window, $4 first lock, $5 longest
// lock, $6 lockout memory (seconds).
const loginAttemptSQL = `
INSERT INTO rate_limits AS r (key, window_start, count, locked_until, lockouts, expires_at)
SELECT $1::text, now(), 1,
       CASE WHEN $2::int <= 1 THEN now() + LEAST($4::float8, $5::float8) * interval '1 second' END,
       CASE WHEN $2::int <= 1 THEN 1 ELSE 0 END,
       now() + CASE WHEN $2::int <= 1 THEN GREATEST($3::float8, LEAST($4::float8, $5::float8) + $6::float8)
                    ELSE $3::float8 END * interval '1 second'
ON CONFLICT (key) DO UPDATE SET (window_start, count, locked_until, lockouts, expires_at) = (
    SELECT e.ws, b.c, e.lu, e.lo,
           GREATEST(e.ws + $3::float8 * interval '1 second',
                    COALESCE(e.lu + $6::float8 * interval '1 second', '-infinity'))
    FROM (SELECT COALESCE(r.locked_until > now(), false) AS locked,
                 r.window_start + $3::float8 * interval '1 second' <= now() OR r.count >= $2::int AS fresh,
                 CASE WHEN r.locked_until > now() - $6::float8 * interval '1 second' THEN r.lockouts ELSE 0 END AS prev) a
    CROSS JOIN LATERAL (SELECT CASE WHEN a.locked THEN LEAST(GREATEST(r.count, $2::int), 2147483646) + 1
                                    WHEN a.fresh THEN 1
                                    ELSE r.count + 1 END AS c) b
    CROSS JOIN LATERAL (SELECT NOT a.locked AND b.c >= $2::int AS lock) d
    CROSS JOIN LATERAL (SELECT CASE WHEN NOT a.locked AND a.fresh THEN now() ELSE r.window_start END AS ws,
                               CASE WHEN d.lock THEN now() + LEAST($4::float8 * power(2, LEAST(a.prev, 40)), $5::float8)
                                                             * interval '1 second'
                                    ELSE r.locked_until END AS lu,
                               CASE WHEN d.lock THEN a.prev + 1 ELSE r.lockouts END AS lo) e
)
RETURNING count, lockouts, COALESCE(EXTRACT(EPOCH FROM (locked_until - now()))::float8, 0)`

// allowLogin counts a login attempt on username, before anything is
// looked up or hashed, and returns a 429 *fastapi.Error while the name is locked.
// Call loginSucceeded once the password proves right.
func (s *Service) allowLogin(r *http.Request, username string) error {
	l := s.limiter
	if l.cfg.LoginFailures < 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), limiterTimeout)
	defer cancel()
	var count, lockouts int
	var retry float64
	err := l.db.QueryRow(ctx, loginAttemptSQL, loginKey(username), l.cfg.LoginFailures,
		seconds(l.cfg.LoginWindow), seconds(l.cfg.Lockout), seconds(l.cfg.LockoutMax),
		seconds(lockoutMemory)).Scan(&count, &lockouts, &retry)
	l.maybeCleanup()
	if err != nil {
		l.failOpen("login", err)
		return nil
	}
	if count <= l.cfg.LoginFailures {
		return nil
	}
	if count == l.cfg.LoginFailures+1 {
		// The first refusal of this lock: recorded once per lock.
		l.log.Info("login locked for an account name", zap.Int("lockouts", lockouts),
			zap.Duration("remaining", time.Duration(retry*float64(time.Second))))
		s.audit(r, EventLoginLocked, "", "", map[string]any{
			"email": auditedEmail(username), "lockouts": lockouts,
			"retry_after": int64(math.Ceil(retry)),
		})
	}
	return tooManyRequests(detailLoginLocked, retry)
}

// loginSucceeded forgets the failures and locks of username: its password
// was right.
func (s *Service) loginSucceeded(r *http.Request, username string) {
	l := s.limiter
	if l.cfg.LoginFailures < 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), limiterTimeout)
	defer cancel()
	if _, err := l.db.Exec(ctx, "DELETE FROM rate_limits WHERE key = $1", loginKey(username)); err != nil {
		l.log.Warn("could not reset the login failures of an account name", zap.Error(err))
	}
}

// failOpen logs a limiter query that failed; the request goes on.
func (l *rateLimiter) failOpen(limit string, err error) {
	msg := "rate limit check failed; letting the request through"
	if IsUnavailable(err) || errors.Is(err, context.Canceled) {
		l.log.Warn(msg, zap.String("limit", limit), zap.Error(err))
		return
	}
	l.log.Error(msg, zap.String("limit", limit), zap.Error(err))
}

// maybeCleanup deletes expired rows in the background on one call in
// cleanupOneIn, one cleanup at a time per instance.
func (l *rateLimiter) maybeCleanup() {
	if rand.IntN(cleanupOneIn) != 0 || !l.cleaning.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer l.cleaning.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		if _, err := l.deleteExpired(ctx); err != nil {
			l.log.Warn("could not delete expired rate-limit rows", zap.Error(err))
		}
	}()
}

// deleteExpired deletes up to cleanupBatch rows whose windows and locks
// are over, and returns how many it deleted.
func (l *rateLimiter) deleteExpired(ctx context.Context) (int64, error) {
	tag, err := l.db.Exec(ctx, `DELETE FROM rate_limits WHERE key IN (
		SELECT key FROM rate_limits WHERE expires_at < now() LIMIT $1 FOR UPDATE SKIP LOCKED)
		AND expires_at < now()`, cleanupBatch)
	if err != nil {
		return 0, fmt.Errorf("deleting expired rate limits: %w", err)
	}
	return tag.RowsAffected(), nil
}
