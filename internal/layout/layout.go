// Package layout reads the README's layout tables ("where is X?": every
// route and every Caddyfile option, with the file that holds it), so that
// tests can hold them against the code and keep them true.
package layout

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"strings"
)

// row is a table row whose first and last cells are `code`.
var row = regexp.MustCompile("^\\| `([^`]+)` \\|(?:.*\\|)? `([^`]+)` \\|$")

// Table returns the rows of the README table under the heading (a line
// starting with "### " and then heading), first cell to last cell: what
// to where.
func Table(readme, heading string) (map[string]string, error) {
	f, err := os.Open(readme)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]string{}
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			in = strings.TrimSpace(strings.TrimLeft(line, "#")) == heading
			continue
		}
		if m := row.FindStringSubmatch(line); in && m != nil {
			if _, dup := out[m[1]]; dup {
				return nil, fmt.Errorf("%s: %q is listed twice under %q", readme, m[1], heading)
			}
			out[m[1]] = m[2]
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no table under the heading %q", readme, heading)
	}
	return out, nil
}
