package accounts

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/caddyaccounts/gateway/fastapi"
)

// Roles a user can have.
const (
	RoleUser  = "user"
	RoleAdmin = "admin"
)

// User is an account as the API shows it. The password hash is never
// part of it.
type User struct {
	ID       string `json:"id"`
	Email    string `json:"email"`
	Role     string `json:"role"`
	IsActive bool   `json:"is_active"`
	// EmailVerified: the user followed a verification (or reset) link,
	// an admin said so, or the account existed before verification did.
	EmailVerified bool      `json:"email_verified"`
	CreatedAt     time.Time `json:"created_at"`
	UpdatedAt     time.Time `json:"updated_at"`

	// The fields below are part of the user's cached state on the
	// request path, never of the JSON object (unexported fields are not
	// marshalled).

	// tokensValidAfter refuses access tokens issued (iat) before it: set
	// by logout-all. Zero when never set.
	tokensValidAfter time.Time
	// revokedSessions are the ids of the user's sessions revoked recently
	// enough that access tokens issued for them may not have expired
	// yet. Only loaded by userForAuth; nil elsewhere.
	revokedSessions []string
	// groupsHeader is the value of X-User-Groups: the ids of the user's
	// groups, sorted, comma-separated ("" for none). apps are the keys of
	// the apps the user may use by grant or because they are open to all
	// (MayUse adds the admins' right to every app). Only loaded by
	// userForAuth.
	groupsHeader string
	apps         []string
}

// MayUse reports whether u may use the app key: admins every app, others
// those open to all or granted to them or to one of their groups, as
// stored when u was loaded for a request.
func (u *User) MayUse(key string) bool {
	return u.Role == RoleAdmin || slices.Contains(u.apps, key)
}

// GroupsHeader is the X-User-Groups value of u: the ids of u's groups,
// sorted, comma-separated, "" for none.
func (u *User) GroupsHeader() string { return u.groupsHeader }

// userColumns are selected, in this order, by scanUser.
const userColumns = "id::text, email, role::text, is_active, email_verified, created_at, updated_at, tokens_valid_after"

func scanUser(row pgx.Row, extra ...any) (*User, error) {
	u := &User{}
	var validAfter *time.Time
	dest := append([]any{&u.ID, &u.Email, &u.Role, &u.IsActive, &u.EmailVerified, &u.CreatedAt, &u.UpdatedAt, &validAfter}, extra...)
	if err := row.Scan(dest...); err != nil {
		return nil, err
	}
	u.CreatedAt = u.CreatedAt.UTC()
	u.UpdatedAt = u.UpdatedAt.UTC()
	if validAfter != nil {
		u.tokensValidAfter = validAfter.UTC()
	}
	return u, nil
}

// errNoUser is returned by the lookups below when no row matches.
var errNoUser = errors.New("no such user")

// byEmail selects the user an address names: the one whose stored email
// it is in any letter case, else the one whose normalised key it has.
// The exact match comes first so that an account left
// without a key (a migration conflict) still logs in with its own
// address. $1 is the address, $2 its key or NULL.
const byEmail = `(lower(email) = lower($1) OR email_key = $2)
	ORDER BY lower(email) = lower($1) DESC LIMIT 1`

// emailKeyArg is an address's key as a query argument: nil (NULL, which
// matches no key) when it cannot be normalised.
func emailKeyArg(email string) *string {
	key, err := emailKey(email)
	if err != nil {
		return nil
	}
	return &key
}

// userByEmail loads a user and their password hash by email: any
// spelling of the same mailbox (byEmail).
func (s *Service) userByEmail(ctx context.Context, email string) (*User, string, error) {
	if fastapi.HasNUL(email) || !utf8.ValidString(email) {
		return nil, "", errNoUser // no stored email is such text
	}
	var hash string
	u, err := scanUser(s.db.QueryRow(ctx,
		"SELECT "+userColumns+", hashed_password FROM users WHERE "+byEmail, email, emailKeyArg(email)), &hash)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, "", errNoUser
	}
	if err != nil {
		return nil, "", fmt.Errorf("loading user: %w", err)
	}
	return u, hash, nil
}

