package accounts

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/net/idna"
	"golang.org/x/text/cases"
	"golang.org/x/text/unicode/norm"
)

// One mailbox, one account. The email is stored as given (API.md), but
// uniqueness and login go by a normalised key, users.email_key
// (migration 0006), so that spellings of one address are one account:
//
//   - the domain is mapped by IDNA (UTS #46, the lookup profile) and kept
//     in its lower-case ASCII form: bücher.example, BÜCHER.example and
//     xn--bcher-kva.example are one domain, and so are the full-width
//     ｅxample.com and example.com;
//   - the local part gets NFKC and full case folding (NFKC_Casefold). The
//     API accepts only ASCII local parts, where this is lower-casing, as
//     the old backend's lower(email) did; the rest matters for rows the
//     old backend stored and for what is typed at login (ｂob@… finds
//     bob@…). The key decides only which account an address names; mail
//     is always sent to the stored address, never to the key or to what
//     was typed.
//
// Rows without a key (the old backend's, or two rows that normalise
// alike) are given one by the migrator (backfillEmailKeys); the ones it
// cannot give one are reported (EmailKeyConflicts) and still log in with
// their exact address (userByEmail).

// errNoEmailKey is returned by emailKey for text that is not an address
// it can normalise.
var errNoEmailKey = errors.New("the address cannot be normalised")

// foldCase is NFKC_Casefold's case folding. A cases.Caser keeps state, so
// each call makes its own.
func foldCase(s string) string { return cases.Fold().String(s) }

// emailKey returns the normalised form of an address, the one under which
// it is unique. email is trimmed already.
func emailKey(email string) (string, error) {
	at := strings.LastIndexByte(email, '@')
	if at <= 0 || at == len(email)-1 || !utf8.ValidString(email) {
		return "", errNoEmailKey
	}
	local := norm.NFKC.String(foldCase(norm.NFKC.String(email[:at])))
	if strings.ContainsRune(local, '@') {
		return "", errNoEmailKey
	}
	domain, err := idna.Lookup.ToASCII(email[at+1:])
	if err != nil || domain == "" {
		return "", errNoEmailKey
	}
	return local + "@" + strings.ToLower(domain), nil
}

// checkEmailDomain checks the part after the @-sign, which checkEmail has
// found well formed, as a domain name: it must be valid IDNA, no label of
// its ASCII form may be longer than DNS allows, and no label may mix
// scripts. It returns the reason, without checkEmail's prefix, or "".
func checkEmailDomain(domain string) string {
	ascii, err := idna.Lookup.ToASCII(domain)
	if err != nil {
		return "The part after the @-sign is not valid IDNA."
	}
	for _, l := range strings.Split(ascii, ".") {
		if len(l) > 63 {
			return "The part after the @-sign is not valid."
		}
	}
	// The Unicode form, so that a look-alike spelled in punycode
	// (xn--xmple-…) is judged as what it displays as.
	uni, err := idna.Lookup.ToUnicode(ascii)
	if err != nil {
		return "The part after the @-sign is not valid IDNA."
	}
	for _, l := range strings.Split(uni, ".") {
		if scripts := mixedScripts(l); scripts != nil {
			return "The part after the @-sign mixes " + joinNames(scripts) + " characters in one label."
		}
	}
	return ""
}

// scriptTables are Unicode's scripts but Common and Inherited (digits,
// hyphen, combining marks shared by scripts), which any label may use.
var scriptTables = func() []scriptTable {
	var ts []scriptTable
	for name, t := range unicode.Scripts {
		if name != "Common" && name != "Inherited" {
			ts = append(ts, scriptTable{name, t})
		}
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i].name < ts[j].name })
	return ts
}()

type scriptTable struct {
	name  string
	table *unicode.RangeTable
}

// scriptOf returns the script of r, or "" for Common and Inherited.
func scriptOf(r rune) string {
	if r < utf8.RuneSelf {
		if 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' {
			return "Latin"
		}
		return ""
	}
	for _, t := range scriptTables {
		if unicode.Is(t.table, r) {
			return t.name
		}
	}
	return ""
}

// allowedScriptSets are the combinations of scripts one label may mix:
// Unicode's "highly restrictive" level (UTS #39, 5.2): Japanese, Chinese
// with Bopomofo and Korean, each also with Latin, as they are written.
var allowedScriptSets = []map[string]bool{
	{"Latin": true, "Han": true, "Hiragana": true, "Katakana": true},
	{"Latin": true, "Han": true, "Bopomofo": true},
	{"Latin": true, "Han": true, "Hangul": true},
}

