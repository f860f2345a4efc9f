package fastapi

import (
	"fmt"
	"regexp"
	"strings"
	"unicode/utf8"
)

var uuidPattern = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// IsUUID reports whether s is a UUID in its canonical text form.
func IsUUID(s string) bool { return uuidPattern.MatchString(s) }

// PathUUID reads the path parameter name of r as a UUID (ParseUUID) into
// the canonical form, adding a 422 uuid_parsing entry at ["path", name]
// to v when it is not one.
func PathUUID(r interface{ PathValue(string) string }, name string, v *ValidationError) string {
	id, reason := ParseUUID(strings.ToValidUTF8(r.PathValue(name), "\uFFFD"))
	if reason != "" {
		v.Add("uuid_parsing", "Input should be a valid UUID, "+reason, "path", name)
	}
	return id
}

// ParseUUID parses s as pydantic's UUID type does (with the Rust uuid
// crate): hyphenated, 32 hex digits, {braced} or urn:uuid:, in any letter
// case. It returns the canonical form (lowercase, hyphenated), or the
// crate's text for why s is not a UUID.
func ParseUUID(s string) (uuid string, reason string) {
	hex := ""
	switch {
	case len(s) == 32:
		hex = s
	case len(s) == 36:
		hex = unhyphenate(s)
	case len(s) == 38 && s[0] == '{' && s[37] == '}':
		hex = unhyphenate(s[1:37])
	case len(s) == 45 && strings.HasPrefix(s, "urn:uuid:"):
		hex = unhyphenate(s[9:])
	}
	if len(hex) == 32 && strings.IndexFunc(hex, func(r rune) bool { return r > 0x7f || !isHex(byte(r)) }) < 0 {
		h := strings.ToLower(hex)
		return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:], ""
	}
	return "", uuidParseError(s)
}

// unhyphenate returns the 32 digits of a hyphenated UUID, or "" when the
// hyphens are not where they belong.
func unhyphenate(s string) string {
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return ""
	}
	return s[:8] + s[9:13] + s[14:18] + s[19:23] + s[24:]
}

// uuidParseError explains why s is not a UUID, in the words (and with
// the 1-based byte positions) of the Rust uuid crate, which pydantic
// quotes.
func uuidParseError(input string) string {
	if !utf8.ValidString(input) {
		return "non-UTF8 input"
	}
	str, offset, simple := input, 0, true
	switch {
	case len(input) >= 2 && input[0] == '{' && input[len(input)-1] == '}':
		str, offset, simple = input[1:len(input)-1], 1, false
	case strings.HasPrefix(input, "urn:uuid:"):
		str, offset, simple = input[len("urn:uuid:"):], len("urn:uuid:"), false
	}
	hyphens := 0
	var bounds [4]int
	for i, r := range str {
		switch {
		case r == '-':
			if hyphens < 4 {
				bounds[hyphens] = i
			}
			hyphens++
		case r > 0x7f || !isHex(byte(r)):
			return fmt.Sprintf("invalid character: expected an optional prefix of `urn:uuid:` followed by [0-9a-fA-F-], found `%c` at %d", r, i+offset+1)
		}
	}
	switch {
	case hyphens == 0 && simple:
		return fmt.Sprintf("invalid length: expected length 32 for simple format, found %d", len(input))
	case hyphens != 4:
		return fmt.Sprintf("invalid group count: expected 5, found %d", hyphens+1)
	}
	starts := [5]int{0, 9, 14, 19, 24}
	expected := [5]int{8, 4, 4, 4, 12}
	for g := 0; g < 4; g++ {
		if bounds[g] != starts[g+1]-1 {
			return fmt.Sprintf("invalid group length in group %d: expected %d, found %d", g, expected[g], bounds[g]-starts[g])
		}
	}
	return fmt.Sprintf("invalid group length in group 4: expected 12, found %d", len(input)-starts[4])
}
