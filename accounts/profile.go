package accounts

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/caddyaccounts/gateway/fastapi"
)

// Profile is a user's profile as the API shows it. Absent values are
// null.
type Profile struct {
	UserID     string    `json:"user_id"`
	FullName   *string   `json:"full_name"`
	Phone      *string   `json:"phone"`
	JobTitle   *string   `json:"job_title"`
	Department *string   `json:"department"`
	Bio        *string   `json:"bio"`
	AvatarURL  *string   `json:"avatar_url"`
	UpdatedAt  time.Time `json:"updated_at"`
}

// profileColumns are selected, in this order, by scanProfile.
const profileColumns = "user_id::text, full_name, phone, job_title, department, bio, avatar_url, updated_at"

func scanProfile(row pgx.Row) (*Profile, error) {
	p := &Profile{}
	if err := row.Scan(&p.UserID, &p.FullName, &p.Phone, &p.JobTitle, &p.Department, &p.Bio, &p.AvatarURL, &p.UpdatedAt); err != nil {
		return nil, err
	}
	p.UpdatedAt = p.UpdatedAt.UTC()
	return p, nil
}

// Bounds of the profile fields (API.md), in characters.
const (
	maxPhoneLen      = 32
	minPhoneDigits   = 5
	maxJobTitleLen   = 200
	maxDepartmentLen = 200
	maxBioLen        = 2000
	maxAvatarURLLen  = 2048
)

// profileField is an editable profile column and its rule. check, if set,
// returns the entry for a value of acceptable length, or nil.
type profileField struct {
	name   string
	maxLen int
	check  func(string) *fastapi.FieldError
}

// profileFields are the editable fields, in the order of the API's model.
// Their names are also the column names.
var profileFields = []profileField{
	{"full_name", maxFullNameLen, nil},
	{"phone", maxPhoneLen, checkPhone},
	{"job_title", maxJobTitleLen, nil},
	{"department", maxDepartmentLen, nil},
	{"bio", maxBioLen, nil},
	{"avatar_url", maxAvatarURLLen, checkAvatarURL},
}

// checkPhone accepts a phone-like string: only ASCII digits, spaces and
// the separators - ( ) ., with an optional + as the very first
// character, and at least 5 digits. No other normalization: it is stored
// as given.
func checkPhone(s string) *fastapi.FieldError {
	digits := 0
	ok := true
	for i, r := range s {
		switch {
		case r >= '0' && r <= '9':
			digits++
		case r == ' ' || r == '-' || r == '(' || r == ')' || r == '.':
		case r == '+' && i == 0:
		default:
			ok = false
		}
	}
	if !ok || digits < minPhoneDigits {
		return &fastapi.FieldError{Type: "value_error", Msg: fastapi.ValueErrorPrefix +
			"Phone number may contain only digits, spaces, - ( ) . and a leading +, and at least 5 digits"}
	}
	return nil
}

// checkAvatarURL accepts an absolute http or https URL with a host, as
// pydantic's HttpUrl does, with its error types and messages. Unlike
// HttpUrl it does not normalize (the URL is stored as given), and so it
// refuses spaces and control characters rather than percent-encoding
// them.
func checkAvatarURL(s string) *fastapi.FieldError {
	invalid := func(why string) *fastapi.FieldError {
		return &fastapi.FieldError{Type: "url_parsing", Msg: "Input should be a valid URL, " + why}
	}
	if s == "" {
		return invalid("input is empty")
	}
	if strings.IndexFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0 {
		return invalid("invalid URL")
	}
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return invalid("invalid URL")
	case u.Scheme == "":
		return invalid("relative URL without a base")
	case !strings.EqualFold(u.Scheme, "http") && !strings.EqualFold(u.Scheme, "https"):
		return &fastapi.FieldError{Type: "url_scheme", Msg: "URL scheme should be 'http' or 'https'"}
	case u.Opaque != "" || u.Hostname() == "":
		return invalid("empty host")
	}
	if port := u.Port(); port != "" {
		if n, err := strconv.Atoi(port); err != nil || n > 65535 {
			return invalid("invalid port number")
		}
	}
	return nil
}

// profileUpdate is a validated PUT body: the fields present, with their
// new values (nil clears).
type profileUpdate struct {
	names  []string
	values []any
}