// FindUser returns the user that ref names: their id, or else their
// email address as login takes it (any letter case, surrounding spaces
// ignored). No such user is an error with status 404 (User not found).
func (s *Service) FindUser(ctx context.Context, ref string) (*User, error) {
	ref = strings.TrimSpace(ref)
	if id, bad := fastapi.ParseUUID(ref); bad == "" {
		u, err := scanUser(s.db.QueryRow(ctx, "SELECT "+userColumns+" FROM users WHERE id = $1", id))
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, errUserNotFound
		}
		if err != nil {
			return nil, fmt.Errorf("loading user: %w", err)
		}
		return u, nil
	}
	u, _, err := s.userByEmail(ctx, ref)
	if errors.Is(err, errNoUser) {
		return nil, errUserNotFound
	}
	return u, err
}

// errEmailTaken is returned by createUser for a duplicate email.
var errEmailTaken = fastapi.NewError(http.StatusConflict, "Email already registered")

// createUser inserts a user and their profile in one transaction. email
// has passed checkEmail; another spelling of the same mailbox is
// errEmailTaken (the unique email_key). verified sets email_verified.
func (s *Service) createUser(ctx context.Context, email, hash, role string, fullName *string, verified bool) (*User, error) {
	key, err := emailKey(email)
	if err != nil {
		return nil, fmt.Errorf("creating user: %w", err)
	}
	var u *User
	err = pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		var err error
		u, err = scanUser(tx.QueryRow(ctx,
			"INSERT INTO users (email, email_key, hashed_password, role, email_verified) VALUES ($1, $2, $3, $4, $5) RETURNING "+userColumns,
			email, key, hash, role, verified))
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, "INSERT INTO profiles (user_id, full_name) VALUES ($1, $2)", u.ID, fullName)
		return err
	})
	if isUniqueViolation(err) {
		return nil, errEmailTaken
	}
	if err != nil {
		return nil, fmt.Errorf("creating user: %w", err)
	}
	return u, nil
}

// setPasswordHash replaces a user's password hash.
func (s *Service) setPasswordHash(ctx context.Context, id, hash string) error {
	_, err := s.db.Exec(ctx, "UPDATE users SET hashed_password = $2, updated_at = now() WHERE id = $1", id, hash)
	if err != nil {
		return fmt.Errorf("storing password hash: %w", err)
	}
	return nil
}

// CreateAdmin creates an active admin with the given email and password,
// or, when the email exists, makes that account an active admin with the
// new password. The operator vouches for the address: it counts as
// verified. It is the first-deployment path (`accounts create-admin`).
// It returns the user and whether it was created.
func (s *Service) CreateAdmin(ctx context.Context, email, password string) (*User, bool, error) {
	email = strings.TrimSpace(email)
	if msg := checkEmail(email); msg != "" {
		return nil, false, errors.New(msg)
	}
	if broken := CheckPasswordPolicy(password); len(broken) > 0 {
		return nil, false, fmt.Errorf("password policy: %s", broken[0])
	}
	hash, err := s.hasher.Hash(ctx, password)
	if err != nil {
		return nil, false, err
	}
	u, err := scanUser(s.db.QueryRow(ctx,
		`UPDATE users SET role = 'admin', is_active = true, email_verified = true, hashed_password = $3, updated_at = now()
		 WHERE id = (SELECT id FROM users WHERE `+byEmail+`) RETURNING `+userColumns, email, emailKeyArg(email), hash))
	if err == nil {
		return u, false, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return nil, false, fmt.Errorf("promoting user: %w", err)
	}
	u, err = s.createUser(ctx, email, hash, RoleAdmin, nil, true)
	return u, err == nil, err
}

// handleMe serves GET /api/users/me.
func (s *Service) handleMe(w http.ResponseWriter, r *http.Request, p *Principal) error {
	fastapi.WriteJSON(w, http.StatusOK, p.User)
	return nil
}