// mixedScripts returns the scripts of label, in order of appearance, when
// it mixes scripts in a way that look-alike addresses are made (Latin
// with a Cyrillic а), or nil.
func mixedScripts(label string) []string {
	var scripts []string
	for _, r := range label {
		if s := scriptOf(r); s != "" && !contains(scripts, s) {
			scripts = append(scripts, s)
		}
	}
	if len(scripts) < 2 {
		return nil
	}
allowed:
	for _, set := range allowedScriptSets {
		for _, s := range scripts {
			if !set[s] {
				continue allowed
			}
		}
		return nil
	}
	return scripts
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// joinNames writes a list as "A and B" or "A, B and C".
func joinNames(names []string) string {
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1]
}

// emailKeyBatch is how many rows backfillEmailKeys keys per transaction.
const emailKeyBatch = 1000

// backfillEmailKeys gives every user row without a key (rows of the old
// backend, or of an older gateway) its normalised key, oldest row first,
// in batches. A row whose key another row holds already, or whose address
// cannot be normalised, is left without one: it is never merged, changed
// or deleted, and EmailKeyConflicts reports it. It runs under the
// migration lock, after the SQL migrations.
func backfillEmailKeys(ctx context.Context, conn *pgxpool.Conn) error {
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM information_schema.columns
		WHERE table_schema = current_schema() AND table_name = 'users' AND column_name = 'email_key')`).Scan(&exists); err != nil {
		return fmt.Errorf("looking for users.email_key: %w", err)
	}
	if !exists {
		return nil
	}
	const (
		first = `SELECT id::text, email, created_at FROM users WHERE email_key IS NULL
			ORDER BY created_at, id LIMIT $1`
		next = `SELECT id::text, email, created_at FROM users WHERE email_key IS NULL
			AND (created_at, id) > ($2, $3::uuid) ORDER BY created_at, id LIMIT $1`
	)
	var afterAt time.Time
	var afterID string
	for {
		query, args := first, []any{emailKeyBatch}
		if afterID != "" {
			query, args = next, []any{emailKeyBatch, afterAt, afterID}
		}
		rows, err := conn.Query(ctx, query, args...)
		if err != nil {
			return fmt.Errorf("reading users without an email key: %w", err)
		}
		var ids, keys []string
		seen := map[string]bool{}
		n := 0
		for rows.Next() {
			var id, email string
			if err := rows.Scan(&id, &email, &afterAt); err != nil {
				rows.Close()
				return fmt.Errorf("reading users without an email key: %w", err)
			}
			afterID = id
			n++
			key, err := emailKey(strings.TrimSpace(email))
			// Within a batch, the oldest row of a key is the candidate;
			// the others lose to it.
			if err != nil || seen[key] {
				continue
			}
			seen[key] = true
			ids, keys = append(ids, id), append(keys, key)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("reading users without an email key: %w", err)
		}
		if len(ids) > 0 {
			if err := setEmailKeys(ctx, conn, ids, keys); err != nil {
				return err
			}
		}
		if n < emailKeyBatch {
			return nil
		}
	}
}

// setEmailKeys gives each row of ids its key of keys unless another row
// holds that key already. A registration by a running instance may take a
// key between the check and the update; the batch is then tried again and
// the check sees it.
func setEmailKeys(ctx context.Context, conn *pgxpool.Conn, ids, keys []string) error {
	const update = `UPDATE users u SET email_key = v.key
		FROM unnest($1::uuid[], $2::text[]) AS v (id, key)
		WHERE u.id = v.id AND u.email_key IS NULL
		  AND NOT EXISTS (SELECT 1 FROM users h WHERE h.email_key = v.key)`
	var err error
	for range 5 {
		_, err = conn.Exec(ctx, update, ids, keys)
		if !isUniqueViolation(err) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("setting email keys: %w", err)
	}
	return nil
}

// EmailKeyConflict is a user row that has no normalised email key after
// migration. It is never merged or deleted; it logs in with its exact
// address (any letter case) only, and an operator resolves it (README,
// "Migrating from the FastAPI backend").
type EmailKeyConflict struct {
	// UserID is the row's id.
	UserID string
	// HolderID is the id of the user who holds the key this row's address
	// normalises to: the older account of the same mailbox. Empty when
	// the address cannot be normalised, or when no row holds its key yet
	// (a row added after the backfill; the next migration keys it).
	HolderID string
	// Normalisable is false when the address is not one the key can be
	// computed for (such as a domain that is not valid IDNA).
	Normalisable bool
}

// Reason names the kind of conflict: "same_mailbox" (HolderID is set),
// "not_normalisable", or "not_keyed_yet".
func (c EmailKeyConflict) Reason() string {
	switch {
	case !c.Normalisable:
		return "not_normalisable"
	case c.HolderID != "":
		return "same_mailbox"
	default:
		return "not_keyed_yet"
	}
}

// String describes the conflict by user ids, never by address.
func (c EmailKeyConflict) String() string {
	switch {
	case !c.Normalisable:
		return fmt.Sprintf("user %s: the email address cannot be normalised (not a valid IDNA address)", c.UserID)
	case c.HolderID != "":
		return fmt.Sprintf("user %s: the email address is the same mailbox as that of the older user %s", c.UserID, c.HolderID)
	default:
		return fmt.Sprintf("user %s: the email address has no key yet; migrate again", c.UserID)
	}
}

// EmailKeyConflicts lists the user rows left without a normalised email
// key, oldest first, with the reason. An empty list means every account
// has a mailbox of its own.
func EmailKeyConflicts(ctx context.Context, db *pgxpool.Pool) ([]EmailKeyConflict, error) {
	rows, err := db.Query(ctx, "SELECT id::text, email FROM users WHERE email_key IS NULL ORDER BY created_at, id")
	if err != nil {
		return nil, fmt.Errorf("reading users without an email key: %w", err)
	}
	type row struct{ id, email string }
	list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
		var x row
		return x, r.Scan(&x.id, &x.email)
	})
	if err != nil {
		return nil, fmt.Errorf("reading users without an email key: %w", err)
	}
	conflicts := make([]EmailKeyConflict, len(list))
	keyOf := make([]string, len(list)) // "" when not normalisable
	var keys []string
	for i, x := range list {
		key, err := emailKey(strings.TrimSpace(x.email))
		conflicts[i] = EmailKeyConflict{UserID: x.id, Normalisable: err == nil}
		if err == nil {
			keyOf[i] = key
			keys = append(keys, key)
		}
	}
	if len(keys) == 0 {
		return conflicts, nil
	}
	rows, err = db.Query(ctx, "SELECT email_key, id::text FROM users WHERE email_key = ANY($1)", keys)
	if err != nil {
		return nil, fmt.Errorf("reading the holders of email keys: %w", err)
	}
	holders := map[string]string{}
	for rows.Next() {
		var key, id string
		if err := rows.Scan(&key, &id); err != nil {
			rows.Close()
			return nil, fmt.Errorf("reading the holders of email keys: %w", err)
		}
		holders[key] = id
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading the holders of email keys: %w", err)
	}
	for i, key := range keyOf {
		if key != "" {
			conflicts[i].HolderID = holders[key]
		}
	}
	return conflicts, nil
}

// ---- Address validation ----

// maxEmailLen is the longest address SMTP can carry (RFC 5321).
const maxEmailLen = 254

var (
	emailLocalPart = regexp.MustCompile("^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
	emailTLD       = regexp.MustCompile(`^[\p{L}]{2,63}$|^xn--[a-z0-9-]{1,59}$`)
)

// checkEmail validates an address as pydantic's EmailStr would and
// returns the reason it is invalid, or "".
func checkEmail(email string) string {
	const prefix = "value is not a valid email address: "
	if email == "" {
		return prefix + "The email address is empty."
	}
	if len(email) > maxEmailLen {
		return prefix + "The email address is too long."
	}
	at := strings.Count(email, "@")
	if at == 0 {
		return prefix + "An email address must have an @-sign."
	}
	if at > 1 {
		return prefix + "The email address is not valid. It must have exactly one @-sign."
	}
	local, domain, _ := strings.Cut(email, "@")
	if local == "" {
		return prefix + "There must be something before the @-sign."
	}
	if len(local) > 64 || !emailLocalPart.MatchString(local) {
		return prefix + "The part before the @-sign is not valid."
	}
	if domain == "" {
		return prefix + "There must be something after the @-sign."
	}
	labels := strings.Split(strings.ToLower(domain), ".")
	if len(labels) < 2 {
		return prefix + "The part after the @-sign is not valid. It should have a period."
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 || strings.HasPrefix(l, "-") || strings.HasSuffix(l, "-") {
			return prefix + "The part after the @-sign is not valid."
		}
		for _, r := range l {
			if r != '-' && !unicode.IsLetter(r) && !unicode.IsDigit(r) {
				return prefix + "The part after the @-sign contains invalid characters."
			}
		}
	}
	if !emailTLD.MatchString(labels[len(labels)-1]) {
		return prefix + "The part after the @-sign is not valid."
	}
	if msg := checkEmailDomain(domain); msg != "" {
		return prefix + msg
	}
	return ""
}
