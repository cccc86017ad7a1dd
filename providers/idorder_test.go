package providers

import (
	"slices"
	"testing"
)

// IDLess is a strict total order over any mix of ids: irreflexive,
// asymmetric, transitive and total, so that sorting and binary searches
// agree (a mix of numeric and text ids was not: "9" < "10" < "1a" < "9").
func TestIDLessIsATotalOrder(t *testing.T) {
	ids := []string{"9", "10", "1a", "007", "7", "70", "a", "B", "", "10a", "0", "00", "99999999999999999999", "-1", "1.5", "z9"}
	for _, a := range ids {
		if IDLess(a, a) {
			t.Errorf("IDLess(%q, %q)", a, a)
		}
		for _, b := range ids {
			if a != b && IDLess(a, b) == IDLess(b, a) {
				t.Errorf("%q and %q: not exactly one before the other", a, b)
			}
			for _, c := range ids {
				if IDLess(a, b) && IDLess(b, c) && !IDLess(a, c) {
					t.Errorf("not transitive: %q < %q < %q but not %q < %q", a, b, c, a, c)
				}
			}
		}
	}
	got := slices.Clone(ids)
	slices.SortFunc(got, func(a, b string) int {
		if IDLess(a, b) {
			return -1
		}
		if IDLess(b, a) {
			return 1
		}
		return 0
	})
	want := []string{"0", "7", "9", "00", "10", "70", "007", "99999999999999999999", "", "-1", "1.5", "10a", "1a", "B", "a", "z9"}
	if !slices.Equal(got, want) {
		t.Errorf("sorted: %q\nwant     %q", got, want)
	}
}
