package accounts

import (
	"context"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// insertBcryptUser stores an active user with a bcrypt hash of password
// as the old backend wrote it (passlib: the first 72 bytes), and returns
// its id and the stored hash.
func (e *testEnv) insertBcryptUser(email, password string, cost int) (id, hash string) {
	e.t.Helper()
	b, err := bcrypt.GenerateFromPassword([]byte(password[:min(len(password), 72)]), cost)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := e.db.QueryRow(context.Background(),
		`INSERT INTO users (email, hashed_password, role, is_active) VALUES ($1, $2, 'user', true) RETURNING id::text`,
		email, string(b)).Scan(&id); err != nil {
		e.t.Fatal(err)
	}
	return id, string(b)
}

// storedHash returns the password hash stored for user id.
func (e *testEnv) storedHash(id string) string {
	e.t.Helper()
	var h string
	if err := e.db.QueryRow(context.Background(), "SELECT hashed_password FROM users WHERE id = $1", id).Scan(&h); err != nil {
		e.t.Fatal(err)
	}
	return h
}

// loginStatus logs in and returns the status.
func (e *testEnv) loginStatus(email, password string) int {
	e.t.Helper()
	return e.do("POST", "/api/auth/login", "", formOf("username", email, "password", password)).Status
}

// TestLegacyLongPasswordKeepsWorking: an old account whose real password
// is longer than 72 bytes accepts any password with the same first 72
// bytes (bcrypt does, and did in the old backend). Such a login must not
// replace the hash with one of what was typed, which would lock the real
// password out: the bcrypt hash stays and both keep working.
func TestLegacyLongPasswordKeepsWorking(t *testing.T) {
	e := newTestEnv(t, func(c *Config) { c.RateLimit.IPRequests, c.RateLimit.LoginFailures = -1, -1 })
	real := strings.Repeat("Long!pässwörd-", 6) // 84 characters, 96 bytes
	if len(real) <= 72 || len([]rune(real)) > passwordMaxLen {
		t.Fatalf("test password of %d bytes", len(real))
	}
	other := real[:72] + "another tail!"
	id, hash := e.insertBcryptUser("long@old.example", real, bcrypt.MinCost)

	for i, typed := range []string{other, real, real[:72], real} {
		if got := e.loginStatus("long@old.example", typed); got != http.StatusOK {
			t.Fatalf("login %d (%d bytes): %d, want 200", i, len(typed), got)
		}
		if got := e.storedHash(id); got != hash {
			t.Fatalf("login %d (%d bytes) replaced the bcrypt hash with %.12s…", i, len(typed), got)
		}
	}
	if got := e.loginStatus("long@old.example", real[:71]); got != http.StatusUnauthorized {
		t.Fatalf("71-byte prefix: %d, want 401", got)
	}

	// A legacy account with a short password is upgraded as before.
	shortID, _ := e.insertBcryptUser("short@old.example", "Sh0rt!pass", bcrypt.MinCost)
	if got := e.loginStatus("short@old.example", "Sh0rt!pass"); got != http.StatusOK {
		t.Fatalf("short password: %d", got)
	}
	if h := e.storedHash(shortID); !strings.HasPrefix(h, "$argon2id$") {
		t.Fatalf("short password's hash not upgraded: %.12s…", h)
	}
	if got := e.loginStatus("short@old.example", "Sh0rt!pass"); got != http.StatusOK {
		t.Fatalf("short password after the upgrade: %d", got)
	}
}

// timingClass is one kind of failed login of TestFailedLoginTimingWithLegacyHashes.
type timingClass struct {
	name, email string
	samples     []time.Duration
}

// quartiles returns the first quartile, the median and the third
// quartile of d.
func quartiles(d []time.Duration) (q1, median, q3 time.Duration) {
	s := slices.Clone(d)
	slices.Sort(s)
	at := func(p float64) time.Duration { return s[int(p*float64(len(s)-1)+0.5)] }
	return at(0.25), at(0.5), at(0.75)
}

// TestFailedLoginTimingWithLegacyHashes: while bcrypt hashes of the old
// backend are stored, an unknown email, a wrong password on an argon2id
// account and a wrong password on a bcrypt account (of the largest cost
// stored, and of a smaller one) take the same time; once every bcrypt
// hash is upgraded, failed logins cost argon2id alone again.
//
// Measured over real HTTP on loopback against a real PostgreSQL: 40
// failed logins of each kind, the kinds interleaved in a new random order
// every round so that machine noise hits them alike, after one round of
// warm-up. Every kind's interquartile range must overlap the unknown
// email's.
func TestFailedLoginTimingWithLegacyHashes(t *testing.T) {
	const (
		samples   = 40
		maxCost   = 10 // the old backend wrote 12; 10 keeps the test fast
		lowerCost = 8
	)
	e := newTestEnv(t, func(c *Config) {
		c.RateLimit.IPRequests, c.RateLimit.LoginFailures = -1, -1
		// Cheaper than OWASP's, but not negligible beside bcrypt: a
		// failure that skipped its argon2id work would show.
		c.Argon2 = Argon2Params{MemoryKiB: 8 * 1024, Iterations: 1, Parallelism: 1}
	})
	e.register("argon@new.example", "Secret!pw1")
	highID, _ := e.insertBcryptUser("high@old.example", "High!pass1", maxCost)
	lowID, _ := e.insertBcryptUser("low@old.example", "Low!pass12", lowerCost)

	classes := []*timingClass{
		{name: "unknown email", email: "nobody@old.example"},
		{name: "wrong password, argon2id", email: "argon@new.example"},
		{name: "wrong password, bcrypt cost 10", email: "high@old.example"},
		{name: "wrong password, bcrypt cost 8", email: "low@old.example"},
	}
	measure := func(classes []*timingClass, rounds int) {
		for round := -1; round < rounds; round++ {
			order := slices.Clone(classes)
			rand.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
			for _, c := range order {
				start := time.Now()
				status := e.loginStatus(c.email, "Wrong!pass9")
				took := time.Since(start)
				if status != http.StatusUnauthorized {
					t.Fatalf("%s: %d, want 401", c.name, status)
				}
				if round >= 0 {
					c.samples = append(c.samples, took)
				}
			}
		}
	}
	measure(classes, samples)
	if got := e.svc.hasher.LegacyCost(); got != maxCost {
		t.Fatalf("legacy cost %d, want %d", got, maxCost)
	}
	ref := classes[0]
	rq1, rmed, rq3 := quartiles(ref.samples)
	for _, c := range classes {
		q1, med, q3 := quartiles(c.samples)
		t.Logf("%-32s median %6.1f ms, IQR %6.1f – %6.1f ms", c.name, ms(med), ms(q1), ms(q3))
	}
	for _, c := range classes[1:] {
		q1, med, q3 := quartiles(c.samples)
		// The interquartile ranges overlap: the middle halves of the two
		// distributions share times. (Without the padding, a bcrypt-10
		// failure takes ten times an unknown email's, and a bcrypt-8 one
		// twice: the ranges lie far apart.) Bounds on the medians fail
		// on a loaded machine, where every kind's IQR is hundreds of
		// milliseconds wide, or by a few milliseconds on an idle one,
		// where the dummy calls' own fixed cost shows.
		if q1 > rq3 || rq1 > q3 {
			t.Errorf("%s: median %.1f ms, IQR %.1f–%.1f ms; unknown email: median %.1f ms, IQR %.1f–%.1f ms: the distributions do not overlap",
				c.name, ms(med), ms(q1), ms(q3), ms(rmed), ms(rq1), ms(rq3))
		}
	}

	// Every old account signs in once: its hash is upgraded, and with the
	// last bcrypt hash gone failed logins are back to argon2id alone.
	if got := e.loginStatus("low@old.example", "Low!pass12"); got != http.StatusOK {
		t.Fatalf("low: %d", got)
	}
	if got := e.svc.hasher.LegacyCost(); got != maxCost {
		t.Fatalf("legacy cost %d with a cost-10 hash left, want %d", got, maxCost)
	}
	if got := e.loginStatus("high@old.example", "High!pass1"); got != http.StatusOK {
		t.Fatalf("high: %d", got)
	}
	for _, id := range []string{highID, lowID} {
		if h := e.storedHash(id); !strings.HasPrefix(h, "$argon2id$") {
			t.Fatalf("hash not upgraded: %.12s…", h)
		}
	}
	if got := e.svc.hasher.LegacyCost(); got != 0 {
		t.Fatalf("legacy cost %d with no bcrypt hash left, want 0", got)
	}
	// LegacyCost 0, checked above, is what makes failures argon2id
	// alone again (the hasher pads only while it is set); the time is
	// logged, not judged: with the other packages' tests on the same
	// CPUs, a failed login's time is mostly its wait for a hashing slot.
	after := []*timingClass{{name: "unknown email, no bcrypt left", email: "nobody@old.example"}}
	measure(after, 10)
	_, med, _ := quartiles(after[0].samples)
	t.Logf("%-32s median %6.1f ms", after[0].name, ms(med))
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
