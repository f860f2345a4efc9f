package accounts

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"unicode"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"

	"github.com/caddyaccounts/gateway/fastapi"
)

// Argon2Params are the argon2id cost parameters. The defaults follow the
// OWASP Password Storage Cheat Sheet: 19 MiB, 2 iterations, 1 lane.
type Argon2Params struct {
	// MemoryKiB is the memory cost in KiB.
	MemoryKiB uint32 `json:"memory_kib,omitempty"`
	// Iterations is the time cost.
	Iterations uint32 `json:"iterations,omitempty"`
	// Parallelism is the number of lanes.
	Parallelism uint8 `json:"parallelism,omitempty"`
}

// DefaultArgon2Params are OWASP's recommended argon2id parameters.
var DefaultArgon2Params = Argon2Params{MemoryKiB: 19 * 1024, Iterations: 2, Parallelism: 1}

const (
	argon2SaltLen = 16
	argon2KeyLen  = 32
)

// ErrMismatch is returned when a password does not match its hash.
var ErrMismatch = errors.New("password does not match")

// Hasher hashes and verifies passwords. At most a fixed number of hashes
// run at once, so a flood of logins costs memory × concurrency, not
// memory × requests; the others wait (or give up with their request).
//
// # Failed verifications cost the same
//
// Every failed verification (a wrong password, or VerifyDummy for an
// unknown account) spends the same CPU work: one argon2id verification
// (the real one, or one against a dummy hash) and, while the database
// still holds bcrypt hashes of the old backend (SetLegacyCost), bcrypt
// work of the largest cost present: the real bcrypt verification, if the
// hash is one, made up to that cost with dummy bcrypt verifications at
// the costs in between (2^c + 2^c + 2^(c+1) + … + 2^(M-1) = 2^M rounds),
// else one dummy bcrypt verification at that cost. Real hashing rather
// than sleeping, so that CPU load slows every case alike. Once no bcrypt
// hash is left, failures cost one argon2id verification again.
type Hasher struct {
	params Argon2Params
	slots  chan struct{}
	dummy  string
	// bcryptDummy is the salt and digest of a bcrypt hash of a random
	// password; "$2b$NN$" + bcryptDummy is a hash of cost NN that no
	// password matches (in practice), for the dummy verifications.
	bcryptDummy string
	// legacyCost is the bcrypt cost failed verifications pad to, 0 when
	// no bcrypt hash is stored (SetLegacyCost).
	legacyCost atomic.Int32
}

// bcryptMaxPassword is the longest password bcrypt reads: it ignores
// every byte past the 72nd.
const bcryptMaxPassword = 72

// maxLegacyPadCost bounds the bcrypt cost that failed verifications are
// padded to, so that one odd hash in the database cannot make every
// failed login take minutes. The old backend wrote cost 12.
const maxLegacyPadCost = 16

// NewHasher returns a Hasher with the given parameters allowing at most
// concurrency hashes at a time.
func NewHasher(p Argon2Params, concurrency int) (*Hasher, error) {
	if p.MemoryKiB < 8*uint32(max(p.Parallelism, 1)) || p.Iterations < 1 || p.Parallelism < 1 {
		return nil, fmt.Errorf("invalid argon2id parameters m=%d t=%d p=%d", p.MemoryKiB, p.Iterations, p.Parallelism)
	}
	if concurrency < 1 {
		return nil, fmt.Errorf("hash concurrency must be at least 1, got %d", concurrency)
	}
	h := &Hasher{params: p, slots: make(chan struct{}, concurrency)}
	// A hash of a random password, verified against when the account is
	// unknown so that both cases cost the same time.
	random := make([]byte, 32)
	_, _ = rand.Read(random)
	dummy, err := h.hash(random)
	if err != nil {
		return nil, err
	}
	h.dummy = dummy
	b, err := bcrypt.GenerateFromPassword(random[:16], bcrypt.MinCost)
	if err != nil {
		return nil, fmt.Errorf("making the dummy bcrypt hash: %w", err)
	}
	h.bcryptDummy = string(b[len("$2b$04$"):])
	return h, nil
}

