package fastapi

import (
	"strings"
	"testing"
)

func TestParseUUID(t *testing.T) {
	const id = "67e55044-10b1-426f-9247-bb680e5fe0c8"
	for _, s := range []string{id, strings.ToUpper(id), "67e5504410b1426f9247bb680e5fe0c8", "{" + id + "}", "urn:uuid:" + id} {
		if got, reason := ParseUUID(s); got != id || reason != "" {
			t.Errorf("ParseUUID(%q) = %q, %q", s, got, reason)
		}
	}
	// The uuid crate's own test cases.
	for s, want := range map[string]string{
		"":                                        "invalid length: expected length 32 for simple format, found 0",
		"!":                                       "invalid character: expected an optional prefix of `urn:uuid:` followed by [0-9a-fA-F-], found `!` at 1",
		"F9168C5E-CEB2-4faa-B6BF-329BF39FA1E45":   "invalid group length in group 4: expected 12, found 13",
		"F9168C5E-CEB2-4faa-BBF-329BF39FA1E4":     "invalid group length in group 3: expected 4, found 3",
		"F9168C5E-CEB2-4faa-BGBF-329BF39FA1E4":    "invalid character: expected an optional prefix of `urn:uuid:` followed by [0-9a-fA-F-], found `G` at 21",
		"F9168C5E-CEB2F4faaFB6BFF329BF39FA1E4":    "invalid group count: expected 5, found 2",
		"F9168C5E-CEB2-4faa":                      "invalid group count: expected 5, found 3",
		"F9168C5E-CEB2-4faaXB6BFF329BF39FA1E4":    "invalid character: expected an optional prefix of `urn:uuid:` followed by [0-9a-fA-F-], found `X` at 19",
		"{F9168C5E-CEB2-4faa9B6BFF329BF39FA1E41":  "invalid character: expected an optional prefix of `urn:uuid:` followed by [0-9a-fA-F-], found `{` at 1",
		"{F9168C5E-CEB2-4faa9B6BFF329BF39FA1E41}": "invalid group count: expected 5, found 3",
		"F9168C5E-CEB-24fa-eB6BFF32-BF39FA1E4":    "invalid group length in group 1: expected 4, found 3",
		"01020304-1112-2122-3132-41424344":        "invalid group length in group 4: expected 12, found 8",
		"67e5504410b1426f9247bb680e5fe0c":         "invalid length: expected length 32 for simple format, found 31",
		"67e5504410b1426f9247bb680e5fe0cg8":       "invalid character: expected an optional prefix of `urn:uuid:` followed by [0-9a-fA-F-], found `g` at 32",
		"231231212212423424324323477343246663":    "invalid length: expected length 32 for simple format, found 36",
		"{00000000000000000000000000000000}":      "invalid group count: expected 5, found 1",
		"67e550-4105b1426f9247bb680e5fe0c":        "invalid group count: expected 5, found 2",
		"F9168C5E-CEB2-4faa-B6BF1-02BF39FA1E4":    "invalid group length in group 3: expected 4, found 5",
		"ab€":                                     "invalid character: expected an optional prefix of `urn:uuid:` followed by [0-9a-fA-F-], found `€` at 3",
	} {
		if got, reason := ParseUUID(s); got != "" || reason != want {
			t.Errorf("ParseUUID(%q) = %q, %q\nwant %q", s, got, reason, want)
		}
	}
}
