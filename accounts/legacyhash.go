package accounts

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// legacyRecheck is how long a read of the largest bcrypt cost holds
// before a login reads it again.
const legacyRecheck = time.Minute

// legacyCostSQL returns the largest cost of the stored bcrypt hashes, 0
// when there is none.
const legacyCostSQL = `SELECT coalesce(max(substr(hashed_password, 5, 2)::int), 0)
	FROM users WHERE hashed_password ~ '^\$2[aby]\$[0-9]{2}\$'`

// legacyHashes is what the service knows of the stored bcrypt hashes;
// the cost itself is the Hasher's (SetLegacyCost).
type legacyHashes struct {
	// mu is held while the database is read.
	mu sync.Mutex
	// readAt is when the cost was last read (UnixNano), 0 never.
	readAt atomic.Int64
}

// knowLegacyHashes makes sure the hasher knows the largest bcrypt cost
// stored before a login verifies a password. The first login (of this
// service) waits for the read; later, a login that finds the value older
// than legacyRecheck reads it again while the others go on with the value
// they have.
func (s *Service) knowLegacyHashes(ctx context.Context) {
	l := &s.legacy
	last := l.readAt.Load()
	if last != 0 && time.Since(time.Unix(0, last)) < legacyRecheck {
		return
	}
	if last != 0 {
		if !l.mu.TryLock() {
			return
		}
	} else {
		l.mu.Lock()
		if l.readAt.Load() != 0 {
			l.mu.Unlock()
			return
		}
	}
	defer l.mu.Unlock()
	s.readLegacyCost(ctx)
}

// legacyHashUpgraded reads the largest bcrypt cost again after a bcrypt
// hash was replaced, so that failed logins go back to argon2id alone as
// soon as the last one is gone.
func (s *Service) legacyHashUpgraded(ctx context.Context) {
	s.legacy.mu.Lock()
	defer s.legacy.mu.Unlock()
	s.readLegacyCost(ctx)
}

// readLegacyCost reads the largest bcrypt cost and hands it to the
// hasher. The caller holds s.legacy.mu. A failed read keeps what was
// known (and is tried again by the next login).
func (s *Service) readLegacyCost(ctx context.Context) {
	var cost int
	if err := s.db.QueryRow(ctx, legacyCostSQL).Scan(&cost); err != nil {
		s.log.Warn("could not read the largest bcrypt cost of the stored password hashes", zap.Error(err))
		return
	}
	s.legacy.readAt.Store(time.Now().UnixNano())
	before := s.hasher.LegacyCost()
	s.hasher.SetLegacyCost(cost)
	switch after := s.hasher.LegacyCost(); {
	case after == before:
	case after == 0:
		s.log.Info("no bcrypt password hash is left; failed logins cost one argon2id verification again")
	default:
		s.log.Info("bcrypt password hashes of the old backend are stored; every failed login also spends a bcrypt verification of their largest cost",
			zap.Int("bcrypt_cost", after), zap.Int("largest_stored_cost", cost))
	}
}