// SetLegacyCost tells the Hasher the largest bcrypt cost among the stored
// password hashes, 0 when there is none: from then on, failed
// verifications also spend bcrypt work of that cost (see Hasher). Costs
// above 16 count as 16.
func (h *Hasher) SetLegacyCost(cost int) {
	h.legacyCost.Store(int32(min(max(cost, 0), maxLegacyPadCost)))
}

// LegacyCost returns the cost set by SetLegacyCost.
func (h *Hasher) LegacyCost() int { return int(h.legacyCost.Load()) }

func (h *Hasher) acquire(ctx context.Context) error {
	select {
	case h.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting to hash a password: %w: %w", fastapi.ErrUnavailable, ctx.Err())
	}
}

func (h *Hasher) release() { <-h.slots }

// Hash returns the argon2id PHC string of password.
func (h *Hasher) Hash(ctx context.Context, password string) (string, error) {
	if err := h.acquire(ctx); err != nil {
		return "", err
	}
	defer h.release()
	return h.hash([]byte(password))
}

func (h *Hasher) hash(password []byte) (string, error) {
	salt := make([]byte, argon2SaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("reading salt: %w", err)
	}
	p := h.params
	key := argon2.IDKey(password, salt, p.Iterations, p.MemoryKiB, p.Parallelism, argon2KeyLen)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, p.MemoryKiB, p.Iterations, p.Parallelism,
		b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// Verify checks password against an encoded hash: argon2id (PHC string) or
// bcrypt ($2a$, $2b$, $2y$, as the old backend wrote them). It returns
// whether the hash should be replaced by a fresh one with the current
// parameters, and ErrMismatch on a wrong password, after the same work
// as any other failure (see Hasher).
//
// bcrypt reads only the first 72 bytes of a password, and the old
// backend hashed longer ones truncated: such a hash accepts every
// password with the same first 72 bytes. A matching password of 72 bytes
// or more is therefore never a reason to rehash (rehash is false):
// storing what was typed would lock out the real password, which may
// differ after the 72nd byte. The bcrypt hash stays, and both keep
// working as before. Neither is a matching password with a NUL byte (the
// old backend refused those; bcrypt ends a shorter password with a NUL
// and repeats it, so "ab\x00ab" matches the hash of "ab"). A shorter
// password without NUL matches only the hash of itself.
func (h *Hasher) Verify(ctx context.Context, password, encoded string) (rehash bool, err error) {
	if err := h.acquire(ctx); err != nil {
		return false, err
	}
	defer h.release()
	rehash, err = h.verify(password, encoded)
	if errors.Is(err, ErrMismatch) {
		h.padFailure(password, encoded)
	}
	return rehash, err
}

func (h *Hasher) verify(password, encoded string) (rehash bool, err error) {
	switch {
	case strings.HasPrefix(encoded, "$argon2id$"):
		p, salt, key, err := decodeArgon2(encoded)
		if err != nil {
			return false, err
		}
		got := argon2.IDKey([]byte(password), salt, p.Iterations, p.MemoryKiB, p.Parallelism, uint32(len(key)))
		if subtle.ConstantTimeCompare(got, key) != 1 {
			return false, ErrMismatch
		}
		return p != h.params || len(key) != argon2KeyLen, nil
	case isBcrypt(encoded):
		err := bcrypt.CompareHashAndPassword([]byte(encoded), bcryptPassword(password))
		if errors.Is(err, bcrypt.ErrMismatchedHashAndPassword) {
			return false, ErrMismatch
		}
		if err != nil {
			return false, fmt.Errorf("verifying bcrypt hash: %w", err)
		}
		return len(password) < bcryptMaxPassword && !strings.Contains(password, "\x00"), nil
	default:
		return false, errors.New("unknown password hash format")
	}
}

// isBcrypt reports whether encoded is a bcrypt hash.
func isBcrypt(encoded string) bool {
	return strings.HasPrefix(encoded, "$2a$") || strings.HasPrefix(encoded, "$2b$") || strings.HasPrefix(encoded, "$2y$")
}

// bcryptPassword is the part of password that bcrypt reads: its first
// 72 bytes. (x/crypto's bcrypt ignores the rest as well, but says so
// nowhere; this makes the rule explicit.)
func bcryptPassword(password string) []byte {
	return []byte(password[:min(len(password), bcryptMaxPassword)])
}

// padFailure spends what a failed verification of encoded did not: the
// argon2id verification of a bcrypt hash's failure, and bcrypt work up to
// the legacy cost (see Hasher).
func (h *Hasher) padFailure(password, encoded string) {
	legacy := h.LegacyCost()
	from := 0 // the bcrypt cost already spent
	if isBcrypt(encoded) {
		_, _ = h.verify(password, h.dummy)
		if c, err := bcrypt.Cost([]byte(encoded)); err == nil {
			from = c
		}
	}
	if from == 0 {
		if legacy > 0 {
			h.dummyBcrypt(password, legacy)
		}
		return
	}
	for c := from; c < legacy; c++ {
		h.dummyBcrypt(password, c)
	}
}

// dummyBcrypt spends one bcrypt verification of cost.
func (h *Hasher) dummyBcrypt(password string, cost int) {
	hash := fmt.Sprintf("$2b$%02d$%s", cost, h.bcryptDummy)
	_ = bcrypt.CompareHashAndPassword([]byte(hash), bcryptPassword(password))
}

// VerifyDummy spends the time of one failed verification without an
// account, so that an unknown email cannot be told from a wrong password
// by timing.
func (h *Hasher) VerifyDummy(ctx context.Context, password string) {
	_, _ = h.Verify(ctx, password, h.dummy)
}

func decodeArgon2(encoded string) (p Argon2Params, salt, key []byte, err error) {
	// $argon2id$v=19$m=19456,t=2,p=1$salt$key
	parts := strings.Split(encoded, "$")
	if len(parts) != 6 {
		return p, nil, nil, errors.New("malformed argon2id hash")
	}
	var version int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil || version != argon2.Version {
		return p, nil, nil, errors.New("unsupported argon2id version")
	}
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &p.MemoryKiB, &p.Iterations, &p.Parallelism); err != nil {
		return p, nil, nil, errors.New("malformed argon2id parameters")
	}
	if p.MemoryKiB > 4*1024*1024 || p.Iterations > 100 || p.Iterations < 1 || p.Parallelism < 1 {
		return p, nil, nil, errors.New("argon2id parameters out of range")
	}
	b64 := base64.RawStdEncoding
	if salt, err = b64.DecodeString(parts[4]); err != nil {
		return p, nil, nil, errors.New("malformed argon2id salt")
	}
	if key, err = b64.DecodeString(parts[5]); err != nil || len(key) < 16 || len(key) > 64 {
		return p, nil, nil, errors.New("malformed argon2id key")
	}
	return p, salt, key, nil
}

// Password policy limits (API.md).
const (
	passwordMinLen = 8
	passwordMaxLen = 128
)

// CheckPasswordPolicy returns one message per rule that password breaks:
// 8 to 128 characters, an uppercase letter, a special (non-alphanumeric)
// character, and no "test" in any letter case.
func CheckPasswordPolicy(password string) []string {
	var broken []string
	n := utf8.RuneCountInString(password)
	if n < passwordMinLen {
		broken = append(broken, fmt.Sprintf("Password must be at least %d characters long", passwordMinLen))
	}
	if n > passwordMaxLen {
		broken = append(broken, fmt.Sprintf("Password must be at most %d characters long", passwordMaxLen))
	}
	var upper, special bool
	for _, r := range password {
		upper = upper || unicode.IsUpper(r)
		special = special || !(unicode.IsLetter(r) || unicode.IsDigit(r))
	}
	if !upper {
		broken = append(broken, "Password must contain at least one uppercase letter")
	}
	if !special {
		broken = append(broken, "Password must contain at least one special character")
	}
	if strings.Contains(strings.ToLower(password), "test") {
		broken = append(broken, `Password must not contain the word "test"`)
	}
	return broken
}
