package accounts

import (
	"crypto/sha256"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// Bounds of the request-path caches.
const (
	defaultTokenCacheSize = 50_000
	defaultUserCacheSize  = 50_000
	userCacheTTL          = time.Minute
)

// authCache spares the request path two costs: the RSA verification of a
// token already verified (keyed by the token's SHA-256), and the database
// read of the token's user. Verified claims never change, so the token
// cache only honours exp. User state does change; it is cached only while
// this instance listens to the database's change notifications, and every
// notification drops the user at once, on every instance.
type authCache struct {
	tokens boundedMap[[32]byte, *Claims]
	users  boundedMap[string, cachedUser]

	// listening is true while notifications are being received; without
	// them no user state is cached.
	listening atomic.Bool
	// epoch grows with every notification. A user read from the database
	// is cached only if no notification arrived during the read, so a
	// read racing with a change can never cache the old state.
	epoch atomic.Uint64
}

type cachedUser struct {
	user    *User
	expires time.Time
}

func newAuthCache(size int) *authCache {
	if size <= 0 {
		size = defaultTokenCacheSize
	}
	return &authCache{
		tokens: newBoundedMap[[32]byte, *Claims](size),
		users:  newBoundedMap[string, cachedUser](defaultUserCacheSize),
	}
}

func tokenKey(token string) [32]byte {
	// Sum256 only reads its input: hashing the string's bytes in place
	// saves copying a kilobyte-long token on every request.
	return sha256.Sum256(unsafe.Slice(unsafe.StringData(token), len(token)))
}

// claims returns the cached claims of token if they have not expired.
func (c *authCache) claims(key [32]byte, now time.Time, leeway time.Duration) (*Claims, bool) {
	cl, ok := c.tokens.get(key)
	if !ok {
		return nil, false
	}
	if cl.ExpiresAt == nil || now.After(cl.ExpiresAt.Add(leeway)) {
		c.tokens.delete(key)
		return nil, false
	}
	return cl, true
}

// user returns the cached state of a user, if any.
func (c *authCache) user(id string, now time.Time) (*User, bool) {
	if !c.listening.Load() {
		return nil, false
	}
	cu, ok := c.users.get(id)
	if !ok || now.After(cu.expires) {
		return nil, false
	}
	return cu.user, true
}

// storeUser caches u as read from the database when no notification
// arrived since epoch was taken.
func (c *authCache) storeUser(u *User, epoch uint64, now time.Time) {
	if !c.listening.Load() || c.epoch.Load() != epoch {
		return
	}
	c.users.put(u.ID, cachedUser{user: u, expires: now.Add(userCacheTTL)})
	// A notification may have arrived between the check and the put.
	if c.epoch.Load() != epoch {
		c.users.delete(u.ID)
	}
}

// invalidate drops a user (or, for "", every user).
func (c *authCache) invalidate(id string) {
	c.epoch.Add(1)
	if id == "" {
		c.users.clear()
		return
	}
	c.users.delete(id)
}

// boundedMap is a concurrency-safe map holding at most max entries; when
// full, it drops a random tenth of them (Go's map order is random), which
// costs less than tracking recency and is as good for a cache whose
// entries are cheap to recompute.
type boundedMap[K comparable, V any] struct {
	mu  sync.RWMutex
	m   map[K]V
	max int
}

func newBoundedMap[K comparable, V any](max int) boundedMap[K, V] {
	return boundedMap[K, V]{m: make(map[K]V), max: max}
}

func (b *boundedMap[K, V]) get(k K) (V, bool) {
	b.mu.RLock()
	v, ok := b.m[k]
	b.mu.RUnlock()
	return v, ok
}

func (b *boundedMap[K, V]) put(k K, v V) {
	b.mu.Lock()
	if len(b.m) >= b.max {
		drop := max(b.max/10, 1)
		for key := range b.m {
			delete(b.m, key)
			if drop--; drop == 0 {
				break
			}
		}
	}
	b.m[k] = v
	b.mu.Unlock()
}

func (b *boundedMap[K, V]) delete(k K) {
	b.mu.Lock()
	delete(b.m, k)
	b.mu.Unlock()
}

func (b *boundedMap[K, V]) clear() {
	b.mu.Lock()
	clear(b.m)
	b.mu.Unlock()
}
