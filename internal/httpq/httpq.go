// Package httpq checks the query parameters of the exporter's JSON APIs:
// a parameter an endpoint does not take is a mistake to report (400), not
// a filter to ignore, as /sd answers it.
package httpq

import (
	"fmt"
	"maps"
	"net/url"
	"regexp"
	"slices"
	"strings"
)

// shown is the form of a parameter name the answer repeats; any other
// (a value pasted as a name, a token) is not echoed.
var shown = regexp.MustCompile(`^[a-z][a-z0-9_]{0,39}$`)

// Unknown returns an error naming the first parameter of q (in name
// order) that is not in known, nil when there is none. The name is
// repeated only when it reads as an identifier.
func Unknown(q url.Values, known ...string) error {
	for _, k := range slices.Sorted(maps.Keys(q)) {
		if slices.Contains(known, k) {
			continue
		}
		want := "this endpoint takes none"
		if len(known) > 0 {
			want = "want " + strings.Join(known, ", ")
		}
		if !shown.MatchString(k) {
			return fmt.Errorf("an unknown query parameter (%s)", want)
		}
		return fmt.Errorf("%s: unknown query parameter (%s)", k, want)
	}
	return nil
}
