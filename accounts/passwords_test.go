package accounts

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// fastArgon2 keeps unit tests quick; the format and code paths are the
// same as with the production parameters.
var fastArgon2 = Argon2Params{MemoryKiB: 64, Iterations: 1, Parallelism: 1}

func newTestHasher(t testing.TB, p Argon2Params, concurrency int) *Hasher {
	t.Helper()
	h, err := NewHasher(p, concurrency)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestPasswordPolicy(t *testing.T) {
	tests := []struct {
		password string
		want     []string
	}{
		{"Secret!pw", nil},
		{"Ünïcødé§X", nil},
		{"Short!A", []string{"Password must be at least 8 characters long"}},
		{"alllower!", []string{"Password must contain at least one uppercase letter"}},
		{"NoSpecial1", []string{"Password must contain at least one special character"}},
		{"My-TeSt-pass", []string{`Password must not contain the word "test"`}},
		{"", []string{
			"Password must be at least 8 characters long",
			"Password must contain at least one uppercase letter",
			"Password must contain at least one special character",
		}},
		{"A!" + strings.Repeat("a", 126), nil},
		{"A!" + strings.Repeat("a", 127), []string{"Password must be at most 128 characters long"}},
		{"test", []string{
			"Password must be at least 8 characters long",
			"Password must contain at least one uppercase letter",
			"Password must contain at least one special character",
			`Password must not contain the word "test"`,
		}},
	}
	for _, tt := range tests {
		if got := CheckPasswordPolicy(tt.password); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("CheckPasswordPolicy(%q) = %q, want %q", tt.password, got, tt.want)
		}
	}
}

func TestHashAndVerify(t *testing.T) {
	ctx := context.Background()
	h := newTestHasher(t, fastArgon2, 2)
	enc, err := h.Hash(ctx, "Secret!pw")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(enc, "$argon2id$v=19$m=64,t=1,p=1$") {
		t.Fatalf("hash %q is not an argon2id PHC string with our parameters", enc)
	}
	if rehash, err := h.Verify(ctx, "Secret!pw", enc); err != nil || rehash {
		t.Fatalf("Verify(right) = %v, %v; want false, nil", rehash, err)
	}
	if _, err := h.Verify(ctx, "Secret!pX", enc); !errors.Is(err, ErrMismatch) {
		t.Fatalf("Verify(wrong) err = %v, want ErrMismatch", err)
	}
	other, _ := h.Hash(ctx, "Secret!pw")
	if other == enc {
		t.Fatal("two hashes of one password are equal: salt is not random")
	}

	// A hash made with other parameters still verifies, and asks to be
	// replaced.
	stronger := newTestHasher(t, Argon2Params{MemoryKiB: 128, Iterations: 2, Parallelism: 1}, 1)
	if rehash, err := stronger.Verify(ctx, "Secret!pw", enc); err != nil || !rehash {
		t.Fatalf("Verify with new params = %v, %v; want true, nil", rehash, err)
	}
}

func TestVerifyBcryptFromOldBackend(t *testing.T) {
	ctx := context.Background()
	h := newTestHasher(t, fastArgon2, 1)
	for _, prefix := range []string{"$2a$", "$2b$", "$2y$"} {
		b, err := bcrypt.GenerateFromPassword([]byte("Old!password"), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		enc := prefix + string(b[4:])
		if rehash, err := h.Verify(ctx, "Old!password", enc); err != nil || !rehash {
			t.Errorf("%s: Verify(right) = %v, %v; want true (rehash), nil", prefix, rehash, err)
		}
		if _, err := h.Verify(ctx, "old!password", enc); !errors.Is(err, ErrMismatch) {
			t.Errorf("%s: Verify(wrong) err = %v, want ErrMismatch", prefix, err)
		}
	}
}

func TestVerifyRejectsMalformedHashes(t *testing.T) {
	ctx := context.Background()
	h := newTestHasher(t, fastArgon2, 1)
	for _, enc := range []string{
		"", "plain", "$argon2i$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5aw",
		"$argon2id$v=18$m=64,t=1,p=1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5aw",
		"$argon2id$v=19$m=99999999,t=1,p=1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5aw",
		"$argon2id$v=19$m=64,t=0,p=1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5aw",
		"$argon2id$v=19$m=64,t=1,p=1$!!$a2V5a2V5a2V5a2V5a2V5aw",
		"$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$",
		"$2b$04$tooShort",
	} {
		if _, err := h.Verify(ctx, "x", enc); err == nil || errors.Is(err, ErrMismatch) {
			t.Errorf("Verify(%q) err = %v, want a format error", enc, err)
		}
	}
}

// TestHashConcurrencyIsBounded proves that no more than the configured
// number of hashes run at once, whatever the number of callers.
func TestHashConcurrencyIsBounded(t *testing.T) {
	const limit = 2
	h := newTestHasher(t, Argon2Params{MemoryKiB: 1024, Iterations: 1, Parallelism: 1}, limit)
	var running, peak atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := h.acquire(context.Background()); err != nil {
				t.Error(err)
				return
			}
			n := running.Add(1)
			for {
				p := peak.Load()
				if n <= p || peak.CompareAndSwap(p, n) {
					break
				}
			}
			time.Sleep(2 * time.Millisecond)
			running.Add(-1)
			h.release()
		}()
	}
	wg.Wait()
	if got := peak.Load(); got != limit {
		t.Fatalf("peak concurrent hashes = %d, want %d", got, limit)
	}
}