// readProfileUpdate reads and validates a PUT /api/profile body.
func readProfileUpdate(body *fastapi.Object) (profileUpdate, error) {
	var up profileUpdate
	for _, f := range profileFields {
		v, present := body.OptionalString(f.name)
		if !present || body.Failed(f.name) {
			continue // absent, or not a string (its entry is in)
		}
		if v != nil {
			switch {
			case utf8.RuneCountInString(*v) > f.maxLen:
				body.Add("string_too_long", fmt.Sprintf("String should have at most %d characters", f.maxLen), f.name)
				continue
			case f.check != nil:
				if fe := f.check(*v); fe != nil {
					body.Add(fe.Type, fe.Msg, f.name)
					continue
				}
			}
		}
		up.names = append(up.names, f.name)
		up.values = append(up.values, v)
	}
	return up, body.Finish()
}

// isForeignKeyViolation reports whether err is PostgreSQL's
// foreign_key_violation.
func isForeignKeyViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23503"
}

// profile returns the user's profile, creating an empty one if the user
// has none (an account made outside the API). Concurrent first reads
// create it once.
func (s *Service) profile(ctx context.Context, userID string) (*Profile, error) {
	const query = "SELECT " + profileColumns + " FROM profiles WHERE user_id = $1"
	p, err := scanProfile(s.db.QueryRow(ctx, query, userID))
	if !errors.Is(err, pgx.ErrNoRows) {
		if err != nil {
			return nil, fmt.Errorf("loading profile: %w", err)
		}
		return p, nil
	}
	// ON CONFLICT waits for a concurrent insert of the same profile to
	// end; the next statement then sees whichever row was inserted.
	_, err = s.db.Exec(ctx, "INSERT INTO profiles (user_id) VALUES ($1) ON CONFLICT (user_id) DO NOTHING", userID)
	if isForeignKeyViolation(err) {
		return nil, errInvalidCredentials // the user was deleted since authentication
	}
	if err != nil {
		return nil, fmt.Errorf("creating profile: %w", err)
	}
	p, err = scanProfile(s.db.QueryRow(ctx, query, userID))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, errInvalidCredentials // the user was deleted meanwhile (the profile with it)
	}
	if err != nil {
		return nil, fmt.Errorf("loading profile: %w", err)
	}
	return p, nil
}

// updateProfile applies up to the user's profile in one statement,
// creating the profile if it is missing, and returns it. updated_at moves
// only when a value changes.
func (s *Service) updateProfile(ctx context.Context, userID string, up profileUpdate) (*Profile, error) {
	// Column names come from profileFields only, never from the client.
	cols := []string{"user_id"}
	params := []string{"$1"}
	args := []any{userID}
	var sets, olds, news []string
	for i, name := range up.names {
		cols = append(cols, name)
		params = append(params, fmt.Sprintf("$%d", i+2))
		args = append(args, up.values[i])
		sets = append(sets, name+" = EXCLUDED."+name)
		olds = append(olds, "profiles."+name)
		news = append(news, "EXCLUDED."+name)
	}
	updatedAt := "profiles.updated_at"
	if len(up.names) > 0 {
		updatedAt = fmt.Sprintf("CASE WHEN ROW(%s) IS DISTINCT FROM ROW(%s) THEN now() ELSE profiles.updated_at END",
			strings.Join(olds, ", "), strings.Join(news, ", "))
	}
	sets = append(sets, "updated_at = "+updatedAt)
	query := fmt.Sprintf("INSERT INTO profiles (%s) VALUES (%s) ON CONFLICT (user_id) DO UPDATE SET %s RETURNING %s",
		strings.Join(cols, ", "), strings.Join(params, ", "), strings.Join(sets, ", "), profileColumns)
	p, err := scanProfile(s.db.QueryRow(ctx, query, args...))
	if isForeignKeyViolation(err) {
		return nil, errInvalidCredentials // the user was deleted since authentication
	}
	if err != nil {
		return nil, fmt.Errorf("updating profile: %w", err)
	}
	return p, nil
}

// handleGetProfile serves GET /api/profile.
func (s *Service) handleGetProfile(w http.ResponseWriter, r *http.Request, p *Principal) error {
	prof, err := s.profile(r.Context(), p.User.ID)
	if err != nil {
		return err
	}
	fastapi.WriteJSON(w, http.StatusOK, prof)
	return nil
}

// handlePutProfile serves PUT /api/profile: the caller's profile, absent
// fields unchanged and null clearing.
func (s *Service) handlePutProfile(w http.ResponseWriter, r *http.Request, p *Principal) error {
	body, err := fastapi.ReadObject(w, r)
	if err != nil {
		return err
	}
	up, err := readProfileUpdate(body)
	if err != nil {
		return err
	}
	prof, err := s.updateProfile(r.Context(), p.User.ID, up)
	if err != nil {
		return err
	}
	fastapi.WriteJSON(w, http.StatusOK, prof)
	return nil
}