func TestHashGivesUpWithItsRequest(t *testing.T) {
	h := newTestHasher(t, fastArgon2, 1)
	if err := h.acquire(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer h.release()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := h.Hash(ctx, "Secret!pw")
	if !IsUnavailable(err) {
		t.Fatalf("Hash with every slot busy until the deadline: err = %v, want an unavailable error (503)", err)
	}
}

func TestNewHasherRejectsBadParameters(t *testing.T) {
	for _, p := range []Argon2Params{{}, {MemoryKiB: 64, Iterations: 0, Parallelism: 1}, {MemoryKiB: 64, Iterations: 1, Parallelism: 0}, {MemoryKiB: 4, Iterations: 1, Parallelism: 1}} {
		if _, err := NewHasher(p, 1); err == nil {
			t.Errorf("NewHasher(%+v) accepted", p)
		}
	}
	if _, err := NewHasher(fastArgon2, 0); err == nil {
		t.Error("NewHasher with concurrency 0 accepted")
	}
}

func BenchmarkHashPassword(b *testing.B) {
	h := newTestHasher(b, DefaultArgon2Params, 1)
	ctx := context.Background()
	for b.Loop() {
		if _, err := h.Hash(ctx, "Secret!pw"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyPassword(b *testing.B) {
	h := newTestHasher(b, DefaultArgon2Params, 1)
	ctx := context.Background()
	enc, _ := h.Hash(ctx, "Secret!pw")
	for b.Loop() {
		if _, err := h.Verify(ctx, "Secret!pw", enc); err != nil {
			b.Fatal(err)
		}
	}
}

// TestVerifyBcryptPast72Bytes: bcrypt reads 72 bytes of a password; a
// match that may not be the real password is never a reason to rehash.
func TestVerifyBcryptPast72Bytes(t *testing.T) {
	ctx := context.Background()
	h := newTestHasher(t, fastArgon2, 1)
	long := strings.Repeat("Long!pass-", 9) // 90 bytes
	b, err := bcrypt.GenerateFromPassword([]byte(long[:72]), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	for name, typed := range map[string]string{
		"the real password":      long,
		"another tail":           long[:72] + "x",
		"exactly the 72 bytes":   long[:72],
		"72 bytes and 1000 more": long[:72] + strings.Repeat("y", 1000),
	} {
		if rehash, err := h.Verify(ctx, typed, string(b)); err != nil || rehash {
			t.Errorf("%s: Verify = %v, %v; want false (no rehash), nil", name, rehash, err)
		}
	}
	if _, err := h.Verify(ctx, long[:71], string(b)); !errors.Is(err, ErrMismatch) {
		t.Errorf("71 bytes: err = %v, want ErrMismatch", err)
	}

	// bcrypt ends a shorter password with a NUL and repeats it: a typed
	// password with a NUL can match another one's hash.
	short, err := bcrypt.GenerateFromPassword([]byte("Old!pass"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	if rehash, err := h.Verify(ctx, "Old!pass\x00Old!pass", string(short)); err != nil || rehash {
		t.Errorf("NUL-repeated password: Verify = %v, %v; want a match without rehash", rehash, err)
	}
	if rehash, err := h.Verify(ctx, "Old!pass", string(short)); err != nil || !rehash {
		t.Errorf("the real short password: Verify = %v, %v; want a match with rehash", rehash, err)
	}
}

func TestSetLegacyCost(t *testing.T) {
	h := newTestHasher(t, fastArgon2, 1)
	for set, want := range map[int]int{0: 0, 12: 12, 31: maxLegacyPadCost, -1: 0} {
		h.SetLegacyCost(set)
		if got := h.LegacyCost(); got != want {
			t.Errorf("SetLegacyCost(%d): LegacyCost = %d, want %d", set, got, want)
		}
	}
	// A wrong password still fails with a legacy cost set, for either
	// kind of hash, and the dummy verification does not panic.
	h.SetLegacyCost(5)
	ctx := context.Background()
	enc, _ := h.Hash(ctx, "Secret!pw")
	old, _ := bcrypt.GenerateFromPassword([]byte("Secret!pw"), bcrypt.MinCost)
	for _, hash := range []string{enc, string(old)} {
		if _, err := h.Verify(ctx, "Wrong!pw", hash); !errors.Is(err, ErrMismatch) {
			t.Errorf("%.4s: err = %v, want ErrMismatch", hash, err)
		}
	}
	h.VerifyDummy(ctx, "Wrong!pw")
	// The dummy bcrypt hashes are well formed: a verification against
	// one does the work and fails as a mismatch, not on the format.
	dummy := fmt.Sprintf("$2b$%02d$%s", 5, h.bcryptDummy)
	if err := bcrypt.CompareHashAndPassword([]byte(dummy), []byte("Wrong!pw")); !errors.Is(err, bcrypt.ErrMismatchedHashAndPassword) {
		t.Errorf("dummy bcrypt hash %q: %v, want a mismatch", dummy, err)
	}
	if c, err := bcrypt.Cost([]byte(dummy)); err != nil || c != 5 {
		t.Errorf("dummy bcrypt hash cost %d, %v", c, err)
	}
}
